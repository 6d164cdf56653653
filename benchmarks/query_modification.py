"""Namba 2019 query modification against the Zhang 2018 trigger sets on MNIST-5k (digit-cnn).

    OMP_NUM_THREADS=1 python benchmarks/query_modification.py --seeds 2 --epochs 3 [--attacker-fraction 0.1]
        [--ae-epochs 400] [--folds 10]

For each scheme and seed: embed a watermark (fixed target 0, no calibration: only rates are
measured), give the attacker ``--attacker-fraction`` × 4,000 held-out images (never the owner's
training images), fit the autoencoder and its thresholds (Namba's Table 5: Adam 1e-3, 400 epochs,
batch 100; 95th percentiles by 10-fold cross-validation; ``--ae-epochs`` / ``--folds`` lower them),
then measure

* detection: share of the key queries flagged (by the reconstruction loss, by JSD, by either) and
  share of the clean held-out images the attacker does not hold flagged;
* test accuracy of the model and through the attack;
* watermark accuracy (key answers equal to the key labels) of the model, through the attack, and
  with every key replaced by AE(x) (the paper's Table 2 "query mod." column, no detection).

The paper's MNIST rows (ResNet32 on full MNIST, its own stamps and noise) are printed beside the
means for orientation: Table 1 "both" and Table 2 "query mod. (autoencoder)".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nnmark.attacks.base import attacker_share
from nnmark.attacks.query import QueryModification
from nnmark.data import load_dataset
from nnmark.keyfile import load_key
from nnmark.oracle import TorchOracle
from nnmark.training import TrainConfig
from nnmark.workflow import embed_run, load_model

DEFAULT_SCHEMES = ("zhang-content", "zhang-noise", "zhang-unrelated")
# namba2019.csv, MNIST: Table 1 "both" detection rate; Table 2 watermark accuracy under query modification
PAPER = {
    "zhang-content": ("1.0 (test/gray)", "0.99"),
    "zhang-noise": ("0.49", "1.0"),
    "zhang-unrelated": ("0.28", "1.0"),
}
COLUMNS = ("keys_rec", "keys_jsd", "keys", "clean", "acc", "acc_qm", "wm", "wm_qm", "wm_ae")


def measure_one(
    scheme: str, seed: int, epochs: int, fraction: float, keys: int, root: Path
) -> dict[str, float]:
    data = load_dataset("mnist5k")
    run = root / f"{scheme}-{seed}"
    embed_run(
        scheme,
        {"target": 0, "keys": keys},
        data,
        "digit-cnn",
        TrainConfig(epochs=epochs, seed=seed),
        run,
        calibrate=0,
        progress=False,
    )
    model, key = load_model(run), load_key(run)
    share = attacker_share(data, fraction, seed)
    qm = QueryModification(model, seed=seed, **AE_SETTINGS).fit(share.train_x, progress=False)
    clean, clean_y = share.test_x.float() / 255, share.test_y
    k, c = qm.inspect(key.inputs), qm.inspect(clean)
    ref = TorchOracle(model)

    def rate(pred: torch.Tensor, truth: torch.Tensor) -> float:
        return float((pred == truth).float().mean())

    return {
        "keys_rec": float(k.by_rec.float().mean()),
        "keys_jsd": float(k.by_jsd.float().mean()),
        "keys": float(k.flagged.float().mean()),
        "clean": float(c.flagged.float().mean()),
        "acc": rate(ref.labels(clean), clean_y),
        "acc_qm": rate(qm.labels(clean), clean_y),
        "wm": rate(ref.labels(key.inputs), key.labels),
        "wm_qm": rate(qm.labels(key.inputs), key.labels),
        "wm_ae": rate(k.scores_ae.argmax(1), key.labels),
    }


#: the autoencoder's settings (``--ae-epochs``, ``--folds``); the rest are Namba's defaults
AE_SETTINGS: dict[str, int] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3, help="digit-cnn embedding epochs")
    ap.add_argument("--attacker-fraction", type=float, default=0.1, help="share of the 4,000 training images")
    ap.add_argument("--keys", type=int, default=100, help="key images per watermark")
    ap.add_argument("--schemes", nargs="*", default=list(DEFAULT_SCHEMES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ae-epochs", type=int, default=400, help="autoencoder epochs (Namba Table 5: 400)")
    ap.add_argument("--folds", type=int, default=10, help="k-fold thresholds (Namba: 10)")
    args = ap.parse_args()
    AE_SETTINGS.update(epochs=args.ae_epochs, folds=args.folds)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in args.schemes:
            for seed in range(args.seeds):
                r = measure_one(scheme, seed, args.epochs, args.attacker_fraction, args.keys, Path(tmp))
                rows.setdefault(scheme, []).append(r)
                print(f"{scheme:16} seed {seed}: " + " ".join(f"{c} {r[c]:.3f}" for c in COLUMNS), flush=True)
    print(
        f"\ndigit-cnn on mnist5k, {args.epochs} epochs, {args.keys} keys, attacker holds "
        f"{args.attacker_fraction:.0%} of the training set's size (held-out images), autoencoder "
        f"{args.ae_epochs} epochs, {args.folds}-fold thresholds; means over {args.seeds} seed(s); "
        f"{time.perf_counter() - t0:.0f} s"
    )
    head = (
        f"{'scheme':16} {'keys flagged rec/jsd/both':>26} {'clean flagged':>13} {'test acc -> QM':>15} "
        f"{'wm acc -> QM / AE(all)':>23}   paper MNIST: flagged, wm under QM"
    )
    print(head)
    for scheme, rs in rows.items():

        def m(col: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.mean(r[col] for r in rs)

        flagged = f"{m('keys_rec'):.2f} / {m('keys_jsd'):.2f} / {m('keys'):.2f}"
        acc = f"{m('acc'):.3f} -> {m('acc_qm'):.3f}"
        wm = f"{m('wm'):.2f} -> {m('wm_qm'):.2f} / {m('wm_ae'):.2f}"
        paper = PAPER.get(scheme, ("-", "-"))
        print(f"{scheme:16} {flagged:>26} {m('clean'):13.3f} {acc:>15} {wm:>23}   {paper[0]}, {paper[1]}")


if __name__ == "__main__":
    main()
