"""Attack a run folder and write the attacked model as a new one (``nnmark attack``).

The new folder is built in one piece (:func:`nnmark.io.new_folder`): the model, ``metrics.json``
and, for claim attacks, the attacker's signed ``watermark.key`` and ``attacker.pub`` appear
together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nnmark.attacks.base import ATTACKS, Claim, ClaimAttack, with_victim_ew
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.training import TrainConfig
from nnmark.types import Key, Verdict

ATTACKER_PUB = "attacker.pub"


@dataclass(frozen=True)
class AttackResult:
    out: Path
    model: torch.nn.Module
    metrics: dict[str, Any]
    victim_accuracy: float
    claim: Claim | None
    verdicts: list[tuple[Path, Key, Verdict]]
    """(key path, key, verdict on the attacked model): the ``keys`` given, then the claim's own key."""


def attack_run(
    name: str,
    model_run: str | Path,
    out: str | Path,
    data: str | ImageDataset,
    config: TrainConfig,
    *,
    settings: dict[str, Any] | None = None,
    attacker_fraction: float = 0.1,
    attacker_data: str | ImageDataset | None = None,
    keys: Sequence[str | Path] = (),
    owner: str | Path | None = None,
    data_dir: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> AttackResult:
    """Run attack ``name`` on ``model_run`` with the attacker's data, write ``out``, and verify
    ``keys`` (and a claim attack's own key) on the attacked model, in owner mode
    (:func:`nnmark.keyfile.verify_context`: p0 from the key owner's own signed calibration).

    The attacker's data (:func:`nnmark.attacks.data.attacker_data`) is ``attacker_fraction`` × the
    owner's training-set size, from ``data``'s held-out split or from the dataset ``attacker_data``;
    never one of the owner's training images. Accuracy before and after is measured on held-out
    images the attacker does not hold. ``config`` is the attacker's training set-up; where the
    run records the owner's recipe (``metrics.json`` ``config``) its optimiser, lr, batch size and
    momentum replace ``config``'s (the thief copies the owner's set-up, Li 2019 Sec. 6), unless
    ``settings`` names them. ``metrics.json`` records the attacker's cost (accuracy before and
    after, seconds, queries used), the attacker's data, and every verdict.

    Attacks that change the stolen model's weights (:class:`nnmark.attacks.base.EwParams`: prune,
    fine-prune, neuron-prune, finetune, transfer) run with the model's exponential-weighting layers
    in place at the temperature the victim was embedded with (its key's ``ew``: the f_K Namba's
    thief holds, Sec. 5.2), unless ``settings`` gives ``ew`` (``ew=0``: the folded weights as plain
    layers); ``metrics.json`` records ``ew`` and ``ew_source``.

    ``owner``: the attacker's ``STEM.key`` for claim attacks (default: a new identity, whose public
    key is written to ``out/attacker.pub``).
    """
    import hashlib
    import time
    from dataclasses import replace

    from nnmark.attacks.base import owner_recipe
    from nnmark.attacks.data import attacker_data as draw_attacker_data
    from nnmark.attacks.query import QUERY_ATTACKS
    from nnmark.identity import load_owner, save_public
    from nnmark.io import (
        KEY_FILE,
        METRICS_FILE,
        MODEL_FILE,
        load_metrics,
        load_spec,
        new_folder,
        write_json,
        write_model_files,
    )
    from nnmark.keyfile import load_key, save_key, verify_context
    from nnmark.oracle import TorchOracle
    from nnmark.training import evaluate
    from nnmark.workflow import fingerprint, load_model, resolve_data

    if name in QUERY_ATTACKS and name not in ATTACKS:
        raise NnmarkError(
            f"{name} is a query attack (it changes answers, not the model); run it as a server with "
            "`nnmark serve --model RUN --defense autoencoder` and verify through --url"
        )
    attack_cls = ATTACKS.get(name)
    settings, ew_source = with_victim_ew(attack_cls, dict(settings or {}), model_run)
    attack = attack_cls(**settings)
    given = [(Path(p), load_key(p)) for p in keys]
    attack.evaluator_keys = [k for _, k in given]
    spec = load_spec(model_run)
    dataset = resolve_data(data, data_dir)
    other = resolve_data(attacker_data, data_dir) if attacker_data is not None else None
    drawn = draw_attacker_data(dataset, attacker_fraction, config.seed, other)
    share = drawn.data
    attack.owner_data = dataset
    try:
        run_metrics = load_metrics(model_run)
    except NnmarkError:
        run_metrics = {}
    recorded = owner_recipe(run_metrics)
    if recorded:
        config = replace(config, **recorded)
    owner_epochs = run_metrics.get("epochs")
    if isinstance(owner_epochs, int) and owner_epochs >= 1:
        config = replace(config, epochs=owner_epochs)  # attacks that train from scratch copy it (distill)
    victim_file = Path(model_run) / MODEL_FILE
    victim_sha = hashlib.sha256(victim_file.read_bytes()).hexdigest()
    victim = load_model(model_run)
    victim_print = fingerprint(victim)
    victim_accuracy = evaluate(victim, share.test_x, share.test_y)
    out = Path(out)
    claim = None
    verdicts: list[tuple[Path, Key, Verdict]] = []
    with new_folder(out, force) as tmp:
        t0 = time.perf_counter()
        if isinstance(attack, ClaimAttack):
            signer = load_owner(owner) if owner else None
            victim_keys = [k for _, k in given]
            claim = attack.claim(
                victim, spec, share, config, attacker=signer, victim_keys=victim_keys, progress=progress
            )
            attacked = claim.model
        else:
            attacked = attack(victim, spec, share, config, progress)
        seconds = time.perf_counter() - t0
        if fingerprint(victim) != victim_print:
            raise RuntimeError(f"attack {name} changed the victim model in memory")  # a bug, not a user error
        write_model_files(tmp, attacked, spec)
        if claim is not None:
            save_key(tmp / KEY_FILE, claim.key, claim.signer)
            if owner is None:
                save_public(claim.signer.name, claim.signer.public_key_pem, tmp / ATTACKER_PUB)
            given.append(
                (out / KEY_FILE, load_key(tmp / KEY_FILE))
            )  # as written: signed, with its commitment
        # owner mode: each key's owner checks the attacked model (p0 from the key's own calibration,
        # or calibration.json signed by the key's owner; an unsigned one is ignored with a note)
        for p, k in given:
            where = tmp / KEY_FILE if claim is not None and p == out / KEY_FILE else p  # not yet at ``out``
            context = verify_context(where, k, data_dir=data_dir)
            verdicts.append((p, k, _verdict(k, TorchOracle(attacked), context)))
        accuracy = evaluate(attacked, share.test_x, share.test_y)
        metrics = {
            "attack": name,
            "attacked": str(model_run),
            "settings": attack.params.model_dump(),
            "test_accuracy": accuracy,
            "accuracy_before": victim_accuracy,
            "accuracy_after": accuracy,
            "accuracy_measured_on": f"{len(share.test_x)} held-out images the attacker does not hold",
            "seconds": round(seconds, 3),
            "queries": int(attack.report.get("queries", 0)),
            "attacker_data": drawn.info,
            "recipe": {
                "source": "owner's run (metrics.json)"
                if recorded
                else "attacker's (nnmark defaults / --set)",
                **{
                    f: getattr(config, f)
                    for f in ("optimizer", "lr", "batch_size", "momentum", "weight_decay", "epochs")
                },
            },
            "victim_model_sha256": victim_sha,
            **{k: v for k, v in attack.report.items() if k != "queries"},
            **({"ew_source": ew_source} if ew_source else {}),
            **(claim.metrics if claim else {}),
            "verdicts": [{"key": str(p), "scheme": k.scheme, **verdict_summary(v)} for p, k, v in verdicts],
        }
        write_json(tmp / METRICS_FILE, metrics)
    if hashlib.sha256(victim_file.read_bytes()).hexdigest() != victim_sha:
        raise RuntimeError(f"attack {name} changed {victim_file}")  # a bug, not a user error
    return AttackResult(out, attacked, metrics, victim_accuracy, claim, verdicts)


def verdict_summary(v: Verdict) -> dict[str, Any]:
    """A key's verdict as ``metrics.json`` records it: the outcome, its p-value, where p0 came from."""
    p0 = v.decided_by.get("p0") or {}
    return {
        "watermarked": v.watermarked,
        "p_value": v.p_value,
        "p0": p0.get("value", v.p0),
        "p0_source": p0.get("source"),
        "matches": v.matches,
        "queries": v.queries,
        "threshold": v.threshold,
        "test": v.test,
    }


def _verdict(key: Key, oracle: Any, context: Any) -> Verdict:
    """The key's verdict on the attacked model; a key the verifier refuses (e.g. a forger's key whose
    images do not follow from its secret) is reported as refused, not as a failed attack."""
    import math

    from nnmark.errors import KeyTamperedError
    from nnmark.verify.verifier import verify

    try:
        return verify(key, oracle, context=context)
    except KeyTamperedError as e:
        return Verdict(
            key.scheme, "refused", None, math.nan, context.alpha, 0, 0, 0, reason=f"key refused: {e}"
        )
