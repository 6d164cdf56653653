"""Owner identities and keys bound to them (issues 5 and 8): keygen, passphrases, signed keys, every
refusal, and key secrets that two owners with identical settings never share."""

from __future__ import annotations

import json
import stat
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from nnmark import cli
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import (
    OWNER_HEADER,
    OwnerKey,
    generate_owner,
    load_owner,
    load_public,
    save_owner,
    sha256_hex,
)
from nnmark.keyfile import key_bytes, load_key, parse_key, save_key
from nnmark.keysecret import new_secret
from nnmark.oracle import TorchOracle
from nnmark.types import Calibration, Key, Owner
from nnmark.verify.verifier import check_owner, verify


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


def small_key(calibrated: bool = True, owner: OwnerKey | None = None) -> Key:
    """A zhang-content key as this nnmark writes it (secret signed by ``owner`` when given)."""
    g = torch.Generator().manual_seed(0)
    return Key(
        scheme="zhang-content",
        params={
            "target": 3,
            "keys": 6,
            "text": "TEST",
            "value": 1.0,
            "secret": new_secret("zhang-content", owner),
            "protocol": 2,
            "dataset": "mnist5k",
        },
        input_shape=(1, 4, 4),
        num_classes=10,
        inputs=torch.rand(6, 1, 4, 4, generator=g),
        labels=torch.full((6,), 3),
        calibration=Calibration((0.1, 0.2, 0.1), 6, 0.3, "test calibration", ("a", "b", "c"))
        if calibrated
        else None,
        created="2026-01-01T00:00:00+00:00",
    )


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Alice and Bob, the same in every run: a key's secret comes from its owner's signature, so a
    random owner made the end-to-end embedding test's key texts, and its verdict, differ per run."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    root = tmp_path_factory.mktemp("people")
    for name in ("Alice", "Bob"):
        raw = hashlib.sha256(f"nnmark test owner {name}".encode()).digest()
        save_owner(OwnerKey(name, Ed25519PrivateKey.from_private_bytes(raw)), root / name.lower())
    return {"root": root, "alice": root / "alice", "bob": root / "bob"}


def test_keygen_writes_a_private_key_0600_and_a_public_key(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(
        monkeypatch, capsys, "keygen", "--owner", "Ada Lovelace", "--out", tmp_path / "ada"
    )
    assert code == 0, err
    key, pub = tmp_path / "ada.key", tmp_path / "ada.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith(f"{OWNER_HEADER}Ada Lovelace\n")
    assert "ENCRYPTED" not in key.read_text()
    assert load_public(pub)[0] == "Ada Lovelace"
    assert load_owner(key).name == "Ada Lovelace"
    code, _, err = run_cli(monkeypatch, capsys, "keygen", "--owner", "Ada", "--out", tmp_path / "ada")
    assert code == 2 and "already exists" in err


def test_passphrase_comes_from_the_environment_never_a_prompt(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ADA_PASS", "correct horse")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "keygen",
        "--owner",
        "Ada",
        "--out",
        tmp_path / "ada",
        "--passphrase-env",
        "ADA_PASS",
    )
    assert code == 0, err
    assert "ENCRYPTED" in (tmp_path / "ada.key").read_text()
    with pytest.raises(NnmarkError, match="is encrypted; name the variable"):
        load_owner(tmp_path / "ada.key")
    assert load_owner(tmp_path / "ada.key", "ADA_PASS").name == "Ada"
    monkeypatch.setenv("WRONG", "not it")
    with pytest.raises(NnmarkError, match="wrong passphrase"):
        load_owner(tmp_path / "ada.key", "WRONG")
    with pytest.raises(NnmarkError, match="MISSING_VAR"):
        load_owner(tmp_path / "ada.key", "MISSING_VAR")
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "keygen",
        "--owner",
        "Bo",
        "--out",
        tmp_path / "bo",
        "--passphrase-env",
        "MISSING_VAR",
    )
    assert code == 2 and "MISSING_VAR" in err and not (tmp_path / "bo.key").exists()
    save_owner(generate_owner("Plain"), tmp_path / "plain")
    with pytest.raises(NnmarkError, match="not encrypted"):
        load_owner(tmp_path / "plain.key", "ADA_PASS")


def test_owner_names_are_one_printable_line():
    with pytest.raises(NnmarkError, match="one line"):
        generate_owner("Alice\nMallory")
    with pytest.raises(NnmarkError, match="empty"):
        generate_owner("  ")


def test_every_changed_byte_of_a_signed_key_is_refused():
    alice = generate_owner("Alice")
    data = key_bytes(small_key(), alice)
    assert parse_key(data).signed
    for i in range(len(data)):
        changed = bytearray(data)
        changed[i] = changed[i] ^ 0x01 if changed[i] != 0x0A else 0x20
        with pytest.raises(NnmarkError):
            parse_key(bytes(changed), f"byte {i}")


