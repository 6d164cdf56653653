"""Export a run folder's model to ONNX, for ``OnnxOracle`` or any ONNX runtime.

The exported graph takes ``input``: float32 N×C×H×W in [0, 1] (the batch axis is dynamic) and
returns ``logits``: float32 N×classes. The model's own normalisation is part of the graph, exactly
as ``load_model`` gives it. The file is checked with onnxruntime against the PyTorch model before
it is written (atomically: a failure leaves no file behind).

The legacy TorchScript exporter (``dynamo=False``) is used: it needs no extra dependency
(``onnxscript``) and handles every registered architecture (plain convolutions, batch norm, ReLU,
pooling, linear layers).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import torch

from nnmark.errors import NnmarkError
from nnmark.types import ModelSpec

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17


def export(run_dir: str | Path, out_file: str | Path, force: bool = False) -> Path:
    """Write the model of ``run_dir`` as the ONNX file ``out_file``; returns ``out_file``.

    Refuses an existing ``out_file`` unless ``force``. Raises NnmarkError for a missing or broken
    run folder, or when the exported graph disagrees with the PyTorch model.
    """
    from nnmark.io import atomic_write_bytes, load_spec
    from nnmark.workflow import load_model

    out = Path(out_file)
    if out.exists() and not force:
        raise NnmarkError(f"{out} already exists; choose another --out or pass --force to replace it")
    if out.is_dir():
        raise NnmarkError(f"{out} is a folder; give a file name such as model.onnx")
    spec = load_spec(run_dir)
    model = load_model(run_dir)
    data = _to_onnx_bytes(model, spec.input_shape)
    data = _add_metadata(data, spec, run_dir)
    _check_against_torch(data, model, spec.input_shape)
    atomic_write_bytes(out, data)
    log.info("exported %s (%s) to %s, %d bytes", run_dir, spec.arch, out, len(data))
    return out


def _to_onnx_bytes(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    dummy = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="nnmark-onnx-") as tmp, warnings.catch_warnings():
        target = Path(tmp) / "model.onnx"
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        try:
            torch.onnx.export(
                model,
                (dummy,),
                target,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
                do_constant_folding=True,
            )
        except Exception as e:  # the exporter raises many unrelated types
            first = (str(e) or "?").splitlines()[0]
            raise NnmarkError(f"cannot export this model to ONNX ({e.__class__.__name__}: {first})") from e
        return target.read_bytes()


def _add_metadata(data: bytes, spec: ModelSpec, run_dir: str | Path) -> bytes:
    from nnmark.extras import require

    onnx = require("onnx", "onnx")
    proto = onnx.load_from_string(data)
    props = {
        "producer": "nnmark",
        "nnmark.arch": spec.arch,
        "nnmark.dataset": spec.dataset,
        "nnmark.num_classes": str(spec.num_classes),
        "nnmark.input": f"float32 N×{'×'.join(map(str, spec.input_shape))} in [0, 1]",
        "nnmark.run": Path(run_dir).name,
    }
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return bytes(proto.SerializeToString())


def _check_against_torch(data: bytes, model: torch.nn.Module, input_shape: tuple[int, int, int]) -> None:
    from nnmark.extras import require

    ort = require("onnx", "onnxruntime")
    x = torch.rand(3, *input_shape, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        want = model(x).float()
    err = (torch.from_numpy(got) - want).abs().max().item()
    if not err <= 1e-3 * max(1.0, want.abs().max().item()):
        raise NnmarkError(
            f"the ONNX export disagrees with the PyTorch model (max difference {err:.3g}); "
            "report this as a bug with the model's architecture"
        )
