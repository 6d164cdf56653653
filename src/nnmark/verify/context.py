"""What the verifier brings to a verification, and where each deciding number comes from.

DESIGN.md, "Who decides a verdict": the claimant supplies the key and nothing else; the protocol
(the scheme's name and version) fixes the test and its parameters; the verifier draws what can be
drawn (probe images from data it names, the order of queries, control queries), measures p0 on
reference models it names, and chooses α. A :class:`VerifyContext` carries the verifier's part;
:meth:`VerifyContext.chance_rate` says where p0 comes from:

* ``protocol`` — the key's labels were drawn so that p0 follows exactly (random labels);
* ``verifier`` — measured now on ``--reference`` models, or a calibration signed by a key the
  verifier trusts (``--trust``);
* ``claimant`` — the calibration signed into the owner's own key (owner mode only, never with
  ``--judge``); the verdict says so and recommends a judge's run.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nnmark.errors import NnmarkError
from nnmark.verify import stats

if TYPE_CHECKING:
    from nnmark.data.base import ImageDataset
    from nnmark.types import Calibration, Key

PROTOCOL, VERIFIER, CLAIMANT, SUSPECT = "protocol", "verifier", "claimant", "suspect"


@dataclass(frozen=True)
class ChanceRate:
    """p0 and its provenance; ``p0`` None means no verdict is possible (``how`` says why)."""

    p0: float | None
    source: str
    how: str
    #: the bound's own chance of being too low (0 when p0 is exact)
    error: float = 0.0
    rates: tuple[float, ...] = ()


@dataclass
class VerifyContext:
    """The verifier's choices for one verification (see module docstring)."""

    alpha: float = 1e-6
    #: ``--judge``: nothing of the claimant's but the key decides (no claimant calibration)
    judge: bool = False
    #: clean reference models the verifier names: (module, description)
    references: Sequence[tuple[torch.nn.Module, str]] = ()
    #: calibrations signed by keys the verifier trusts: (calibration, signer name)
    trusted: Sequence[tuple[Calibration, str]] = ()
    #: a calibration made later by the key's own owner (``calibration.json`` signed by the owner)
    owner_calibration: Calibration | None = None
    #: data the verifier draws probe images from (``--probe-data``); None: the key's dataset
    probe_data: ImageDataset | str | None = None
    data_dir: str | None = None
    #: CSPRNG for everything the verifier draws (probe choice, query order, control patterns)
    rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom)
    #: notes collected while verifying (e.g. an ignored unsigned calibration.json)
    notes: list[str] = field(default_factory=list)
    #: key inputs already sent to some suspect (:mod:`nnmark.verify.spend`): sent last
    spent: frozenset[int] = frozenset()
    #: indices of the key inputs this verification sent (filled by the verifier)
    sent_keys: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # reference models the verifier names make it a judge's run (``--reference`` implies ``--judge``)
        if self.references:
            self.judge = True
            self.references = distinct_models(self.references)
        if isinstance(self.probe_data, str):
            from nnmark.data import DATASETS

            # an unknown --probe-data is an error even where no probes are drawn
            DATASETS.get(self.probe_data)

    # -- probes ----------------------------------------------------------------------------

    def probe_dataset(self, key: Key) -> ImageDataset:
        """The dataset probes are drawn from: ``probe_data``, else the dataset the key names."""
        from nnmark.data import load_dataset
        from nnmark.data.base import ImageDataset

        if isinstance(self.probe_data, ImageDataset):
            data = self.probe_data
        else:
            name = self.probe_data or str(key.params.get("dataset") or "")
            if not name or name == "own":
                raise NnmarkError(
                    f"{key.scheme} verification draws probe images from data the verifier names, and this "
                    "key names no registered dataset: pass --probe-data D (Python: probe_data=ImageDataset)"
                )
            data = load_dataset(name, self.data_dir)
        if tuple(data.input_shape) != tuple(key.input_shape):
            raise NnmarkError(
                f"probe data {data.name} has {tuple(data.input_shape)} images but the key is for "
                f"{tuple(key.input_shape)}; pass --probe-data with data of the key's task"
            )
        return data

    def key_dataset(self, key: Key) -> tuple[ImageDataset | None, str]:
        """The training split the key's images were drawn from, as the verifier itself loads it (the
        registered dataset the key names, from ``data_dir``; or ``probe_data`` given as a dataset),
        to re-derive them from the secret; (None, why) when it has no such copy. The key stores the
        split's fingerprint, so other data of the same name is never used."""
        from nnmark import keysecret
        from nnmark.data import DATASETS, load_dataset
        from nnmark.data.base import ImageDataset

        name = str(key.params.get("dataset") or "")
        want = key.params.get(keysecret.DATASET_PARAM)
        candidates: list[ImageDataset] = []
        if isinstance(self.probe_data, ImageDataset):
            candidates.append(self.probe_data)
        if name in DATASETS:
            try:
                candidates.append(load_dataset(name, self.data_dir))
            except NnmarkError as e:
                self.notes.append(f"dataset {name} is not available to the verifier ({e})")
        for data in candidates:
            if tuple(data.input_shape) != tuple(key.input_shape):
                continue
            if want is None or keysecret.dataset_fingerprint(data) == want:
                return data, f"and dataset {data.name}"
        if not candidates:
            return None, f"the verifier has no copy of the key's dataset ({name or 'none'!r}: --data-dir)"
        return None, f"the verifier's copy of {name or 'the data'} is not the data the key was made from"

    def draw_probes(self, key: Key, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """``count`` held-out images (float32 in [0, 1]) and their labels, chosen by the verifier's
        CSPRNG from the probe dataset's test split; returns (images, labels, dataset name)."""
        data = self.probe_dataset(key)
        n = len(data.test_x)
        if n == 0:
            raise NnmarkError(f"probe data {data.name} has no test images to draw probes from")
        idx = torch.tensor(self.rng.sample(range(n), min(count, n)), dtype=torch.int64)
        return data.test_x[idx].float().div(255), data.test_y[idx].long().clone(), data.name

    def permutation(self, n: int, spendable: bool = False) -> torch.Tensor:
        """A uniformly random order of ``n`` queries (the verifier's CSPRNG); for key inputs that can
        be spent (``spendable``), in an owner's check only, the unspent ones first, each group in
        random order (:meth:`spend_orders`)."""
        order = list(range(n))
        self.rng.shuffle(order)
        if spendable and self.spend_orders(n):
            order = [i for i in order if i not in self.spent] + [i for i in order if i in self.spent]
        return torch.tensor(order, dtype=torch.int64)

    def spend_orders(self, n: int) -> bool:
        """Whether the spend log (:mod:`nnmark.verify.spend`) orders ``n`` key inputs. It is an
        unsigned file beside the key: whoever writes it chooses which keys an SPRT, the threshold
        test's 40 or a budget see first, so after querying the suspect a forger lists every key it
        misses as spent (hostile review 8: an innocent model found, p = 9.5e-7). A judge's run draws
        the order alone; an owner's check uses the log, and the verdict names it as the claimant's."""
        return not self.judge and 0 < sum(1 for i in self.spent if 0 <= i < n) < n

    def seed(self) -> int:
        """A fresh 63-bit seed from the verifier's CSPRNG (e.g. for control patterns)."""
        return self.rng.getrandbits(63)

    # -- p0 --------------------------------------------------------------------------------

    def chance_rate(
        self, key: Key, inputs: torch.Tensor, labels: torch.Tensor, exact: tuple[float, str] | None = None
    ) -> ChanceRate:
        """Where p0 for matches of ``inputs`` against ``labels`` comes from (module docstring).

        ``exact``: (p0, why) when the scheme's labels make p0 exact; then nothing is measured.
        """
        if exact is not None:
            return ChanceRate(exact[0], PROTOCOL, exact[1])
        if self.references:
            if len(self.references) < stats.MIN_REFERENCES:
                return ChanceRate(
                    None,
                    VERIFIER,
                    f"{len(self.references)} distinct reference model(s) given; p0 needs at least "
                    f"{stats.MIN_REFERENCES} to bound an unseen clean model (add --reference RUN)",
                )
            from nnmark.oracle import TorchOracle

            rates = tuple(
                float((TorchOracle(m).labels(inputs) == labels).float().mean()) for m, _ in self.references
            )
            bound = stats.bound_p0(rates, len(labels))
            names = ", ".join(d for _, d in self.references)
            return ChanceRate(
                bound.p0,
                VERIFIER,
                f"measured now on {len(rates)} reference models the verifier named ({names}): {bound.method}",
                stats.CALIBRATION_ERROR,
                rates,
            )
        for trusted, signer in self.trusted:
            return self._from_calibration(trusted, VERIFIER, f"calibration signed by trusted {signer}")
        if self.judge:
            return ChanceRate(
                None,
                VERIFIER,
                "judge mode uses no calibration of the claimant's: name clean reference models with "
                "--reference RUN (at least 3) or trust a calibration's signer with --trust STEM.pub",
            )
        calibration = self.owner_calibration or key.calibration
        if calibration is not None:
            where = (
                "calibration.json signed by the key's owner"
                if self.owner_calibration
                else ("the calibration inside the claimant's key")
            )
            return self._from_calibration(calibration, CLAIMANT, where, len(labels))
        return ChanceRate(
            None,
            VERIFIER,
            "p0 must be measured on clean models: pass --reference RUN... (at least 3 clean models), or "
            "embed with --calibrate N, or run "
            "`nnmark calibrate --key KEY --model CLEAN_RUN... --signer STEM.key`",
        )

    @staticmethod
    def _from_calibration(
        calibration: Calibration, source: str, where: str, most_queries: int | None = None
    ) -> ChanceRate:
        """p0 from a stored calibration. The claimant's is checked and never credited with more
        measurements than the queries being judged (``most_queries``): a hand-written "three clean
        models matched 0 of 100,000" would otherwise make any p0 it likes."""
        rates, queries = calibration.rates, int(calibration.queries)
        if queries < 1 or any(not 0.0 <= r <= 1.0 for r in rates):
            return ChanceRate(
                None, source, f"{where} is not a measurement (rates outside [0, 1] or no queries)"
            )
        if most_queries is not None and queries > most_queries:
            queries = most_queries
            where += f" (credited with {most_queries} queries per model, the number judged now)"
        if len(calibration.rates) < stats.MIN_REFERENCES:
            return ChanceRate(
                None,
                source,
                f"{where} rests on {len(calibration.rates)} clean model(s); at least {stats.MIN_REFERENCES} "
                "are needed (recalibrate, or pass --reference RUN...)",
            )
        # recompute the bound from the rates: a stored p0 is a claim, the rates are the measurement
        bound = stats.bound_p0(rates, queries)
        return ChanceRate(
            bound.p0, source, f"{where}: {bound.method}", stats.CALIBRATION_ERROR, calibration.rates
        )


def distinct_models(models: Sequence[tuple[torch.nn.Module, str]]) -> list[tuple[torch.nn.Module, str]]:
    """Reference models with identical weights counted once: the same clean model named three times
    says nothing about the spread between clean models."""
    from nnmark.workflow import fingerprint

    seen: set[str] = set()
    out = []
    for model, description in models:
        fp = fingerprint(model) if model.state_dict() else f"object {id(model)}"
        if fp not in seen:
            seen.add(fp)
            out.append((model, description))
    return out


def number(value: Any, source: str, how: str = "") -> dict[str, Any]:
    """One entry of :attr:`~nnmark.types.Verdict.decided_by`."""
    out: dict[str, Any] = {"value": value, "source": source}
    if how:
        out["how"] = how
    return out


def guarantee(alpha: float, chance: ChanceRate | None) -> str:
    """The false-accusation guarantee in words."""
    if chance is None or chance.error == 0:
        return f"an innocent model is called watermarked with probability at most alpha = {alpha:g}"
    return (
        f"an innocent model is called watermarked with probability at most alpha + {chance.error:g} = "
        f"{alpha + chance.error:g} (alpha, plus the chance that the calibration bound on p0 is too low: "
        f"p0 is a {1 - chance.error:.1%} bound on an unseen clean model's rate under a beta model of clean "
        f"models' rates, fitted to {len(chance.rates)} of them); p0 came from the {chance.source}"
    )
