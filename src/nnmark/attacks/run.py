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

from nnmark.attacks.base import ATTACKS, Claim, ClaimAttack, attacker_share
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
    data: str,
    config: TrainConfig,
    *,
    settings: dict[str, Any] | None = None,
    attacker_fraction: float = 0.1,
    keys: Sequence[str | Path] = (),
    owner: str | Path | None = None,
    data_dir: str | None = None,
    force: bool = False,
) -> AttackResult:
    """Run attack ``name`` on ``model_run`` with the attacker's share of ``data``, write ``out``, and
    verify ``keys`` (and a claim attack's own key) on the attacked model, in owner mode
    (:func:`nnmark.keyfile.verify_context`: p0 from the key owner's own signed calibration).

    ``owner``: the attacker's ``STEM.key`` for claim attacks (default: a new identity, whose public
    key is written to ``out/attacker.pub``).
    """
    from nnmark.attacks.query import QUERY_ATTACKS
    from nnmark.data import load_dataset
    from nnmark.identity import load_owner, save_public
    from nnmark.io import KEY_FILE, METRICS_FILE, load_spec, new_folder, write_json, write_model_files
    from nnmark.keyfile import load_key, save_key, verify_context
    from nnmark.oracle import TorchOracle
    from nnmark.training import evaluate
    from nnmark.workflow import load_model

    if name in QUERY_ATTACKS and name not in ATTACKS:
        raise NnmarkError(
            f"{name} is a query attack (it changes answers, not the model); run it as a server with "
            "`nnmark serve --model RUN --defense autoencoder` and verify through --url"
        )
    attack = ATTACKS.get(name)(**(settings or {}))
    given = [(Path(p), load_key(p)) for p in keys]
    spec = load_spec(model_run)
    dataset = load_dataset(data, data_dir)
    victim = load_model(model_run)
    share = attacker_share(dataset, attacker_fraction, config.seed)
    out = Path(out)
    claim = None
    with new_folder(out, force) as tmp:
        if isinstance(attack, ClaimAttack):
            signer = load_owner(owner) if owner else None
            victim_keys = [k for _, k in given]
            claim = attack.claim(victim, spec, share, config, attacker=signer, victim_keys=victim_keys)
            attacked = claim.model
        else:
            attacked = attack(victim, spec, share, config)
        metrics = {
            "test_accuracy": evaluate(attacked, dataset.test_x, dataset.test_y),
            "attack": name,
            "attacked": str(model_run),
            **(claim.metrics if claim else {}),
        }
        write_model_files(tmp, attacked, spec)
        write_json(tmp / METRICS_FILE, metrics)
        if claim is not None:
            save_key(tmp / KEY_FILE, claim.key, claim.signer)
            if owner is None:
                save_public(claim.signer.name, claim.signer.public_key_pem, tmp / ATTACKER_PUB)
    if claim is not None:
        given.append((out / KEY_FILE, load_key(out / KEY_FILE)))  # as written: signed, with its commitment
    victim_accuracy = evaluate(victim, dataset.test_x, dataset.test_y)
    # owner mode: each key's owner checks the attacked model (p0 from the key's own calibration, or
    # calibration.json signed by the key's owner; an unsigned one is ignored with a note)
    verdicts = [
        (p, k, _verdict(k, TorchOracle(attacked), verify_context(p, k, data_dir=data_dir))) for p, k in given
    ]
    return AttackResult(out, attacked, metrics, victim_accuracy, claim, verdicts)


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
