"""Load on ``nnmark serve`` over loopback, and the remote oracle's key-query throughput.

Starts ``nnmark serve`` as its own process on 127.0.0.1 (a freshly initialised digit-cnn unless
``--model RUN``), then:

1. **load**: ``--clients`` concurrent clients (default 50) send predict requests of ``--batch``
   inputs for ``--seconds`` (default 30) and stop by themselves; every answer is checked against
   the model run locally (same top class, logits within 1e-4). Prints requests/s, inputs/s and
   the p50 / p99 latency.
2. **oracle**: :class:`~nnmark.http_oracle.HttpOracle` sends ``--queries`` key-like inputs
   (pixels on the 1/255 grid) at several batch sizes and prints key queries per second, every
   label checked, beside the same model queried in-process (:class:`~nnmark.oracle.TorchOracle`).

Example: OMP_NUM_THREADS=1 python benchmarks/serve_load.py --seconds 30 --protocol nnmark

Figures depend on the machine and on what else runs on it: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnmark import wire
from nnmark.io import METRICS_FILE, new_folder, write_json, write_model_files
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.types import ModelSpec
from nnmark.wire import jsonio
from nnmark.workflow import load_model

SPEC = ModelSpec("digit-cnn", 10, (1, 28, 28), (0.13,), (0.31,), dataset="mnist5k")
NAME = "bench"


def make_run(folder: Path) -> Path:
    torch.manual_seed(0)
    with new_folder(folder) as tmp:
        write_model_files(tmp, build_model(SPEC), SPEC)
        write_json(tmp / METRICS_FILE, {"source": "benchmark"})
    return folder


def start_server(run: Path, threads: int, timeout: float = 120.0) -> tuple[subprocess.Popen[str], str]:
    """``nnmark serve`` on a free port, in its own process; returns it and its URL."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "nnmark.cli", "serve", "--model", str(run), "--port", "0", "--name", NAME]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"nnmark serve exited (status {proc.poll()})")
        found = re.search(r"at (http://\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise SystemExit("nnmark serve did not start in time")


def pixels(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g).float() / 255


def endpoint(base: str, protocol: str) -> str:
    return {
        "nnmark": base,
        "tf-serving": f"{base}/v1/models/{NAME}",
        "kserve-v2": f"{base}/v2/models/{NAME}",
    }[protocol]


# -- 1. many clients ----------------------------------------------------------------------------


async def load(
    base: str, protocol: str, model: torch.nn.Module, clients: int, seconds: float, batch: int
) -> dict[str, Any]:
    import httpx

    codec = wire.get(protocol)
    enc = wire.Encoding(codec.default_layout) if protocol != "nnmark" else wire.nnmark.ENCODING
    info = wire.ModelInfo(input_name="input")
    pool = pixels(64 * batch, seed=1)
    with torch.no_grad():
        expected = model(pool).numpy()
    bodies = []
    for i in range(64):
        chunk = pool[i * batch : (i + 1) * batch].numpy()
        body = codec.encode_request(wire.to_wire(chunk, enc), enc, info)
        bodies.append(jsonio.dumps(body))
    url = codec.predict_url(codec.base_url(endpoint(base, protocol)))
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        i = k
        while time.monotonic() < stop:
            j = i % 64
            t0 = time.perf_counter()
            r = await http.post(url, content=bodies[j], headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - t0)
            i += clients
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                continue
            got = np.asarray(codec.decode_reply(r.json(), batch).values, dtype=np.float32).reshape(batch, -1)
            want = expected[j * batch : (j + 1) * batch]
            if not (np.array_equal(got.argmax(1), want.argmax(1)) and np.allclose(got, want, atol=1e-4)):
                errors.append(f"wrong answer to request {j}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        start = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(client(k, http) for k in range(clients))), timeout=seconds + 60
        )
        took = time.monotonic() - start
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(lat),
        "seconds": took,
        "requests_per_s": len(lat) / took,
        "inputs_per_s": len(lat) * batch / took,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors": errors,
    }


