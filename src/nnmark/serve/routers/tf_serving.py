"""TensorFlow Serving's REST API (:mod:`nnmark.wire.tf_serving`): status, metadata, predict."""

from typing import Any

from fastapi import APIRouter, Response

from nnmark import wire
from nnmark.serve.model import ServedModel
from nnmark.serve.routers.common import ERRORS, FastJsonRoute, predict
from nnmark.wire.tf_serving import PredictRequest

PROTOCOL = "tf-serving"


def router(served: ServedModel) -> APIRouter:
    api = APIRouter(
        prefix="/v1/models",
        tags=["tf-serving"],
        responses=ERRORS,
        route_class=FastJsonRoute,
        strict_content_type=False,
    )
    codec = wire.get(PROTOCOL)

    def metadata(name: str) -> dict[str, Any]:
        served.check_name(name)
        return codec.encode_metadata(served.info(PROTOCOL))

    @api.get("/{name}", summary="model status")
    async def status(name: str) -> dict[str, Any]:
        served.check_name(name)
        ok = {"error_code": "OK", "error_message": ""}
        return {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": ok}]}

    @api.get("/{name}/metadata", summary="signature: input and output names, types and shapes")
    async def meta(name: str) -> dict[str, Any]:
        return metadata(name)

    @api.get("/{name}/versions/{version}/metadata", summary="signature of a version")
    async def meta_version(name: str, version: str) -> dict[str, Any]:
        return metadata(name)

    @api.post("/{name}:predict", summary="predictions (row or columnar format)")
    async def predict_tf(name: str, body: PredictRequest) -> Response:
        served.check_name(name)
        return await predict(served, PROTOCOL, body, "inputs" if body.inputs is not None else "instances")

    @api.post("/{name}/versions/{version}:predict", summary="predictions of a version")
    async def predict_tf_version(name: str, version: str, body: PredictRequest) -> Response:
        served.check_name(name)
        return await predict(served, PROTOCOL, body, "inputs" if body.inputs is not None else "instances")

    return api
