"""Owner identities: Ed25519 key pairs (``cryptography``), signatures and commitments.

A signature proves *who* made a key, not *when*: priority rests on when the commitment hash (the
SHA-256 of the key's canonical body, shown by ``nnmark key info``) was published.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nnmark.errors import NnmarkError
from nnmark.io import atomic_write_bytes

OWNER_HEADER = "# nnmark owner: "


@dataclass(frozen=True)
class OwnerKey:
    """An owner's private signing key and name (loaded from ``STEM.key``)."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key_pem(self) -> str:
        return public_pem(self.private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def public_pem(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return raw.decode("ascii")


def generate_owner(name: str) -> OwnerKey:
    if not name.strip():
        raise NnmarkError("the owner name is empty; pass --owner 'Your Name'")
    if any(not ch.isprintable() for ch in name):
        raise NnmarkError("the owner name must be one line of printable characters")
    return OwnerKey(name=name.strip(), private_key=Ed25519PrivateKey.generate())


def save_owner(
    owner: OwnerKey, stem: Path, passphrase: bytes | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write ``STEM.key`` (PKCS#8 PEM, mode 0600, encrypted only with a passphrase) and ``STEM.pub``."""
    key_path, pub_path = Path(f"{stem}.key"), Path(f"{stem}.pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise NnmarkError(f"{p} already exists; choose another --out or pass --force")
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = owner.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    header = f"{OWNER_HEADER}{owner.name}\n".encode()
    atomic_write_bytes(key_path, header + pem, mode=0o600)
    atomic_write_bytes(pub_path, header + owner.public_key_pem.encode("ascii"), mode=0o644)
    return key_path, pub_path


def _split_header(raw: bytes, path: Path) -> tuple[str, bytes]:
    text = raw.decode("utf-8", errors="replace")
    if not text.startswith(OWNER_HEADER):
        raise NnmarkError(f"{path} is not an nnmark owner file (make one with `nnmark keygen`)")
    first, _, rest = text.partition("\n")
    return first[len(OWNER_HEADER) :].strip(), rest.encode("ascii", errors="replace")


def load_owner(path: str | Path, passphrase_env: str | None = None) -> OwnerKey:
    """Read ``STEM.key``; the passphrase, if any, comes from the environment variable named."""
    path = Path(path)
    if not path.is_file():
        raise NnmarkError(
            f"owner key {path} not found; create one with `nnmark keygen --owner NAME --out STEM`"
        )
    name, pem = _split_header(path.read_bytes(), path)
    password = None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if value is None:
            raise NnmarkError(f"environment variable {passphrase_env} (named by --passphrase-env) is not set")
        password = value.encode()
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as e:
        if password is not None:
            raise NnmarkError(f"{path} is not encrypted; drop --passphrase-env") from e
        raise NnmarkError(
            f"{path} is encrypted; name the variable holding its passphrase with --passphrase-env"
        ) from e
    except ValueError as e:
        raise NnmarkError(f"cannot read owner key {path} (wrong passphrase or corrupt file)") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise NnmarkError(f"{path} is not an Ed25519 key")
    return OwnerKey(name=name, private_key=key)


def load_public(path: str | Path) -> tuple[str, str]:
    """Read ``STEM.pub``: returns (owner name, public key PEM)."""
    path = Path(path)
    if not path.is_file():
        raise NnmarkError(f"public key {path} not found")
    name, pem = _split_header(path.read_bytes(), path)
    parse_public(pem.decode("ascii"), str(path))
    return name, pem.decode("ascii")


def parse_public(pem: str, where: str = "key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except ValueError as e:
        raise NnmarkError(f"the public key in {where} is corrupt") from e
    if not isinstance(key, Ed25519PublicKey):
        raise NnmarkError(f"the public key in {where} is not Ed25519")
    return key


def verify_signature(public_key_pem: str, data: bytes, signature: bytes) -> bool:
    try:
        parse_public(public_key_pem).verify(signature, data)
    except (InvalidSignature, NnmarkError):
        return False
    return True


def save_public(name: str, public_key_pem: str, path: str | Path) -> Path:
    """Write a ``STEM.pub`` file (the header line naming the owner, then the PEM)."""
    path = Path(path)
    atomic_write_bytes(path, f"{OWNER_HEADER}{name}\n{public_key_pem}".encode(), mode=0o644)
    return path


def public_key_sha256(public_key_pem: str) -> str:
    """SHA-256 of the canonical PEM: a short way to compare public keys by eye."""
    return sha256_hex(public_pem(parse_public(public_key_pem)).encode("ascii"))


def same_public_key(pem_a: str, pem_b: str) -> bool:
    return public_pem(parse_public(pem_a)) == public_pem(parse_public(pem_b))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
