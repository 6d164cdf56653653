"""KServe v2 / Open Inference Protocol (:mod:`nnmark.wire.kserve_v2`): health, metadata, infer."""

from typing import Any

from fastapi import APIRouter, Response

from nnmark import wire
from nnmark.serve.model import ServedModel
from nnmark.serve.routers.common import ERRORS, FastJsonRoute, predict
from nnmark.wire.kserve_v2 import InferRequest

PROTOCOL = "kserve-v2"


def router(served: ServedModel) -> APIRouter:
    api = APIRouter(
        prefix="/v2",
        tags=["kserve-v2"],
        responses=ERRORS,
        route_class=FastJsonRoute,
        strict_content_type=False,
    )
    codec = wire.get(PROTOCOL)

    @api.get("", summary="server metadata")
    async def server_meta() -> dict[str, Any]:
        return {"name": "nnmark", "version": _version(), "extensions": []}

    @api.get("/health/live", summary="server liveness")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @api.get("/health/ready", summary="server readiness")
    async def ready() -> dict[str, Any]:
        return {"ready": True}

    @api.get("/models/{name}", summary="model metadata: input and output names, types and shapes")
    async def meta(name: str) -> dict[str, Any]:
        served.check_name(name)
        return codec.encode_metadata(served.info(PROTOCOL))

    @api.get("/models/{name}/ready", summary="model readiness")
    async def model_ready(name: str) -> dict[str, Any]:
        served.check_name(name)
        return {"name": name, "ready": True}

    @api.post("/models/{name}/infer", summary="inference")
    async def infer(name: str, body: InferRequest) -> Response:
        served.check_name(name)
        return await predict(served, PROTOCOL, body, "input")

    return api


def _version() -> str:
    from nnmark import __version__

    return __version__
