"""Key files: round trip, mode 0600, and refusal of any changed byte."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.keyfile import load_key, load_later_calibration, save_key, save_later_calibration
from nnmark.types import Calibration, Key


def make_key() -> Key:
    g = torch.Generator().manual_seed(0)
    return Key(
        scheme="zhang-noise",
        params={"target": 3, "keys": 5},
        input_shape=(1, 28, 28),
        num_classes=10,
        inputs=torch.rand(5, 1, 28, 28, generator=g),
        labels=torch.full((5,), 3),
        tensors={"probe": torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8)},
        calibration=Calibration((0.01, 0.02), 5, 0.2, "test"),
    )


def test_round_trip_and_mode(tmp_path):
    key = make_key()
    path = tmp_path / "watermark.key"
    commitment = save_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = load_key(path)
    assert back.commitment == commitment and len(commitment) == 64
    assert torch.equal(back.inputs, key.inputs) and torch.equal(back.labels, key.labels)
    assert torch.equal(back.tensors["probe"], key.tensors["probe"])
    assert back.params == key.params and back.calibration == key.calibration
    assert back.version == 1 and not back.signed


@pytest.mark.parametrize("position", [0, 10, 100, 1000, -30, -2])
def test_any_changed_byte_is_refused(tmp_path, position):
    path = tmp_path / "watermark.key"
    save_key(path, make_key())
    raw = bytearray(path.read_bytes())
    raw[position] = (raw[position] + 1) % 128 or 65
    path.write_bytes(bytes(raw))
    with pytest.raises(KeyTamperedError):
        load_key(path)


def test_rewritten_content_with_valid_json_is_refused(tmp_path):
    path = tmp_path / "watermark.key"
    save_key(path, make_key())
    doc = json.loads(path.read_bytes())
    doc["body"]["params"]["target"] = 4
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    with pytest.raises(KeyTamperedError, match="commitment"):
        load_key(path)


def test_missing_key_is_a_user_error(tmp_path):
    with pytest.raises(NnmarkError, match="not found"):
        load_key(tmp_path / "nope.key")


def test_later_calibration_lives_beside_the_key(tmp_path):
    path = tmp_path / "watermark.key"
    save_key(path, make_key())
    before = path.read_bytes()
    key = load_key(path)
    cal = Calibration((0.0, 0.1, 0.05, 0.02), 5, 0.3, "later")
    written = save_later_calibration(path, key, cal)
    assert written.name == "calibration.json" and path.read_bytes() == before
    assert load_later_calibration(path, key) == cal
    other = tmp_path / "other"
    other.mkdir()
    save_key(other / "watermark.key", make_key())
    (other / "calibration.json").write_bytes(written.read_bytes())
    k2 = load_key(other / "watermark.key")
    if k2.commitment != key.commitment:
        with pytest.raises(NnmarkError, match="another key"):
            load_later_calibration(other / "watermark.key", k2)
