"""Several small models at once: K digit-cnns batched over seeds with ``torch.func`` against the
same K trained one at a time by nnmark's engine (issue 11: experiment grids on one GPU).

Batched: the K models' parameters are stacked (``torch.func.stack_module_state``) and one
``vmap(functional_call)`` runs all K on each batch; the loss is the sum of the K cross-entropies,
so each model gets its own gradient, and Adam on the stacked tensors is K independent Adams
(Adam is elementwise). Every model sees the same batches (one data order); initial weights
differ by seed. One at a time: ``nnmark.training.train`` for each model, same data, batch size
and optimiser. Prints the aggregate images/s of each, the speed-up, and mean test accuracy of
both (to show the batched models learn as well).

    PYTHONPATH=src python benchmarks/batched_training.py --device cpu --models 4 --limit 2000
    PYTHONPATH=src python benchmarks/batched_training.py --device cuda --models 16 --data fashion-mnist

On the CPU there is little to gain (one core is already busy with one model); the figure that
matters is on a GPU, where one small model leaves most of the device idle.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

from nnmark.data import load_dataset
from nnmark.models import build_model
from nnmark.training import TrainConfig, evaluate, resolve_device, train
from nnmark.workflow import model_spec


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_train(
    models: list[torch.nn.Module], x_u8: torch.Tensor, y: torch.Tensor, config: TrainConfig
) -> float:
    """Train ``models`` (in place) together; returns seconds."""
    device = resolve_device(config.device)
    models = [m.to(device).train() for m in models]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    base = copy.deepcopy(models[0]).to("meta")

    def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xb,))

    forward = torch.vmap(one, in_dims=(0, 0, None))
    opt = torch.optim.Adam(list(params.values()), lr=config.lr)
    x_dev, y_dev = x_u8.to(device), y.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    n, bs = len(x_dev), config.batch_size
    sync(device)
    t0 = time.perf_counter()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - 1, bs):
            idx = perm[start : start + bs]
            xb, yb = x_dev[idx].float().div_(255), y_dev[idx]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = forward(params, buffers, xb).float()  # K × B × C
            loss = F.cross_entropy(logits.flatten(0, 1), yb.repeat(len(models)), reduction="sum") / len(yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sync(device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for k, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][k])
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default="mnist5k")
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="first N training images")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1) if args.device == "cpu" else None
    data = load_dataset(args.data)
    x, y = data.train_x[: args.limit], data.train_y[: args.limit]
    spec = model_spec("digit-cnn", data)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0, device=args.device)
    device = resolve_device(args.device)

    def fresh() -> list[torch.nn.Module]:
        out = []
        for s in range(args.models):
            torch.manual_seed(s)
            out.append(build_model(spec))
        return out

    single = fresh()
    sync(device)
    t0 = time.perf_counter()
    for m in single:
        train(m, x, y, config, progress=False)
    sync(device)
    t_single = time.perf_counter() - t0
    together = fresh()
    t_batched = batched_train(together, x, y, config)
    images = args.models * len(x) * args.epochs
    rate = {"single": images / t_single, "batched": images / t_batched}
    acc = [
        sum(evaluate(m.cpu(), data.test_x, data.test_y) for m in ms) / len(ms) for ms in (single, together)
    ]
    print(
        f"{args.models} × digit-cnn on {args.data} ({len(x)} images, {args.epochs} epoch(s)), device {device}"
    )
    for label, key, t, a in (
        ("one at a time (nnmark engine)", "single", t_single, acc[0]),
        ("batched (torch.func vmap)", "batched", t_batched, acc[1]),
    ):
        print(f"{label:30} {t:8.2f} s  {rate[key]:10,.0f} images/s  acc {a:.3f}")
    print(f"speed-up: {t_single / t_batched:.2f}×")


if __name__ == "__main__":
    main()
