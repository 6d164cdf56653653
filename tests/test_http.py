"""The prediction server and HttpOracle, over real sockets on 127.0.0.1, for all three protocols."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi import FastAPI

from nnmark.errors import BudgetExceededError, NnmarkError
from nnmark.http_oracle import HttpOracle
from nnmark.io import METRICS_FILE, new_folder, write_json, write_model_files
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.serve import create_app, serve_in_thread
from nnmark.types import ModelSpec
from nnmark.workflow import load_model

SPEC = ModelSpec("digit-cnn", 10, (1, 28, 28), (0.13,), (0.31,), dataset="mnist5k", arch_args={"hidden": 64})
NAME = "suspect"


def make_run(path: Path, spec: ModelSpec = SPEC, seed: int = 0) -> Path:
    """A run folder holding a freshly initialised model (trained for 0 epochs)."""
    torch.manual_seed(seed)
    model = build_model(spec)
    with new_folder(path) as tmp:
        write_model_files(tmp, model, spec)
        write_json(tmp / METRICS_FILE, {"source": "test"})
    return path


def urls(base: str) -> dict[str, str]:
    return {"nnmark": base, "tf-serving": f"{base}/v1/models/{NAME}", "kserve-v2": f"{base}/v2/models/{NAME}"}


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    """Inputs on the 1/255 grid, like key images, so they survive a uint8 transport exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("http") / NAME)


@pytest.fixture(scope="module")
def reference(run: Path) -> TorchOracle:
    return TorchOracle(load_model(run))


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    with serve_in_thread(create_app(run, max_batch=64, max_body_bytes=4 * 2**20)) as url:
        yield url


@pytest.mark.parametrize("protocol", ["nnmark", "tf-serving", "kserve-v2"])
def test_http_oracle_answers_like_torch(server: str, reference: TorchOracle, protocol: str) -> None:
    x = pixels(40, seed=1)
    with HttpOracle(urls(server)[protocol], protocol=protocol, batch_size=16) as oracle:
        assert oracle.carries_any_value and oracle.input_shape == (1, 28, 28) and oracle.num_classes == 10
        assert torch.equal(oracle.labels(x), reference.labels(x))
        assert torch.allclose(oracle.scores(x), reference.scores(x), atol=1e-5)
        far = torch.full((2, 1, 28, 28), -5.0)  # null-embedding style values travel unchanged as floats
        assert torch.allclose(oracle.scores(far), reference.scores(far), atol=1e-4)
        assert oracle.queries == 40 + 40 + 2


def test_pasted_endpoint_urls_are_accepted(server: str, reference: TorchOracle) -> None:
    x = pixels(3)
    for protocol, url in (
        ("nnmark", f"{server}/predict"),
        ("tf-serving", f"{urls(server)['tf-serving']}:predict"),
        ("kserve-v2", f"{urls(server)['kserve-v2']}/infer"),
    ):
        with HttpOracle(url, protocol=protocol) as oracle:
            assert torch.equal(oracle.labels(x), reference.labels(x))


def test_budget_is_enforced_before_sending(server: str) -> None:
    with HttpOracle(server, budget=10) as oracle:
        oracle.labels(pixels(8))
        with pytest.raises(BudgetExceededError):
            oracle.labels(pixels(3))
        assert oracle.queries == 8


def test_uint8_server_refuses_values_outside_0_1(run: Path, reference: TorchOracle) -> None:
    app = create_app(run, name=NAME, input_dtype="uint8", output="labels")
    with serve_in_thread(app) as base:
        for protocol in ("tf-serving", "kserve-v2"):
            with HttpOracle(urls(base)[protocol], protocol=protocol) as oracle:
                assert oracle.carries_any_value is False  # the server declares uint8 inputs
                x = pixels(20, seed=2)
                assert torch.equal(oracle.labels(x), reference.labels(x))
                with pytest.raises(NnmarkError, match="refused, not clipped"):
                    oracle.labels(torch.full((2, 1, 28, 28), 1.5))
                assert oracle.queries == 20  # the refused inputs were not counted
            with pytest.raises(NnmarkError, match="uint8"):
                HttpOracle(urls(base)[protocol], protocol=protocol, carry_floats=True)


