"""zhong-new-label: keys answered with a new class; verdicts honest about C+1-output suspects."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nnmark.data.base import ImageDataset
from nnmark.io import load_spec
from nnmark.keyfile import load_key
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.schemes import create_scheme
from nnmark.schemes.zhong import controls, fresh_keys, pattern
from nnmark.training import TrainConfig
from nnmark.verify.verifier import verify
from nnmark.workflow import embed_run, load_model, train_run

FAST = {"keys_per_batch": 8, "decoys_per_batch": 8}


@pytest.fixture(scope="module")
def runs(small_mnist: ImageDataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zhong")
    out = {}
    for name, seed in (("ours", 0), ("other", 1)):
        embed_run(
            "zhong-new-label",
            FAST,
            small_mnist,
            "digit-cnn",
            TrainConfig(epochs=2, seed=seed),
            root / name,
            calibrate=0,
            progress=False,
        )
        out[name] = root / name
    return out


def _strip_new_label(model: nn.Module) -> nn.Module:
    """What a thief could do: drop the extra output row of the last layer (a C-class model)."""
    m = copy.deepcopy(model)
    assert isinstance(m, nn.Sequential)
    body = m[1]
    assert isinstance(body, nn.Sequential)
    last = body[-1]
    assert isinstance(last, nn.Linear)
    new = nn.Linear(last.in_features, last.out_features - 1)
    with torch.no_grad():
        new.weight.copy_(last.weight[:-1])
        new.bias.copy_(last.bias[:-1])
    body[-1] = new
    return m


def test_key_material(small_mnist: ImageDataset) -> None:
    scheme = create_scheme("zhong-new-label")
    g = torch.Generator().manual_seed(5)
    mat = scheme.generate(small_mnist, g)
    assert len(mat.inputs) == round(0.01 * len(small_mnist.train_x))
    assert mat.labels is not None and bool((mat.labels == small_mnist.num_classes).all())
    assert mat.inputs.min() >= 0 and mat.inputs.max() <= 1
    assert mat.tensors["probes"].dtype == torch.uint8
    # the pattern is regenerated from the seed kept in the key
    eps = pattern(mat.params["pattern_seed"], small_mnist.input_shape)
    assert torch.equal(eps, pattern(mat.params["pattern_seed"], small_mnist.input_shape))
    assert not torch.equal(eps, pattern(mat.params["pattern_seed"] + 1, small_mnist.input_shape))


def test_found_on_own_model_with_controls(runs: dict[str, Path]) -> None:
    key = load_key(runs["ours"])
    metrics = json.loads((runs["ours"] / "metrics.json").read_text())
    assert key.num_classes == 11 and metrics["watermark_accuracy"] >= 0.9
    assert metrics["fresh_key_accuracy"] > metrics["control_new_label_rate"]
    v = verify(key, TorchOracle(load_model(runs["ours"])))
    assert v.test == "first-hit" and v.watermarked is True, v.reason
    assert v.p_value <= 1e-6
    assert v.evidence["queries_to_first_hit"] >= 1 and 0 < v.evidence["acc_q"] <= 1
    assert v.evidence["fisher_p_value"] <= v.p_value  # reported p is Bonferroni-adjusted
    b = verify(key, TorchOracle(load_model(runs["ours"])), test="binomial")
    assert b.watermarked is True
    t = verify(key, TorchOracle(load_model(runs["ours"])), test="threshold")
    assert t.threshold == 28 and t.queries == 40


def test_c_class_models_never_first_hit(runs: dict[str, Path], small_mnist: ImageDataset) -> None:
    key = load_key(runs["ours"])
    spec = load_spec(runs["ours"])
    torch.manual_seed(3)
    untrained = build_model(replace(spec, num_classes=10))
    stripped = _strip_new_label(load_model(runs["ours"]))
    for model in (untrained, stripped):
        oracle = TorchOracle(model)
        v = verify(key, oracle)
        assert v.watermarked is False and v.matches == 0 and v.queries == 1
        assert "can never answer" in v.reason
        # however many fresh keys and controls are sent, a C-output model never answers Δ
        assert not bool((oracle.labels(torch.cat([fresh_keys(key), controls(key, 9)])) == 10).any())
    assert spec.num_classes == 11


def test_other_secret_model_is_not_ours(runs: dict[str, Path]) -> None:
    ours, theirs = load_key(runs["ours"]), load_key(runs["other"])
    assert ours.params["pattern_seed"] != theirs.params["pattern_seed"]
    suspect = load_model(runs["other"])
    for test in ("first-hit", "binomial"):
        v = verify(ours, TorchOracle(suspect), test=test)
        assert v.watermarked is False, (test, v.reason, v.evidence)
    # and their key is found on their model
    assert verify(theirs, TorchOracle(suspect)).watermarked is True


def test_budget_is_respected(runs: dict[str, Path]) -> None:
    key = load_key(runs["ours"])
    v = verify(key, TorchOracle(load_model(runs["ours"])), budget=30)
    assert v.queries <= 30


def test_key_info_hides_the_pattern_seed(runs: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from nnmark.cli import app

    res = CliRunner().invoke(app, ["key", "info", str(runs["ours"] / "watermark.key"), "--json"])
    assert res.exit_code == 0, res.output
    assert "pattern_seed" not in json.loads(res.stdout)["params"]


def test_embed_from_a_trained_c_class_model(small_mnist: ImageDataset, tmp_path: Path) -> None:
    tiny = ImageDataset(
        small_mnist.name,
        small_mnist.train_x[:600],
        small_mnist.train_y[:600],
        small_mnist.test_x[:200],
        small_mnist.test_y[:200],
        10,
    )
    train_run(tiny, "digit-cnn", TrainConfig(epochs=1), tmp_path / "clean", progress=False)
    before = load_model(tmp_path / "clean")
    r = embed_run(
        "zhong-new-label",
        {**FAST, "retrain_epochs": 1},
        tiny,
        "digit-cnn",
        TrainConfig(epochs=1),
        tmp_path / "wm",
        from_run=tmp_path / "clean",
        calibrate=0,
        progress=False,
    )
    model = load_model(tmp_path / "wm")
    assert r.metrics["from_run"] and r.metrics["pretrain_seconds"] == 0
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 11)
    assert before(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert load_key(tmp_path / "wm").num_classes == 11
