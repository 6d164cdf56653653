"""A real client of the Open Inference Protocol, Triton's ``tritonclient[http]``, talks to
``nnmark serve``'s KServe v2 endpoints: health, metadata and inference (JSON tensors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from test_http import NAME, make_run, pixels

httpclient = pytest.importorskip("tritonclient.http")

from nnmark.oracle import TorchOracle  # noqa: E402
from nnmark.serve import create_app, serve_in_thread  # noqa: E402
from nnmark.workflow import load_model  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("triton") / NAME)


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    with serve_in_thread(create_app(run, name=NAME, output="probabilities")) as url:
        yield urlparse(url).netloc


def test_tritonclient_reads_metadata_and_infers(server: str, run: Path) -> None:
    client = httpclient.InferenceServerClient(url=server)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    meta = client.get_model_metadata(NAME)
    assert meta["inputs"][0]["shape"] == [-1, 1, 28, 28] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0]["name"] == "probabilities"

    x = pixels(6, seed=7)
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.numpy(), binary_data=False)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer(NAME, [tensor], outputs=[wanted], request_id="42")
    got = torch.from_numpy(result.as_numpy("probabilities"))
    assert result.get_response()["id"] == "42"
    assert torch.allclose(got, TorchOracle(load_model(run)).probabilities(x), atol=1e-5)

    with pytest.raises(Exception, match="no model"):
        client.get_model_metadata("someone-else")
    tensor.set_data_from_numpy(x.numpy(), binary_data=True)  # the binary extension: refused, clearly
    with pytest.raises(Exception, match="binary tensor data is not supported"):
        client.infer(NAME, [tensor], outputs=[wanted])
