"""nnmark's own protocol: floats N×C×H×W in [0, 1], any value (null-embedding keys carry ±λ).

``url`` is the server's root (``http://HOST:PORT``, what ``nnmark serve`` prints).

* ``GET {url}/info`` → ``{"input_shape": [C, H, W], "num_classes": K, "layout": "nchw",
  "scale": "0-1", "dtype": "float32", "output": "logits", ...}``;
* ``POST {url}/predict`` with ``{"inputs": N×C×H×W numbers}`` → ``{"logits": N×K}`` (or
  ``"probabilities"``, or ``"labels"``: N class indices).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field, SkipValidation

from nnmark.wire.base import Encoding, ModelInfo, Reply, WireError, WireProtocol, array, shape_of

#: the only encoding the nnmark protocol knows
ENCODING = Encoding("nchw", "0-1", "float32")


class PredictRequest(BaseModel):
    """``POST /predict``: a batch of inputs, N×C×H×W, float32 in [0, 1] (any finite value).

    The schema shows the nested arrays; their numbers are checked once, by numpy, when the batch
    becomes an array (pydantic's element-by-element check would double the server's overhead)."""

    inputs: SkipValidation[list[list[list[list[float]]]]] = Field(description="N×C×H×W numbers")


class NnmarkProtocol(WireProtocol[PredictRequest]):
    name = "nnmark"
    default_layout = "nchw"
    url_hint = "http://HOST:PORT"
    Request = PredictRequest

    def base_url(self, url: str) -> str:
        return _strip(url, ("/predict", "/info"))

    def predict_url(self, base: str) -> str:
        return base + "/predict"

    def metadata_url(self, base: str) -> str:
        return base + "/info"

    # client

    def encode_request(self, x: np.ndarray, enc: Encoding, info: ModelInfo) -> dict[str, Any]:
        return {"inputs": x}

    def decode_reply(self, body: Any, n: int) -> Reply:
        if not isinstance(body, dict):
            raise WireError("not a JSON object")
        for kind in ("logits", "probabilities", "labels"):
            if kind in body:
                return Reply(array(body[kind], kind), kind)
        raise WireError("no 'logits', 'probabilities' or 'labels'")

    def decode_metadata(self, body: Any) -> ModelInfo:
        shape = shape_of(body["input_shape"])
        if len(shape) != 3:
            raise ValueError("input_shape is not C, H, W")
        output = body.get("output")
        return ModelInfo(
            name=body.get("name"),
            input_name="inputs",
            input_shape=shape,
            dtype=ENCODING.dtype,
            layout=ENCODING.layout,
            scale=ENCODING.scale,
            num_classes=int(body["num_classes"]),
            output=output if output in ("logits", "probabilities", "labels") else None,
            output_name=output,
        )

    # server

    def decode_request(self, body: PredictRequest, enc: Encoding) -> np.ndarray:
        return array(body.inputs, "inputs")

    def encode_reply(
        self, out: np.ndarray, kind: str, info: ModelInfo, request: BaseModel | None = None
    ) -> dict[str, Any]:
        return {kind: out}

    def encode_metadata(self, info: ModelInfo) -> dict[str, Any]:
        return {
            "name": info.name,
            "input_shape": list(info.input_shape or ()),
            "num_classes": info.num_classes,
            "layout": ENCODING.layout,
            "scale": ENCODING.scale,
            "dtype": ENCODING.dtype,
            "input": "float32 N×C×H×W in [0, 1]",
            "output": info.output,
        }


def _strip(url: str, suffixes: tuple[str, ...]) -> str:
    url = url.strip().rstrip("/")
    for s in suffixes:
        if url.endswith(s):
            return url[: -len(s)].rstrip("/")
    return url
