"""The suspect a verification queries: a run folder, an ONNX file or a prediction API.

:func:`build_oracle` turns a suspect (``--model`` / ``--onnx`` / ``--url`` on the command line) and
:class:`RemoteOptions` (how to reach a remote API: protocol, headers, timeouts, input layout and
scale, output kind) into an :class:`~nnmark.oracle.Oracle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from nnmark.choices import INPUT_TYPES
from nnmark.errors import NnmarkError


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