def test_resigned_body_with_a_foreign_signature_is_refused():
    alice, mallory = generate_owner("Alice"), generate_owner("Mallory")
    doc = json.loads(key_bytes(small_key(), alice))
    doc["signature"] = json.loads(key_bytes(small_key(), mallory))["signature"]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    with pytest.raises(KeyTamperedError, match="signature does not verify"):
        parse_key(data)


def write_signed(path: Path, signer_stem: Path | None, name: str | None = None) -> Path:
    signer = load_owner(f"{signer_stem}.key") if signer_stem else None
    if signer is not None and name is not None:
        signer = replace(signer, name=name)
    save_key(path, small_key(owner=signer), signer)
    return path


def test_verify_refuses_changed_bytes_other_owners_and_unsigned_keys(monkeypatch, capsys, people, tmp_path):
    alice_pub = f"{people['alice']}.pub"
    signed = write_signed(tmp_path / "alice.key", people["alice"])
    data = signed.read_bytes()
    assert data.count(b"2026-01-01") == 1
    tampered = tmp_path / "tampered.key"
    tampered.write_bytes(data.replace(b"2026-01-01", b"2027-01-01"))  # valid JSON, one changed byte
    cases = {
        tampered: "was modified",
        write_signed(tmp_path / "bob.key", people["bob"]): "signed by 'Bob', not by the owner",
        # Bob's key pair, but the key claims to be Alice's
        write_signed(tmp_path / "fake-alice.key", people["bob"], name="Alice"): "not by the owner",
        write_signed(tmp_path / "unsigned.key", None): "unsigned",
    }
    for path, words in cases.items():
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "verify",
            "--key",
            path,
            "--model",
            tmp_path / "none",
            "--owner-pub",
            alice_pub,
        )
        assert code == 2, (path, err)
        assert words in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err
    # the owner's own key passes the owner check (and then fails only on the missing model)
    code, _, err = run_cli(
        monkeypatch, capsys, "verify", "--key", signed, "--model", tmp_path / "none", "--owner-pub", alice_pub
    )
    assert code == 2 and "run folder" in err
    assert check_owner(load_key(signed), alice_pub) == [f"signed by Alice, checked against {alice_pub}"]
    with pytest.raises(KeyTamperedError, match="'Alice', not by the owner of .*'Bob'"):
        check_owner(load_key(signed), f"{people['bob']}.pub")


def test_key_info_shows_owner_scheme_commitment_time_and_never_inputs(monkeypatch, capsys, people, tmp_path):
    signed = write_signed(tmp_path / "k.key", people["alice"])
    code, out, err = run_cli(monkeypatch, capsys, "key", "info", signed, "--json")
    assert code == 0, err
    info = json.loads(out)
    key = load_key(signed)
    assert info["owner"] == "Alice" and info["scheme"] == "zhang-content" and info["signed"] is True
    assert info["commitment"] == key.commitment and info["created"] == "2026-01-01T00:00:00+00:00"
    assert "inputs" not in out and "zlib_b64" not in out
    code, out, _ = run_cli(monkeypatch, capsys, "key", "info", signed)
    assert code == 0 and key.commitment in out and "publish this commitment" in out
    code, out, _ = run_cli(monkeypatch, capsys, "key", "info", write_signed(tmp_path / "u.key", None))
    assert code == 0 and "unsigned" in out
    data = bytearray(signed.read_bytes())
    data[-30] ^= 0x01
    signed.write_bytes(bytes(data))
    code, _, err = run_cli(monkeypatch, capsys, "key", "info", signed)
    assert code == 2 and ("modified" in err or "altered" in err)


def test_unsigned_keys_still_verify_and_the_verdict_says_unsigned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    unsigned = parse_key(key_bytes(small_key()))
    verdict = verify(unsigned, TorchOracle(model))
    # six keys against a calibrated p0 can never reach alpha: the verdict says so instead of "not found"
    assert verdict.watermarked is None and "no power" in verdict.reason
    assert any(n.startswith("unsigned key:") for n in verdict.notes)
    alice = generate_owner("Alice")
    signed = parse_key(key_bytes(small_key(owner=alice), alice))
    verdict = verify(signed, TorchOracle(model))
    assert any("priority rests on when commitment" in n for n in verdict.notes)
    # a key that names an owner without that owner's signature is not a key at all
    named = replace(small_key(owner=alice), owner=Owner("Alice", alice.public_key_pem))
    with pytest.raises(KeyTamperedError, match="names owner 'Alice' but carries no signature"):
        parse_key(key_bytes(named))


def test_a_stripped_signature_is_refused_without_owner_pub(monkeypatch, capsys, people, tmp_path):
    """Issue 8 point 4: signature set to null, body edited, commitment recomputed."""
    path = write_signed(tmp_path / "alice.key", people["alice"])
    doc = json.loads(path.read_bytes())
    doc["signature"] = None
    doc["body"]["params"]["target"] = 5
    body = json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode()
    doc["commitment"] = sha256_hex(body)
    path.write_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    for extra in ((), ("--owner-pub", f"{people['alice']}.pub")):
        code, out, err = run_cli(monkeypatch, capsys, "verify", "--key", path, "--model", tmp_path, *extra)
        assert code == 2 and "names owner 'Alice' but carries no signature" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == ""
    code, _, err = run_cli(monkeypatch, capsys, "key", "info", path)
    assert code == 2 and "carries no signature" in err


