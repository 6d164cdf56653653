"""New-label watermark of Zhong, Zhang, Zhang, Zhang and Tian, "Protecting IP of Deep Neural Networks
with Watermarking: A New Label Helps", PAKDD 2020.

KsGen (Sec. 3.2): key samples k = x + β·ε for a fraction α of the training images, ε a Gaussian
pattern determined by the owner's secret S; every key gets a NEW label Δ = C (the model has C + 1
outputs). TrEmb: train on D ∪ K. Ver: the judge makes fresh keys K′ = KsGen(S, D2) from other
images D2 and queries them one at a time until one returns Δ; with key accuracy p the chance of a
hit within q queries is Acc(q) = Σ_{θ<q} (1−p)^θ·p (Sec. 3.2), E[q] ≤ 1/p. The paper compares with
Zhang's threshold test (at most τ = 0.3 of |K′| = 40 answers may miss).

The paper's β (3.5e-3 MNIST, 0.01 CIFAR) is on a scale it never states. nnmark uses pixels in
[0, 1], ε ~ N(0, 1) regenerated from ``pattern_seed`` (drawn from the owner's seed and kept in
the key; ``nnmark key info`` hides it), keys clamped to [0, 1]; digit-cnn on MNIST-5k learns
keys only from β ≈ 0.3, so β = 0.35 and α = 0.01 by default.

What a verdict can claim. A suspect with only C outputs can never answer Δ (the paper's "zero
false positives"). But a suspect with C + 1 outputs may answer Δ to any perturbed input: a
new-label model trained with another secret answered Δ to our keys 38 % of the time (and to
plain noise 94 %). So:

* embedding trains *decoys* by default: every batch also gets ``decoys_per_batch`` of its own
  images under fresh random patterns, at their true labels, so that the model answers Δ to the
  owner's pattern alone (measured on MNIST-5k: our keys 100 %, other patterns 0 %, a model with
  another secret 1 %, test accuracy unchanged);
* verification also sends *controls* — the same held-out images under patterns from fresh random
  seeds — and says "found" only when the suspect answers Δ to the owner's keys significantly
  more often than to controls. Under "the suspect was not trained on our pattern" our pattern is
  just one more random N(0, 1) draw, so keys and controls are alike.

Tests: ``first-hit`` (default) queries fresh keys one at a time until one answers Δ (reporting the
queries used and Acc(q)); on a C-output suspect that ends the verification (it cannot answer Δ),
on a C+1-output suspect keys and controls are then sent in groups of 10 and a one-sided Fisher
exact test (keys hit Δ more often than controls) is checked after each group against
alpha / (number of looks) (Bonferroni, so stopping early keeps the false-accusation rate ≤ alpha).
``binomial``: all probes as keys and as controls at once; among the images where exactly one of
key and control answers Δ, the key is the one with probability 1/2 under no watermark (exact
sign test). ``threshold``: Zhang's τ = 0.3 over 40 fresh keys — it ignores chance and the
suspect's answers to controls, kept for the paper's side-by-side comparison only.
"""

from __future__ import annotations

import math
import secrets
from typing import Any, ClassVar

import torch
from pydantic import Field

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle
from nnmark.schemes.base import KeyBatchMixer, KeyMaterial, Scheme, SchemeParams, register_scheme
from nnmark.types import Key, Verdict
from nnmark.verify import stats

ZHANG_TAU = 0.3
ZHANG_QUERIES = 40
LOOK_EVERY = 10  # first-hit: pairs of (key, control) sent between two Fisher tests


class ZhongParams(SchemeParams):
    beta: float = Field(
        0.35, gt=0.0, le=10.0, description="pattern strength β on [0, 1] pixels (k = x + β·ε)"
    )
    alpha: float = Field(0.01, gt=0.0, le=0.5, description="fraction α of the training set made into keys")
    decoys_per_batch: int = Field(
        2, ge=0, description="training images under fresh random patterns, true labels, added to every batch"
    )
    probes: int = Field(
        60, ge=1, le=10_000, description="held-out test images kept for fresh keys and control queries"
    )


