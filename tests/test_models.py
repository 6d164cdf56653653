"""Every registered model, on MNIST- and CIFAR-shaped inputs, with 10 and 11 classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnmark.errors import NnmarkError
from nnmark.models import MODELS, Normalize, build_model, describe_model, model_parameters
from nnmark.types import ModelSpec

SHAPES = [(1, 28, 28), (3, 32, 32)]
CLASSES = [10, 11]


def make_spec(name: str, shape: tuple[int, int, int], classes: int, mean: float = 0.5) -> ModelSpec:
    c = shape[0]
    return ModelSpec(name, classes, shape, (mean,) * c, (0.25,) * c)


def build(spec: ModelSpec, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return build_model(spec)


def test_expected_models_registered() -> None:
    assert {"digit-cnn", "dnn1", "dnn2", "resnet32"} <= set(MODELS.names())


@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract(name: str, shape: tuple[int, int, int], classes: int) -> None:
    model = build(make_spec(name, shape, classes))
    assert isinstance(model, nn.Sequential) and isinstance(model[0], Normalize)
    x = torch.rand(4, *shape)
    y = torch.arange(4) % classes

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, classes) and out.dtype == torch.float32
    assert torch.isfinite(out).all()

    # gradients reach every parameter
    model.train()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"

    # trainable: a few optimizer steps fit a fixed batch better
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    for _ in range(8):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    assert after < before


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", MODELS.names())
def test_normalisation_is_applied(name: str, shape: tuple[int, int, int]) -> None:
    a = build(make_spec(name, shape, 10, mean=0.5), seed=1).eval()
    b = build(make_spec(name, shape, 10, mean=0.1), seed=1).eval()
    # same weights, different normalisation
    assert all(torch.equal(p, q) for p, q in zip(a[1].parameters(), b[1].parameters(), strict=True))
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        # the body sees (x - mean) / std
        assert torch.allclose(a(x), a[1]((x - 0.5) / 0.25), atol=1e-6)


@pytest.mark.parametrize("name", MODELS.names())
def test_description_and_parameters(name: str) -> None:
    desc = describe_model(name)
    assert desc and "\n" not in desc
    params = model_parameters(name)
    assert "input_shape" not in params and "num_classes" not in params
    # the defaults, passed explicitly, are accepted
    spec = ModelSpec(name, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, arch_args=dict(params))
    build_model(spec)


def test_normalize_buffers() -> None:
    norm = Normalize((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert norm.mean.shape == (1, 3, 1, 1) and norm.std.shape == (1, 3, 1, 1)
    assert set(norm.state_dict()) == {"mean", "std"}
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(norm(x), expected)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("no-such-model", 10, (1, 28, 28), (0.5,), (0.25,)),
        ModelSpec("digit-cnn", 10, (1, 28, 28), (0.5,), (0.25,), arch_args={"depth": 3}),
        ModelSpec("digit-cnn", 10, (3, 32, 32), (0.5, 0.5), (0.25, 0.25)),
        ModelSpec("digit-cnn", 10, (1, 28, 28), (0.5,), (0.0,)),
        ModelSpec("digit-cnn", 0, (1, 28, 28), (0.5,), (0.25,)),
        ModelSpec("dnn2", 10, (1, 4, 4), (0.5,), (0.25,)),
        ModelSpec("resnet32", 10, (3, 32, 32), (0.5,), (0.25,), arch_args={"shortcut": "C"}),
    ],
)
def test_bad_specs_are_user_errors(spec: ModelSpec) -> None:
    with pytest.raises(NnmarkError):
        build_model(spec)


def test_resnet32_matches_the_paper() -> None:
    model = build(make_spec("resnet32", (3, 32, 32), 10))
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n_params < 0.48e6  # He et al. 2016, Table 6: 0.46 M
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 31  # + 1 fc layer = 32 weighted layers (option A shortcuts)
    spec_b = ModelSpec(
        "resnet32", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, arch_args={"shortcut": "B"}
    )
    proj = build(spec_b)
    assert len([m for m in proj.modules() if isinstance(m, nn.Conv2d)]) == 33