def test_embed_with_owner_signs_the_key_end_to_end(monkeypatch, capsys, people, small_mnist, tmp_path):
    from nnmark.training import TrainConfig
    from nnmark.workflow import embed_run

    data = replace(small_mnist, train_x=small_mnist.train_x[:300], train_y=small_mnist.train_y[:300])
    owner = load_owner(f"{people['alice']}.key")
    run = embed_run(
        "zhang-content",
        {"target": 1, "keys": 20, "batch_size": 50, "keys_per_batch": 10},
        data,
        "dnn1",
        TrainConfig(epochs=2),
        tmp_path / "wm",
        calibrate=3,
        owner=owner,
        key_seed=5,  # fixed key images: a fresh draw sometimes gives 3 references a spread (no verdict)
        progress=False,
    )
    key = load_key(run.out)
    assert key.signed and key.owner is not None and key.owner.name == "Alice"
    assert key.commitment == run.commitment and key.fingerprint
    assert key.params["secret"]["signature"] and key.params["protocol"] == 2
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "verify",
        "--key",
        run.out / "watermark.key",
        "--model",
        run.out,
        "--owner-pub",
        f"{people['alice']}.pub",
        "--test",
        "threshold",
    )
    assert code == 0, (out, err)  # found: p0 from the owner's own calibration, signed into the key
    assert "signed by Alice, checked against" in out and "[claimant]" in out
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "verify",
        "--key",
        run.out / "watermark.key",
        "--model",
        run.out,
        "--owner-pub",
        f"{people['bob']}.pub",
    )
    assert code == 2 and "not by the owner" in err
    code, out, err = run_cli(monkeypatch, capsys, "key", "info", run.out / "watermark.key", "--json")
    info = json.loads(out)
    assert info["secret_signed"] is True and info["secret_guessable"] is True  # made with --key-seed
    assert info["secret_check"] == "ok"
    secret = key.params["secret"]
    for hidden in (secret["nonce"], secret["signature"], secret["message"]):
        assert hidden not in out


def test_two_owners_with_identical_settings_get_different_secrets(monkeypatch, capsys, tmp_path):
    """Issue 8 point 1: two owners who run the same `embed` command (the default --seed 0, no owner
    key) no longer share a key: secrets come from the OS's random source, not from --seed."""
    import nnmark
    from nnmark.workflow import load_model

    runs = {}
    for who in ("first", "second"):
        code, _, err = run_cli(
            monkeypatch, capsys, "embed", "--scheme", "adi", "--model", "dnn1", "--epochs", "1",
            "--set", "keys_per_batch=32", "--out", tmp_path / who,
        )  # fmt: skip
        assert code == 0, err
        runs[who] = (load_key(tmp_path / who), load_model(tmp_path / who))
    (ka, ma), (kb, mb) = runs["first"], runs["second"]
    assert ka.params["secret"]["nonce"] != kb.params["secret"]["nonce"]
    assert not ka.params["secret"]["guessable"] and not kb.params["secret"]["guessable"]
    assert not torch.equal(ka.inputs, kb.inputs) and not torch.equal(ka.labels, kb.labels)
    assert nnmark.verify(ka, TorchOracle(ma)).watermarked is True
    assert nnmark.verify(kb, TorchOracle(mb)).watermarked is True
    # each one's model is not found with the other's key (p0 = 1/10 exactly: labels from the secret)
    for key, model in ((ka, mb), (kb, ma)):
        verdict = nnmark.verify(key, TorchOracle(model))
        assert verdict.watermarked is False, verdict
        assert verdict.decided_by["p0"]["source"] == "protocol"


def test_a_key_seed_makes_a_reproducible_key_that_says_it_is_guessable(monkeypatch, capsys, tmp_path):
    from nnmark.keysecret import is_guessable, secret_from_entry

    a, b = new_secret("adi", None, key_seed=7), new_secret("adi", None, key_seed=7)
    assert secret_from_entry(a) == secret_from_entry(b) and a["guessable"]
    key = replace(small_key(), params={**small_key().params, "secret": a})
    save_key(tmp_path / "k.key", key)
    assert is_guessable(load_key(tmp_path / "k.key"))
    code, out, _ = run_cli(monkeypatch, capsys, "key", "info", tmp_path / "k.key")
    assert code == 0 and "guessable" in out and a["nonce"] not in out
    code, out, _ = run_cli(monkeypatch, capsys, "key", "info", tmp_path / "k.key", "--json")
    assert json.loads(out)["secret_guessable"] is True
