"""Serve a run folder's model over HTTP, optionally behind a query defense (FastAPI + uvicorn).

``create_app(run_dir)`` answers every protocol of :mod:`nnmark.wire`, each through its own
APIRouter (:mod:`nnmark.serve.routers`) and the same codec the client
(:class:`~nnmark.http_oracle.HttpOracle`) uses, so a suspect can be stood up locally and
verified exactly as a remote API would be:

* nnmark: ``GET /info``, ``POST /predict`` with ``{"inputs": N×C×H×W floats in [0, 1]}`` →
  ``{"logits": N×K}`` (or ``"probabilities"`` / ``"labels"``, see ``output``);
* TF-Serving REST: ``GET /v1/models/NAME[/versions/V]/metadata``,
  ``POST /v1/models/NAME[/versions/V]:predict`` with ``{"instances": [H×W×C, ...]}`` (or
  columnar ``{"inputs": N×H×W×C}``) → ``{"predictions": [...]}``: TensorFlow's channels-last
  convention, unless ``input_layout="nchw"``;
* KServe v2 (Open Inference Protocol): ``GET /v2/models/NAME`` (metadata),
  ``GET /v2/models/NAME/ready``, ``GET /v2/health/live|ready``, ``POST /v2/models/NAME/infer``
  (N×C×H×W unless ``input_layout="nhwc"``);
* ``GET /openapi.json``: the schema of all of the above (request bodies are pydantic models).

``NAME`` is the model's name (default: the run folder's name); other names get 404.

Inputs are checked before the model sees them: a body larger than ``max_body_bytes`` (checked
before it is parsed) or more than ``max_batch`` inputs → 413; not JSON, or a body that does not
follow the protocol → 400; the wrong shape or NaN/infinite values → 422. Every error is JSON
``{"error": msg, "detail": msg}``.

The nnmark protocol always carries floats (any finite value: null-embedding keys hold ±λ). The
TF-Serving and KServe endpoints take floats in [0, 1] too, unless ``input_scale="0-255"`` (floats
0–255) or ``input_dtype="uint8"`` (integer pixels, declared ``DT_UINT8`` / ``UINT8`` in the
metadata), as many deployed image models do.

Defenses are every name of :func:`nnmark.attacks.defenses.defenses` (``none``, ``autoencoder``,
``rejection``, ``reject``, ``jpeg``, ``blur``, ``noise``, ...), built in one place,
:func:`nnmark.serve.defenses.build_defense`; see that module.
"""

from nnmark.serve.app import MAX_BATCH, MAX_BODY_BYTES, create_app
from nnmark.serve.defenses import (
    AUTOENCODER_FILE,
    DEFENSE_DIR,
    autoencoder_defense,
    build_defense,
)
from nnmark.serve.model import ServedModel
from nnmark.serve.run import bind, run_server, serve_in_thread
from nnmark.wire.base import WireError as ApiError

__all__ = [
    "AUTOENCODER_FILE",
    "DEFENSE_DIR",
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "ApiError",
    "ServedModel",
    "autoencoder_defense",
    "bind",
    "build_defense",
    "create_app",
    "run_server",
    "serve_in_thread",
]
