"""The training engine: learns, is reproducible, honours mixers and weights, rejects nonsense."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnmark.errors import NnmarkError
from nnmark.models import build_model
from nnmark.training import (
    TrainConfig,
    TrainResult,
    _lr_factor,
    augment_crop_flip,
    evaluate,
    predict_logits,
    resolve_device,
    train,
)
from nnmark.types import ModelSpec

SHAPE = (1, 16, 16)
CLASSES = 4


def quadrant_task(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Class k = a bright 8×8 quadrant k on uniform noise: separable, uint8 images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.randint(0, 100, (n, *SHAPE), generator=g, dtype=torch.uint8)
    for k in range(CLASSES):
        r, c = divmod(k, 2)
        sel = y == k
        x[sel, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 150
    return x, y


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(
        ModelSpec("digit-cnn", CLASSES, SHAPE, (0.3,), (0.3,), arch_args={"hidden": 64})
    )


def weights(model: nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


FAST = TrainConfig(epochs=1, batch_size=32, lr=2e-3)


def test_learns_a_separable_task() -> None:
    x, y = quadrant_task(512, seed=0)
    xt, yt = quadrant_task(256, seed=1)
    model = small_cnn()
    assert evaluate(model, xt, yt) < 0.6
    result = train(model, x, y, TrainConfig(epochs=2, batch_size=32, lr=2e-3), progress=False)
    assert isinstance(result, TrainResult)
    assert result.epochs == 2 and result.device == "cpu"
    assert result.seconds > 0 and result.images_per_second > 0
    assert result.final_loss < 0.3 and result.train_accuracy > 0.9
    assert not model.training  # left in eval mode
    assert evaluate(model, xt, yt) >= 0.95


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    x, y = quadrant_task(160, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=32, augment="crop-flip", schedule="cosine", seed=3)
    runs = []
    for seed in (3, 3, 4):
        model = small_cnn()
        train(model, x, y, replace(cfg, seed=seed), progress=False)
        runs.append(weights(model))
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(runs[0], runs[2], strict=True))


class KeyMixer:
    """Appends ``copies`` of one fixed key image with a fixed label to every batch."""

    def __init__(self, key: Tensor, label: int, copies: int = 4, weight: float | None = None):
        self.key, self.label, self.copies, self.weight = key, label, copies, weight
        self.calls = 0

    def __call__(
        self, x: Tensor, y: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        self.calls += 1
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
        assert isinstance(gen, torch.Generator) and gen.device.type == "cpu"
        kx = self.key.to(x.device).expand(self.copies, *x.shape[1:])
        ky = torch.full((self.copies,), self.label, dtype=y.dtype, device=y.device)
        w = None
        if self.weight is not None:
            w = torch.cat([torch.ones(len(x)), torch.full((self.copies,), self.weight)]).to(
                x.device
            )
        return torch.cat([x, kx]), torch.cat([y, ky]), w


def checkerboard() -> Tensor:
    i = torch.arange(SHAPE[1])
    return ((i[:, None] // 2 + i[None, :] // 2) % 2).float().view(1, *SHAPE)


def test_mixer_samples_are_trained_on() -> None:
    x, y = quadrant_task(320, seed=0)
    key = checkerboard()
    clean = small_cnn()
    train(clean, x, y, FAST, progress=False)
    natural = int(predict_logits(clean, key).argmax(1))
    label = (natural + 1) % CLASSES  # a label the clean model does not give

    mixer = KeyMixer(key, label)
    marked = small_cnn()
    train(marked, x, y, FAST, mixer=mixer, progress=False)
    assert mixer.calls == math.ceil(320 / 32)
    assert int(predict_logits(marked, key).argmax(1)) == label
    assert evaluate(marked, x, y) > 0.9


def test_identity_mixer_changes_nothing() -> None:
    """The mixer's generator is its own stream: drawing from it leaves shuffling alone."""
    x, y = quadrant_task(128, seed=0)

    def identity(xb: Tensor, yb: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, None]:
        torch.randint(0, 10, (5,), generator=gen)
        return xb, yb, None

    a, b = small_cnn(), small_cnn()
    cfg = replace(FAST, epochs=2)  # the second epoch's shuffle comes after mixer calls
    train(a, x, y, cfg, progress=False)
    train(b, x, y, cfg, mixer=identity, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(weights(a), weights(b), strict=True))


