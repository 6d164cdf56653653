"""Query attacks (oracle -> oracle): the thief's prediction service alters its answers to queries
it takes for watermark keys, without touching the model (Namba 2019's query modification).

``QUERY_ATTACKS`` maps names to classes that wrap an :class:`~nnmark.oracle.Oracle` (or a torch
module) and are themselves oracles; ``nnmark list attacks`` shows them beside the removal attacks
and ``nnmark serve --defense autoencoder`` stands one up over HTTP. Each wrapper registers its
class here and a factory in :data:`~nnmark.attacks.query.defenses.DEFENSES` (by defense name).
"""

from nnmark.attacks.query.autoencoder import ConvAutoencoder, DetectionStats, Inspection, QueryModification
from nnmark.attacks.query.defenses import QUERY_ATTACKS

__all__ = ["QUERY_ATTACKS", "ConvAutoencoder", "DetectionStats", "Inspection", "QueryModification"]
