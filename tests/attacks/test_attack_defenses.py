"""Query defenses as oracle wrappers (``nnmark.attacks.defenses``): the registry, what each
transform does to a query, that queries are counted, and query rejection's random answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnmark.attacks.defenses import defenses, wrap_oracle
from nnmark.attacks.query.autoencoder import ConvAutoencoder, QueryModification
from nnmark.attacks.query.rejection import QueryRejection
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle, TorchOracle


class Echo(Oracle):
    """An oracle whose scores are its inputs' pixels: shows exactly what reached the model."""

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_registry_names_every_defense() -> None:
    assert {"none", "autoencoder", "rejection", "jpeg", "blur", "noise"} <= set(defenses())
    inner = Echo()
    assert wrap_oracle("none", inner) is inner
    with pytest.raises(NnmarkError, match="unknown defense"):
        wrap_oracle("jpg", inner)
    with pytest.raises(NnmarkError, match="bad parameter"):
        wrap_oracle("jpeg", inner, quality=500)
    with pytest.raises(NnmarkError, match="own images"):
        wrap_oracle("rejection", inner)


def test_preprocessing_changes_what_the_model_sees() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=gen) * 0.2 + 0.4
    x[:, :, 10:12, 10:12] = 1.0  # a small bright stamp
    for name in ("jpeg", "blur", "noise"):
        inner = Echo()
        wrapped = wrap_oracle(name, inner, seed=1)
        seen = wrapped.scores(x).view_as(x)
        assert wrapped.queries == 4 and inner.queries == 4
        assert not torch.allclose(seen, x, atol=1e-3), name
        assert (seen - x).abs().mean() < 0.15, name  # mild on ordinary pixels
        assert seen.min() >= 0 and seen.max() <= 1, name
    blurred = wrap_oracle("blur", Echo()).scores(x).view_as(x)
    assert blurred[:, :, 10:12, 10:12].max() < 0.9  # the stamp is spread out
    flat = torch.full((1, 1, 28, 28), 0.5)
    assert torch.allclose(wrap_oracle("blur", Echo()).scores(flat).view_as(flat), flat, atol=1e-6)
    lam = torch.full((1, 1, 28, 28), 2000.0)  # a null-embedding pixel value does not survive clipping
    assert wrap_oracle("noise", Echo(), std=1e-6).scores(lam).max() <= 1
    again = wrap_oracle("noise", Echo(), seed=1).scores(x)
    assert torch.equal(again, wrap_oracle("noise", Echo(), seed=1).scores(x))  # seeded


def test_rejection_answers_flagged_queries_at_random() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    detector = QueryModification(model)
    detector.autoencoder = ConvAutoencoder((1, 28, 28)).eval()
    detector.tau_rec, detector.tau_jsd = 0.0, math.inf  # every query flagged by its reconstruction loss
    rejecting = QueryRejection(detector, seed=3)
    x = torch.rand(200, 1, 28, 28)
    answers = rejecting.scores(x)
    assert torch.equal(answers.sum(1), torch.ones(200)) and set(answers.unique().tolist()) == {0.0, 1.0}
    labels = answers.argmax(1)
    assert len(labels.unique()) == 10  # uniform over the classes, not the model's answer
    assert rejecting.stats.flagged == 200
    detector.tau_rec = math.inf  # nothing flagged: the model's own answers
    assert torch.equal(rejecting.labels(x), TorchOracle(model).labels(x))


def test_query_modification_defaults_are_namba_table_5() -> None:
    p = QueryModification(nn.Identity()).params
    assert (p.epochs, p.lr, p.batch_size, p.folds, p.quantile, p.rule) == (400, 1e-3, 100, 10, 0.95, "both")