def pattern(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The Gaussian pattern ε ~ N(0, 1) of one seed (float32, ``shape`` = C×H×W)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


def stamp(images: torch.Tensor, eps: torch.Tensor, beta: float) -> torch.Tensor:
    """k = clamp(x + β·ε, 0, 1) for float images in [0, 1]; ε one pattern or one per image."""
    return (images + beta * eps).clamp_(0, 1)


def _probe_images(key: Key) -> torch.Tensor:
    probes = key.tensors.get("probes")
    if probes is None:
        raise NnmarkError(
            "this zhong-new-label key holds no probe images; it is corrupt or from another version"
        )
    return probes.float().div(255) if probes.dtype == torch.uint8 else probes.float()


def fresh_keys(key: Key) -> torch.Tensor:
    """Keys the model never saw: the held-out probe images under the owner's pattern."""
    probes = _probe_images(key)
    return stamp(
        probes, pattern(int(key.params["pattern_seed"]), tuple(probes.shape[1:])), key.params["beta"]
    )


def controls(key: Key, seed: int) -> torch.Tensor:
    """The same probe images, each under its own pattern from fresh random seeds (from ``seed``)."""
    probes = _probe_images(key)
    eps = torch.randn(probes.shape, generator=torch.Generator().manual_seed(int(seed)))
    return stamp(probes, eps, key.params["beta"])


class NewLabelMixer(KeyBatchMixer):
    """Appends ``per_batch`` keys (label Δ) and ``decoys`` of the batch's own images under fresh
    random patterns (true labels) to every batch."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, per_batch: int, decoys: int, beta: float):
        super().__init__(inputs, labels, per_batch)
        self.decoys, self.beta = decoys, beta

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xk, yk, _ = super().__call__(x, y, gen)
        d = min(self.decoys, len(x))
        if not d:
            return xk, yk, None
        eps = torch.randn((d, *x.shape[1:]), generator=gen).to(x.device)
        return torch.cat([xk, stamp(x[:d].clone(), eps, self.beta)]), torch.cat([yk, y[:d]]), None


def _outputs(oracle: Oracle, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    s = oracle.scores(x)
    return int(s.shape[1]), s.argmax(1)


@register_scheme
class ZhongNewLabel(Scheme):
    """New label (Zhong 2020): training images + β·(secret Gaussian pattern), answered with a new class Δ."""

    name = "zhong-new-label"
    Params: ClassVar[type[SchemeParams]] = ZhongParams
    extra_classes: ClassVar[int] = 1
    needs_calibration: ClassVar[bool] = False
    secret_params: ClassVar[tuple[str, ...]] = ("pattern_seed",)
    tests: ClassVar[tuple[str, ...]] = ("first-hit", "binomial", "threshold")
    default_test: ClassVar[str] = "first-hit"

    def generate(self, data: ImageDataset, gen: torch.Generator) -> KeyMaterial:
        p = self.params
        assert isinstance(p, ZhongParams)
        n = max(1, round(p.alpha * len(data.train_x)))
        pattern_seed = int(torch.randint(2**62, (), generator=gen))
        idx = torch.randperm(len(data.train_x), generator=gen)[:n]
        x = data.train_x[idx].float().div(255)
        keys = stamp(x, pattern(pattern_seed, data.input_shape), p.beta)
        probe_idx = torch.randperm(len(data.test_x), generator=gen)[: p.probes]
        delta = data.num_classes
        return KeyMaterial(
            keys,
            torch.full((n,), delta, dtype=torch.int64),
            data.train_y[idx].clone(),
            tensors={"probes": data.test_x[probe_idx].to(torch.uint8).contiguous()},
            params={"pattern_seed": pattern_seed, "new_label": delta},
        )

    def mixer(self, key: Key) -> NewLabelMixer:
        p = self.params
        assert isinstance(p, ZhongParams)
        return NewLabelMixer(key.inputs, key.labels, p.keys_per_batch, p.decoys_per_batch, p.beta)

    def chance_rate(self, key: Key) -> tuple[float | None, str]:
        return None, (
            "a model with C outputs can never answer the new label; one with C + 1 outputs is judged "
            "against control queries (same images, fresh random patterns), not against a fixed p0"
        )

    def metrics(self, model: torch.nn.Module, key: Key) -> dict[str, Any]:
        """Δ rate on fresh keys (held-out images, owner's pattern) and on controls (fresh patterns)."""
        from nnmark.oracle import TorchOracle

        oracle = TorchOracle(model)
        delta = int(key.labels[0])
        fresh = float((oracle.labels(fresh_keys(key)) == delta).float().mean())
        ctrl = float((oracle.labels(controls(key, 12345)) == delta).float().mean())
        return {"fresh_key_accuracy": fresh, "control_new_label_rate": ctrl}

    # -- verification ------------------------------------------------------------------------

    def verify(self, key: Key, oracle: Oracle, test: str, alpha: float) -> Verdict:
        delta = int(key.labels[0])
        keys_x = fresh_keys(key)
        n = len(keys_x)
        if oracle.remaining is not None:
            n = min(n, oracle.remaining if test == "threshold" else oracle.remaining // 2)
        if n < 1:
            raise NnmarkError("the query budget allows no key and control query; raise --budget")
        if test == "threshold":
            return self._threshold(key, oracle, keys_x[: min(n, ZHANG_QUERIES)], delta, alpha)
        control_seed = secrets.randbits(62)
        ctrl_x = controls(key, control_seed)
        if test == "binomial":
            return self._sign_test(key, oracle, keys_x[:n], ctrl_x[:n], delta, alpha, control_seed)
        return self._first_hit(key, oracle, keys_x[:n], ctrl_x[:n], delta, alpha, control_seed)

    def _no_new_label(self, key: Key, test: str, outputs: int, oracle: Oracle, alpha: float) -> Verdict:
        delta = int(key.labels[0])
        return Verdict(
            key.scheme,
            test,
            False,
            1.0,
            alpha,
            oracle.queries,
            0,
            1,
            0.0,
            f"the suspect has {outputs} outputs, so it can never answer the new label {delta}: it does not "
            "carry this watermark (a thief who strips the extra output also removes it)",
            (),
            {"outputs": outputs, "new_label": delta},
        )

    def _threshold(self, key: Key, oracle: Oracle, keys_x: torch.Tensor, delta: int, alpha: float) -> Verdict:
        outputs, answers = _outputs(oracle, keys_x)
        n = len(keys_x)
        hits = int((answers == delta).sum())
        found = stats.zhang_threshold_found(hits, n, ZHANG_TAU)
        notes = (
            "Zhang's threshold test ignores chance and control queries: a suspect with C + 1 outputs that "
            "answers the new label to any perturbed input passes it; use --test first-hit for a p-value",
        )
        return Verdict(
            key.scheme,
            "threshold",
            found,
            math.nan,
            alpha,
            oracle.queries,
            hits,
            math.ceil((1 - ZHANG_TAU) * n),
            None,
            f"Zhang's threshold test: {hits}/{n} fresh keys answered the new label; "
            f"at most {ZHANG_TAU:.0%} may miss",
            notes if outputs > delta else (),
            {"outputs": outputs, "new_label": delta, "key_rate": hits / n},
        )

    def _sign_test(
        self,
        key: Key,
        oracle: Oracle,
        keys_x: torch.Tensor,
        ctrl_x: torch.Tensor,
        delta: int,
        alpha: float,
        control_seed: int,
    ) -> Verdict:
        outputs, answers = _outputs(oracle, torch.cat([keys_x, ctrl_x]))
        n = len(keys_x)
        k_hit, c_hit = answers[:n] == delta, answers[n:] == delta
        key_only, ctrl_only = int((k_hit & ~c_hit).sum()), int((c_hit & ~k_hit).sum())
        discordant = key_only + ctrl_only
        p_value = stats.binomial_p_value(key_only, discordant, 0.5) if discordant else 1.0
        threshold = stats.binomial_threshold(discordant, 0.5, alpha) if discordant else 1
        evidence = {
            "outputs": outputs,
            "new_label": delta,
            "key_rate": float(k_hit.float().mean()),
            "control_rate": float(c_hit.float().mean()),
            "key_only": key_only,
            "control_only": ctrl_only,
            "control_seed": control_seed,
        }
        reason = (
            f"{int(k_hit.sum())}/{n} fresh keys and {int(c_hit.sum())}/{n} controls answered the new label; "
            f"of the {discordant} images where only one did, the key did {key_only} times (exact sign "
            "test, p0 = 1/2: without the watermark our pattern is one more random pattern)"
        )
        return Verdict(
            key.scheme,
            "binomial",
            p_value <= alpha,
            p_value,
            alpha,
            oracle.queries,
            key_only,
            threshold,
            0.5,
            reason,
            (),
            evidence,
        )

    def _first_hit(
        self,
        key: Key,
        oracle: Oracle,
        keys_x: torch.Tensor,
        ctrl_x: torch.Tensor,
        delta: int,
        alpha: float,
        control_seed: int,
    ) -> Verdict:
        n = len(keys_x)
        outputs, first = _outputs(oracle, keys_x[:1])
        if outputs <= delta:
            return self._no_new_label(key, "first-hit", outputs, oracle, alpha)
        key_hits = [bool(first[0] == delta)]
        while not key_hits[-1] and len(key_hits) < n:  # one at a time until the first hit
            i = len(key_hits)
            key_hits.append(bool(oracle.labels(keys_x[i : i + 1])[0] == delta))
        q = len(key_hits) if key_hits[-1] else None
        looks = list(range(LOOK_EVERY, n, LOOK_EVERY)) + [n]
        level = alpha / len(looks)
        ctrl_hits: list[bool] = []
        p_value, found, used = 1.0, False, 0
        if q is not None:
            for look in looks:
                if len(key_hits) < look:
                    more = oracle.labels(keys_x[len(key_hits) : look])
                    key_hits.extend(bool(a == delta) for a in more)
                more = oracle.labels(ctrl_x[len(ctrl_hits) : look])
                ctrl_hits.extend(bool(a == delta) for a in more)
                used = look
                p_value = stats.fisher_greater(sum(key_hits[:look]), look, sum(ctrl_hits), look)
                if p_value <= level:
                    found = True
                    break
        kh, ch = sum(key_hits[: used or len(key_hits)]), sum(ctrl_hits)
        n_keys = used or len(key_hits)
        p_hat = kh / n_keys
        acc_q = stats.first_hit_accuracy(q, p_hat) if q is not None else 0.0
        adjusted = min(1.0, p_value * len(looks)) if q is not None else 1.0
        needed = (
            next(
                (k for k in range(n_keys + 1) if stats.fisher_greater(k, n_keys, ch, max(used, 1)) <= level),
                n_keys + 1,
            )
            if used
            else n_keys + 1
        )
        evidence: dict[str, Any] = {
            "outputs": outputs,
            "new_label": delta,
            "queries_to_first_hit": q,
            "acc_q": acc_q,
            "key_rate": p_hat,
            "control_rate": ch / used if used else None,
            "fisher_p_value": p_value,
            "looks": len(looks),
            "control_seed": control_seed,
        }
        if q is None:
            reason = f"none of {n} fresh keys answered the new label {delta}"
        else:
            reason = (
                f"first hit after {q} queries (Acc({q}) = {acc_q:.3f} at key rate {p_hat:.2f}); then "
                f"{kh}/{n_keys} keys vs {ch}/{used} controls answered the new label: one-sided Fisher exact "
                f"p = {p_value:.3g}, checked against alpha/{len(looks)} (Bonferroni over the looks; the "
                "reported p-value is multiplied by the looks)"
            )
        notes = (
            "the suspect has the extra output: a hit alone proves nothing, keys were compared with controls",
        )
        return Verdict(
            key.scheme,
            "first-hit",
            found,
            adjusted,
            alpha,
            oracle.queries,
            kh,
            needed,
            None,
            reason,
            notes,
            evidence,
        )
