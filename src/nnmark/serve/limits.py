"""A request body-size limit as plain ASGI middleware: larger bodies get HTTP 413 before parsing."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Reads each HTTP request body (at most ``max_bytes``) before the app sees it.

    A ``Content-Length`` above the limit is refused at once; a body that streams past it (chunked
    uploads) is refused as soon as it does. Either way the answer is 413 with the JSON error body
    every endpoint uses, and nothing of the body is parsed.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(
                send, f"request of {declared} bytes; at most {self.max_bytes} (send fewer inputs)"
            )
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send, f"request larger than {self.max_bytes} bytes (send fewer inputs)")
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, send: Send, message: str) -> None:
        body = json.dumps({"error": message, "detail": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive) -> Receive:
    """``messages`` first, then whatever the connection sends next (its disconnect)."""
    queue = list(messages)

    async def receive() -> Any:
        if queue:
            return queue.pop(0)
        return await then()

    return receive
