"""Who decides p0 (issue 8, DESIGN.md "Who decides a verdict"), tried as a forger would.

The suspect here answers class 3 to everything, so every key of a class-3 key set matches: the
verdict then turns only on where p0 comes from. A hand-written ``calibration.json`` with p0 = 0.05
would make it "found"; it must never count unless a signer the verifier accepts made it.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import replace
from html import escape
from pathlib import Path

import pytest
import torch

import nnmark
from nnmark import cli
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError
from nnmark.identity import OwnerKey, load_owner, save_owner
from nnmark.io import METRICS_FILE, write_json, write_model_files
from nnmark.keyfile import (
    calibration_bytes,
    load_key,
    load_later_calibration,
    save_key,
    save_later_calibration,
    verify_context,
)
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.training import TrainConfig
from nnmark.types import Calibration, Key
from nnmark.verify.report import render_report
from nnmark.verify.verifier import ZHANG_QUERIES
from nnmark.workflow import embed_run, load_model, model_spec

KEYS = 100
TARGET = 3
SOURCES = {"protocol", "verifier", "claimant", "suspect"}
#: what a forger writes into calibration.json: a low chance rate from "three clean models"
FORGED = Calibration((0.05, 0.05, 0.05), KEYS, 0.05, "forged", ("a", "b", "c"))
#: the owner's honest calibration: three clean models that never answer class 3
HONEST = Calibration((0.0, 0.0, 0.0), KEYS, 0.2, "honest", ("x", "y", "z"))


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object
) -> tuple[int, str, str]:
    """Run ``nnmark ARGS`` in this process; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["nnmark", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def constant_run(path: Path, data: ImageDataset, cls: int) -> Path:
    """A run folder whose model answers class ``cls`` to every input (never trained on any key)."""
    spec = model_spec("dnn1", data, hidden=4)
    torch.manual_seed(cls)
    model = build_model(spec)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[cls] = 10.0
    path.mkdir(parents=True)
    write_model_files(path, model, spec)
    write_json(path / METRICS_FILE, {"source": "test"})
    return path


def owner_key(run: Path) -> Key:
    """The zhang-content key ``run`` was embedded with (signed by its owner): 100 keys, class 3."""
    return load_key(run / "watermark.key")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, small_mnist: ImageDataset) -> dict[str, Path]:
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    root = tmp_path_factory.mktemp("judge")
    # the same people every run: Alice's key secret comes from her signature, and with a random Alice
    # about one model in 16 left all its verifications without a verdict (below)
    for name in ("Alice", "Mallory", "Court"):
        raw = hashlib.sha256(f"nnmark judge test owner {name}".encode()).digest()
        save_owner(OwnerKey(name, Ed25519PrivateKey.from_private_bytes(raw)), root / name.lower())
    alice = load_owner(root / "alice.key")
    runs = {f"always{c}": constant_run(root / f"always{c}", small_mnist, c) for c in (0, 1, 2, TARGET)}
    # Alice's watermarked model: the registered mnist5k, so every verifier re-derives the key images
    # 16 decoys per batch (default 8) teach dnn1 Alice's texts and not the stamp. The control test's
    # bound follows the worst of 20 control texts, and a random text now and then draws the target
    # 40-90 % of the time, which leaves that verification without a verdict. Measured with these
    # settings (the protocol's 100 keys, 6 epochs): 29 of 48 verifications found (16 fresh models x 3
    # tests), all three without a verdict for 1 model in 16 (with 60 keys and 4 epochs: about 1 CI run
    # in 10-20); the test below therefore runs each test twice
    settings = {"keys": KEYS, "target": TARGET, "keys_per_batch": 12, "lr": 3e-3, "decoys": 16}
    wm = root / "wm"
    embed_run(
        "zhang-content",
        settings,
        "mnist5k",
        "dnn1",
        TrainConfig(epochs=6),
        wm,
        calibrate=0,
        owner=alice,
        progress=False,
    )
    for name, cal in (("calibrated", HONEST), ("bare", None)):
        (root / name).mkdir()
        save_key(root / name / "watermark.key", replace(owner_key(wm), calibration=cal), alice)
    return {"root": root, "wm": wm, **runs}


