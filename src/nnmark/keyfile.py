"""The ``watermark.key`` format: canonical JSON, a commitment hash and an optional signature.

The file is the canonical JSON serialisation (sorted keys, no spaces) of::

    {"format": "nnmark-key", "version": 2, "body": {...}, "commitment": sha256(body), "signature": ...}

so any changed byte is detected: the file must equal its own canonical form, the commitment must
match the body, and a signed key's Ed25519 signature (over the canonical body) must verify against
the owner's public key stored in the body. A key whose body names an owner must carry that owner's
signature: stripping the signature (and recomputing the commitment) does not give a valid
unsigned key that keeps the owner's name. Version 2 keys carry ``params["secret"]`` (see
:mod:`nnmark.keysecret`), ``params["protocol"]`` and ``params["dataset"]``.

Calibration made later lives in ``calibration.json`` beside the key, never in it, and counts only
when signed (:func:`save_later_calibration`): the file holds the key's commitment, the
calibration, the signer's name and public key, and the signer's Ed25519 signature over the
canonical JSON of those three. Who the signer must be is the verifier's choice
(:func:`verify_context`): the key's own owner (owner mode, p0 "from the claimant"), or a key the
verifier trusts (``--trust``, p0 "from the verifier"). An unsigned ``calibration.json`` is ignored
with a note; a signed one whose signature does not verify is refused.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from nnmark import identity
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.io import CALIBRATION_FILE, atomic_write_bytes, read_json
from nnmark.types import Calibration, Key, Owner

if TYPE_CHECKING:
    from nnmark.data.base import ImageDataset
    from nnmark.verify.context import VerifyContext

FORMAT = "nnmark-key"
_FIELDS = {"format", "version", "body", "commitment", "signature"}
#: 2: keys carry a key secret from the CSPRNG (``params["secret"]``), the protocol version and dataset
VERSION = 2
_CALIBRATION_FIELDS = {"commitment", "calibration", "signer", "signature"}
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
    if not raw:  # torch.frombuffer refuses empty buffers
        return torch.empty([int(v) for v in d["shape"]], dtype=dtype)
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
        raise NnmarkError(
            f"{where} has key format version {doc.get('version')}; this nnmark reads {VERSION} "
            "(keys now carry a secret from the OS's random source): embed the watermark again"
        )
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
    if owner_d is not None and not signed:
        # a stripped signature: the body was edited and the commitment recomputed, the name kept
        name = owner_d.get("name") if isinstance(owner_d, dict) else owner_d
        raise KeyTamperedError(
            f"{where} names owner {name!r} but carries no signature: it was altered (a key that names "
            "an owner must be signed by that owner)"
        )
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
            source=bytes(data) if signed else b"",
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


def secret_summary(key: Key) -> dict[str, Any]:
    """What may be shown of the key secret (``nnmark key info``): never its nonce, message or signature.

    ``signed``: the secret follows from the owner's signature; ``guessable``: it was made from a
    ``--key-seed`` (research only); ``check``: "ok", or why a verifier would refuse the key.
    """
    from nnmark import keysecret

    entry = key.params.get(keysecret.SECRET_PARAM)
    if not isinstance(entry, dict):
        return {
            "guessable": None,
            "signed": False,
            "check": "no key secret: made by an older nnmark or edited; embed the watermark again",
        }
    try:
        keysecret.key_secret(key)
        check = "ok"
    except KeyTamperedError as e:
        check = f"refused: {e}"
    return {"guessable": bool(entry.get("guessable")), "signed": bool(entry.get("signature")), "check": check}


def calibration_path(key_path: str | Path) -> Path:
    p = Path(key_path)
    return (p if p.is_dir() else p.parent) / CALIBRATION_FILE


class SignedCalibration(NamedTuple):
    """A later calibration whose signature verified: (calibration, signer name, signer public key PEM)."""

    calibration: Calibration
    signer: str
    public_key: str


def _calibration_message(commitment: str, calibration: dict[str, Any], signer: dict[str, Any]) -> bytes:
    return _canonical({"commitment": commitment, "calibration": calibration, "signer": signer})


def calibration_bytes(key: Key, calibration: Calibration, signer: identity.OwnerKey) -> bytes:
    """The signed ``calibration.json`` of ``calibration`` for ``key`` (see module docstring)."""
    who = {"name": signer.name, "public_key": signer.public_key_pem}
    cal = calibration.to_json()
    signature = signer.sign(_calibration_message(key.commitment, cal, who))
    doc = {
        "commitment": key.commitment,
        "calibration": cal,
        "signer": who,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def save_later_calibration(
    key_path: str | Path, key: Key, calibration: Calibration, signer: identity.OwnerKey
) -> Path:
    """Write ``calibration.json`` beside the key, signed by ``signer``; returns its path."""
    if not key.commitment:
        raise NnmarkError("the key has no commitment: load it with load_key before calibrating it")
    path = calibration_path(key_path)
    atomic_write_bytes(path, calibration_bytes(key, calibration, signer))
    return path


def load_later_calibration(
    key_path: str | Path, key: Key, notes: list[str] | None = None
) -> SignedCalibration | None:
    """The signed calibration beside the key, or None when there is none or it is unsigned.

    Returned only when its signature verifies and it names this key's commitment. An unsigned
    file is ignored (a note is added to ``notes``); a signed file whose signature does not verify,
    or that was signed for another key, is refused.
    """
    path = calibration_path(key_path)
    if not path.is_file():
        return None
    doc = read_json(path, "calibration file")
    if not isinstance(doc, dict):
        raise KeyTamperedError(f"{path} is not an nnmark calibration file")
    if doc.get("signature") is None:
        if notes is not None:
            notes.append(
                f"{path} is unsigned and was ignored: a calibration counts only when signed "
                "(`nnmark calibrate --key KEY --model CLEAN_RUN... --signer STEM.key`)"
            )
        return None
    if set(doc) != _CALIBRATION_FIELDS:
        raise KeyTamperedError(f"{path} was modified: its fields are not the ones nnmark writes")
    who = doc["signer"]
    if (
        not isinstance(who, dict)
        or set(who) != {"name", "public_key"}
        or not all(isinstance(v, str) for v in who.values())
        or not isinstance(doc["calibration"], dict)
        or not isinstance(doc["commitment"], str)
    ):
        raise KeyTamperedError(f"{path} was modified: its signer or calibration is malformed")
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (ValueError, TypeError) as e:
        raise KeyTamperedError(f"{path} was modified: its signature is not valid base64") from e
    message = _calibration_message(doc["commitment"], doc["calibration"], who)
    if not identity.verify_signature(who["public_key"], message, signature):
        raise KeyTamperedError(
            f"{path}: the signature of {who['name']!r} does not verify; the calibration was altered "
            "(rerun `nnmark calibrate`)"
        )
    if doc["commitment"] != key.commitment:
        raise NnmarkError(f"{path} was signed for another key; rerun `nnmark calibrate` for this key")
    try:
        calibration = Calibration.from_json(doc["calibration"])
    except (KeyError, TypeError, ValueError) as e:
        raise KeyTamperedError(f"{path} is corrupt ({e.__class__.__name__}: {e})") from e
    return SignedCalibration(calibration, who["name"], who["public_key"])


def verify_context(
    key_path: str | Path,
    key: Key,
    *,
    alpha: float = 1e-6,
    judge: bool = False,
    references: Sequence[tuple[torch.nn.Module, str]] = (),
    trust: Sequence[tuple[str, str]] = (),
    probe_data: ImageDataset | str | None = None,
    data_dir: str | None = None,
) -> VerifyContext:
    """The verifier's :class:`~nnmark.verify.context.VerifyContext` for the key at ``key_path``.

    ``references`` (clean models the verifier names) imply ``judge``. ``trust`` lists (name,
    public key PEM) of signers whose calibrations count as the verifier's own. A signed
    ``calibration.json`` beside the key is used as the verifier's when its signer is trusted, as
    the claimant's (owner mode only) when its signer is the key's owner, and otherwise ignored
    with a note; in judge mode nothing else of the claimant's counts.
    """
    from nnmark.verify.context import VerifyContext

    judge = judge or bool(references)
    notes: list[str] = []
    later = load_later_calibration(key_path, key, notes)
    owner_calibration: Calibration | None = None
    trusted: list[tuple[Calibration, str]] = []
    if later is not None:
        path = calibration_path(key_path)
        trusted_as = next((n for n, pem in trust if identity.same_public_key(pem, later.public_key)), None)
        by_owner = key.owner is not None and identity.same_public_key(
            key.owner.public_key_pem, later.public_key
        )
        if trusted_as is not None:
            trusted.append((later.calibration, trusted_as))
        elif by_owner and not judge:
            owner_calibration = later.calibration
        elif by_owner:
            notes.append(
                f"{path} is signed by the key's owner {later.signer!r}: the claimant's own calibration is "
                "not used in judge mode"
            )
        else:
            notes.append(
                f"{path} is signed by {later.signer!r}, who is neither the key's owner nor trusted, and was "
                "ignored (trust its signer with --trust STEM.pub)"
            )
    return VerifyContext(
        alpha=alpha,
        judge=judge,
        references=list(references),
        trusted=trusted,
        owner_calibration=owner_calibration,
        probe_data=probe_data,
        data_dir=data_dir,
        notes=notes,
    )


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def check_signed_key(key: Key) -> None:
    """Refuse a signed in-memory key that differs from the file its owner signed.

    ``parse_key`` checks the bytes of a file; a :class:`Key` built or edited in Python (for
    example with ``dataclasses.replace``) keeps ``signed=True`` without its content being signed,
    so the verifier re-reads the signed bytes kept in ``key.source`` and compares every field.
    """
    if not key.signed:
        return
    if not key.source:
        raise KeyTamperedError(
            "the key says it is signed but carries no signed bytes: load it with nnmark.load_key, or save it "
            "with the owner's key (nnmark.keyfile.save_key) and load it again"
        )
    signed = parse_key(key.source, "the signed key")
    tensors_ok = set(key.tensors) == set(signed.tensors) and all(
        _same_tensor(key.tensors[k], signed.tensors[k]) for k in key.tensors
    )
    same = (
        key.scheme == signed.scheme
        and key.params == signed.params
        and key.input_shape == signed.input_shape
        and key.num_classes == signed.num_classes
        and _same_tensor(key.inputs, signed.inputs)
        and _same_tensor(key.labels, signed.labels)
        and tensors_ok
        and key.calibration == signed.calibration
        and key.owner == signed.owner
        and key.created == signed.created
        and key.commitment == signed.commitment
    )
    if not same:
        raise KeyTamperedError(
            "the key was changed after its owner signed it (an in-memory edit): its content is not what "
            "was signed"
        )
