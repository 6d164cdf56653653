"""Black-box access to a suspect model: labels or probabilities for a batch of inputs.

Foolbox style: the public methods do the bookkeeping once (shape checks, query counting, the
budget), subclasses only implement ``_predict``. A query is one input sent to the suspect.
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch

from nnmark.errors import BudgetExceededError, NnmarkError


class Oracle(abc.ABC):
    """A suspect model seen only through its predictions.

    ``budget`` caps the number of single inputs sent; a batch that would exceed it is refused
    before anything is sent. ``carries_any_value`` is False for transports that can only carry
    0–255 images (inputs outside [0, 1] cannot be sent through them).
    """

    carries_any_value: bool = True

    def __init__(self, budget: int | None = None) -> None:
        if budget is not None and budget < 0:
            raise NnmarkError("the query budget must be positive")
        self.budget = budget
        self.queries = 0

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    @abc.abstractmethod
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Return N×K scores (logits or probabilities) for float32 N×C×H×W inputs."""

    def _charge(self, n: int) -> None:
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExceededError(
                f"query budget exhausted: {self.queries} of {self.budget} used, {n} more asked; "
                "raise --budget or use a sequential test (--test sprt)"
            )
        self.queries += n

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise NnmarkError(f"oracle inputs must be N×C×H×W, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            return torch.empty(0, 0)
        self._charge(int(x.shape[0]))
        out = self._predict(x.to(torch.float32))
        return out.detach().to("cpu", torch.float32)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scores(x)
        if s.numel() and torch.all(s >= 0) and torch.allclose(s.sum(1), torch.ones(len(s)), atol=1e-3):
            return s
        return torch.softmax(s, dim=1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scores(x)
        return s.argmax(dim=1) if s.numel() else torch.empty(0, dtype=torch.int64)

    __call__ = labels


class TorchOracle(Oracle):
    """Queries an in-memory ``torch.nn.Module`` (eval mode, no gradients)."""

    def __init__(
        self,
        model: torch.nn.Module,
        budget: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 512,
        input_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__(budget)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        self.input_shape = input_shape

    @torch.no_grad()
    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is not None and tuple(x.shape[1:]) != tuple(self.input_shape):
            raise NnmarkError(
                f"the key's inputs are {tuple(x.shape[1:])} but the suspect takes {self.input_shape}; "
                "this key is for another kind of model"
            )
        outs = []
        for chunk in x.split(self.batch_size):
            try:
                outs.append(self.model(chunk.to(self.device)).float().cpu())
            except RuntimeError as e:
                raise NnmarkError(
                    f"the suspect model cannot take inputs of shape {tuple(chunk.shape[1:])} ({e})"
                ) from e
        return torch.cat(outs)


class OnnxOracle(Oracle):
    """Queries an ONNX export through onnxruntime (CPU)."""

    def __init__(self, path: str | Path, budget: int | None = None, batch_size: int = 512) -> None:
        super().__init__(budget)
        from nnmark.extras import require

        ort = require("onnx", "onnxruntime")

        path = Path(path)
        if not path.is_file():
            raise NnmarkError(f"ONNX file {path} not found")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise NnmarkError(f"{path} is not a readable ONNX model ({e.__class__.__name__})") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape[1:]
        self.input_shape = tuple(int(s) for s in shape) if all(isinstance(s, int) for s in shape) else None
        self.batch_size = batch_size

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise NnmarkError(
                f"the key's inputs are {tuple(x.shape[1:])} but the ONNX model takes {self.input_shape}"
            )
        outs = []
        for chunk in x.split(self.batch_size):
            (out,) = self.session.run(None, {self.input_name: chunk.numpy()})[:1]
            outs.append(torch.from_numpy(out))
        return torch.cat(outs)
