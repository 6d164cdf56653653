"""What every protocol's predict endpoint does: decode, check, predict, encode (with the codec)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import torch
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from nnmark import wire
from nnmark.serve.model import ServedModel
from nnmark.wire import jsonio
from nnmark.wire.base import WireError

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
    logits = await run_in_threadpool(served.batcher, torch.from_numpy(x))
    kind, out = served.answer(logits)
    if out.is_floating_point() and not torch.isfinite(out).all():
        raise WireError("the model's scores for these inputs are not finite numbers", 422)
    return reply(codec.encode_reply(out.numpy(), kind, served.info(protocol), body))


def reply(obj: Any) -> Response:
    """JSON written directly (numpy arrays as they are): FastAPI's encoder is slow on large arrays."""
    return Response(jsonio.dumps(obj), media_type="application/json")


class FastJsonRequest(Request):
    """A request whose JSON body is parsed by :func:`nnmark.wire.jsonio.loads` (orjson when installed).

    A body announced by ``Inference-Header-Content-Length`` (the Open Inference Protocol's binary
    tensor extension) is parsed up to that length; binary tensor data after it is refused (400)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            header = self.headers.get("inference-header-content-length")
            if header is not None:
                if not header.isdigit() or int(header) > len(body):
                    raise HTTPException(
                        400, f"Inference-Header-Content-Length {header!r} does not fit the body"
                    )
                if int(header) < len(body):
                    raise HTTPException(
                        400, "binary tensor data is not supported here; send JSON tensors (binary_data=False)"
                    )
            self._json = jsonio.loads(body)
        return self._json


class FastJsonRoute(APIRoute):
    """Routes whose bodies are parsed by :class:`FastJsonRequest` (FastAPI's custom route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_fast(request: Request) -> Response:
            return await handler(FastJsonRequest(request.scope, request.receive))

        return parse_fast
