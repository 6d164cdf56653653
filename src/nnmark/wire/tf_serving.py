"""TensorFlow Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest).

``url`` is the model's URL, ``http://HOST:8501/v1/models/NAME`` (or ``.../versions/V``).

* ``GET {url}/metadata`` → the SignatureDef: input name, dtype (``DT_FLOAT``, ``DT_UINT8``),
  shape; output names and shapes;
* ``POST {url}:predict`` with ``{"instances": [one input, ...]}`` (row format) or
  ``{"inputs": batch}`` (columnar) → ``{"predictions": [...]}`` or ``{"outputs": ...}``.

Images follow TensorFlow's convention, N×H×W×C (channels last), unless the metadata declares a
channels-first shape: that is the default for servers that publish no metadata, and what
``nnmark serve`` takes on this protocol.
"""

from __future__ import annotations

from typing import Any

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

_DTYPES = {"DT_UINT8": "uint8", "DT_FLOAT": "float32", "DT_HALF": "float32", "DT_DOUBLE": "float32"}


class PredictRequest(BaseModel):
    """``POST /v1/models/NAME:predict``: row format (``instances``) or columnar (``inputs``)."""

    signature_name: str | None = Field(default=None, description="ignored: one signature, serving_default")
    instances: list[Any] | None = Field(
        default=None, description="one input per row (H×W×C), or {name: input}"
    )
    inputs: Any = Field(default=None, description="the batch N×H×W×C, or {name: batch}")


class TfServingProtocol(WireProtocol[PredictRequest]):
    name = "tf-serving"
    default_layout = "nhwc"
    url_hint = "http://HOST:8501/v1/models/NAME"
    Request = PredictRequest

    def base_url(self, url: str) -> str:
        return _strip(url, (":predict", "/metadata"))

    def predict_url(self, base: str) -> str:
        return base + ":predict"

    def metadata_url(self, base: str) -> str:
        return base + "/metadata"

    def check_url(self, base: str) -> str | None:
        if "/v1/models/" not in base:
            return f"{base} does not look like a TF-Serving model URL ({self.url_hint})"
        return None

    # client

    def encode_request(self, x: np.ndarray, enc: Encoding, info: ModelInfo) -> dict[str, Any]:
        return {"instances": x}

    def decode_reply(self, body: Any, n: int) -> Reply:
        if not isinstance(body, dict):
            raise WireError("not a JSON object")
        if "predictions" in body:
            rows = body["predictions"]
            if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
                name = pick_output(list(rows[0]))
                try:
                    rows = [r[name] for r in rows]
                except KeyError as e:
                    raise WireError(f"output {name!r} missing from some predictions") from e
                return Reply(array(rows, "predictions"), kind_of_name(name))
            return Reply(array(rows, "predictions"))
        if "outputs" in body:
            outputs = body["outputs"]
            if isinstance(outputs, dict) and outputs:
                name = pick_output(list(outputs))
                return Reply(array(outputs[name], "outputs"), kind_of_name(name))
            return Reply(array(outputs, "outputs"))
        if "error" in body:
            raise WireError(f"the server answered an error: {' '.join(str(body['error']).split())}", 502)
        raise WireError("no 'predictions'")

    def decode_metadata(self, body: Any) -> ModelInfo:
        sigs = body["metadata"]["signature_def"]["signature_def"]
        sig = sigs.get("serving_default") or next(iter(sigs.values()))
        inputs = sig["inputs"]
        name, spec = next(iter(inputs.items()))
        info = ModelInfo(
            name=(body.get("model_spec") or {}).get("name"),
            input_name=name,
            dtype=_DTYPES.get(str(spec.get("dtype"))),
        )
        dims = (spec.get("tensor_shape") or {}).get("dim")
        if dims and len(inputs) == 1:
            shape = shape_of(d["size"] for d in dims)
            if len(shape) == 4:
                info = info.with_(input_shape=shape[1:])
        outputs = sig.get("outputs") or {}
        if outputs:
            oname = pick_output(list(outputs))
            ospec = outputs[oname]
            odims = (ospec.get("tensor_shape") or {}).get("dim")
            kind = kind_of_name(oname)
            if kind is None and str(ospec.get("dtype", "")).startswith(("DT_INT", "DT_UINT")):
                kind = "labels"
            info = info.with_(output=kind, output_name=oname)
            if odims and len(odims) == 2 and int(odims[-1]["size"]) > 0:
                info = info.with_(num_classes=int(odims[-1]["size"]))
        return info

    # server

    def decode_request(self, body: PredictRequest, enc: Encoding) -> np.ndarray:
        if body.instances is not None and body.inputs is not None:
            raise WireError('give "instances" or "inputs", not both')
        if body.instances is not None:
            rows = body.instances
            if rows and all(isinstance(r, dict) for r in rows):
                if any(len(r) != 1 for r in rows):
                    raise WireError("this model has one input; each instance holds one value")
                rows = [next(iter(r.values())) for r in rows]
            return array(rows, "instances")
        if body.inputs is not None:
            values = body.inputs
            if isinstance(values, dict):
                if len(values) != 1:
                    raise WireError("this model has one input")
                values = next(iter(values.values()))
            return array(values, "inputs")
        raise WireError('the body must be {"instances": [...]} or {"inputs": ...}')

    def encode_reply(
        self, out: np.ndarray, kind: str, info: ModelInfo, request: BaseModel | None = None
    ) -> dict[str, Any]:
        columnar = isinstance(request, PredictRequest) and request.inputs is not None
        return {"outputs": out} if columnar else {"predictions": out}

    def encode_metadata(self, info: ModelInfo) -> dict[str, Any]:
        shape = [-1, *(info.input_shape or ())]
        dtype = "DT_UINT8" if info.dtype == "uint8" else "DT_FLOAT"
        output = info.output or "logits"
        out_dims = [{"size": "-1", "name": ""}]
        if output != "labels":
            out_dims.append({"size": str(info.num_classes), "name": ""})
        input_name = info.input_name or "input"
        sig = {
            "inputs": {
                input_name: {
                    "dtype": dtype,
                    "name": f"{input_name}:0",
                    "tensor_shape": {
                        "dim": [{"size": str(s), "name": ""} for s in shape],
                        "unknown_rank": False,
                    },
                }
            },
            "outputs": {
                output: {
                    "dtype": "DT_INT64" if output == "labels" else "DT_FLOAT",
                    "name": f"{output}:0",
                    "tensor_shape": {"dim": out_dims, "unknown_rank": False},
                }
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {"name": info.name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
        }