# -- 2. the remote oracle ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def oracle_rate(
    base: str,
    protocol: str,
    model: torch.nn.Module,
    queries: int,
    batch: int,
    server_pid: int,
    in_flight: int,
) -> dict[str, Any]:
    """Key queries per second through HttpOracle, and the CPU seconds each side spent on them: on
    a shared machine ``queries / (client CPU + server CPU)`` is what one otherwise idle core would
    give this sequential client (it waits for each answer before it sends the next batch)."""
    from nnmark.http_oracle import HttpOracle

    x = pixels(queries, seed=2)
    want = TorchOracle(model).labels(x)
    url = endpoint(base, protocol)
    with HttpOracle(url, protocol=protocol, batch_size=batch, in_flight=in_flight) as oracle:
        oracle.labels(x[:batch])  # warm the connection
        t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
        got = oracle.labels(x)
        took = time.perf_counter() - t0
        client, server = time.process_time() - c0, cpu_seconds(server_pid) - s0
    return {
        "queries_per_s": queries / took,
        "client_cpu_s": client,
        "server_cpu_s": server,
        "per_cpu_second": queries / (client + server),
        "correct": bool(torch.equal(got, want)),
    }


def local_rate(model: torch.nn.Module, queries: int) -> tuple[float, float]:
    """In-process queries per wall-clock second and per CPU second."""
    x = pixels(queries, seed=2)
    oracle = TorchOracle(model, batch_size=1024)
    oracle.labels(x[:1024])
    t0, c0 = time.perf_counter(), time.process_time()
    oracle.labels(x)
    return queries / (time.perf_counter() - t0), queries / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="run folder to serve (default: a fresh digit-cnn)")
    ap.add_argument("--protocol", choices=wire.names(), default="nnmark")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the load phase (0: skip it)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1, help="inputs per request in the load phase")
    ap.add_argument("--queries", type=int, default=20000, help="key queries per oracle measurement (0: skip)")
    ap.add_argument("--oracle-batches", default="64,256", help="HttpOracle batch sizes to measure")
    ap.add_argument("--in-flight", type=int, default=2, help="HttpOracle requests in flight")
    ap.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS of the server process")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="nnmark-load-") as tmp:
        run = args.model or make_run(Path(tmp) / NAME)
        model = load_model(run)
        proc, base = start_server(run, args.server_threads)
        try:
            print(f"nnmark serve {run.name} at {base}, protocol {args.protocol}, {os.cpu_count()} CPUs")
            if args.seconds > 0:
                c0, s0 = time.process_time(), cpu_seconds(proc.pid)
                r = asyncio.run(load(base, args.protocol, model, args.clients, args.seconds, args.batch))
                client_cpu, server_cpu = time.process_time() - c0, cpu_seconds(proc.pid) - s0
                print(
                    f"load: {args.clients} clients x {args.seconds:g} s, {args.batch} input(s)/request: "
                    f"{r['requests']} requests, {r['requests_per_s']:.0f} requests/s, "
                    f"{r['inputs_per_s']:.0f} inputs/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"{len(r['errors'])} bad answers; CPU: clients {client_cpu:.1f} s, "
                    f"server {server_cpu:.1f} s "
                    f"({r['requests'] / max(server_cpu, 1e-9):.0f} requests per server CPU second)"
                )
                for e in r["errors"][:5]:
                    print("  ", e)
            if args.queries > 0:
                local, local_cpu = local_rate(model, args.queries)
                print(f"in-process TorchOracle: {local:.0f} queries/s ({local_cpu:.0f} per CPU second)")
                runs = [(int(b), args.in_flight) for b in args.oracle_batches.split(",")]
                runs.append((runs[-1][0], 1))  # the largest batch again, one request at a time
                for b, flight in runs:
                    o = oracle_rate(base, args.protocol, model, args.queries, b, proc.pid, flight)
                    print(
                        f"HttpOracle batch {b}, {flight} in flight: {o['queries_per_s']:.0f} key queries/s "
                        f"({o['queries_per_s'] / local:.2f}x in-process); CPU: client "
                        f"{o['client_cpu_s']:.1f} s, server {o['server_cpu_s']:.1f} s = "
                        f"{o['per_cpu_second']:.0f} queries per CPU second "
                        f"({o['per_cpu_second'] / local_cpu:.2f}x in-process); labels "
                        f"{'all correct' if o['correct'] else 'WRONG'}"
                    )
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
