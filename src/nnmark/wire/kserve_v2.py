"""KServe v2 / Triton: the Open Inference Protocol over REST
(https://github.com/kserve/open-inference-protocol, ``rest_predict_v2.yaml``).

``url`` is the model's URL, ``http://HOST:8080/v2/models/NAME``.

* ``GET {url}`` → ``{"name", "versions", "platform", "inputs": [{"name", "datatype", "shape"}],
  "outputs": [...]}``;
* ``POST {url}/infer`` with ``{"id"?, "inputs": [{"name", "shape", "datatype", "data"}]}`` →
  ``{"model_name", "id"?, "outputs": [{"name", "shape", "datatype", "data"}]}``; ``data`` is
  row-major, flat (or nested, which the protocol also allows).

The protocol fixes no image layout; Triton's PyTorch and ONNX backends take N×C×H×W, the
default here when the server declares no shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from nnmark.wire.base import (
    Encoding,
    ModelInfo,
    Reply,
    WireError,
    WireProtocol,
    array,
    kind_of_name,
    pick_output,
    shape_of,
)
from nnmark.wire.nnmark import _strip

FLOAT_TYPES = ("FP32", "FP64", "FP16")
#: the protocol's tensor data types
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip


class InferInputTensor(BaseModel):
    """One input tensor of an inference request (Open Inference Protocol ``$request_input``)."""

    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """``POST /v2/models/NAME/infer`` (Open Inference Protocol ``$inference_request``)."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class KServeV2Protocol(WireProtocol[InferRequest]):
    name = "kserve-v2"
    default_layout = "nchw"
    url_hint = "http://HOST:8080/v2/models/NAME"
    Request = InferRequest

    def base_url(self, url: str) -> str:
        return _strip(url, ("/infer", "/ready"))

    def predict_url(self, base: str) -> str:
        return base + "/infer"

    def metadata_url(self, base: str) -> str:
        return base

    def check_url(self, base: str) -> str | None:
        if "/v2/models/" not in base:
            return f"{base} does not look like a KServe v2 model URL ({self.url_hint})"
        return None

    # client

    def encode_request(self, x: np.ndarray, enc: Encoding, info: ModelInfo) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": info.input_name or "input",
                    "shape": list(x.shape),
                    "datatype": "UINT8" if enc.dtype == "uint8" else "FP32",
                    "data": np.ascontiguousarray(x).reshape(-1),
                }
            ]
        }

    def decode_reply(self, body: Any, n: int) -> Reply:
        if not isinstance(body, dict):
            raise WireError("not a JSON object")
        outputs = body.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            if "error" in body:
                raise WireError(f"the server answered an error: {' '.join(str(body['error']).split())}", 502)
            raise WireError("no 'outputs' list")
        by_name = {str(o.get("name", i)): o for i, o in enumerate(outputs)}
        name = pick_output(list(by_name))
        out = by_name[name]
        data, shape = out.get("data"), out.get("shape")
        t = array(data, f"output {name!r}")
        try:
            if shape is not None:
                t = t.reshape([int(s) for s in shape])
            elif t.ndim == 1 and len(t) != n and n and len(t) % n == 0:
                t = t.reshape(n, -1)  # flat scores without a shape
        except (TypeError, ValueError) as e:
            raise WireError(f"output data does not fit its shape {shape}: {e}") from e
        kind = kind_of_name(name)
        integer = str(out.get("datatype", "")).upper().startswith(("INT", "UINT"))
        if kind is None and (integer and (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1))):
            kind = "labels"
        return Reply(t, kind)

    def decode_metadata(self, body: Any) -> ModelInfo:
        inp = body["inputs"][0]
        datatype = str(inp.get("datatype", "")).upper()
        info = ModelInfo(
            name=body.get("name"),
            input_name=str(inp["name"]),
            dtype="uint8" if datatype == "UINT8" else "float32" if datatype in FLOAT_TYPES else None,
        )
        shape = shape_of(inp.get("shape", []))
        if len(shape) == 4 and len(body["inputs"]) == 1:
            info = info.with_(input_shape=shape[1:])
        outputs = body.get("outputs") or []
        if outputs:
            by_name = {str(o["name"]): o for o in outputs}
            oname = pick_output(list(by_name))
            ospec = by_name[oname]
            oshape = shape_of(ospec.get("shape", []))
            kind = kind_of_name(oname)
            if kind is None and str(ospec.get("datatype", "")).upper().startswith(("INT", "UINT")):
                kind = "labels"
            info = info.with_(output=kind, output_name=oname)
            if len(oshape) == 2 and oshape[-1] > 0:
                info = info.with_(num_classes=oshape[-1])
        return info

    # server

    def decode_request(self, body: InferRequest, enc: Encoding) -> np.ndarray:
        if len(body.inputs) != 1:
            raise WireError('the body must be {"inputs": [one {"name", "shape", "datatype", "data"}]}')
        tensor = body.inputs[0]
        datatype = tensor.datatype.upper()
        allowed = ("UINT8",) if enc.dtype == "uint8" else FLOAT_TYPES
        if datatype not in allowed:
            raise WireError(f"datatype {datatype or 'missing'}; this model takes {' or '.join(allowed)}")
        shape = tensor.shape
        values = array(tensor.data, "data")
        if values.size != int(np.prod(shape)):
            raise WireError(f"data does not fit shape {shape} ({values.size} values)")
        return values.reshape(shape)

    def encode_reply(
        self, out: np.ndarray, kind: str, info: ModelInfo, request: BaseModel | None = None
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "model_name": info.name,
            "model_version": "1",
            "outputs": [
                {
                    "name": kind,
                    "datatype": "INT64" if kind == "labels" else "FP32",
                    "shape": list(out.shape),
                    "data": np.ascontiguousarray(out).reshape(-1),
                }
            ],
        }
        if isinstance(request, InferRequest) and request.id is not None:
            reply["id"] = request.id
        return reply

    def encode_metadata(self, info: ModelInfo) -> dict[str, Any]:
        output = info.output or "logits"
        return {
            "name": info.name,
            "versions": ["1"],
            "platform": "nnmark",
            "inputs": [
                {
                    "name": info.input_name or "input",
                    "datatype": "UINT8" if info.dtype == "uint8" else "FP32",
                    "shape": [-1, *(info.input_shape or ())],
                }
            ],
            "outputs": [
                {
                    "name": output,
                    "datatype": "INT64" if output == "labels" else "FP32",
                    "shape": [-1] if output == "labels" else [-1, info.num_classes],
                }
            ],
        }
