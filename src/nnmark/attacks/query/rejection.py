"""Query rejection (Zhong et al. 2020 Sec. 5 discusses it against trigger-set watermarks; the
detector is Namba et al. 2019's, Sec. 4.2): the service refuses to answer queries it takes for
watermark keys, answering them with a random label instead of the model's, and answers the rest
truthfully. Unlike query modification nothing is reconstructed: a flagged query simply gets no
information, so a verifier's key matches fall to chance.

Detection is Namba's, with its defaults: an autoencoder trained on the service's own images,
reconstruction loss or the Jensen–Shannon divergence above its 95th percentile (10-fold
cross-validated; :class:`~nnmark.attacks.query.autoencoder.QueryModification`). The random label
is drawn uniformly over the classes (seeded; a "refusal" a client cannot tell from an answer) and
returned as a one-hot score vector.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from nnmark.attacks.query.autoencoder import DetectionStats, QueryModification
from nnmark.attacks.query.defenses import QUERY_ATTACKS, register_defense
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle


class QueryRejection(Oracle):
    """Answers queries the detector flags with a random label; others with the model's scores."""

    name = "rejection"

    def __init__(self, detector: QueryModification, *, seed: int = 0, budget: int | None = None) -> None:
        super().__init__(budget)
        self.detector = detector
        self.gen = torch.Generator().manual_seed(seed + 4049)
        self.stats = DetectionStats()
        self.carries_any_value = detector.carries_any_value

    @classmethod
    def describe(cls) -> str:
        return (
            "Query rejection: queries Namba's autoencoder detector flags get a random label "
            "(oracle -> oracle: defense 'rejection', nnmark.attacks.defenses)."
        )

    @classmethod
    def parameter_table(cls) -> list[tuple[str, str, str]]:
        return QueryModification.parameter_table()

    def _predict(self, x: Tensor) -> Tensor:
        info = self.detector.inspect(x)
        scores = info.scores
        flagged = info.flagged
        self.stats.queries += len(x)
        self.stats.flagged += int(flagged.sum())
        self.stats.by_rec += int(info.by_rec.sum())
        self.stats.by_jsd += int(info.by_jsd.sum())
        random_labels = torch.randint(0, scores.shape[1], (len(x),), generator=self.gen)
        refusal = torch.nn.functional.one_hot(random_labels, scores.shape[1]).float()
        return torch.where(flagged[:, None], refusal, scores)


QUERY_ATTACKS.register(QueryRejection.name)(QueryRejection)


@register_defense("rejection")
def rejection(inner: Oracle, images: Tensor | None = None, *, seed: int = 0, **settings: Any) -> Oracle:
    """inputs Namba's autoencoder detector flags get a random label

    Query rejection with Namba's autoencoder detector fitted on ``images``."""
    if images is None:
        raise NnmarkError("query rejection needs the service's own images to learn ordinary queries")
    detector = QueryModification(inner, seed=seed, **settings).fit(images, progress=False)
    return QueryRejection(detector, seed=seed)
