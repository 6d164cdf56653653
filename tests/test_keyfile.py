"""Key files: round trip, mode 0600, refusal of any changed byte, and signed later calibrations."""

from __future__ import annotations

import json
import stat
from dataclasses import replace

import pytest
import torch

from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import generate_owner, sha256_hex
from nnmark.keyfile import (
    key_bytes,
    load_key,
    load_later_calibration,
    parse_key,
    save_key,
    save_later_calibration,
)
from nnmark.types import Calibration, Key, Owner


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
        calibration=Calibration((0.01, 0.02, 0.0), 5, 0.2, "test"),
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
    assert back.version == 2 and not back.signed


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


def canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_a_version_1_key_is_refused_with_a_clear_message(tmp_path):
    doc = json.loads(key_bytes(make_key()))
    doc["version"] = 1
    with pytest.raises(NnmarkError, match="version 1; this nnmark reads 2.*embed the watermark again"):
        parse_key(canonical(doc))


def test_a_stripped_signature_is_refused_at_load():
    """Issue 8 point 4: signature set to null, body edited, commitment recomputed, owner name kept."""
    doc = json.loads(key_bytes(make_key(), generate_owner("Alice")))
    assert parse_key(canonical(doc)).signed
    doc["signature"] = None
    doc["body"]["params"]["target"] = 4
    doc["commitment"] = sha256_hex(json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode())
    with pytest.raises(KeyTamperedError, match="names owner 'Alice' but carries no signature"):
        parse_key(canonical(doc))
    # the same with an unedited body: a name without its signature is never a valid key
    owned = Owner("Alice", generate_owner("Alice").public_key_pem)
    doc = json.loads(key_bytes(replace(make_key(), owner=owned)))
    assert doc["signature"] is None and doc["body"]["owner"]["name"] == "Alice"
    with pytest.raises(KeyTamperedError, match="carries no signature"):
        parse_key(canonical(doc))


def test_later_calibration_is_signed_and_lives_beside_the_key(tmp_path):
    alice = generate_owner("Alice")
    path = tmp_path / "watermark.key"
    save_key(path, make_key(), alice)
    before = path.read_bytes()
    key = load_key(path)
    cal = Calibration((0.0, 0.1, 0.05, 0.02), 5, 0.3, "later")
    written = save_later_calibration(path, key, cal, alice)
    assert written.name == "calibration.json" and path.read_bytes() == before
    doc = json.loads(written.read_text())
    assert set(doc) == {"commitment", "calibration", "signer", "signature"}
    assert doc["signer"] == {"name": "Alice", "public_key": alice.public_key_pem}
    assert load_later_calibration(path, key) == (cal, "Alice", alice.public_key_pem)
    # edited after signing: refused
    for field, value in (("calibration", {**doc["calibration"], "rates": [0.0, 0.0, 0.0, 0.0]}),
                         ("signer", {"name": "Bob", "public_key": alice.public_key_pem}),
                         ("commitment", "0" * 64)):  # fmt: skip
        written.write_text(json.dumps({**doc, field: value}))
        with pytest.raises(KeyTamperedError, match="does not verify"):
            load_later_calibration(path, key)
    written.write_text(json.dumps({**doc, "extra": 1}))
    with pytest.raises(KeyTamperedError, match="fields"):
        load_later_calibration(path, key)
    # a file signed for another key is refused (rerun calibrate)
    other = tmp_path / "other"
    other.mkdir()
    save_key(other / "watermark.key", replace(make_key(), params={"target": 4, "keys": 5}), alice)
    k2 = load_key(other / "watermark.key")
    assert k2.commitment != key.commitment
    written.write_text(json.dumps(doc))
    (other / "calibration.json").write_bytes(written.read_bytes())
    with pytest.raises(NnmarkError, match="another key"):
        load_later_calibration(other / "watermark.key", k2)


def test_an_unsigned_calibration_is_ignored_with_a_note(tmp_path):
    path = tmp_path / "watermark.key"
    save_key(path, make_key())
    key = load_key(path)
    forged = Calibration((0.05, 0.05, 0.05), 5, 0.05, "hand-written")
    for doc in (
        {"commitment": key.commitment, "calibration": forged.to_json()},  # the old format
        {"commitment": key.commitment, "calibration": forged.to_json(), "signer": None, "signature": None},
    ):
        (tmp_path / "calibration.json").write_text(json.dumps(doc))
        notes: list[str] = []
        assert load_later_calibration(path, key, notes) is None
        assert len(notes) == 1 and "unsigned and was ignored" in notes[0]
    assert load_later_calibration(tmp_path / "nowhere" / "watermark.key", key) is None
