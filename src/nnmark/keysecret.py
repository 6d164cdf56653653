"""Key secrets: where every random choice in a key comes from, and how a verifier re-derives it.

Trust model (DESIGN.md, "Who decides a verdict"): secrets come from the operating system's
CSPRNG, never from ``--seed`` (which only makes training reproducible), and wherever a scheme
allows, key material is *derived* from them so that a claimant cannot choose key inputs or labels
that some clean model happens to answer (the "false claim" attack of Li et al. 2019, Sec. 3).

This generalises Li 2019's Transform (Algorithm 2) to every scheme:

* a fresh 128-bit nonce is drawn from :func:`secrets.token_bytes`;
* with an owner identity, the owner signs the message
  ``nnmark key secret | scheme: S | owner: NAME | public key sha256: FP | nonce: N`` and the
  secret is SHA-256("nnmark-secret" ‖ signature); Ed25519 signatures are deterministic, so only
  the holder of the private key can compute the secret, and the verifier checks the signature;
* without an owner the secret is SHA-256("nnmark-secret" ‖ nonce);
* research grids that need reproducible keys pass ``key_seed``: the nonce then follows from it,
  the key says ``guessable`` and every verdict repeats it.

Anything derived from the secret is a function of SHA-256(secret ‖ purpose ‖ what it depends on),
so changing a claimant-chosen input (an image set, a number of classes) re-draws everything
derived after it: a forger can only *grind* (try many secrets and keep the best), and each try
then succeeds with probability at most α.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from nnmark.errors import KeyTamperedError

if TYPE_CHECKING:
    from nnmark.data.base import ImageDataset
    from nnmark.identity import OwnerKey
    from nnmark.types import Key

#: the key ``params`` entry holding the secret's provenance (never printed by ``key info``)
SECRET_PARAM = "secret"
MESSAGE_PREFIX = "nnmark key secret"
_DOMAIN = b"nnmark-secret\x00"


def _message(scheme: str, nonce_hex: str, owner: OwnerKey | None) -> str:
    from nnmark.identity import public_key_sha256

    if owner is None:
        return f"{MESSAGE_PREFIX} | scheme: {scheme} | nonce: {nonce_hex}"
    return (
        f"{MESSAGE_PREFIX} | scheme: {scheme} | owner: {owner.name} | public key sha256: "
        f"{public_key_sha256(owner.public_key_pem)} | nonce: {nonce_hex}"
    )


def new_secret(scheme: str, owner: OwnerKey | None = None, key_seed: int | None = None) -> dict[str, Any]:
    """A fresh key secret for ``scheme``: the ``params[SECRET_PARAM]`` entry of a new key.

    ``key_seed`` (research only) makes the key reproducible and therefore guessable.
    """
    if key_seed is None:
        nonce = secrets.token_bytes(16)
    else:
        nonce = hashlib.sha256(f"nnmark guessable key seed {int(key_seed)}".encode()).digest()[:16]
    message = _message(scheme, nonce.hex(), owner)
    entry: dict[str, Any] = {"nonce": nonce.hex(), "message": message, "signature": None, "guessable": False}
    if key_seed is not None:
        entry["guessable"] = True
        entry["key_seed"] = int(key_seed)
    if owner is not None:
        entry["signature"] = base64.b64encode(owner.sign(message.encode())).decode("ascii")
    return entry


def secret_from_entry(entry: dict[str, Any]) -> bytes:
    """The 32-byte secret of an entry made by :func:`new_secret` (no signature check)."""
    if entry.get("signature"):
        return hashlib.sha256(_DOMAIN + base64.b64decode(entry["signature"], validate=True)).digest()
    return hashlib.sha256(_DOMAIN + bytes.fromhex(str(entry["nonce"]))).digest()


def key_secret(key: Key) -> bytes:
    """Check the key's secret and return it; refuse (KeyTamperedError) what does not check out.

    A signed secret must verify with the key owner's public key over a message naming that owner
    and the key's scheme; an unsigned secret is accepted only on a key that names no owner.
    """
    from nnmark.identity import verify_signature

    entry = key.params.get(SECRET_PARAM)
    if not isinstance(entry, dict) or "nonce" not in entry or "message" not in entry:
        raise KeyTamperedError(
            "the key holds no key secret: it was made by an older nnmark or edited; embed the watermark again"
        )
    try:
        nonce_hex = str(entry["nonce"])
        bytes.fromhex(nonce_hex)
        signature = entry.get("signature")
        sig = base64.b64decode(signature, validate=True) if signature else None
    except (ValueError, TypeError) as e:
        raise KeyTamperedError(f"the key's secret is corrupt ({e})") from e
    if key.owner is not None:
        if sig is None:
            raise KeyTamperedError(
                f"the key names owner {key.owner.name!r} but its secret is not signed; the key was altered"
            )
        from nnmark.identity import public_key_sha256

        expected = (
            f"{MESSAGE_PREFIX} | scheme: {key.scheme} | owner: {key.owner.name} | public key sha256: "
            f"{public_key_sha256(key.owner.public_key_pem)} | nonce: {nonce_hex}"
        )
        if entry["message"] != expected:
            raise KeyTamperedError(
                "the key's signed secret message does not name this key's owner and scheme"
            )
        if not verify_signature(key.owner.public_key_pem, expected.encode(), sig):
            raise KeyTamperedError(f"the key's secret is not signed by {key.owner.name}; the key was forged")
    elif sig is not None:
        raise KeyTamperedError("the key's secret is signed but the key names no owner; the key was altered")
    elif entry["message"] != f"{MESSAGE_PREFIX} | scheme: {key.scheme} | nonce: {nonce_hex}":
        raise KeyTamperedError("the key's secret message does not name this key's scheme")
    return secret_from_entry(entry)


def is_guessable(key: Key) -> bool:
    entry = key.params.get(SECRET_PARAM)
    return bool(isinstance(entry, dict) and entry.get("guessable"))


def digest(secret: bytes, purpose: str, *parts: bytes) -> bytes:
    """SHA-256(secret ‖ purpose ‖ SHA-256 of each part): the seed of everything derived."""
    h = hashlib.sha256(secret + b"\x00" + purpose.encode() + b"\x00")
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.digest()


def generator(secret: bytes, purpose: str, *parts: bytes) -> torch.Generator:
    """A torch generator seeded (63 bits) from :func:`digest`: reproducible by whoever holds the secret."""
    seed = int.from_bytes(digest(secret, purpose, *parts)[:8], "big") >> 1
    return torch.Generator().manual_seed(seed)


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Canonical bytes of a tensor (dtype, shape and contiguous CPU data) for :func:`digest`."""
    t = t.detach().to("cpu").contiguous()
    return f"{t.dtype}|{tuple(t.shape)}|".encode() + t.numpy().tobytes()


