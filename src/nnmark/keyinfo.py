"""What ``nnmark key info`` shows of a watermark key: never its inputs, its secret or secret parameters."""

from __future__ import annotations

from typing import Any

from nnmark.types import Key


def key_info(key: Key) -> dict[str, Any]:
    """The key's public summary: owner, scheme, commitment, signature and secret state, parameters.

    The scheme's ``secret_params`` and the secret's provenance (nonce, signature) are left out;
    the secret appears only as ``secret_signed``, ``secret_guessable`` and ``secret_check``.
    """
    from nnmark.identity import public_key_sha256
    from nnmark.keyfile import secret_summary
    from nnmark.schemes import SCHEMES

    secret = secret_summary(key)
    hidden = {"secret"}
    if key.scheme in SCHEMES:
        hidden |= set(SCHEMES.get(key.scheme).secret_params)
    return {
        "scheme": key.scheme,
        "owner": key.owner.name if key.owner else None,
        "owner_public_key_sha256": public_key_sha256(key.owner.public_key_pem) if key.owner else None,
        "signed": key.signed,
        "commitment": key.commitment,
        "created": key.created,
        "keys": len(key.inputs),
        "input_shape": list(key.input_shape),
        "num_classes": key.num_classes,
        "calibrated": key.calibration is not None,
        "fingerprint": key.fingerprint,
        "format_version": key.version,
        "secret_signed": secret["signed"],
        "secret_guessable": secret["guessable"],
        "secret_check": secret["check"],
        "params": {p: v for p, v in key.params.items() if p not in hidden},
    }


def key_info_lines(info: dict[str, Any]) -> list[str]:
    """``key info``'s text: one aligned ``name  value`` line per entry (never cut), then the warnings."""
    width = max(len(name) for name in info)
    lines = [f"{name:<{width}}  {value}" for name, value in info.items()]
    if not info["signed"]:
        lines.append("unsigned: anyone could have written this key (embed with --owner STEM.key to sign)")
    if info["secret_guessable"]:
        lines.append(
            "guessable: the key was made from --key-seed; anyone can regenerate it (research use only)"
        )
    lines.append("publish this commitment now, in a dated public record: priority rests on when it appeared")
    return lines