def test_pixel_reject_answers_flagged_queries_with_wrong_labels(run: Path, reference: TorchOracle) -> None:
    from nnmark.data import load_dataset

    ordinary = load_dataset("mnist5k").test_x[:200].float() / 255
    noise = torch.rand(30, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with serve_in_thread(create_app(run, defense="reject")) as base, HttpOracle(base) as oracle:
        assert (oracle.labels(ordinary) == reference.labels(ordinary)).float().mean() >= 0.95
        answered = oracle.labels(noise)
        assert (answered != reference.labels(noise)).all()  # every noise query flagged and misled
        assert torch.equal(oracle.labels(noise), answered)  # the same query gets the same wrong answer
        assert "defense" not in json.dumps(httpx.get(f"{base}/info").json())


def test_server_down_is_one_clear_error() -> None:
    from nnmark.serve import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # nobody listens on this port now
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(NnmarkError) as err:
        HttpOracle(url, retries=1, backoff=0)
    message = str(err.value)
    assert "\n" not in message and url in message and "server is running" in message


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/predict", b"not json", 400, "not JSON"),
        ("/predict", b'{"x": 1}', 400, "inputs"),
        ("/predict", b'{"inputs": [[1, 2], [3]]}', 400, "rectangular"),
        ("/predict", b'{"inputs": [[[["a"]]]]}', 400, "array of numbers"),
        ("/predict", b'{"inputs": [[[[1, 2]], [[3]]]]}', 400, "rectangular"),
        ("/predict", b'{"inputs": [[[[1, 2]]]]}', 422, "N\u00d71\u00d728\u00d728"),
        (  # NaN is not JSON
            "/predict",
            b'{"inputs": [[[' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]]]}",
            400,
            "not JSON",
        ),
        (  # a float64 that no float32 can hold
            "/predict",
            b'{"inputs": [[[' + b",".join([b"[" + b",".join([b"1e39"] * 28) + b"]"] * 28) + b"]]]}",
            422,
            "too large for float32",
        ),
        ("/predict", json.dumps({"inputs": torch.zeros(65, 1, 28, 28).tolist()}).encode(), 413, "at most 64"),
        ("/predict", b"[" + b"0," * (3 * 2**20) + b"0]", 413, "bytes"),
        ("/v1/models/other:predict", b'{"instances": []}', 404, NAME),
        (f"/v1/models/{NAME}:predict", b'{"rows": []}', 400, "instances"),
        (
            f"/v2/models/{NAME}/infer",
            json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "BYTES", "data": []}]}
            ).encode(),
            400,
            "datatype",
        ),
        (
            f"/v2/models/{NAME}/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}
                    ]
                }
            ).encode(),
            400,
            "does not fit shape",
        ),
    ],
)
def test_bad_requests_get_4xx_with_a_message(
    server: str, path: str, body: bytes, status: int, words: str
) -> None:
    r = httpx.post(server + path, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_wrong_protocol_or_url_is_a_clear_error(server: str) -> None:
    with pytest.raises(NnmarkError, match="HTTP 404.*--protocol"):
        HttpOracle(f"{server}/v1/models/{NAME}", protocol="nnmark", retries=0)
    with pytest.raises(NnmarkError, match="not an http"):
        HttpOracle("127.0.0.1:9", protocol="nnmark")
    with (
        HttpOracle(f"{server}/v2/models/other", protocol="kserve-v2", retries=0) as oracle,
        pytest.raises(NnmarkError, match="HTTP 404"),
    ):
        oracle.labels(pixels(1))


def flaky_app() -> FastAPI:
    """/info is fine; /predict fails once with 503, then sends garbage; /slow never answers in time."""
    app = FastAPI()
    calls = {"predict": 0}

    @app.get("/info")
    async def info() -> dict[str, object]:
        return {"input_shape": [1, 28, 28], "num_classes": 10}

    @app.post("/predict")
    async def predict() -> object:
        calls["predict"] += 1
        if calls["predict"] == 1:
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": "warming up"}, status_code=503)
        return {"answers": [1, 2]}

    @app.get("/slow/info")
    async def slow() -> dict[str, object]:
        await asyncio.sleep(0.5)
        return {}

    app.state.calls = calls
    return app


def test_transient_errors_retried_malformed_replies_and_timeouts_reported() -> None:
    app = flaky_app()
    with serve_in_thread(app) as base:
        with (
            HttpOracle(base, backoff=0) as oracle,
            pytest.raises(NnmarkError, match="not a nnmark prediction"),
        ):
            oracle.labels(pixels(2))
        assert app.state.calls["predict"] == 2  # the 503 was retried once
        with pytest.raises(NnmarkError, match="no answer within"):
            HttpOracle(f"{base}/slow", timeout=0.1, retries=0)
