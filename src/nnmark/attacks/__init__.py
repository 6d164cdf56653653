"""Attacks: removal (model -> model), query (oracle -> oracle), piracy, detection."""

from nnmark.attacks.base import ATTACKS, Claim, ClaimAttack, RemovalAttack, attacker_share, register_attack
from nnmark.attacks.piracy import forgery, piracy  # noqa: F401  (registers the attacks)
from nnmark.attacks.removal import finetune, prune  # noqa: F401  (registers the attacks)

__all__ = ["ATTACKS", "Claim", "ClaimAttack", "RemovalAttack", "attacker_share", "register_attack"]
