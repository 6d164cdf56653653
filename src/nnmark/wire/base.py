"""What every wire protocol shares: the declared model, how pixels travel, the codec interface.

A :class:`WireProtocol` is one prediction protocol written once and used by both sides: the
client (:class:`~nnmark.http_oracle.HttpOracle`) *encodes requests* and *decodes replies* and
metadata; the server (:mod:`nnmark.serve`) *decodes requests* and *encodes replies* and
metadata. Codecs move numpy arrays and JSON-shaped Python objects only: no HTTP library is
imported here, so the core of nnmark stays free of fastapi, uvicorn and httpx.

How an image travels (:class:`Encoding`) is independent of the protocol: its layout (N×C×H×W,
PyTorch's convention, or N×H×W×C, TensorFlow's), its scale (values in [0, 1] or pixel values
0–255) and its number type (float32, or uint8 integers, which are always 0–255).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

LAYOUTS = ("nchw", "nhwc")
SCALES = ("0-1", "0-255")
DTYPES = ("float32", "uint8")
OUTPUTS = ("logits", "probabilities", "labels")


class WireError(ValueError):
    """A request or reply that does not follow the protocol; ``status`` is the HTTP status a server
    answers it with (400 malformed, 413 too large, 422 well-formed but not for this model)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Encoding:
    """How inputs travel: ``layout`` (nchw|nhwc), ``scale`` (0-1|0-255), ``dtype`` (float32|uint8).

    uint8 always means integer pixels 0–255 (whatever ``scale`` says)."""

    layout: str = "nchw"
    scale: str = "0-1"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS or self.scale not in SCALES or self.dtype not in DTYPES:
            raise ValueError(f"bad encoding {self}; layout {LAYOUTS}, scale {SCALES}, dtype {DTYPES}")

    @property
    def pixels(self) -> bool:
        """True when values travel as 0–255 pixel levels (uint8, or floats scaled by 255)."""
        return self.dtype == "uint8" or self.scale == "0-255"

    def wire_shape(self, chw: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = chw
        return (c, h, w) if self.layout == "nchw" else (h, w, c)


@dataclass(frozen=True)
class ModelInfo:
    """What a server declares about its model; None where it declares nothing.

    ``input_shape`` is one input's shape as it travels (no batch axis), so N×H×W×C servers
    declare (H, W, C). ``layout`` and ``scale`` are set only where the protocol can say them.
    """

    name: str | None = None
    input_name: str | None = None
    input_shape: tuple[int, ...] | None = None
    dtype: str | None = None
    layout: str | None = None
    scale: str | None = None
    num_classes: int | None = None
    output: str | None = None
    output_name: str | None = None

    def with_(self, **changes: Any) -> ModelInfo:
        return replace(self, **changes)


@dataclass(frozen=True)
class Reply:
    """A decoded prediction: ``values`` N×K scores or N labels; ``kind`` what the reply says they are
    (``labels``, ``probabilities``, ``logits``), None when it does not say."""

    values: np.ndarray
    kind: str | None = None


RequestT = TypeVar("RequestT", bound=BaseModel)


class WireProtocol(abc.ABC, Generic[RequestT]):
    """One prediction protocol: URLs, request and reply bodies, metadata (both directions)."""

    name: ClassVar[str]
    #: layout used when the server declares none (TensorFlow's convention for TF-Serving)
    default_layout: ClassVar[str] = "nchw"
    #: what a model URL looks like, for error messages
    url_hint: ClassVar[str]
    #: request body of the predict endpoint (pydantic: the server validates with it, OpenAPI shows it)
    Request: ClassVar[type[BaseModel]]

    # -- URLs (client) --------------------------------------------------------------------------

    @abc.abstractmethod
    def base_url(self, url: str) -> str:
        """The model's URL from what a user pasted (a trailing predict/metadata suffix dropped)."""

    @abc.abstractmethod
    def predict_url(self, base: str) -> str: ...

    @abc.abstractmethod
    def metadata_url(self, base: str) -> str: ...

    def check_url(self, base: str) -> str | None:
        """A warning when ``base`` does not look like this protocol's model URL."""
        return None

    # -- client side ----------------------------------------------------------------------------

    @abc.abstractmethod
    def encode_request(self, x: np.ndarray, enc: Encoding, info: ModelInfo) -> dict[str, Any]:
        """Request body for ``x`` (already in ``enc``'s layout, scale and type, batch first); arrays stay
        numpy arrays, for :func:`nnmark.wire.jsonio.dumps` to write."""

    @abc.abstractmethod
    def decode_reply(self, body: Any, n: int) -> Reply:
        """Scores or labels from a reply to ``n`` inputs; WireError when it is not a prediction."""

    @abc.abstractmethod
    def decode_metadata(self, body: Any) -> ModelInfo:
        """What the server declares; WireError (or KeyError/TypeError/ValueError) when unreadable."""

    # -- server side ----------------------------------------------------------------------------

    @abc.abstractmethod
    def decode_request(self, body: RequestT, enc: Encoding) -> np.ndarray:
        """The batch of inputs in a (validated) request, as sent: numbers, batch first."""

    @abc.abstractmethod
    def encode_reply(
        self, out: np.ndarray, kind: str, info: ModelInfo, request: BaseModel | None = None
    ) -> dict[str, Any]:
        """Reply body for ``out`` (N×K scores, or N labels when ``kind`` is ``labels``)."""

    @abc.abstractmethod
    def encode_metadata(self, info: ModelInfo) -> dict[str, Any]:
        """The metadata document the server publishes for its model."""


# -- helpers shared by the codecs ------------------------------------------------------------

#: output names looked for, in this order, when a reply holds several outputs
OUTPUT_NAMES = (
    "logits",
    "probabilities",
    "probs",
    "scores",
    "predictions",
    "output",
    "output_0",
    "labels",
    "classes",
)
LABEL_NAMES = ("labels", "classes", "class_ids")
PROBABILITY_NAMES = ("probabilities", "probs", "softmax")


def pick_output(names: list[str]) -> str:
    """The output to read among several (see :data:`OUTPUT_NAMES`)."""
    if len(names) == 1:
        return names[0]
    for want in OUTPUT_NAMES:
        if want in names:
            return want
    return names[0]


def kind_of_name(name: str | None) -> str | None:
    """What an output's name says it holds, if anything."""
    if name is None:
        return None
    low = name.lower().split(":")[0]
    if low in LABEL_NAMES:
        return "labels"
    if low in PROBABILITY_NAMES:
        return "probabilities"
    if low == "logits":
        return "logits"
    return None


def array(data: Any, what: str, dtype: type = np.float64) -> np.ndarray:
    """A rectangular numeric array from nested lists; WireError (400) otherwise."""
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, (str, bytes, dict)) or data is None:
        raise WireError(f"{what} must be an array of numbers")
    try:
        with np.errstate(all="ignore"):
            out: np.ndarray = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise WireError(f"{what} is not a rectangular array of numbers ({first_line(e)})") from e
    return out


def shape_of(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__
