"""Unseen verification, spent keys and the evidence report (cover queries, spend log, --report)."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import sys

import pytest
import torch

from nnmark import cli
from nnmark.byo import make_key
from nnmark.keyfile import save_key
from nnmark.oracle import Oracle, TorchOracle
from nnmark.types import Calibration
from nnmark.verify.queries import VerifierOracle
from nnmark.verify.report import match_curve_svg, render_report
from nnmark.verify.spend import balance, record_spent, spent_indices
from nnmark.verify.verifier import verify

C = 10


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: object) -> int:
    """Run ``nnmark ARGS`` in this process; returns the exit status."""
    monkeypatch.setattr(sys, "argv", ["nnmark", *map(str, args)])
    try:
        cli.main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


class Recorder(Oracle):
    """A suspect that remembers every batch it was sent and answers a label drawn from the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.clone())
        label = (x.flatten(1).sum(1) * 1000).long() % C
        return torch.nn.functional.one_hot(label, C).float()


def test_cover_queries_hide_keys_and_only_key_answers_count(small_mnist):
    keys = small_mnist.train_x[:50].float() / 255
    covers = small_mnist.test_x[:300].float() / 255
    suspect = Recorder()
    oracle = VerifierOracle(suspect, covers, cover_ratio=3.0)
    answers = oracle.labels(keys)
    assert torch.equal(answers, Recorder().labels(keys))  # each key's own answer, in the key order
    assert oracle.queries == 50 and 120 <= oracle.log.covers <= 180 and oracle.log.keys == 50
    sent = torch.cat(suspect.batches)
    assert len(sent) == oracle.sent == 50 + oracle.log.covers
    sizes = {len(b) for b in suspect.batches}
    assert len(suspect.batches) > 2 and len(sizes) > 1  # random batch sizes, not one batch of keys
    positions = [r.position for r in oracle.log.records if r.kind == "key"]
    assert positions != list(range(50))  # keys are interleaved with covers, not sent first
    assert all(r.kind in ("key", "cover") and len(r.sha256) == 64 for r in oracle.log.records)


def test_without_covers_the_stream_is_the_keys(small_mnist):
    keys = small_mnist.train_x[:20].float() / 255
    oracle = VerifierOracle(Recorder())
    oracle.labels(keys)
    assert oracle.log.covers == 0 and oracle.log.keys == 20 and oracle.sent == 20


def _key(small_mnist):
    x, y = small_mnist.train_x[:300], small_mnist.train_y[:300]
    return make_key("adi", x, y, C, keys=40)


