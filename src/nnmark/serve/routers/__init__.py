"""One FastAPI APIRouter per wire protocol; ``ROUTERS`` maps each protocol name to its factory."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from nnmark.serve.model import ServedModel
from nnmark.serve.routers import kserve_v2, nnmark, tf_serving

ROUTERS: dict[str, Callable[[ServedModel], APIRouter]] = {
    "nnmark": nnmark.router,
    "tf-serving": tf_serving.router,
    "kserve-v2": kserve_v2.router,
}