def fresh_key_folder(world: dict[str, Path], tmp_path: Path, name: str = "bare") -> Path:
    """A copy of a key folder, so that each test writes its own calibration.json."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "watermark.key").write_bytes((world["root"] / name / "watermark.key").read_bytes())
    return folder / "watermark.key"


def verify_json(monkeypatch, capsys, key: Path, suspect: Path, *extra: object) -> tuple[int, dict, str]:
    code, out, err = run_cli(
        monkeypatch, capsys, "verify", "--key", key, "--model", suspect, "--json", *extra
    )
    assert "Traceback" not in err, err
    if code == 2 and not out.strip():  # refused before a verdict: one line on stderr
        assert len(err.strip().splitlines()) == 1, err
        return code, {}, err
    assert out.count("\n") == 1, out
    return code, json.loads(out), err


def test_owner_mode_uses_the_owners_calibration_and_says_claimant(monkeypatch, capsys, world, tmp_path):
    key = world["root"] / "calibrated" / "watermark.key"
    code, doc, _ = verify_json(monkeypatch, capsys, key, world["wm"])
    # found, or no verdict when one of the verifier's control stamps resembles Alice's; never "not found"
    assert code == (0 if doc["watermarked"] else 2) and doc["watermarked"] is not False, doc["reason"]
    assert doc["decided_by"]["p0"]["source"] == "claimant"
    assert "claimant" in doc["guarantee"] and "alpha" in doc["guarantee"]
    assert any("--judge --reference" in n for n in doc["notes"])
    for name, entry in doc["decided_by"].items():
        assert entry["source"] in SOURCES, (name, entry)
    assert {"alpha", "test", "protocol", "p0", "threshold"} <= set(doc["decided_by"])
    # the same key and suspect, as a judge: nothing of the claimant's decides, so no verdict
    code, doc, err = verify_json(monkeypatch, capsys, key, world["wm"], "--judge")
    assert code == 2 and doc["watermarked"] is None
    assert "--reference" in doc["reason"] and doc["decided_by"]["p0"]["value"] is None
    # the human-readable output says where p0 came from
    code, out, err = run_cli(monkeypatch, capsys, "verify", "--key", key, "--model", world["wm"])
    # found, or no verdict when a control stamp resembles Alice's; the exit status follows the verdict
    assert "[claimant]" in out and "guarantee:" in out, out + err
    assert code == (0 if "watermark FOUND" in out else 2) and "NOT FOUND" not in out, out + err
    code, out, err = run_cli(monkeypatch, capsys, "verify", "--key", key, "--model", world["wm"], "--judge")
    assert code == 2 and err.startswith("nnmark: no verdict possible") and "--reference" in err


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_than_three_references_give_no_verdict(monkeypatch, capsys, world, count):
    refs = [a for c in range(count) for a in ("--reference", world[f"always{c}"])]
    key = world["root"] / "calibrated" / "watermark.key"
    code, doc, _ = verify_json(monkeypatch, capsys, key, world["wm"], *refs)
    assert code == 2 and doc["watermarked"] is None
    assert "at least 3" in doc["reason"] and doc["decided_by"]["p0"]["source"] == "verifier"


def test_the_same_reference_named_three_times_counts_once(monkeypatch, capsys, world):
    """Three copies of one clean model say nothing about the spread between clean models."""
    refs = [a for _ in range(3) for a in ("--reference", world["always0"])]
    key = world["root"] / "bare" / "watermark.key"
    code, doc, _ = verify_json(monkeypatch, capsys, key, world["wm"], *refs)
    assert code == 2 and doc["watermarked"] is None and "1 distinct reference model" in doc["reason"]


def test_a_reference_for_another_task_is_a_one_line_error(monkeypatch, capsys, world, tmp_path):
    x = torch.randint(0, 255, (8, 3, 8, 8), dtype=torch.uint8)
    colour = ImageDataset("colour", x, torch.arange(8) % 10, x, torch.arange(8) % 10, 10)
    other = constant_run(tmp_path / "colour", colour, 0)
    refs = [a for r in (world["always0"], world["always1"], other) for a in ("--reference", r)]
    key = world["root"] / "calibrated" / "watermark.key"
    code, out, err = run_cli(monkeypatch, capsys, "verify", "--key", key, "--model", world["always0"], *refs)
    assert code == 2 and "takes (3, 8, 8) inputs but the key is for (1, 28, 28)" in err and out == ""
    assert len(err.strip().splitlines()) == 1


def test_three_references_decide_as_the_verifier(monkeypatch, capsys, world, tmp_path):
    refs = [a for c in range(3) for a in ("--reference", world[f"always{c}"])]
    key = world["root"] / "bare" / "watermark.key"  # no calibration of the claimant's at all
    report = tmp_path / "judge.html"
    code, doc, _ = verify_json(monkeypatch, capsys, key, world["wm"], *refs, "--report", report)
    # found, or (when a control secret's stamp happens to resemble Alice's) no verdict; never "not found"
    assert doc["watermarked"] is not False and code == (0 if doc["watermarked"] else 2), doc["reason"]
    p0 = doc["decided_by"]["p0"]
    assert p0["source"] == "verifier" and "reference models" in p0["how"]
    assert "claimant" not in doc["guarantee"]
    html = report.read_text()
    assert "Who decided each number" in html and "verifier" in html and "Recommendation" not in html
    # a clean suspect (answers class 0) is not found by the judge either way
    code, doc, _ = verify_json(monkeypatch, capsys, key, world["always0"], *refs)
    assert code == 1 and doc["watermarked"] is False


def test_report_recommends_a_judges_run_when_p0_is_the_claimants(monkeypatch, capsys, world, tmp_path):
    report = tmp_path / "owner.html"
    key = world["root"] / "calibrated" / "watermark.key"
    code, _, err = run_cli(
        monkeypatch, capsys, "verify", "--key", key, "--model", world["wm"], "--report", report
    )
    assert code in (0, 2), err  # found, or no verdict when a control stamp resembles Alice's
    html = report.read_text()
    assert "Recommendation" in html and "--judge --reference" in html
    assert "claimant" in html and "guarantee" in html.lower()
    for source in ("protocol", "verifier", "claimant"):
        assert f"<td>{source}</td>" in html, source
    # the Python API: the same context, the same verdict, the same report
    k = load_key(key)
    suspect = TorchOracle(load_model(world["wm"]))
    verdict = nnmark.verify(k, suspect, context=verify_context(key, k))
    assert verdict.watermarked is not False and verdict.decided_by["p0"]["source"] == "claimant"
    page = render_report(k, verdict)
    assert "Recommendation" in page
    for name, entry in verdict.decided_by.items():  # every deciding number, each with its source
        row = rf"<tr><td>{re.escape(escape(name))}</td><td>[^<]*</td><td>{entry['source']}</td>"
        assert re.search(row, page), name
    references = [(load_model(world[f"always{c}"]), str(c)) for c in range(3)]
    judged = nnmark.verify(k, suspect, context=nnmark.VerifyContext(references=references))
    assert judged.watermarked is not False and "Recommendation" not in render_report(k, judged)
    assert judged.decided_by["p0"]["source"] == "verifier"


def forged_unsigned(key_path: Path) -> None:
    """Issue 8 point 3: an unsigned calibration.json whose commitment matches (the commitment is public)."""
    doc = {"commitment": load_key(key_path).commitment, "calibration": FORGED.to_json()}
    (key_path.parent / "calibration.json").write_text(json.dumps(doc))


def test_a_hand_written_calibration_never_changes_a_verdict(monkeypatch, capsys, world, tmp_path):
    suspect = world["wm"]
    mallory = load_owner(world["root"] / "mallory.key")
    alice = load_owner(world["root"] / "alice.key")
    key_path = fresh_key_folder(world, tmp_path)
    key = load_key(key_path)
    cal_path = key_path.parent / "calibration.json"

    # without any calibration the owner gets no verdict: the baseline every forgery must keep
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect)
    assert code == 2 and doc["watermarked"] is None

    # 1. unsigned, commitment copied from the key: ignored, and the verdict says so
    forged_unsigned(key_path)
    for mode in ((), ("--judge",)):
        code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect, *mode)
        assert code == 2 and doc["watermarked"] is None, mode
        assert any("unsigned and was ignored" in n for n in doc["notes"]), doc["notes"]

    # 2. signed by someone who is neither the key's owner nor trusted: ignored
    save_later_calibration(key_path, key, FORGED, mallory)
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect)
    assert code == 2 and doc["watermarked"] is None
    assert any("'Mallory', who is neither the key's owner nor trusted" in n for n in doc["notes"])

    # 3. signed by the owner, then edited (p0 and rates lowered): refused, exit 2, one line
    save_later_calibration(key_path, key, HONEST, alice)
    doc = json.loads(cal_path.read_text())
    doc["calibration"] = FORGED.to_json()
    cal_path.write_text(json.dumps(doc))
    code, out, err = run_cli(monkeypatch, capsys, "verify", "--key", key_path, "--model", suspect)
    assert code == 2 and "does not verify" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and out == ""

    # 4. Mallory re-signs the owner's file in the owner's name: the signature fails under Alice's key
    doc = json.loads(calibration_bytes(key, FORGED, mallory))
    doc["signer"] = {"name": "Alice", "public_key": alice.public_key_pem}
    cal_path.write_text(json.dumps(doc))
    code, _, err = run_cli(monkeypatch, capsys, "verify", "--key", key_path, "--model", suspect)
    assert code == 2 and "does not verify" in err

    # 5. Mallory's own signature with Mallory's key claims to be Alice's by name only: not the owner
    doc = json.loads(calibration_bytes(key, FORGED, replace(mallory, name="Alice")))
    cal_path.write_text(json.dumps(doc))
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect)
    assert code == 2 and doc["watermarked"] is None

    # the control: the owner's own signed calibration does decide (so the forgeries above would have)
    save_later_calibration(key_path, key, FORGED, alice)
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect)
    # p0 now decides (found, or no verdict when a control stamp resembles Alice's: see above)
    assert code in (0, 2) and doc["p0"] is not None and doc["decided_by"]["p0"]["source"] == "claimant"
    assert "signed by the key's owner" in doc["decided_by"]["p0"]["how"]
    assert code == 0 or "control keys" in doc["reason"].lower()
    # ... but never for a judge
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect, "--judge")
    assert code == 2 and any("not used in judge mode" in n for n in doc["notes"])


def test_a_calibration_signed_by_a_trusted_key_counts_as_the_verifiers(monkeypatch, capsys, world, tmp_path):
    suspect = world["wm"]
    key_path = fresh_key_folder(world, tmp_path)
    court = load_owner(world["root"] / "court.key")
    save_later_calibration(key_path, load_key(key_path), HONEST, court)
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect, "--judge")
    assert code == 2 and any("'Court', who is neither" in n for n in doc["notes"])
    trust = ("--trust", world["root"] / "court.pub")
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect, "--judge", *trust)
    # p0 is now the verifier's (found, or no verdict when a control stamp resembles Alice's)
    assert code in (0, 2) and doc["p0"] is not None and doc["decided_by"]["p0"]["source"] == "verifier"
    assert "trusted Court" in doc["decided_by"]["p0"]["how"]
    # trusting someone else does not make Court's calibration count
    other = ("--trust", world["root"] / "mallory.pub")
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, suspect, "--judge", *other)
    assert code == 2


def test_calibrate_needs_three_models_and_a_signer(monkeypatch, capsys, world, tmp_path):
    key_path = fresh_key_folder(world, tmp_path)
    signer = ("--signer", world["root"] / "alice.key")
    code, _, err = run_cli(
        monkeypatch, capsys, "calibrate", "--key", key_path, "--model", world["always0"], *signer
    )
    assert code == 2 and "calibrate needs at least 3 clean models" in err
    assert len(err.strip().splitlines()) == 1 and "--verbose" not in err  # a user error, not a crash
    models = [a for c in range(3) for a in ("--model", world[f"always{c}"])]
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--key", key_path, *models)
    assert code == 2 and "signer" in err and "Traceback" not in err
    assert not (key_path.parent / "calibration.json").exists()
    code, out, err = run_cli(monkeypatch, capsys, "calibrate", "--key", key_path, *models, *signer)
    assert code == 0 and "signed by Alice" in out and "loose" not in err, err
    later = load_later_calibration(key_path, load_key(key_path))
    assert later is not None and later.signer == "Alice" and later.calibration.rates == (0.0, 0.0, 0.0)
    code, doc, _ = verify_json(monkeypatch, capsys, key_path, world["wm"])
    assert code in (0, 2) and doc["p0"] is not None and doc["decided_by"]["p0"]["source"] == "claimant"


def test_embed_refuses_one_or_two_calibration_models(monkeypatch, capsys, tmp_path):
    for n in ("1", "2"):
        code, _, err = run_cli(
            monkeypatch, capsys, "embed", "--scheme", "zhang-content", "--out", tmp_path / "wm",
            "--calibrate", n, "--epochs", "1",
        )  # fmt: skip
        assert code == 2 and "at least 3" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "wm").exists()


def test_verify_context_roles(world, tmp_path):
    """The library call behind the CLI: which calibration plays which part."""
    key_path = fresh_key_folder(world, tmp_path)
    key = load_key(key_path)
    alice, court = load_owner(world["root"] / "alice.key"), load_owner(world["root"] / "court.key")
    save_later_calibration(key_path, key, HONEST, alice)
    ctx = verify_context(key_path, key)
    assert ctx.owner_calibration == HONEST and not ctx.trusted and not ctx.judge
    ctx = verify_context(key_path, key, judge=True)
    assert ctx.owner_calibration is None and ctx.judge and ctx.notes
    ctx = verify_context(key_path, key, references=[(torch.nn.Identity(), "r")])
    assert ctx.judge and ctx.owner_calibration is None
    save_later_calibration(key_path, key, HONEST, court)
    ctx = verify_context(key_path, key, trust=[("Court", court.public_key_pem)])
    assert ctx.trusted == [(HONEST, "Court")] and ctx.owner_calibration is None
    ctx = verify_context(key_path, key)
    assert ctx.owner_calibration is None and "Court" in ctx.notes[0]
    # a signature over another key's commitment is refused
    doc = json.loads((key_path.parent / "calibration.json").read_text())
    other = replace(key, commitment="0" * 64)
    (key_path.parent / "calibration.json").write_bytes(calibration_bytes(other, HONEST, court))
    with pytest.raises(Exception, match="another key"):
        verify_context(key_path, key, trust=[("Court", court.public_key_pem)])
    doc["signature"] = base64.b64encode(b"x" * 64).decode()
    (key_path.parent / "calibration.json").write_text(json.dumps(doc))
    with pytest.raises(KeyTamperedError, match="does not verify"):
        verify_context(key_path, key)


def test_a_class_level_trigger_is_not_taken_for_the_owners_watermark(monkeypatch, capsys, world, tmp_path):
    """A model that sends every input to the target answers Alice's keys, and equally the control keys
    the verifier stamps with texts of its own (20 secrets, each one unit): the behaviour is not
    specific to Alice's key, so no verdict, while Alice's own model beats the controls and is found
    (each test three times: with the seeded Alice, 5 of 12 verifications were found in two runs, the
    others drew a control text near hers and gave no verdict, see ``world``)."""
    key = fresh_key_folder(world, tmp_path, "calibrated")
    found = []
    for test in ("binomial", "threshold", "sprt") * 3:
        code, doc, _ = verify_json(monkeypatch, capsys, key, world[f"always{TARGET}"], "--test", test)
        assert doc["watermarked"] is None and code == 2, (test, doc["reason"])
        assert "not shown to be specific to this key" in doc["reason"]
        assert doc["evidence"]["control_rates"] == [1.0] * 20  # every control key went to the target
        code, doc, _ = verify_json(monkeypatch, capsys, key, world["wm"], "--test", test)
        # Alice's own model: most control secrets' stamps miss the target (an occasional text close to
        # hers raises the bound and leaves the keys short of alpha: "no verdict", never "not found")
        assert doc["watermarked"] is not False and code in (0, 2), (test, doc["reason"])
        rates = sorted(doc["evidence"]["control_rates"])
        assert rates[len(rates) // 2] <= 0.2, doc["decided_by"]["control keys"]
        # every key (at most Zhang's 40 under threshold): an early SPRT stop sent the rest of its keys
        assert doc["evidence"]["keys_sent"] == (min(KEYS, ZHANG_QUERIES) if test == "threshold" else KEYS)
        found.append(doc["watermarked"])
    assert found.count(True) >= 1, found


def test_keys_and_control_keys_go_out_in_one_shuffled_stream(world):
    """Review of issue 8: controls sent after every key let a suspect change its answers after the
    keys (a 'phase' suspect). Now keys and controls share one stream in an order the verifier draws."""
    key = load_key(world["root"] / "calibrated" / "watermark.key")
    model = load_model(world["wm"])
    sent: list[torch.Tensor] = []

    class Recording(TorchOracle):
        def _predict(self, x: torch.Tensor) -> torch.Tensor:
            sent.append(x.clone())
            return super()._predict(x)

    nnmark.verify(key, Recording(model), context=verify_context(world["root"] / "calibrated", key))
    stream = torch.cat(sent)
    assert len(stream) == KEYS + 20 * 20  # the keys and 20 control secrets x 20 keys, once each
    keys = {k.numpy().tobytes() for k in key.inputs}
    is_key = [row.numpy().tobytes() in keys for row in stream]
    assert sum(is_key) == KEYS
    assert sum(is_key[: len(is_key) // 2]) not in (0, KEYS)  # keys in both halves of the stream
