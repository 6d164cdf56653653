"""Inputs to and from the wire: layout (N×C×H×W ↔ N×H×W×C), scale ([0, 1] ↔ 0–255), uint8 pixels.

nnmark's own inputs are float32 N×C×H×W in [0, 1] (DESIGN.md). :func:`to_wire` turns them into
what a server takes, :func:`from_wire` turns what a client sent back into them and checks it.
A value that a uint8 transport cannot carry (outside [0, 1]) is refused, never clipped: a
clipped key is another key.
"""

from __future__ import annotations

import logging

import numpy as np

from nnmark.wire.base import Encoding, WireError

log = logging.getLogger(__name__)


def to_wire(x: np.ndarray, enc: Encoding) -> np.ndarray:
    """float32 N×C×H×W in [0, 1] → the batch as it travels under ``enc`` (int64 for uint8)."""
    if x.ndim != 4:
        raise ValueError(f"inputs must be N×C×H×W, got shape {x.shape}")
    if enc.layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    if enc.dtype == "uint8":
        if x.size and (x.min() < 0 or x.max() > 1):
            raise WireError("uint8 pixels cannot carry values outside [0, 1]; they are refused, not clipped")
        pixels = x.astype(np.float64) * 255.0
        levels = np.rint(pixels)
        off = float(np.abs(pixels - levels).max()) if pixels.size else 0.0
        if off > 0.01:
            log.info("rounded inputs to 0-255 pixel levels (up to %.2f of a level)", off)
        return np.ascontiguousarray(levels, dtype=np.int64)
    if enc.scale == "0-255":
        return np.ascontiguousarray(x * np.float32(255.0), dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def from_wire(
    arr: np.ndarray, enc: Encoding, chw: tuple[int, int, int], max_batch: int, what: str
) -> np.ndarray:
    """What a client sent → float32 N×C×H×W in [0, 1]; WireError 413/422 when it cannot be."""
    want = enc.wire_shape(chw)
    if arr.ndim == 3 and tuple(arr.shape) == want:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
        dims = "×".join(map(str, want))
        kind = (
            "uint8 pixels 0-255" if enc.dtype == "uint8" else f"float32 in [{enc.scale.replace('-', ', ')}]"
        )
        order = "channels last" if enc.layout == "nhwc" else "channels first"
        raise WireError(
            f"{what} has shape {list(arr.shape)}; this model takes N×{dims} ({kind}, {order})", 422
        )
    if len(arr) > max_batch:
        raise WireError(f"{len(arr)} inputs in one request; at most {max_batch}", 413)
    with np.errstate(all="ignore"):
        if not np.isfinite(arr).all():
            raise WireError(f"{what} holds NaN or infinite values", 422)
        off_grid = arr.size and (not np.array_equal(arr, np.rint(arr)) or arr.min() < 0 or arr.max() > 255)
        if enc.dtype == "uint8" and off_grid:
            raise WireError(f"{what} must hold integer pixels 0-255 (this model takes uint8)", 422)
        x = arr.astype(np.float32)
        if enc.pixels:
            x = x / np.float32(255.0)
        if not np.isfinite(x).all():
            raise WireError(f"{what} holds values too large for float32", 422)
    if enc.layout == "nhwc":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)
