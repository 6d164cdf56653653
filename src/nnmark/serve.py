"""Serve a run folder's model over HTTP, optionally with a query defense (FastAPI + uvicorn).

``create_app(run_dir)`` answers three protocols (the ones :class:`~nnmark.http_oracle.HttpOracle`
speaks), so a suspect can be stood up locally and verified exactly as a remote API would be:

* nnmark: ``GET /info``, ``POST /predict`` with ``{"inputs": N×C×H×W floats in [0, 1]}`` →
  ``{"logits": N×K}`` (or ``"probabilities"`` / ``"labels"``, see ``output``);
* TF-Serving REST: ``GET /v1/models/NAME[/versions/V]/metadata``,
  ``POST /v1/models/NAME[/versions/V]:predict`` with ``{"instances": [C×H×W, ...]}`` (or
  columnar ``{"inputs": N×C×H×W}``) → ``{"predictions": [...]}``;
* KServe v2: ``GET /v2/models/NAME`` (metadata), ``GET /v2/models/NAME/ready``,
  ``GET /v2/health/live|ready``, ``POST /v2/models/NAME/infer``.

``NAME`` is the model's name (default: the run folder's name); other names get 404.

Inputs are checked before the model sees them: a body larger than ``max_body_bytes`` or more
than ``max_batch`` inputs → 413; not JSON, or not a rectangular array of numbers → 400; the
wrong shape or NaN/infinite values → 422. Every error is JSON ``{"error": msg, "detail": msg}``
(TF-Serving and KServe say ``error``, FastAPI clients read ``detail``).

The nnmark protocol always carries floats (any finite value: null-embedding keys hold ±λ). The
TF-Serving and KServe endpoints take floats too, unless ``input_dtype="uint8"``: then they declare
``DT_UINT8`` / ``UINT8`` inputs in their metadata and take integer pixels 0–255, as many deployed
image models do (useful to test clients against such servers).

Defense ``reject`` (out-of-distribution query rejection, the defense Namba et al. 2019 discuss
against key queries): a :class:`PixelStatsDetector` fitted on the run's training images scores
each input by its mean squared per-pixel z-score against the training images' per-pixel mean
and spread, and flags inputs above the 99.5th percentile of held-out training images (so about
0.5% of ordinary queries are flagged too). A flagged input is **answered with a wrong label**,
not refused: the served scores are the real ones with the top class swapped for another class
drawn at random (seeded by the input's bytes, so repeating a query repeats the answer). This is
what a thief would do: an HTTP 403 would tell the owner that their key was spotted. The server
logs how many inputs it flagged; nothing in the replies or in ``/info`` reveals the defense.

Defense ``autoencoder`` (Namba et al. 2019's query modification, the attack itself, see
:mod:`nnmark.attacks.query.autoencoder`): a convolutional autoencoder is trained on a share
(``defense_fraction``, default 10 %, drawn as :func:`~nnmark.attacks.base.share_indices` draws
the attacker's data) of the run's training images; an input whose reconstruction loss or whose
Jensen–Shannon divergence between ``f(x)`` and ``f(AE(x))`` is above its 95th percentile on
held-out images is answered with ``f(AE(x))``, any other with ``f(x)``. The autoencoder and its
thresholds are cached in the run folder as ``defense/autoencoder.safetensors`` (written
atomically) and reused while the model's weights, the dataset, the share, the seed and the
settings (``defense_settings``, e.g. ``{"epochs": 5}``) are unchanged; otherwise it is retrained.
A run folder that cannot be written to is served anyway (the cache is skipped, with a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from nnmark.errors import NnmarkError

if TYPE_CHECKING:
    from nnmark.attacks.query.autoencoder import QueryModification

log = logging.getLogger(__name__)

DEFENSES = ("none", "reject", "autoencoder")
DEFENSE_DIR = "defense"
AUTOENCODER_FILE = "autoencoder.safetensors"
OUTPUTS = ("logits", "probabilities", "labels")
INPUT_DTYPES = ("float32", "uint8")
MAX_BODY_BYTES = 32 * 2**20
MAX_BATCH = 1024


class ApiError(Exception):
    """An answer other than 200: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PixelStatsDetector:
    """Flags inputs whose pixels are far from the training images' (a simple OOD detector).

    Score of an image ``x``: ``mean(((x - μ) / max(σ, 0.05))²)`` over its pixels, with ``μ`` and
    ``σ`` the per-pixel mean and standard deviation of half of (at most ``max_images``) training
    images; the threshold is the ``quantile`` of the scores of the other half.
    """

    def __init__(
        self, train_x: torch.Tensor, quantile: float = 0.995, max_images: int = 5000, seed: int = 0
    ) -> None:
        if len(train_x) < 4:
            raise NnmarkError("the reject defense needs training images (what ordinary queries look like)")
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(train_x), generator=gen)[:max_images]
        x = train_x[idx].float() / (255.0 if train_x.dtype == torch.uint8 else 1.0)
        half = len(x) // 2
        fit, held = x[:half], x[half:]
        self.mean = fit.mean(0)
        self.std = fit.std(0).clamp_min(0.05)
        self.threshold = float(torch.quantile(self.score(held), quantile))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).pow(2).mean(dim=(1, 2, 3))

    def flags(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold


class _Served:
    """The model, its description and the defense, shared by every endpoint."""

    def __init__(
        self,
        run_dir: Path,
        defense: str,
        name: str,
        output: str,
        input_dtype: str,
        max_batch: int,
        max_body_bytes: int,
        data_dir: str | Path | None,
        seed: int,
        defense_fraction: float = 0.1,
        defense_settings: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        from nnmark.io import load_spec
        from nnmark.workflow import load_model

        self.spec = load_spec(run_dir)
        self.model = load_model(run_dir)
        self.name, self.output, self.input_dtype = name, output, input_dtype
        self.max_batch, self.max_body_bytes = max_batch, max_body_bytes
        self.secret = str(seed).encode()
        self.lock = threading.Lock()
        self.answered = 0
        self.flagged = 0
        self.detector: PixelStatsDetector | None = None
        self.guard: QueryModification | None = None
        if defense == "reject":
            self.detector = PixelStatsDetector(self._training_images(run_dir, defense, data_dir), seed=seed)
        elif defense == "autoencoder":
            self.guard = autoencoder_defense(
                run_dir,
                self.model,
                self._training_images(run_dir, defense, data_dir),
                fraction=defense_fraction,
                seed=seed,
                settings=defense_settings,
                progress=progress,
            )

    def _training_images(self, run_dir: Path, defense: str, data_dir: str | Path | None) -> torch.Tensor:
        from nnmark.data import load_dataset

        if not self.spec.dataset:
            raise NnmarkError(f"{run_dir} does not name its dataset, which the {defense} defense needs")
        data = load_dataset(self.spec.dataset, data_dir)
        if data.input_shape != self.spec.input_shape:
            raise NnmarkError(
                f"dataset {self.spec.dataset} has {data.input_shape} images but the model "
                f"takes {self.spec.input_shape}"
            )
        return data.train_x

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    def info(self) -> dict[str, Any]:
        n = self.name
        return {
            "name": n,
            "arch": self.spec.arch,
            "dataset": self.spec.dataset,
            "input_shape": list(self.shape),
            "num_classes": self.spec.num_classes,
            "input": "float32 N×C×H×W in [0, 1]",
            "output": self.output,
            "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes,
            "endpoints": {
                "nnmark": "/predict",
                "tf-serving": f"/v1/models/{n}:predict",
                "kserve-v2": f"/v2/models/{n}/infer",
            },
        }

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise ApiError(404, f"no model {name!r} here; this server serves {self.name!r}")

    # -- turning request values into a checked float tensor ---------------------------------

    def tensor(self, values: Any, what: str, pixels: bool = False) -> torch.Tensor:
        """N×C×H×W float32 in the model's scale from nested lists; ``pixels``: 0–255 integers."""
        if not isinstance(values, list):
            raise ApiError(400, f"{what} must be a JSON array of numbers")
        if len(values) > self.max_batch:
            raise ApiError(413, f"{len(values)} inputs in one request; at most {self.max_batch}")
        try:
            x = torch.tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise ApiError(400, f"{what} is not a rectangular array of numbers ({_first_line(e)})") from e
        return self.checked(x, what, pixels)

    def checked(self, x: torch.Tensor, what: str, pixels: bool = False) -> torch.Tensor:
        c, h, w = self.shape
        if x.ndim == 3 and tuple(x.shape) == (c, h, w):
            x = x.unsqueeze(0)
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise ApiError(
                422,
                f"{what} has shape {list(x.shape)}; this model takes N×{c}×{h}×{w} "
                f"(float32 in [0, 1], channels first)",
            )
        if len(x) > self.max_batch:
            raise ApiError(413, f"{len(x)} inputs in one request; at most {self.max_batch}")
        if not torch.isfinite(x).all():
            raise ApiError(422, f"{what} holds NaN or infinite values")
        if pixels:
            if not bool(torch.all(x == x.round())) or x.min() < 0 or x.max() > 255:
                raise ApiError(422, f"{what} must hold integer pixels 0-255 (this model takes uint8)")
            x = x / 255.0
        return x.to(torch.float32)

    # -- answering --------------------------------------------------------------------------

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock, torch.no_grad():
            if self.guard is not None:
                before = self.guard.stats.flagged
                logits = self.guard.scores(x)
                self.answered += len(x)
                self.flagged = self.guard.stats.flagged
                if self.flagged > before:
                    log.info(
                        "autoencoder defense: modified %d of %d inputs (%d of %d so far)",
                        self.flagged - before,
                        len(x),
                        self.flagged,
                        self.answered,
                    )
                return logits
            logits = self.model(x).float()
            self.answered += len(x)
            if self.detector is not None:
                flagged = self.detector.flags(x)
                if flagged.any():
                    self.flagged += int(flagged.sum())
                    logits = self._mislead(x, logits, flagged)
                    log.info(
                        "reject defense: flagged %d of %d inputs (%d of %d so far)",
                        int(flagged.sum()),
                        len(x),
                        self.flagged,
                        self.answered,
                    )
        return logits

    def _mislead(self, x: torch.Tensor, logits: torch.Tensor, flagged: torch.Tensor) -> torch.Tensor:
        """Swap the top class of each flagged row with another, drawn from the input's bytes."""
        logits = logits.clone()
        k = logits.shape[1]
        if k < 2:
            return logits
        for i in torch.nonzero(flagged).flatten().tolist():
            digest = hashlib.sha256(self.secret + x[i].numpy().tobytes()).digest()
            top = int(logits[i].argmax())
            other = (top + 1 + int.from_bytes(digest[:8], "big") % (k - 1)) % k
            logits[i, [top, other]] = logits[i, [other, top]]
        return logits

    def answer(self, logits: torch.Tensor) -> tuple[str, torch.Tensor]:
        if self.output == "labels":
            return "labels", logits.argmax(1)
        if self.output == "probabilities":
            return "probabilities", torch.softmax(logits, 1)
        return "logits", logits


def create_app(
    run_dir: str | Path,
    defense: str = "none",
    *,
    name: str | None = None,
    output: str = "logits",
    input_dtype: str = "float32",
    max_batch: int = MAX_BATCH,
    max_body_bytes: int = MAX_BODY_BYTES,
    data_dir: str | Path | None = None,
    seed: int = 0,
    defense_fraction: float = 0.1,
    defense_settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> FastAPI:
    """A FastAPI app serving the model of ``run_dir`` (see the module docstring).

    Args:
        defense: ``none``; ``reject`` (flagged out-of-distribution inputs get a wrong label); or
            ``autoencoder`` (Namba 2019 query modification: flagged inputs get ``f(AE(x))``).
        name: the model name in TF-Serving / KServe URLs (default: the run folder's name).
        output: what predictions carry: ``logits``, ``probabilities`` or ``labels`` (top-1 only).
        input_dtype: ``float32``, or ``uint8`` for TF-Serving / KServe endpoints taking 0–255 pixels.
        max_batch, max_body_bytes: the most inputs and bytes one request may carry.
        data_dir: where the training data is (the reject defense needs it).
        seed: seeds the defense (its image sample, the wrong labels, the autoencoder).
        defense_fraction: share of the training set the autoencoder defense trains on.
        defense_settings: parameters of the autoencoder defense (``nnmark list attacks --verbose``,
            query-modification), e.g. ``{"epochs": 5}``.
        progress: show a progress bar (on a terminal) while the autoencoder trains.
    """
    if defense not in DEFENSES:
        raise NnmarkError(f"unknown defense {defense!r}; choose one of {', '.join(DEFENSES)}")
    if output not in OUTPUTS:
        raise NnmarkError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
    if input_dtype not in INPUT_DTYPES:
        raise NnmarkError(f"unknown input type {input_dtype!r}; choose one of {', '.join(INPUT_DTYPES)}")
    if max_batch < 1 or max_body_bytes < 1:
        raise NnmarkError("max_batch and max_body_bytes must be positive")
    folder = Path(run_dir)
    model_name = name or folder.resolve().name or "model"
    if "/" in model_name or ":" in model_name:
        raise NnmarkError(f"model name {model_name!r} may not contain '/' or ':'; pass another name")
    served = _Served(
        folder,
        defense,
        model_name,
        output,
        input_dtype,
        max_batch,
        max_body_bytes,
        data_dir,
        seed,
        defense_fraction,
        defense_settings,
        progress,
    )
    uint8 = input_dtype == "uint8"

    app = FastAPI(
        title=f"nnmark: {model_name}",
        description="Predictions of an nnmark run folder.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.served = served

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "detail": exc.message}, status_code=exc.status)

    async def body(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise ApiError(413, f"request of {declared} bytes; at most {max_body_bytes} (send fewer inputs)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ApiError(413, f"request larger than {max_body_bytes} bytes (send fewer inputs)")
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not JSON ({_first_line(e)})") from e
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    async def run(x: torch.Tensor) -> tuple[str, torch.Tensor]:
        logits = await run_in_threadpool(served.predict, x)
        return served.answer(logits)

    # -- nnmark -------------------------------------------------------------------------------

    @app.get("/info")
    async def info() -> Response:
        return _reply(served.info())

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        data = await body(request)
        if "inputs" not in data:
            raise ApiError(400, 'the body must be {"inputs": N×C×H×W numbers}')
        x = served.tensor(data["inputs"], "inputs")
        kind, out = await run(x)
        return _reply({kind: out.tolist()})

    # -- TF-Serving ---------------------------------------------------------------------------

    def tf_status(name: str) -> dict[str, Any]:
        served.check_name(name)
        return {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }

    def tf_metadata(name: str) -> dict[str, Any]:
        served.check_name(name)
        c, h, w = served.shape
        dims = [{"size": str(s), "name": ""} for s in (-1, c, h, w)]
        k = served.spec.num_classes
        out_dims = [{"size": "-1", "name": ""}]
        if served.output != "labels":
            out_dims.append({"size": str(k), "name": ""})
        out_dtype = "DT_INT64" if served.output == "labels" else "DT_FLOAT"
        sig = {
            "inputs": {
                "input": {
                    "dtype": "DT_UINT8" if uint8 else "DT_FLOAT",
                    "name": "input:0",
                    "tensor_shape": {"dim": dims, "unknown_rank": False},
                }
            },
            "outputs": {
                served.output: {
                    "dtype": out_dtype,
                    "name": f"{served.output}:0",
                    "tensor_shape": {"dim": out_dims, "unknown_rank": False},
                }
            },
            "method_name": "tensorflow/serving/predict",
        }
        return {
            "model_spec": {"name": name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}},
        }

    async def tf_predict(name: str, request: Request) -> Response:
        served.check_name(name)
        data = await body(request)
        if "instances" in data:
            rows = data["instances"]
            if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
                if any(len(r) != 1 for r in rows):
                    raise ApiError(400, "this model has one input; each instance holds one value")
                rows = [next(iter(r.values())) for r in rows]
            x = served.tensor(rows, "instances", pixels=uint8)
            kind, out = await run(x)
            return _reply({"predictions": out.tolist()})
        if "inputs" in data:
            values = data["inputs"]
            if isinstance(values, dict):
                if len(values) != 1:
                    raise ApiError(400, "this model has one input")
                values = next(iter(values.values()))
            x = served.tensor(values, "inputs", pixels=uint8)
            kind, out = await run(x)
            return _reply({"outputs": out.tolist()})
        raise ApiError(400, 'the body must be {"instances": [...]} or {"inputs": ...}')

    @app.get("/v1/models/{name}")
    async def tf_status_v(name: str) -> dict[str, Any]:
        return tf_status(name)

    @app.get("/v1/models/{name}/metadata")
    async def tf_meta(name: str) -> dict[str, Any]:
        return tf_metadata(name)

    @app.get("/v1/models/{name}/versions/{version}/metadata")
    async def tf_meta_version(name: str, version: str) -> dict[str, Any]:
        return tf_metadata(name)

    @app.post("/v1/models/{name}:predict")
    async def tf_pred(name: str, request: Request) -> Response:
        return await tf_predict(name, request)

    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def tf_pred_version(name: str, version: str, request: Request) -> Response:
        return await tf_predict(name, request)

    # -- KServe v2 ----------------------------------------------------------------------------

    @app.get("/v2/health/live")
    @app.get("/v2/health/ready")
    async def health() -> dict[str, Any]:
        return {"live": True, "ready": True}

    @app.get("/v2/models/{name}")
    async def kserve_meta(name: str) -> dict[str, Any]:
        served.check_name(name)
        out_shape = [-1] if served.output == "labels" else [-1, served.spec.num_classes]
        return {
            "name": name,
            "versions": ["1"],
            "platform": "nnmark",
            "inputs": [
                {"name": "input", "datatype": "UINT8" if uint8 else "FP32", "shape": [-1, *served.shape]}
            ],
            "outputs": [
                {
                    "name": served.output,
                    "datatype": "INT64" if served.output == "labels" else "FP32",
                    "shape": out_shape,
                }
            ],
        }

    @app.get("/v2/models/{name}/ready")
    async def kserve_ready(name: str) -> dict[str, Any]:
        served.check_name(name)
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def kserve_infer(name: str, request: Request) -> Response:
        served.check_name(name)
        data = await body(request)
        inputs = data.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ApiError(400, 'the body must be {"inputs": [one {"name", "shape", "datatype", "data"}]}')
        x = _kserve_tensor(served, inputs[0], uint8)
        kind, out = await run(x)
        reply: dict[str, Any] = {
            "model_name": name,
            "model_version": "1",
            "outputs": [
                {
                    "name": kind,
                    "datatype": "INT64" if kind == "labels" else "FP32",
                    "shape": list(out.shape),
                    "data": out.reshape(-1).tolist(),
                }
            ],
        }
        if "id" in data:
            reply["id"] = data["id"]
        return _reply(reply)

    return app


def _kserve_tensor(served: _Served, tensor: dict[str, Any], uint8: bool) -> torch.Tensor:
    datatype = str(tensor.get("datatype", "")).upper()
    allowed = ("UINT8",) if uint8 else ("FP32", "FP64", "FP16")
    if datatype not in allowed:
        raise ApiError(400, f"datatype {datatype or 'missing'}; this model takes {' or '.join(allowed)}")
    shape, values = tensor.get("shape"), tensor.get("data")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ApiError(400, "shape must be a list of non-negative integers")
    if not isinstance(values, list):
        raise ApiError(400, "data must be a JSON array of numbers")
    if shape and shape[0] > served.max_batch:
        raise ApiError(413, f"{shape[0]} inputs in one request; at most {served.max_batch}")
    try:
        x = torch.tensor(values, dtype=torch.float64).reshape(shape)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ApiError(400, f"data does not fit shape {shape} ({_first_line(e)})") from e
    return served.checked(x, "input", pixels=uint8)


def autoencoder_defense(
    run_dir: str | Path,
    model: torch.nn.Module,
    train_x: torch.Tensor,
    *,
    fraction: float = 0.1,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    progress: bool = False,
) -> QueryModification:
    """Namba 2019 query modification over ``model``, trained on ``fraction`` of ``train_x``, or loaded
    from ``run_dir/defense/autoencoder.safetensors`` when that was made for the same weights, data
    share, seed and settings (else trained again and the cache rewritten, atomically)."""
    from nnmark.attacks.base import share_indices
    from nnmark.attacks.query.autoencoder import QueryModification
    from nnmark.io import MODEL_FILE

    run = Path(run_dir)
    cache = run / DEFENSE_DIR / AUTOENCODER_FILE
    qm = QueryModification(model, seed=seed, **(settings or {}))  # validates the settings first
    made_for = {
        "model_sha256": hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest(),
        "images": len(train_x),
        "images_shape": list(train_x.shape[1:]),
        "fraction": fraction,
    }
    if cache.is_file():
        try:
            config = QueryModification.read_metadata(cache)
            same = (config.get("extra"), config.get("params"), config.get("seed"))
            if same == (made_for, qm.params.model_dump(), seed):
                log.info("autoencoder defense: using %s", cache)
                return QueryModification.load(cache, model)
            log.info("autoencoder defense: %s was made for another model or settings; retraining", cache)
        except NnmarkError as e:
            log.warning("autoencoder defense: ignoring %s (%s); retraining", cache, e)
    share = train_x[share_indices(len(train_x), fraction, seed)]
    log.info("autoencoder defense: training on %d of %d training images", len(share), len(train_x))
    qm.fit(share, progress=progress)
    try:
        qm.save(cache, extra=made_for)
    except OSError as e:
        log.warning("autoencoder defense: cannot cache the autoencoder in %s (%s); serving anyway", cache, e)
    return qm


def _reply(obj: Any) -> Response:
    # json.dumps directly: FastAPI's encoder is slow on large nested lists of floats
    return Response(json.dumps(obj, separators=(",", ":")), media_type="application/json")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__


# -- running -------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (``port`` 0: any free port); NnmarkError when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NnmarkError(f"cannot resolve host {host!r} ({e}); use e.g. 127.0.0.1") from e
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise NnmarkError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from e
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _server(app: FastAPI, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", timeout_keep_alive=30)
    )


def run_server(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    defense: str = "none",
    *,
    announce: Callable[[str], None] | None = None,
    log_level: str = "warning",
    **app_options: Any,
) -> None:
    """Serve ``run_dir`` until interrupted; ``announce`` gets the URL once the port is open.

    ``app_options`` go to :func:`create_app` (name, output, input_dtype, max_batch, data_dir, ...).
    """
    app = create_app(run_dir, defense, **app_options)
    sock = bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach it can query the model (no authentication)", host)
    if announce is not None:
        announce(_url(sock, host))
    try:
        _server(app, log_level).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
) -> Iterator[str]:
    """Run ``app`` on a real socket in a background thread; yields its URL (tests, benchmarks)."""
    sock = bind(host, port)
    server = _server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = threading.Event()
        waited = 0.0
        while not server.started and thread.is_alive() and waited < start_timeout:
            deadline.wait(0.02)
            waited += 0.02
        if not server.started:
            raise NnmarkError("the server did not start")
        yield _url(sock, host)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