def sgd_step(model: nn.Module, lr: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            assert p.grad is not None
            p.sub_(lr * p.grad)


def test_weights_give_a_weighted_mean_loss() -> None:
    """One full-batch SGD step equals the step on sum(w * ce) / sum(w), done by hand."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    extra_x, extra_y = torch.rand(2, 1, 4, 4), torch.tensor([2, 0])
    w = torch.tensor([1.0, 2.0, 0.0, 1.0, 0.5, 1.0, 3.0, 0.0])

    def mixer(xb: Tensor, yb: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        # undo the shuffle so the weights line up with known samples
        order = torch.stack([(x == s).flatten(1).all(1).nonzero()[0, 0] for s in xb]).argsort()
        return torch.cat([xb[order], extra_x]), torch.cat([yb[order], extra_y]), w

    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    reference = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    reference.load_state_dict(start)
    cfg = TrainConfig(epochs=1, batch_size=6, lr=0.5, optimizer="sgd", momentum=0.0)
    train(model, x, y, cfg, mixer=mixer, progress=False)

    all_x, all_y = torch.cat([x, extra_x]), torch.cat([y, extra_y])
    ce = F.cross_entropy(reference(all_x), all_y, reduction="none")
    ((w * ce).sum() / w.sum()).backward()
    sgd_step(reference, 0.5)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    # ...and differs from the unweighted step, so the check above can fail
    unweighted = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    unweighted.load_state_dict(start)
    F.cross_entropy(unweighted(all_x), all_y).backward()
    sgd_step(unweighted, 0.5)
    assert not torch.allclose(next(model.parameters()), next(unweighted.parameters()), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"epochs": 1.5},
        {"batch_size": 0},
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": float("nan")},
        {"optimizer": "rmsprop"},
        {"schedule": "linear"},
        {"augment": "mixup"},
        {"momentum": 1.0},
        {"weight_decay": -0.1},
        {"seed": -1},
        {"seed": 2**64},
        {"device": ""},
    ],
)
def test_bad_config_is_a_user_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(NnmarkError):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_bad_data_is_a_user_error() -> None:
    x, y = quadrant_task(8, seed=0)
    with pytest.raises(NnmarkError):
        train(small_cnn(), x, y[:5], FAST, progress=False)
    with pytest.raises(NnmarkError):
        train(small_cnn(), x[:, 0], y, FAST, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_user_error() -> None:
    with pytest.raises(NnmarkError, match="cpu"):
        resolve_device("cuda")
    x, y = quadrant_task(8, seed=0)
    with pytest.raises(NnmarkError):
        train(small_cnn(), x, y, TrainConfig(device="cuda"), progress=False)
    with pytest.raises(NnmarkError):
        evaluate(small_cnn(), x, y, device="cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(NnmarkError):
        resolve_device("tpu")


def test_crop_flip_translates_and_flips() -> None:
    x = torch.rand(8, 2, 6, 6)
    out = augment_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    flipped_any = False
    for i in range(len(x)):
        candidates = [
            (flip, padded[i, :, dy : dy + 6, dx : dx + 6])
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
        ]
        hits = [f for f, c in candidates if torch.equal(out[i], c.flip(-1) if f else c)]
        assert hits, f"sample {i} is no translation/flip of its input"
        flipped_any |= all(hits)
    assert flipped_any


def test_schedules() -> None:
    assert _lr_factor("none", 0.9) == 1.0
    assert _lr_factor("cosine", 0.0) == 1.0 and _lr_factor("cosine", 1.0) < 1e-12
    assert [_lr_factor("step", p) for p in (0.0, 0.49, 0.5, 0.74, 0.75)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01]
    )


def test_predict_and_evaluate_agree_and_restore_mode(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = quadrant_task(40, seed=0)
    model = small_cnn()
    train(model, x, y, FAST, progress=True)  # stderr is no terminal here: the bar stays quiet
    assert capsys.readouterr().err == ""
    model.train()
    logits = predict_logits(model, x, batch_size=16)
    assert model.training
    assert logits.shape == (40, CLASSES) and logits.device.type == "cpu"
    assert torch.allclose(logits, predict_logits(model, x.float() / 255), atol=1e-5)
    acc = evaluate(model, x, y, batch_size=7)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert model.training


def test_progress_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats stderr as a terminal
    x, y = quadrant_task(64, seed=0)
    train(small_cnn(), x, y, replace(FAST, epochs=2), progress=True, description="bar-test")
    err = capsys.readouterr().err
    assert "bar-test" in err and "epoch 2/2" in err and "img/s" in err
    train(small_cnn(), x, y, FAST, progress=False)
    assert capsys.readouterr().err == ""


class NoAutocastOnCpu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, CLASSES))
        self.autocast_seen = False

    def forward(self, x: Tensor) -> Tensor:
        self.autocast_seen |= torch.is_autocast_enabled("cpu") or x.dtype != torch.float32
        return self.body(x)


def test_no_bf16_on_cpu() -> None:
    x, y = quadrant_task(64, seed=0)
    model = NoAutocastOnCpu()
    train(model, x, y, FAST, progress=False)
    assert not model.autocast_seen
