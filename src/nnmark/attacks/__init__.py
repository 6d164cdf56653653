"""Attacks: removal (model -> model), query (oracle -> oracle), piracy, detection.

One file per attack, anywhere under this package: each registers itself with
:func:`~nnmark.attacks.base.register_attack` (model -> model attacks) or
:func:`~nnmark.attacks.query.defenses.register_defense` (oracle wrappers), and :func:`discover`
imports every module of the package once, so a new file is found without editing any other.
"""

from __future__ import annotations

import importlib
import pkgutil

from nnmark.attacks.base import (
    ATTACKS,
    Claim,
    ClaimAttack,
    EwParams,
    RemovalAttack,
    attacker_share,
    register_attack,
)


def discover() -> None:
    """Import every module under ``nnmark.attacks`` (idempotent: Python imports each once)."""
    for info in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(info.name)


discover()

__all__ = [
    "ATTACKS",
    "Claim",
    "ClaimAttack",
    "EwParams",
    "RemovalAttack",
    "attacker_share",
    "discover",
    "register_attack",
]
