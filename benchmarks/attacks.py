"""What each removal attack and query defense does to each scheme (issue 9), one seed.

    python benchmarks/attacks.py [--schemes label-change adi zhang-content zhang-noise] [--epochs 5]
        [--attacker-fraction 0.1] [--quick]

The owner embeds each scheme into a digit-cnn on MNIST-5k (all 4,000 training images); the
thief holds ``--attacker-fraction`` × 4,000 images from the held-out split (never the owner's)
and every attack runs with its paper's defaults through ``nnmark.attacks.run.attack_run``
(finetune: FTAL, the owner's optimiser, 100 epochs; prune: Namba's sweep q = 0 … 0.9, 10
retraining epochs each; neuron-prune: half the units; fine-prune: Liu's procedure; distill: a
fresh model on the victim's labels). Query defenses wrap the watermarked model as an oracle,
fitted on the thief's images (JPEG q75, blur σ1, noise σ0.1; the pixel-statistics ``reject``;
Namba's autoencoder detector, paper settings, for query modification and query rejection).
Accuracy is measured on the 600 held-out images the thief does not hold. Printed: test accuracy,
watermark accuracy (the scheme's own measure) and the owner-mode verdict (found / not found / no
verdict) per scheme and attack. ``--quick`` cuts epochs for a smoke run.

The per-seed loop is :func:`seed_records` (``benchmarks/robustness.py`` runs it over seeds).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nnmark.attacks.data import attacker_data
from nnmark.attacks.defenses import wrap_oracle
from nnmark.attacks.measure import key_accuracy, oracle_key_accuracy
from nnmark.attacks.run import attack_run
from nnmark.attacks.summary import verdict_word
from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset
from nnmark.keyfile import load_key, verify_context
from nnmark.oracle import Oracle, TorchOracle
from nnmark.training import TrainConfig
from nnmark.types import Verdict
from nnmark.verify.verifier import verify
from nnmark.workflow import embed_run, load_model

ATTACKS: dict[str, dict[str, Any]] = {
    "finetune ftal": {"name": "finetune", "settings": {}},
    "finetune rtal": {"name": "finetune", "settings": {"mode": "rtal"}},
    "prune sweep": {"name": "prune", "settings": {"sweep": True}},
    "neuron-prune 0.5": {"name": "neuron-prune", "settings": {}},
    "fine-prune": {"name": "fine-prune", "settings": {}},
    "distill labels": {"name": "distill", "settings": {}},
}
QUICK: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 2},
    "prune": {"epochs": 1, "rates": [0.0, 0.5, 0.9]},
    "fine-prune": {"epochs": 1},
}
#: query defenses (evasion attacks): label -> (defense name, settings); the autoencoder ones use
#: Namba's detector, fitted once per victim (``ae_settings``) and shared between them
DEFENSES: dict[str, tuple[str, dict[str, Any]]] = {
    "jpeg q75": ("jpeg", {}),
    "blur σ1": ("blur", {}),
    "noise σ0.1": ("noise", {}),
    "reject (pixel stats)": ("reject", {}),
    "query-modification": ("autoencoder", {}),
    "rejection (AE)": ("rejection", {}),
}
QUICK_AE = {"epochs": 60, "folds": 5}
BASELINE = "none"

Record = dict[str, Any]
"""One cell of one seed: scheme, attack, seed, accuracy, wm_accuracy, verdict (bool | None),
p_value, seconds, note."""


def oracle_verdict(oracle: Oracle, key_path: Path, data: ImageDataset) -> tuple[float, float, Verdict]:
    """Test accuracy on ``data``'s test split, watermark accuracy (the scheme's own measure,
    :func:`~nnmark.attacks.measure.key_accuracy`, asked through ``oracle``: the same measure as the
    removal attacks' rows) and owner-mode verdict (α 1e-6, the scheme's default test) of the model
    behind ``oracle``."""
    key = load_key(key_path)
    acc = float((oracle.labels(data.test_x.float() / 255) == data.test_y).float().mean())
    wm = oracle_key_accuracy(oracle, key)
    return acc, wm, verify(key, oracle, context=verify_context(key_path, key))


def parse_scheme(spec: str) -> tuple[str, dict[str, Any]]:
    """``"label-change:ew=2,keys_per_batch=4"`` -> ("label-change", {"ew": 2, ...}); Zhang's
    schemes get target 0 unless named (as the original benchmark embedded them)."""
    name, _, rest = spec.partition(":")
    settings: dict[str, Any] = {"target": 0} if name.startswith("zhang") else {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        settings[k] = setting_value(v)
    return name, settings


def setting_value(text: str) -> Any:
    """A ``k=v`` setting's value: JSON where it parses (numbers, lists, true/false), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


#: schemes that derive their keys from the owner's signature: embedded with a fresh owner identity
#: (the others with an unsigned key, as this benchmark always did)
SIGNED = frozenset({"li-null-embedding"})


def embed_victim(
    scheme: str, data: ImageDataset, model: str, config: TrainConfig, run: Path, calibrate: int | None = None
) -> Path:
    """The owner's watermarked run folder for ``scheme`` (a :func:`parse_scheme` spec); the key
    is ``run / "watermark.key"``. ``calibrate`` None: the scheme's default (4 for Zhang's)."""
    from nnmark.identity import generate_owner
    from nnmark.schemes import SCHEMES

    name, settings = parse_scheme(scheme)
    cls = SCHEMES.get(name)
    if calibrate is None:
        calibrate = cls.default_calibration if cls.needs_calibration else 0
    owner = generate_owner("benchmark-owner") if name in SIGNED else None
    embed_run(name, settings, data, model, config, run, calibrate=calibrate, owner=owner, progress=False)
    return run


