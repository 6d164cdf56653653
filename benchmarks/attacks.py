"""What each removal attack and query defense does to each scheme (issue 9), one seed.

    python benchmarks/attacks.py [--schemes label-change adi zhang-content zhang-noise] [--epochs 5]
        [--attacker-fraction 0.1] [--quick]

The owner embeds each scheme into a digit-cnn on MNIST-5k (all 4,000 training images); the
thief holds ``--attacker-fraction`` × 4,000 images from the held-out split (never the owner's)
and every attack runs with its paper's defaults through ``nnmark.attacks.run.attack_run``
(finetune: FTAL, the owner's optimiser, 100 epochs; prune: Namba's sweep q = 0 … 0.9, 10
retraining epochs each; neuron-prune: half the units; fine-prune: Liu's procedure; distill: a
fresh model on the victim's labels). Query defenses wrap the watermarked model as an oracle.
Accuracy is measured on the 600 held-out images the thief does not hold. Printed: test accuracy,
watermark accuracy (the scheme's own measure) and the owner-mode verdict (found / not found / no
verdict) per scheme and attack. ``--quick`` cuts epochs for a smoke run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from nnmark.attacks.data import attacker_data
from nnmark.attacks.defenses import wrap_oracle
from nnmark.attacks.measure import key_accuracy
from nnmark.attacks.run import attack_run
from nnmark.data import load_dataset
from nnmark.keyfile import load_key, verify_context
from nnmark.oracle import Oracle, TorchOracle
from nnmark.training import TrainConfig
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
QUICK = {
    "finetune": {"epochs": 2},
    "prune": {"epochs": 1, "rates": [0.0, 0.5, 0.9]},
    "fine-prune": {"epochs": 1},
}
DEFENSES = {"jpeg q75": ("jpeg", {}), "blur σ1": ("blur", {}), "noise σ0.1": ("noise", {})}
STATE = {True: "found", False: "not found", None: "no verdict"}


def oracle_row(oracle: Oracle, key_path: Path, data: Any, alpha: float = 1e-6) -> tuple[float, float, str]:
    key = load_key(key_path)
    acc = float((oracle.labels(data.test_x.float() / 255) == data.test_y).float().mean())
    wm = float((oracle.labels(key.inputs) == key.labels).float().mean())
    v = verify(key, oracle, context=verify_context(key_path, key))
    return acc, wm, STATE[v.watermarked]


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
    print(f"{'scheme':16} {'attack':18} {'test acc':>9} {'wm acc':>7}  verdict        seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in args.schemes:
            run = Path(tmp) / scheme
            settings = {"target": 0} if scheme.startswith("zhang") else {}
            calibrate = 4 if scheme.startswith("zhang") else 0
            embed_run(
                scheme,
                settings,
                data,
                args.model,
                TrainConfig(epochs=args.epochs, seed=args.seed),
                run,
                calibrate=calibrate,
                progress=False,
            )
            key_path = run / "watermark.key"
            key = load_key(key_path)
            victim = load_model(run)
            acc, wm, state = oracle_row(TorchOracle(victim), key_path, share)
            print(f"{scheme:16} {'none':18} {acc:9.3f} {wm:7.3f}  {state:14}", flush=True)
            for label, spec in ATTACKS.items():
                st = {**spec["settings"], **(QUICK.get(spec["name"], {}) if args.quick else {})}
                t0 = time.perf_counter()
                r = attack_run(
                    spec["name"],
                    run,
                    Path(tmp) / f"{scheme}-{label}",
                    data,
                    TrainConfig(seed=args.seed),
                    settings=st,
                    attacker_fraction=args.attacker_fraction,
                    keys=[key_path],
                    progress=False,
                )
                v = r.verdicts[0][2]
                wm = key_accuracy(r.model, key)
                extra = f" q={r.metrics['rate']}" if "sweep" in r.metrics else ""
                print(
                    f"{scheme:16} {label:18} {r.metrics['accuracy_after']:9.3f} {wm:7.3f}  "
                    f"{STATE[v.watermarked]:14} {time.perf_counter() - t0:7.1f}{extra}",
                    flush=True,
                )
            for label, (name, st) in DEFENSES.items():
                oracle = wrap_oracle(name, TorchOracle(victim), share, seed=args.seed, **st)
                acc, wm, state = oracle_row(oracle, key_path, share)
                print(f"{scheme:16} {label:18} {acc:9.3f} {wm:7.3f}  {state:14}", flush=True)


if __name__ == "__main__":
    main()
