"""Running the app: on a port until interrupted (``nnmark serve``), or in a thread (tests, benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from nnmark.errors import NnmarkError
from nnmark.serve.app import create_app

log = logging.getLogger(__name__)


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


def url_of(sock: socket.socket, host: str) -> str:
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

    ``app_options`` go to :func:`~nnmark.serve.app.create_app` (name, output, input_dtype, ...).
    """
    app = create_app(run_dir, defense, **app_options)
    sock = bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach it can query the model (no authentication)", host)
    if announce is not None:
        announce(url_of(sock, host))
    try:
        _server(app, log_level).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 10.0
) -> Iterator[str]:
    """Run ``app`` on a real socket in a background thread; yields its URL (tests, benchmarks)."""
    sock = bind(host, port)
    server = _server(app, "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        waited = threading.Event()
        for _ in range(int(start_timeout / 0.02)):
            if server.started or not thread.is_alive():
                break
            waited.wait(0.02)
        if not server.started:
            raise NnmarkError("the server did not start")
        yield url_of(sock, host)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
