"""The command line's suspect options: which oracle ``verify`` queries and how it reaches a remote API.

``build_oracle`` turns ``--model`` / ``--onnx`` / ``--url`` and the remote options into an
:class:`~nnmark.oracle.Oracle`; the ``Annotated`` option types below are what commands that query a
remote API declare, so every such command offers the same options with the same help. Every
option's choices come from the library's registries (:mod:`nnmark.choices`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import typer

from nnmark.choices import INPUT_LAYOUTS, INPUT_SCALES, INPUT_TYPES, PROTOCOLS, SERVE_OUTPUTS, registry_enum
from nnmark.errors import NnmarkError

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


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach a remote suspect (``--url``); defaults are HttpOracle's."""

    protocol: str = "nnmark"
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    retries: int = 3
    rate_limit: float | None = None
    input_type: str = "auto"
    input_layout: str = "auto"
    input_scale: str = "auto"
    output: str = "auto"
    batch_size: int = 256

    @classmethod
    def from_cli(cls, header: list[str] | None = None, **options: Any) -> RemoteOptions:
        """From the command line's values (enums accepted), parsing each ``--header``."""
        values: dict[str, Any] = {k: (v.value if isinstance(v, StrEnum) else v) for k, v in options.items()}
        return cls(headers=parse_headers(header or []), **values)


def parse_headers(lines: list[str]) -> dict[str, str]:
    """``['Name: value', ...]`` → a dict; NnmarkError for a line that is not a header."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name or any(c in name for c in " \t\r\n") or any(c in value for c in "\r\n"):
            raise NnmarkError(
                f"--header {line!r} is not 'Name: value' (e.g. --header 'Authorization: Bearer T')"
            )
        headers[name] = value
    return headers


def build_oracle(
    model: Path | None,
    onnx: Path | None,
    url: str | None,
    remote: RemoteOptions | None = None,
    budget: int | None = None,
    device: str = "cpu",
) -> Any:
    """The oracle for exactly one suspect: a run folder, an ONNX file or a prediction API."""
    given = [v for v in (model, onnx, url) if v is not None]
    if len(given) != 1:
        raise NnmarkError("give exactly one suspect: --model RUN, --onnx FILE or --url URL")
    if model is not None:
        from nnmark.io import load_spec
        from nnmark.oracle import TorchOracle
        from nnmark.workflow import load_model

        spec = load_spec(model)
        return TorchOracle(load_model(model), budget=budget, device=device, input_shape=spec.input_shape)
    if onnx is not None:
        from nnmark.oracle import OnnxOracle

        return OnnxOracle(onnx, budget=budget)
    from nnmark.http_oracle import HttpOracle

    assert url is not None
    r = remote or RemoteOptions()
    return HttpOracle(
        url,
        protocol=r.protocol,
        budget=budget,
        timeout=r.timeout,
        batch_size=r.batch_size,
        carry_floats=INPUT_TYPES.get(r.input_type),
        input_layout=None if r.input_layout == "auto" else r.input_layout,
        input_scale=None if r.input_scale == "auto" else r.input_scale,
        output=r.output,
        retries=r.retries,
        rate_limit=r.rate_limit,
        headers=r.headers,
    )