class Answering(torch.nn.Module):
    """A 'watermarked' module: answers each key input with its key label, everything else 0."""

    def __init__(self, key) -> None:
        super().__init__()
        self.table = {k.numpy().tobytes(): int(v) for k, v in zip(key.inputs, key.labels, strict=True)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = [self.table.get(row.numpy().tobytes(), 0) for row in x.to(torch.float32)]
        return torch.nn.functional.one_hot(torch.tensor(labels), C).float() * 10


def test_spent_keys_go_last_and_the_log_keeps_the_balance(small_mnist, tmp_path):
    key = _key(small_mnist)
    path = tmp_path / "watermark.key"
    save_key(path, key)
    assert balance(path, key).unspent == 40 and spent_indices(path, key) == frozenset()
    record_spent(path, key, "suspect-a", list(range(30)))
    assert spent_indices(path, key) == frozenset(range(30)) and str(balance(path, key)).startswith("10 of 40")
    from nnmark.verify.context import VerifyContext

    ctx = VerifyContext(spent=frozenset(range(30)))
    order = ctx.permutation(40, spendable=True).tolist()
    assert set(order[:10]) == set(range(30, 40)) and sorted(order) == list(range(40))
    # another key's entries never count against this one
    other = _key(small_mnist)
    record_spent(path, other, "suspect-b", [35, 36])
    assert spent_indices(path, key) == frozenset(range(30))


def test_verify_records_spent_keys_and_key_info_shows_the_balance(small_mnist, tmp_path, monkeypatch, capsys):
    key = _key(small_mnist)
    path = tmp_path / "watermark.key"
    save_key(path, key)
    ctx_verdict = verify(key, TorchOracle(Answering(key)))
    assert ctx_verdict.watermarked is True
    from nnmark.verify.context import VerifyContext

    ctx = VerifyContext(spent=frozenset(range(10)))
    v = verify(key, TorchOracle(Answering(key)), context=ctx)
    assert v.watermarked is True and sorted(ctx.sent_keys) == list(range(40))
    assert set(ctx.sent_keys[:30]) == set(range(10, 40))  # unspent first
    record_spent(path, key, "x", ctx.sent_keys)
    assert run_cli(monkeypatch, "key", "info", path, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spent"] == "0 of 40 keys unspent"


def test_a_python_caller_verifies_a_key_file_as_the_cli_does(small_mnist, tmp_path):
    """nnmark.verify_key_file (review of issue 12: covers and the spend log lived in the CLI only):
    covers go out with the keys and are not counted, the keys sent are logged beside the key, and
    an owner's second check sends the unspent keys first and is warned that none are left."""
    import nnmark

    key = make_key("adi", small_mnist.train_x[:300], small_mnist.train_y[:300], C, keys=80)
    path = tmp_path / "watermark.key"
    save_key(path, key)
    suspect = TorchOracle(Answering(key))
    first = nnmark.verify_key_file(
        path, key, suspect, nnmark.VerifyContext(), suspect_name="a", test="threshold", cover_ratio=1.0,
        cover_data="mnist5k",
    )  # fmt: skip
    kinds = [q.kind for q in first.oracle.log.records]
    assert first.verdict.watermarked is True and kinds.count("key") == first.verdict.queries
    assert kinds.count("cover") >= first.verdict.queries // 2  # covers sent, never counted as keys
    sent = spent_indices(path, key)
    assert len(sent) == first.verdict.queries == 40 and not first.warnings  # Zhang's 40 of the 80
    ctx = nnmark.VerifyContext()
    second = nnmark.verify_key_file(path, key, suspect, ctx, suspect_name="b", test="threshold")
    assert set(ctx.sent_keys).isdisjoint(sent)  # the 40 unspent ones
    assert balance(path, key).unspent == 0 and "embed a fresh key" in second.warnings[0]
    untouched = tmp_path / "other.key"
    save_key(untouched, key)
    nnmark.verify_key_file(untouched, key, suspect, nnmark.VerifyContext(), suspect_name="c", spend_log=False)
    assert spent_indices(untouched, key) == frozenset()


def test_the_report_shows_suspect_queries_numbers_and_the_match_curve(small_mnist, tmp_path):
    key = _key(small_mnist)
    oracle = VerifierOracle(TorchOracle(Answering(key)), small_mnist.test_x[:100].float() / 255, 1.0)
    v = verify(key, oracle)
    assert v.watermarked is True and len(v.evidence["match_sequence"]) == 40
    page = render_report(key, v, {"kind": "run folder", "path": "x", "SHA-256": "ab" * 32}, oracle.log)
    assert '<svg id="match-curve"' in page and "chance rate p0 = 0.100" in page
    assert page.count('<tr class="key">') == 40 and page.count('<tr class="cover">') == oracle.log.covers
    assert "ab" * 32 in page and "key commitment" in page and key.commitment in page
    for name in v.decided_by:
        assert html.escape(name) in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_the_match_curve_follows_the_answers():
    svg = match_curve_svg([1, 1, 0, 1], 0.25)
    points = svg.split('<polyline points="')[1].split('"')[0].split()
    rates = [1 - (float(p.split(",")[1]) - 20) / 200 for p in points]
    assert rates == pytest.approx([1.0, 1.0, 2 / 3, 0.75], abs=1e-2)
    assert "no per-key answers" in match_curve_svg([], None).lower()


def test_the_cli_report_as_html_and_json(small_mnist, tmp_path, monkeypatch, capsys):
    from nnmark.training import TrainConfig
    from nnmark.workflow import embed_run

    run = embed_run(
        "adi",
        {"keys": 20},
        "mnist5k",
        "dnn1",
        TrainConfig(epochs=1),
        tmp_path / "wm",
        calibrate=0,
        progress=False,
    )
    for name in ("r.html", "r.json"):
        argv = [
            "nnmark",
            "verify",
            "--key",
            str(run.out / "watermark.key"),
            "--model",
            str(run.out),
            "--cover-ratio",
            "1",
            "--report",
            str(tmp_path / name),
            "--json",
        ]
        assert run_cli(monkeypatch, *argv[1:]) == 0
        capsys.readouterr()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["key"]["commitment"] == run.key.commitment
    assert doc["suspect"]["kind"] == "run folder" and len(doc["suspect"]["model.safetensors SHA-256"]) == 64
    kinds = [q["kind"] for q in doc["queries"]]
    assert kinds.count("key") == 20 and kinds.count("cover") >= 5
    page = (tmp_path / "r.html").read_text()
    assert doc["suspect"]["model.safetensors SHA-256"] in page and '<svg id="match-curve"' in page
    # the second verification sent the keys spent by the first: the log beside the key says so
    lines = (run.out / "watermark.key.spent.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(len(json.loads(line)["indices"]) == 20 for line in lines)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_the_report_renders_in_headless_chromium(small_mnist, tmp_path):
    key = _key(small_mnist)
    calibrated = key if key.calibration else key
    assert isinstance(calibrated.calibration, Calibration | None)
    oracle = VerifierOracle(TorchOracle(Answering(key)), small_mnist.test_x[:50].float() / 255, 0.5)
    v = verify(key, oracle)
    page = tmp_path / "report.html"
    page.write_text(render_report(key, v, {"kind": "run folder", "path": "x"}, oracle.log))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    dom = subprocess.run([*args, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "watermark found" in dom.stdout and 'id="match-curve"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1100,1600", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000  # a rendered page, not a blank one
