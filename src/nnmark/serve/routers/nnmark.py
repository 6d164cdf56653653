"""nnmark's own protocol (:mod:`nnmark.wire.nnmark`): ``GET /info``, ``POST /predict``."""

from fastapi import APIRouter, Response

from nnmark import wire
from nnmark.serve.model import ServedModel
from nnmark.serve.routers.common import ERRORS, FastJsonRoute, predict, reply
from nnmark.wire.nnmark import PredictRequest

PROTOCOL = "nnmark"


def router(served: ServedModel) -> APIRouter:
    api = APIRouter(tags=["nnmark"], responses=ERRORS, route_class=FastJsonRoute, strict_content_type=False)
    codec = wire.get(PROTOCOL)

    @api.get("/info", summary="what this server serves")
    async def info() -> Response:
        doc = codec.encode_metadata(served.info(PROTOCOL))
        n = served.name
        doc.update(
            arch=served.spec.arch,
            dataset=served.spec.dataset,
            max_batch=served.max_batch,
            max_body_bytes=served.max_body_bytes,
            endpoints={
                "nnmark": "/predict",
                "tf-serving": f"/v1/models/{n}:predict",
                "kserve-v2": f"/v2/models/{n}/infer",
            },
            encodings={p: vars(e) for p, e in served.encodings.items()},
        )
        return reply(doc)

    @api.post("/predict", summary="predictions for N×C×H×W inputs in [0, 1]")
    async def predict_nnmark(body: PredictRequest) -> Response:
        return await predict(served, PROTOCOL, body, "inputs")

    return api
