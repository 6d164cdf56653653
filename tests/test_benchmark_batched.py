"""benchmarks/batched_training.py (issue 11: several small models at once on one GPU): the logic is
checked here on the CPU; the speed-up it exists to measure is a GPU figure."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from batched_training import batched_train  # noqa: E402

from nnmark.data import load_dataset  # noqa: E402
from nnmark.models import build_model  # noqa: E402
from nnmark.training import TrainConfig, evaluate  # noqa: E402
from nnmark.workflow import model_spec  # noqa: E402


def _models(seeds: list[int]) -> list[torch.nn.Module]:
    spec = model_spec("digit-cnn", load_dataset("mnist5k"))
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_model(spec))
    return out


def test_batched_models_train_as_if_each_were_trained_alone() -> None:
    """K models trained together (stacked parameters, one vmap) end where each trained alone on the
    same batches ends: one model's gradients and Adam state never leak into another's, and each
    model gets back its own slice. And they learn."""
    data = load_dataset("mnist5k")
    x, y = data.train_x[:600], data.train_y[:600]
    config = TrainConfig(epochs=1, batch_size=64, seed=5, device="cpu")
    together = _models([0, 1, 2])
    batched_train(together, x, y, config)
    for k, seed in enumerate([0, 1, 2]):
        alone = _models([seed])
        batched_train(alone, x, y, config)
        for (name, a), b in zip(alone[0].named_parameters(), together[k].parameters(), strict=True):
            other = dict(together[(k + 1) % 3].named_parameters())[name]
            # float noise (summation order under vmap), amplified by Adam's normalisation, stays far
            # below the distance to another model's parameters
            gap = float((a - b).detach().abs().max())
            assert gap < 2e-3 and gap < 0.05 * float((a - other).detach().abs().max()), (seed, name, gap)
    acc = [evaluate(m, data.test_x[:300], data.test_y[:300]) for m in together]
    assert min(acc) > 0.5, acc
