"""The served model: the run folder's network behind a query defense, and what it declares."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch

from nnmark.errors import NnmarkError
from nnmark.serve.batching import Batcher
from nnmark.serve.defenses import build_defense
from nnmark.wire.base import DTYPES, LAYOUTS, OUTPUTS, SCALES, Encoding, ModelInfo, WireError

log = logging.getLogger(__name__)


class ServedModel:
    """The model, its description and its defense, shared by every protocol's endpoints.

    ``encodings`` says how each protocol's inputs travel (layout, scale, number type);
    ``defense`` is the model behind the query defense (an oracle: :mod:`nnmark.serve.defenses`);
    ``answered`` and ``flagged`` count inputs answered and inputs the defense flagged.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        defense: str,
        name: str,
        output: str,
        encodings: dict[str, Encoding],
        max_batch: int,
        max_body_bytes: int,
        data_dir: str | Path | None = None,
        seed: int = 0,
        defense_fraction: float = 0.1,
        defense_settings: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        from nnmark.io import load_spec
        from nnmark.workflow import load_model

        if output not in OUTPUTS:
            raise NnmarkError(f"unknown output {output!r}; choose one of {', '.join(OUTPUTS)}")
        self.spec = load_spec(run_dir)
        self.model = load_model(run_dir)
        self.name, self.output, self.encodings = name, output, encodings
        self.max_batch, self.max_body_bytes = max_batch, max_body_bytes
        self.lock = threading.Lock()
        self.answered = 0
        self.flagged = 0
        self.defense = build_defense(
            defense,
            run_dir,
            self.model,
            self.spec,
            data_dir=data_dir,
            seed=seed,
            fraction=defense_fraction,
            settings=defense_settings,
            progress=progress,
        )
        self.defense_name = defense
        #: what the endpoints call: concurrent requests share forward passes
        self.batcher = Batcher(self.predict, max_batch)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    def info(self, protocol: str) -> ModelInfo:
        """What the ``protocol`` endpoints declare: the input shape in that protocol's layout."""
        enc = self.encodings[protocol]
        return ModelInfo(
            name=self.name,
            input_name="inputs" if protocol == "nnmark" else "input",
            input_shape=enc.wire_shape(self.shape),
            dtype=enc.dtype,
            layout=enc.layout,
            scale=enc.scale,
            num_classes=self.spec.num_classes,
            output=self.output,
            output_name=self.output,
        )

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise WireError(f"no model {name!r} here; this server serves {self.name!r}", 404)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for float32 N×C×H×W inputs in [0, 1], as the defense answers them."""
        if len(x) == 0:
            return torch.empty(0, self.spec.num_classes)
        with self.lock, torch.no_grad():
            stats = getattr(self.defense, "stats", None)  # detecting defenses count what they flag
            before = stats.flagged if stats is not None else 0
            logits = self.defense.scores(x)
            flagged = stats.flagged - before if stats is not None else 0
            self.answered += len(x)
            if flagged:
                self.flagged += flagged
                log.info(
                    "%s defense: flagged %d of %d inputs (%d of %d so far)",
                    self.defense_name,
                    flagged,
                    len(x),
                    self.flagged,
                    self.answered,
                )
        return logits

    def answer(self, logits: torch.Tensor) -> tuple[str, torch.Tensor]:
        """What the server sends for ``logits``: (kind, values) per ``output``."""
        if self.output == "labels":
            return "labels", logits.argmax(1)
        if self.output == "probabilities":
            return "probabilities", torch.softmax(logits, 1)
        return "logits", logits


def encodings(input_layout: str | None, input_scale: str, input_dtype: str) -> dict[str, Encoding]:
    """How inputs travel on each protocol: nnmark's is fixed (float32 N×C×H×W in [0, 1]); the others
    follow the options, the layout defaulting to each protocol's own (TF-Serving: N×H×W×C)."""
    from nnmark import wire
    from nnmark.wire.nnmark import ENCODING

    if input_dtype not in DTYPES:
        raise NnmarkError(f"unknown input type {input_dtype!r}; choose one of {', '.join(DTYPES)}")
    if input_layout is not None and input_layout not in LAYOUTS:
        raise NnmarkError(f"unknown input layout {input_layout!r}; choose {' or '.join(LAYOUTS)}")
    if input_scale not in SCALES:
        raise NnmarkError(f"unknown input scale {input_scale!r}; choose {' or '.join(SCALES)}")
    scale = "0-255" if input_dtype == "uint8" else input_scale
    out = {}
    for name in wire.names():
        codec = wire.get(name)
        out[name] = (
            ENCODING
            if name == "nnmark"
            else Encoding(input_layout or codec.default_layout, scale, input_dtype)
        )
    return out