def derive_labels(
    secret: bytes,
    inputs: torch.Tensor,
    num_classes: int,
    avoid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Key labels drawn from the secret and the (claimant-chosen) key inputs.

    Uniform over ``num_classes`` classes, or over the ``num_classes − 1`` classes other than
    ``avoid[i]`` when given (Namba 2019's label change). Because the draw depends on a hash of all
    inputs and on ``num_classes``, choosing images or a class count after seeing the labels is
    grinding, not choice: for any model f never trained on the key, P(f(x_i) = L_i) ≤ 1/C
    (1/(C − 1) with ``avoid``) independently for each i.
    """
    parts: Sequence[bytes] = (tensor_bytes(inputs), str(int(num_classes)).encode())
    if avoid is not None:
        parts = (*parts, tensor_bytes(avoid.long()))
    gen = generator(secret, "labels", *parts)
    n = len(inputs)
    if avoid is None:
        return torch.randint(num_classes, (n,), generator=gen)
    shift = torch.randint(1, num_classes, (n,), generator=gen)
    return (avoid.long() + shift) % num_classes


#: the key ``params`` entry naming the training split the key images were drawn from
DATASET_PARAM = "dataset_sha256"


def dataset_fingerprint(data: ImageDataset) -> str:
    """SHA-256 of a dataset's training split (images and labels), stored in the key at embedding so
    that a verifier re-derives key images only from the very data they were drawn from."""
    h = hashlib.sha256()
    h.update(tensor_bytes(data.train_x))
    h.update(tensor_bytes(data.train_y.long()))
    return h.hexdigest()
