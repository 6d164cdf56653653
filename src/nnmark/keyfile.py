"""The ``watermark.key`` format: canonical JSON, a commitment hash and an optional signature.

The file is the canonical JSON serialisation (sorted keys, no spaces) of::

    {"format": "nnmark-key", "version": 1, "body": {...}, "commitment": sha256(body), "signature": ...}

so any changed byte is detected: the file must equal its own canonical form, the commitment must
match the body, and a signed key's Ed25519 signature (over the canonical body) must verify against
the owner's public key stored in the body. Calibration made later lives in ``calibration.json``
beside the key, never in it.
"""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from nnmark import identity
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.io import CALIBRATION_FILE, atomic_write_bytes, read_json, write_json
from nnmark.types import Calibration, Key, Owner

FORMAT = "nnmark-key"
_FIELDS = {"format", "version", "body", "commitment", "signature"}
VERSION = 1
_DTYPES = {"float32": torch.float32, "int64": torch.int64, "uint8": torch.uint8}


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode_tensor(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().to("cpu").contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in _DTYPES:
        raise ValueError(f"cannot store a {dtype} tensor in a key")
    raw = zlib.compress(t.numpy().tobytes(), 6)
    return {"dtype": dtype, "shape": list(t.shape), "zlib_b64": base64.b64encode(raw).decode("ascii")}


def decode_tensor(d: dict[str, Any]) -> torch.Tensor:
    dtype = _DTYPES[d["dtype"]]
    raw = zlib.decompress(base64.b64decode(d["zlib_b64"], validate=True))
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(d["shape"]).clone()


def key_body(key: Key) -> dict[str, Any]:
    tensors = {"inputs": key.inputs, "labels": key.labels, **key.tensors}
    return {
        "scheme": key.scheme,
        "params": key.params,
        "input_shape": list(key.input_shape),
        "num_classes": key.num_classes,
        "tensors": {name: encode_tensor(t) for name, t in sorted(tensors.items())},
        "calibration": key.calibration.to_json() if key.calibration else None,
        "owner": {"name": key.owner.name, "public_key": key.owner.public_key_pem} if key.owner else None,
        "created": key.created or datetime.now(UTC).isoformat(timespec="seconds"),
        "fingerprint": key.fingerprint,
    }


def key_bytes(key: Key, signer: identity.OwnerKey | None = None) -> bytes:
    """Serialise a key; with ``signer`` the body names its public key and carries its signature."""
    if signer is not None:
        key = _with_owner(key, Owner(signer.name, signer.public_key_pem))
    body = key_body(key)
    body_bytes = _canonical(body)
    signature = base64.b64encode(signer.sign(body_bytes)).decode("ascii") if signer else None
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "body": body,
        "commitment": identity.sha256_hex(body_bytes),
        "signature": signature,
    }
    return _canonical(doc) + b"\n"


def _with_owner(key: Key, owner: Owner) -> Key:
    from dataclasses import replace

    return replace(key, owner=owner)


def save_key(path: str | Path, key: Key, signer: identity.OwnerKey | None = None) -> str:
    """Write the key with mode 0600; returns its commitment hash."""
    data = key_bytes(key, signer)
    atomic_write_bytes(path, data, mode=0o600)
    return str(json.loads(data)["commitment"])


def parse_key(data: bytes, where: str = "key") -> Key:
    """Parse and check a key file's bytes; tampering raises :class:`KeyTamperedError`."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KeyTamperedError(f"{where} is corrupt: not a readable key file ({e.__class__.__name__})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeyTamperedError(f"{where} is not an nnmark key file")
    if doc.get("version") != VERSION:
        raise NnmarkError(f"{where} has key format version {doc.get('version')}; this nnmark reads {VERSION}")
    if _canonical(doc) + b"\n" != data:
        raise KeyTamperedError(f"{where} was modified: its bytes are not the ones nnmark wrote")
    if set(doc) != _FIELDS or not isinstance(doc["body"], dict):
        # a renamed field would otherwise drop the signature and leave a valid-looking unsigned key
        raise KeyTamperedError(f"{where} was modified: its fields are not the ones nnmark writes")
    body = doc["body"]
    body_bytes = _canonical(body)
    if identity.sha256_hex(body_bytes) != doc.get("commitment"):
        raise KeyTamperedError(f"{where} was modified: its content does not match its commitment hash")
    signed = doc.get("signature") is not None
    owner_d = body.get("owner")
    if signed:
        if not isinstance(owner_d, dict) or not isinstance(owner_d.get("public_key"), str):
            raise KeyTamperedError(f"{where} carries a signature but no owner public key")
        try:
            sig = base64.b64decode(doc["signature"], validate=True)
        except (ValueError, TypeError) as e:
            raise KeyTamperedError(f"{where} was modified: its signature is not valid base64") from e
        if not identity.verify_signature(owner_d["public_key"], body_bytes, sig):
            raise KeyTamperedError(f"{where}: the owner's signature does not verify; the key was altered")
    try:
        tensors = {name: decode_tensor(t) for name, t in body["tensors"].items()}
        shape = tuple(int(v) for v in body["input_shape"])
        return Key(
            scheme=str(body["scheme"]),
            params=dict(body["params"]),
            input_shape=(shape[0], shape[1], shape[2]),
            num_classes=int(body["num_classes"]),
            inputs=tensors.pop("inputs"),
            labels=tensors.pop("labels"),
            tensors=tensors,
            calibration=Calibration.from_json(body["calibration"]) if body.get("calibration") else None,
            owner=Owner(owner_d["name"], owner_d["public_key"]) if owner_d else None,
            created=str(body.get("created", "")),
            fingerprint=str(body.get("fingerprint", "")),
            signed=signed,
            commitment=str(doc["commitment"]),
            version=int(doc["version"]),
        )
    except (KeyError, TypeError, ValueError, zlib.error, RuntimeError) as e:
        raise KeyTamperedError(f"{where} is corrupt ({e.__class__.__name__}: {e})") from e


def load_key(path: str | Path) -> Key:
    """Load ``watermark.key`` (or a run folder holding one), checking every byte and signature."""
    path = Path(path)
    if path.is_dir():
        path = path / "watermark.key"
    if not path.is_file():
        raise NnmarkError(f"key file {path} not found")
    return parse_key(path.read_bytes(), str(path))


def calibration_path(key_path: str | Path) -> Path:
    p = Path(key_path)
    return (p if p.is_dir() else p.parent) / CALIBRATION_FILE


def load_later_calibration(key_path: str | Path, key: Key) -> Calibration | None:
    """Calibration written after embedding (``calibration.json`` beside the key), if it is for this key."""
    path = calibration_path(key_path)
    if not path.is_file():
        return None
    doc = read_json(path, "calibration file")
    if doc.get("commitment") != key.commitment:
        raise NnmarkError(f"{path} belongs to another key; rerun `nnmark calibrate` for this key")
    return Calibration.from_json(doc["calibration"])


def save_later_calibration(key_path: str | Path, key: Key, calibration: Calibration) -> Path:
    path = calibration_path(key_path)
    write_json(path, {"commitment": key.commitment, "calibration": calibration.to_json()})
    return path
