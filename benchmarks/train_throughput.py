"""Training throughput: nnmark's engine against a plain torch DataLoader loop.

Trains the Digit CNN (Li et al. 2019) on Fashion-MNIST twice on the same device, from the same
initial weights, with the same optimizer (Adam) and batch size:

1. ``nnmark.training.train``: uint8 data resident on the device, shuffled there, converted per
   batch (bf16 autocast on CUDA);
2. the textbook loop: ``TensorDataset`` of float32 tensors on the CPU, ``DataLoader(shuffle=True)``,
   each batch moved to the device.

The engine uses fused Adam (part of the engine); the plain loop uses torch's default Adam.
Prints images/s of each, their ratio and the seconds one 60,000-image epoch takes.

    PYTHONPATH=src python benchmarks/train_throughput.py --device cpu --limit 10000
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from nnmark.data import load_dataset
from nnmark.errors import NnmarkError
from nnmark.models import build_model
from nnmark.training import TrainConfig, resolve_device, set_seed, train
from nnmark.types import ModelSpec


def dataloader_loop(
    model: torch.nn.Module,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    epochs: int,
    batch_size: int,
    lr: float,
) -> float:
    """The plain loop; returns seconds spent training (data preparation excluded)."""
    ds = TensorDataset(x_u8.float().div(255), y)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=False)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per loop (default: 1)")
    ap.add_argument("--batch-size", type=int, default=64, help="default: 64")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved runs; the best is kept (default: 3)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    try:
        ds = load_dataset("fashion-mnist")
    except NnmarkError as exc:
        print(f"note: Fashion-MNIST not available ({exc}); using the embedded mnist5k instead")
        ds = load_dataset("mnist5k")
    x, y = ds.train_x, ds.train_y
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    n = len(x)
    mean, std = ds.channel_stats()
    spec = ModelSpec("digit-cnn", ds.num_classes, ds.input_shape, tuple(mean), tuple(std))
    set_seed(args.seed)
    model0 = build_model(spec)
    print(
        f"digit-cnn on {ds.name}: {n} images {tuple(ds.input_shape)}, batch {args.batch_size}, "
        f"{args.epochs} epoch(s), Adam lr {args.lr}, device {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=str(device),
    )
    warm = min(n, 8 * args.batch_size)  # first calls pay for kernel selection and allocation
    train(copy.deepcopy(model0), x[:warm], y[:warm], replace(cfg, epochs=1), progress=False)
    dataloader_loop(copy.deepcopy(model0), x[:warm], y[:warm], device, 1, args.batch_size, args.lr)

    # Interleaved repeats, best of each: other processes on a shared machine only slow runs down.
    engine_s: list[float] = []
    loader_s: list[float] = []
    for _ in range(args.repeats):
        engine_s.append(train(copy.deepcopy(model0), x, y, cfg, progress=False).seconds)
        torch.manual_seed(args.seed)
        loader_s.append(
            dataloader_loop(
                copy.deepcopy(model0), x, y, device, args.epochs, args.batch_size, args.lr
            )
        )
    engine_ips = n * args.epochs / min(engine_s)
    dl_ips = n * args.epochs / min(loader_s)
    print(f"best of {args.repeats} interleaved run(s):")
    for name, ips in (("nnmark engine", engine_ips), ("DataLoader loop", dl_ips)):
        print(f"{name:16s} {ips:10,.0f} images/s   {60_000 / ips:8.2f} s per 60,000-image epoch")
    print(f"ratio engine / DataLoader: {engine_ips / dl_ips:.2f}×")


if __name__ == "__main__":
    main()
