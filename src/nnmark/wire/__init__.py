"""Prediction wire protocols, one module each, shared by the client and the server.

``get(name)`` gives a protocol's codec (:class:`~nnmark.wire.base.WireProtocol`), ``names()``
the registered names (the CLI's ``--protocol`` choices). A new protocol is one module with one
``@PROTOCOLS.register`` line.
"""

from __future__ import annotations

from nnmark.registry import Registry
from nnmark.wire.base import Encoding, ModelInfo, Reply, WireError, WireProtocol
from nnmark.wire.kserve_v2 import KServeV2Protocol
from nnmark.wire.nnmark import NnmarkProtocol
from nnmark.wire.pixels import from_wire, to_wire
from nnmark.wire.tf_serving import TfServingProtocol

PROTOCOLS: Registry[WireProtocol] = Registry("protocol")
for _codec in (NnmarkProtocol(), TfServingProtocol(), KServeV2Protocol()):
    PROTOCOLS.register(_codec.name)(_codec)


def get(name: str) -> WireProtocol:
    """The codec of protocol ``name``; NnmarkError naming the known ones otherwise."""
    return PROTOCOLS.get(name)


def names() -> list[str]:
    """Registered protocol names, nnmark's own first."""
    return sorted(PROTOCOLS.names(), key=lambda n: (n != "nnmark", n))


__all__ = [
    "PROTOCOLS",
    "Encoding",
    "ModelInfo",
    "Reply",
    "WireError",
    "WireProtocol",
    "from_wire",
    "get",
    "names",
    "to_wire",
]
