"""``create_app``: the FastAPI app serving a run folder's model on every wire protocol."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nnmark import wire
from nnmark.errors import NnmarkError
from nnmark.serve.limits import BodySizeLimit
from nnmark.serve.model import ServedModel, encodings
from nnmark.serve.routers import ROUTERS
from nnmark.wire.base import WireError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 2**20
MAX_BATCH = 1024


def create_app(
    run_dir: str | Path,
    defense: str = "none",
    *,
    name: str | None = None,
    output: str = "logits",
    input_dtype: str = "float32",
    input_layout: str | None = None,
    input_scale: str = "0-1",
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    data_dir: str | Path | None = None,
    seed: int = 0,
    defense_fraction: float = 0.1,
    defense_settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> FastAPI:
    """A FastAPI app serving the model of ``run_dir`` (see :mod:`nnmark.serve`).

    Args:
        defense: a name of :func:`nnmark.attacks.defenses.defenses`: ``none``; ``autoencoder``
            (Namba 2019 query modification: flagged inputs get ``f(AE(x))``); ``rejection`` (the
            same detector, flagged inputs get a random label); ``reject`` (inputs far from
            the training images by pixel statistics get a wrong label); ``jpeg``, ``blur``,
            ``noise`` (every input transformed); see :mod:`nnmark.serve.defenses`.
        name: the model name in TF-Serving / KServe URLs (default: the run folder's name).
        output: what predictions carry: ``logits``, ``probabilities`` or ``labels`` (top-1 only).
        input_dtype: ``float32``, or ``uint8`` for TF-Serving / KServe endpoints taking 0–255 pixels.
        input_layout: ``nchw`` or ``nhwc`` on the TF-Serving and KServe endpoints; None: each
            protocol's default (TF-Serving N×H×W×C, KServe N×C×H×W). nnmark's is always N×C×H×W.
        input_scale: ``0-1`` or ``0-255`` for float inputs on the TF-Serving and KServe endpoints.
        max_batch, max_body_bytes: the most inputs and bytes one request may carry (else 413).
        data_dir: where the training data is (the defenses need it).
        seed: seeds the defense (its image sample, the wrong labels, the autoencoder).
        defense_fraction: share of the training set the autoencoder detector trains on
            (``autoencoder``, ``rejection``).
        defense_settings: parameters of the defense (``nnmark list attacks --verbose``), e.g.
            ``{"epochs": 5}`` for ``autoencoder``, ``{"quality": 50}`` for ``jpeg``.
        progress: show a progress bar (on a terminal) while the autoencoder trains.
    """
    if max_batch < 1 or max_body_bytes < 1:
        raise NnmarkError("max_batch and max_body_bytes must be positive")
    folder = Path(run_dir)
    model_name = name or folder.resolve().name or "model"
    if "/" in model_name or ":" in model_name:
        raise NnmarkError(f"model name {model_name!r} may not contain '/' or ':'; pass another name")
    served = ServedModel(
        folder,
        defense=defense,
        name=model_name,
        output=output,
        encodings=encodings(input_layout, input_scale, input_dtype),
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        data_dir=data_dir,
        seed=seed,
        defense_fraction=defense_fraction,
        defense_settings=defense_settings,
        progress=progress,
    )
    app = FastAPI(
        title=f"nnmark: {model_name}",
        description="Predictions of an nnmark run folder, on the nnmark, TF-Serving REST and "
        "KServe v2 (Open Inference Protocol) wire protocols.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.served = served
    for protocol in wire.names():
        app.include_router(ROUTERS[protocol](served))
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    _errors(app)
    return app


def _errors(app: FastAPI) -> None:
    """Every error is JSON ``{"error": msg, "detail": msg}`` (TF-Serving and KServe clients read
    ``error``, FastAPI clients ``detail``), one line, never a traceback."""

    def answer(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message, "detail": message}, status_code=status)

    @app.exception_handler(WireError)
    async def wire_error(request: Request, exc: WireError) -> JSONResponse:
        return answer(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = list(exc.errors())
        if any(p.get("type") == "json_invalid" for p in problems):
            ctx = next(p for p in problems if p.get("type") == "json_invalid").get("ctx") or {}
            return answer(400, f"the body is not JSON ({ctx.get('error', 'cannot be parsed')})")
        shown = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}"
            for e in problems[:3]
        )
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return answer(400, f"the body does not follow the protocol: {shown}{more}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return answer(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        log.exception("failed to answer %s %s", request.method, request.url.path)
        return answer(500, f"the server failed ({exc.__class__.__name__}); see its log")
