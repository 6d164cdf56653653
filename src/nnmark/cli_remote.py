"""The command line's suspect options: which oracle ``verify`` queries and how it reaches a remote API.

The ``Annotated`` option types below are what commands that query a remote API declare, so every
such command offers the same options with the same help; the library's
:func:`nnmark.suspects.build_oracle` turns their values into an :class:`~nnmark.oracle.Oracle`.
Every option's choices come from the library's registries (:mod:`nnmark.choices`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, TypeAlias

import typer

from nnmark.choices import INPUT_LAYOUTS, INPUT_SCALES, PROTOCOLS, SERVE_OUTPUTS, registry_enum
from nnmark.suspects import RemoteOptions, build_oracle, parse_headers

__all__ = ["RemoteOptions", "build_oracle", "parse_headers"]

if TYPE_CHECKING:
    Protocol: TypeAlias = StrEnum
    InputLayout: TypeAlias = StrEnum
    InputScale: TypeAlias = StrEnum
    OutputKind: TypeAlias = StrEnum
else:
    Protocol = registry_enum("Protocol", PROTOCOLS)
    InputLayout = registry_enum("InputLayout", INPUT_LAYOUTS, auto=True)
    InputScale = registry_enum("InputScale", INPUT_SCALES, auto=True)
    OutputKind = registry_enum("OutputKind", SERVE_OUTPUTS, auto=True)


ProtocolOpt = Annotated[
    Protocol, typer.Option(help="wire protocol of --url: " + ", ".join(PROTOCOLS.names()))
]
HeaderOpt = Annotated[
    list[str] | None,
    typer.Option("--header", help="HTTP header for --url, 'Name: value' (repeatable), e.g. an API key"),
]
TimeoutOpt = Annotated[float, typer.Option(help="seconds to wait for each request to --url")]
RetriesOpt = Annotated[
    int, typer.Option(help="extra tries after a timeout, a lost connection or HTTP 429/502/503/504")
]
RateLimitOpt = Annotated[
    float | None, typer.Option(help="most queries (single inputs) per second sent to --url")
]
InputLayoutOpt = Annotated[
    InputLayout,
    typer.Option(
        help="image layout --url takes: nchw (PyTorch) or nhwc (TensorFlow); auto: what the server "
        "declares, else the protocol's default (tf-serving: nhwc)"
    ),
]
InputScaleOpt = Annotated[
    InputScale, typer.Option(help="float values --url takes: 0-1 or 0-255 pixels (auto: 0-1, uint8: 0-255)")
]
OutputOpt = Annotated[
    OutputKind,
    typer.Option(
        "--output", help="what --url answers: labels, probabilities or logits (auto: read the reply)"
    ),
]
BatchSizeOpt = Annotated[
    int, typer.Option(help="inputs per request to --url (larger batches: more queries/s)")
]