def attack_settings(
    spec: dict[str, Any], quick: bool, overrides: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """An attack's settings: its row's own, then ``--quick``'s cuts, then ``overrides[name]``."""
    name = spec["name"]
    return {**spec["settings"], **(QUICK.get(name, {}) if quick else {}), **overrides.get(name, {})}


def defended_oracle(
    name: str,
    settings: dict[str, Any],
    victim: Any,
    share: ImageDataset,
    seed: int,
    ae_settings: dict[str, Any],
    cache: dict[str, Any],
) -> Oracle:
    """``victim`` behind defense ``name``, fitted on the thief's images ``share``; Namba's detector
    is fitted once (``cache["detector"]``) for query modification, rejection and stealth AUCs."""
    if name in ("autoencoder", "rejection"):
        from nnmark.attacks.query.autoencoder import QueryModification
        from nnmark.attacks.query.rejection import QueryRejection

        if "detector" not in cache:
            qm = QueryModification(TorchOracle(victim), seed=seed, **{**ae_settings, **settings})
            cache["detector"] = qm.fit(share.train_x, progress=False)
        return cache["detector"] if name == "autoencoder" else QueryRejection(cache["detector"], seed=seed)
    return wrap_oracle(name, TorchOracle(victim), share, seed=seed, **settings)


def seed_records(
    scheme: str,
    run: Path,
    data: ImageDataset,
    seed: int,
    work: Path,
    *,
    attacks: Sequence[str] = tuple(ATTACKS),
    defenses: Sequence[str] = tuple(DEFENSES),
    attacker_fraction: float = 0.1,
    quick: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    ae_settings: dict[str, Any] | None = None,
    detector: dict[str, Any] | None = None,
) -> Iterator[Record]:
    """One victim (``run``, embedded with ``scheme``) under no attack, every attack of ``attacks``
    (labels of :data:`ATTACKS`, through ``attack_run``) and every defense of ``defenses`` (labels
    of :data:`DEFENSES`), one :data:`Record` each, as each is measured. ``detector``, when given,
    receives Namba's fitted detector (key ``"detector"``) if a defense needed it."""
    key_path = run / "watermark.key"
    key = load_key(key_path)
    victim = load_model(run)
    share = attacker_data(data, attacker_fraction, seed).data
    cache = detector if detector is not None else {}

    def record(attack: str, acc: float, wm: float, v: Verdict, t0: float, note: str = "") -> Record:
        return {
            "scheme": scheme,
            "attack": attack,
            "seed": seed,
            "accuracy": acc,
            "wm_accuracy": wm,
            "verdict": v.watermarked,
            "p_value": v.p_value,
            "seconds": time.perf_counter() - t0,
            "note": note,
        }

    t0 = time.perf_counter()
    acc, wm, v = oracle_verdict(TorchOracle(victim), key_path, share)
    yield record(BASELINE, acc, wm, v, t0)
    for label in attacks:
        spec = ATTACKS[label]
        t0 = time.perf_counter()
        r = attack_run(
            spec["name"],
            run,
            work / f"{label}-{seed}".replace(" ", "_"),
            data,
            TrainConfig(seed=seed),
            settings=attack_settings(spec, quick, overrides or {}),
            attacker_fraction=attacker_fraction,
            keys=[key_path],
            progress=False,
        )
        note = f"q={r.metrics['rate']}" if "sweep" in r.metrics else ""
        yield record(
            label, r.metrics["accuracy_after"], key_accuracy(r.model, key), r.verdicts[0][2], t0, note
        )
    for label in defenses:
        name, st = DEFENSES[label]
        t0 = time.perf_counter()
        oracle = defended_oracle(name, st, victim, share, seed, ae_settings or {}, cache)
        acc, wm, v = oracle_verdict(oracle, key_path, share)
        yield record(label, acc, wm, v, t0)


def print_record(r: Record, out: Callable[[str], None] = print) -> None:
    secs = "" if r["attack"] in (BASELINE, *DEFENSES) else f"{r['seconds']:7.1f}"
    out(
        f"{r['scheme']:16} {r['attack']:20} {r['accuracy']:9.3f} {r['wm_accuracy']:7.3f}  "
        f"{verdict_word(r['verdict']):14} {secs} {r['note']}".rstrip()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schemes", nargs="*", default=["label-change", "adi", "zhang-content", "zhang-noise"])
    ap.add_argument("--model", default="digit-cnn")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--attacker-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    data = load_dataset("mnist5k")
    share = attacker_data(data, args.attacker_fraction, args.seed).data
    print(f"attacker: {len(share.train_x)} held-out images; accuracy on {len(share.test_x)} others\n")
    print(f"{'scheme':16} {'attack':20} {'test acc':>9} {'wm acc':>7}  verdict        seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in args.schemes:
            config = TrainConfig(epochs=args.epochs, seed=args.seed)
            run = embed_victim(scheme, data, args.model, config, Path(tmp) / scheme)
            work = Path(tmp) / f"{scheme}-attacks"
            work.mkdir()
            ae = QUICK_AE if args.quick else {}
            for r in seed_records(
                scheme,
                run,
                data,
                args.seed,
                work,
                attacker_fraction=args.attacker_fraction,
                quick=args.quick,
                ae_settings=ae,
            ):
                print_record(r)


if __name__ == "__main__":
    main()
