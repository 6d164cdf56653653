"""What every protocol's predict endpoint does: decode, check, predict, encode (with the codec)."""

from __future__ import annotations

import json
from typing import Any

import torch
from fastapi import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from nnmark import wire
from nnmark.serve.model import ServedModel

#: error answers every endpoint may give, for the OpenAPI schema
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body does not follow the protocol"},
    404: {"description": "no model of that name here"},
    413: {"description": "too many inputs or bytes in one request"},
    422: {"description": "inputs of the wrong shape, type or value for this model"},
}


async def predict(served: ServedModel, protocol: str, body: BaseModel, what: str) -> Response:
    """Answer one predict request of ``protocol`` (WireError for anything the model cannot take)."""
    codec = wire.get(protocol)
    enc = served.encodings[protocol]
    sent = codec.decode_request(body, enc)
    x = wire.from_wire(sent, enc, served.shape, served.max_batch, what)
    logits = await run_in_threadpool(served.predict, torch.from_numpy(x))
    kind, out = served.answer(logits)
    return reply(codec.encode_reply(out.numpy(), kind, served.info(protocol), body))


def reply(obj: Any) -> Response:
    """JSON written by json.dumps directly: FastAPI's encoder is slow on large nested lists."""
    return Response(json.dumps(obj, separators=(",", ":")), media_type="application/json")
