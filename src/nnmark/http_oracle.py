"""A suspect model behind a prediction API: ``HttpOracle(url, protocol=...)``.

This module is the transport only (HTTP, retries, timeouts, a rate limit, headers); what the
bodies hold is the protocol's codec in :mod:`nnmark.wire` (``nnmark``, ``tf-serving``,
``kserve-v2``), the same code ``nnmark serve`` answers with. ``url`` is what the user would
paste; a trailing ``/predict``, ``:predict`` or ``/infer`` is accepted and ignored.

How inputs travel (:class:`~nnmark.wire.Encoding`), each from the user, else from what the
server declares in its metadata, else from the protocol's default:

* **layout**: N×C×H×W or N×H×W×C. TF-Serving's default is TensorFlow's convention, N×H×W×C;
  nnmark and KServe v2 default to N×C×H×W. A declared input shape decides when it tells
  channels from pixels (a last axis of 1, 3 or 4).
* **number type**: float32, or uint8 pixels 0–255 (``carry_floats=False``; metadata declaring
  ``DT_UINT8`` / ``UINT8`` picks it). Inputs outside [0, 1] cannot travel as uint8 and are
  **refused** before any query is sent or counted, never clipped (a clipped key is another key).
  Key images are multiples of 1/255 and pass exactly.
* **scale**: float values in [0, 1] or 0–255 (``input_scale="0-255"``, for models that divide
  by 255 themselves).

``carries_any_value`` is False when pixels travel as uint8.

Outputs: ``output="auto"`` reads what the reply (or the metadata) says it holds: an output
named ``labels`` / ``classes`` or integer class indices are labels, one named
``probabilities`` or rows of non-negative numbers summing to 1 are probabilities, anything
else is logits; ``output`` forces one of them. Labels become one-hot rows.

Failures (server down, timeout, HTTP error, a reply that is not a prediction) end in one
NnmarkError naming the URL and what to check. Connection errors, timeouts and HTTP
429/502/503/504 are retried ``retries`` times with exponential backoff (``backoff``,
2·backoff, ... seconds, each at most 10 s; ``Retry-After`` is honoured up to the same cap);
other errors are not retried. ``rate_limit`` caps the single inputs sent per second: requests,
retries included, are spaced so that the average never exceeds it. ``in_flight`` requests may
be outstanding at once (pipelining). Queries are counted when a batch is sent, so a failed
request still uses budget.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nnmark import wire
from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle
from nnmark.wire import jsonio
from nnmark.wire.base import LAYOUTS, OUTPUTS, SCALES, Encoding, ModelInfo, WireError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

PROTOCOLS = tuple(wire.names())
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 10.0
CHANNELS = (1, 3, 4)


class HttpOracle(Oracle):
    """Queries a model behind a prediction API (see the module docstring).

    The constructor asks the server what it serves (input shape, classes, pixel type), so a wrong
    URL or a server that is down fails here, before any query.

    Args:
        url: the server (nnmark) or the model's URL (tf-serving, kserve-v2).
        protocol: a name in :func:`nnmark.wire.names`: ``nnmark``, ``tf-serving`` or ``kserve-v2``.
        budget: most single inputs to send (None: no limit).
        timeout: seconds to wait for each request.
        batch_size: inputs per request.
        carry_floats: send float values (True), uint8 pixels (False), or ask the server (None).
        input_layout: ``nchw`` or ``nhwc``; None: the server's declared shape, else the protocol's
            default. ``channels_last`` (True/False) is the older spelling of the same.
        input_scale: ``0-1`` or ``0-255`` for float values; None: 0–1 (uint8 is always 0–255).
        output: ``auto``, ``labels``, ``probabilities`` or ``logits`` (what replies hold).
        retries: extra tries for transient failures; ``backoff``: first wait in seconds.
        rate_limit: most single inputs per second (None: no limit).
        in_flight: requests sent before the first answer is back (pipelining; 1: one at a time).
        headers: extra HTTP headers (e.g. ``{"Authorization": "Bearer ..."}``).
        transport: an httpx transport (tests, proxies); default: a real connection.
    """

    def __init__(
        self,
        url: str,
        protocol: str = "nnmark",
        budget: int | None = None,
        timeout: float = 30.0,
        batch_size: int = 256,
        carry_floats: bool | None = None,
        *,
        channels_last: bool | None = None,
        input_layout: str | None = None,
        input_scale: str | None = None,
        output: str = "auto",
        retries: int = 3,
        backoff: float = 0.5,
        rate_limit: float | None = None,
        in_flight: int = 2,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as e:  # an optional extra once the serving parts are split out
            raise NnmarkError("querying a prediction API needs httpx: pip install 'nnmark[serve]'") from e

        super().__init__(budget)
        self.codec = wire.get(protocol)
        if not url.startswith(("http://", "https://")):
            raise NnmarkError(f"{url!r} is not an http(s) URL; give one such as http://127.0.0.1:8000")
        if batch_size < 1 or in_flight < 1:
            raise NnmarkError(
                f"batch size and requests in flight must be at least 1, got {batch_size}, {in_flight}"
            )
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise NnmarkError("timeout must be positive, retries and backoff 0 or more")
        if rate_limit is not None and rate_limit <= 0:
            raise NnmarkError(f"the rate limit must be positive (queries per second), got {rate_limit}")
        if output != "auto" and output not in OUTPUTS:
            raise NnmarkError(f"unknown output {output!r}; choose auto, {', '.join(OUTPUTS)}")
        if channels_last is not None and input_layout is None:
            input_layout = "nhwc" if channels_last else "nchw"
        if input_layout is not None and input_layout not in LAYOUTS:
            raise NnmarkError(f"unknown input layout {input_layout!r}; choose {' or '.join(LAYOUTS)}")
        if input_scale is not None and input_scale not in SCALES:
            raise NnmarkError(f"unknown input scale {input_scale!r}; choose {' or '.join(SCALES)}")
        self.protocol = protocol
        self.url = self.codec.base_url(url)
        self.predict_url = self.codec.predict_url(self.url)
        self.meta_url = self.codec.metadata_url(self.url)
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.in_flight = in_flight
        self.retries = retries
        self.backoff = backoff
        self.rate_limit = rate_limit
        self.output = output
        self.output_kind: str | None = None if output == "auto" else output
        self._next_send = 0.0
        self._pace = threading.Lock()
        self._http = httpx
        self._client = httpx.Client(
            timeout=self.timeout, headers=dict(headers or {}), transport=transport, follow_redirects=True
        )
        if warning := self.codec.check_url(self.url):
            log.warning("%s", warning)
        try:
            self.metadata, self.info = self._fetch_metadata()
        except BaseException:
            self._client.close()
            raise
        if protocol == "nnmark" and (
            carry_floats is False or input_scale not in (None, "0-1") or input_layout == "nhwc"
        ):
            raise NnmarkError(
                "the nnmark protocol carries float32 N×C×H×W in [0, 1]; --input-type, --input-scale and "
                "--input-layout are for tf-serving and kserve-v2"
            )
        self.input_name: str = self.info.input_name or "input"
        self.num_classes: int | None = self.info.num_classes
        dtype = self._dtype(carry_floats)
        scale = input_scale or self.info.scale or ("0-255" if dtype == "uint8" else "0-1")
        if dtype == "uint8" and scale != "0-255":
            raise NnmarkError("uint8 pixels are 0-255; --input-scale 0-1 needs float inputs")
        self._forced_layout = input_layout
        layout = input_layout or self._declared_layout() or self.codec.default_layout
        self.encoding = Encoding(layout, scale, dtype)
        self.carry_floats = dtype == "float32"
        self.carries_any_value = self.carry_floats
        self.input_shape: tuple[int, ...] | None = self._chw(self.info.input_shape, layout)

    def _dtype(self, carry_floats: bool | None) -> str:
        declared = self.info.dtype
        if carry_floats is None:
            if declared is None and self.protocol != "nnmark":
                log.info(
                    "%s declares no input type; sending floats (carry_floats=False sends 0-255 pixels)",
                    self.url,
                )
            return declared or "float32"
        if carry_floats and declared == "uint8":
            raise NnmarkError(
                f"{self.url} declares uint8 inputs, so float values cannot be sent; "
                "use carry_floats=False (--input-type uint8) or auto"
            )
        return "float32" if carry_floats else "uint8"

    def _declared_layout(self) -> str | None:
        """The layout the declared shape shows (channels axis of 1, 3 or 4 at one end only)."""
        if self.info.layout is not None:
            return self.info.layout
        shape = self.info.input_shape
        if shape is None or len(shape) != 3:
            return None
        first, last = shape[0] in CHANNELS, shape[-1] in CHANNELS
        if first and not last:
            return "nchw"
        if last and not first:
            return "nhwc"
        return None

    @staticmethod
    def _chw(shape: tuple[int, ...] | None, layout: str) -> tuple[int, ...] | None:
        if shape is None or len(shape) != 3 or not all(d > 0 for d in shape):
            return None
        return shape if layout == "nchw" else (shape[2], shape[0], shape[1])

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        e = self.encoding
        return f"HttpOracle({self.url!r}, protocol={self.protocol!r}, {e.layout}, {e.dtype} {e.scale})"

    # -- queries ------------------------------------------------------------------------------

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        # refuse what cannot travel before the base class counts the queries
        if x.ndim == 4 and x.numel():
            xf = x.detach().to("cpu", torch.float32)
            if not torch.isfinite(xf).all():
                raise NnmarkError("inputs contain NaN or infinite values; they cannot be sent as JSON")
            if not self.carry_floats and (xf.min() < 0 or xf.max() > 1):
                raise NnmarkError(
                    f"{self.url} takes uint8 pixels, which cannot carry values outside [0, 1] "
                    f"(these inputs span [{xf.min().item():.3g}, {xf.max().item():.3g}]); they are refused, "
                    "not clipped: verify this key through a float API, an ONNX file or the model"
                )
            self._check_shape(tuple(x.shape[1:]))
        return super().scores(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scores(x)
        if self.output_kind == "logits":
            return torch.softmax(s, dim=1)
        if self.output_kind in ("probabilities", "labels"):
            return s
        if s.numel() and torch.all(s >= 0) and torch.allclose(s.sum(1), torch.ones(len(s)), atol=1e-3):
            return s
        return torch.softmax(s, dim=1)

    def _check_shape(self, chw: tuple[int, ...]) -> None:
        """The key's C×H×W against what the server declares, in the layout in use."""
        declared = self.info.input_shape
        if declared is None or not all(d > 0 for d in declared):
            return
        c, h, w = chw
        if declared == self.encoding.wire_shape((c, h, w)):
            return
        if self._forced_layout is None and self.info.layout is None and declared == (h, w, c):
            self.encoding = Encoding("nhwc", self.encoding.scale, self.encoding.dtype)
            return
        if self._forced_layout is None and self.info.layout is None and declared == (c, h, w):
            self.encoding = Encoding("nchw", self.encoding.scale, self.encoding.dtype)
            return
        raise NnmarkError(
            f"the key's inputs are {c}×{h}×{w} ({self.encoding.layout}: "
            f"{'×'.join(map(str, self.encoding.wire_shape((c, h, w))))}) but {self.url} takes "
            f"{'×'.join(map(str, declared))}; this key is for another kind of model, or give --input-layout"
        )

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).numpy()
        chunks = [arr[start : start + self.batch_size] for start in range(0, len(arr), self.batch_size)]
        if self.in_flight > 1 and len(chunks) > 1:
            # the next batch is encoded and sent while the server answers this one
            with ThreadPoolExecutor(min(self.in_flight, len(chunks))) as pool:
                outs = list(pool.map(self._ask, chunks))
        else:
            outs = [self._ask(chunk) for chunk in chunks]
        width = max(o.shape[1] for o in outs)
        if any(o.shape[1] != width for o in outs):  # one-hot labels of different widths
            outs = [torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in outs]
        return torch.cat(outs)

    def _ask(self, chunk: np.ndarray) -> torch.Tensor:
        """One request: encode ``chunk``, send it, decode the reply into N×K scores."""
        try:
            sent = wire.to_wire(chunk, self.encoding)
        except WireError as e:
            raise NnmarkError(f"{self.url}: {e.message}") from e
        body = self.codec.encode_request(sent, self.encoding, self.info)
        reply = self._post_json(body, len(chunk))
        return self._to_scores(reply, len(chunk))

    # -- replies ------------------------------------------------------------------------------

    def _malformed(self, why: str) -> NnmarkError:
        return NnmarkError(
            f"{self.predict_url} sent a reply that is not a {self.protocol} prediction ({why}); "
            "check --protocol and that the URL points at the model"
        )

    def _to_scores(self, body: Any, n: int) -> torch.Tensor:
        try:
            reply = self.codec.decode_reply(body, n)
        except WireError as e:
            if e.status == 502:  # the server said what went wrong
                raise NnmarkError(f"{self.predict_url}: {e.message}") from e
            raise self._malformed(e.message) from e
        t = reply.values
        if t.dtype == object or not np.issubdtype(t.dtype, np.number):
            raise self._malformed("the scores are not numbers")
        kind = self.output_kind or reply.kind or self.info.output or _guess_kind(t)
        if self.output_kind is None:
            self.output_kind = kind
            log.info("%s answers %s", self.url, kind)
        if t.ndim == 2 and t.shape[1] == 1 and kind == "labels":
            t = t.reshape(-1)
        if kind == "labels" and t.ndim == 2 and t.shape[0] == n and t.shape[1] > 1:
            # labels were asked for: the top class of each row, as wide as the rows were
            return self._one_hot(t.argmax(1).astype(np.float64), n, t.shape[1])
        if t.ndim == 1:
            return self._one_hot(t, n)
        t = t.reshape(t.shape[0], -1) if t.ndim > 2 else t
        if t.ndim != 2 or t.shape[0] != n:
            raise self._malformed(f"{t.shape[0] if t.ndim else 0} answers for {n} inputs")
        if t.shape[1] == 0:
            raise self._malformed("empty scores")
        if not np.isfinite(t).all():
            raise self._malformed("scores hold NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))

    def _one_hot(self, t: np.ndarray, n: int, classes: int = 0) -> torch.Tensor:
        if len(t) != n:
            raise self._malformed(f"{len(t)} answers for {n} inputs")
        if not np.isfinite(t).all() or not np.array_equal(t, np.rint(t)) or (len(t) and t.min() < 0):
            raise self._malformed("labels are not class indices")
        idx = torch.from_numpy(t.astype(np.int64))
        width = max(classes, self.num_classes or 0, int(idx.max().item()) + 1 if len(idx) else 1)
        return torch.nn.functional.one_hot(idx, width).to(torch.float32)

    # -- HTTP ---------------------------------------------------------------------------------

    def _post_json(self, payload: dict[str, Any], n: int) -> Any:
        try:
            body = jsonio.dumps(payload)
        except ValueError as e:
            raise NnmarkError("inputs contain NaN or infinite values; they cannot be sent as JSON") from e
        r = self._send("POST", self.predict_url, body, n)
        if r.status_code >= 300:
            raise self._status_error(r, self.predict_url)
        try:
            return jsonio.loads(r.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self._malformed(f"not JSON: {_one_line(r.text[:80])!r}") from e

    def _wait_for_rate(self, n: int) -> None:
        """Space requests so that at most ``rate_limit`` inputs go out per second on average."""
        if self.rate_limit is None or n == 0:
            return
        with self._pace:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + n / self.rate_limit
        if start > now:
            time.sleep(start - now)

    def _send(self, method: str, url: str, body: bytes | None = None, n: int = 0) -> httpx.Response:
        """One request with retries; each try of ``n`` inputs counts against the rate limit."""
        httpx = self._http
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            wait = min(delay, MAX_WAIT_S)
            self._wait_for_rate(n)
            try:
                r = self._client.request(
                    method, url, content=body, headers={"Content-Type": "application/json"} if body else None
                )
            except httpx.TimeoutException as e:
                problem = f"no answer within {self.timeout:g} s ({e.__class__.__name__})"
                hint = "check that the server is up and not overloaded, or raise --timeout"
            except httpx.ConnectError:
                problem = "cannot connect"
                hint = "check that the server is running and that the host, port and scheme are right"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
                raise NnmarkError(f"{url} is not a usable URL ({e}); give one like http://HOST:PORT") from e
            except httpx.TransportError as e:
                problem = f"the connection failed ({e.__class__.__name__}: {_one_line(str(e))})"
                hint = "check that the server is running and speaks HTTP on that port"
            else:
                if r.status_code not in TRANSIENT_STATUS or last:
                    return r
                wait = min(_retry_after(r) or wait, MAX_WAIT_S)
                log.info("%s answered HTTP %d; retrying in %.1f s", url, r.status_code, wait)
                time.sleep(wait)
                delay *= 2
                continue
            if last:
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise NnmarkError(f"{url}: {problem}{tries}; {hint}")
            log.info("%s: %s; retrying in %.1f s", url, problem, wait)
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _status_error(self, r: httpx.Response, url: str) -> NnmarkError:
        msg = _server_message(r)
        code = r.status_code
        if code == 404:
            hints = ", ".join(f"{n}: {wire.get(n).url_hint}" for n in PROTOCOLS)
            hint = f"check the URL and --protocol ({hints})"
        elif code in (401, 403):
            hint = "the server refuses these queries (authentication: --header, or a query-rejection defense)"
        elif code == 413:
            hint = "the server takes smaller requests; lower the batch size"
        elif code == 429:
            hint = "the server limits the query rate; lower --rate-limit or raise --retries"
        elif code in (400, 415, 422):
            hint = (
                "the server refuses these inputs; check --protocol, --input-type, --input-layout, "
                "--input-scale and the key's model"
            )
        elif code >= 500:
            hint = "the server failed; check its logs"
        else:
            hint = "check the URL and --protocol"
        return NnmarkError(f"{url} answered HTTP {code}{': ' + msg if msg else ''}; {hint}")

    def _fetch_metadata(self) -> tuple[dict[str, Any], ModelInfo]:
        """The server's metadata document and what it declares (empty where it publishes none)."""
        required = self.protocol == "nnmark"
        r = self._send("GET", self.meta_url)
        if r.status_code >= 300:
            if required:
                raise self._status_error(r, self.meta_url)
            log.info(
                "%s answered HTTP %d; no metadata, using the protocol's defaults",
                self.meta_url,
                r.status_code,
            )
            return {}, ModelInfo()
        try:
            meta = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if required:
                raise NnmarkError(
                    f"{self.meta_url} is not an nnmark server (its reply is not JSON); "
                    "check the URL and --protocol"
                ) from e
            return {}, ModelInfo()
        try:
            return meta, self.codec.decode_metadata(meta)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, StopIteration) as e:
            if required:
                raise NnmarkError(
                    f"{self.meta_url} is not an nnmark server ({e.__class__.__name__} in its "
                    "reply); check the URL and --protocol"
                ) from e
            log.info("unreadable metadata from %s (%s); using the protocol's defaults", self.meta_url, e)
            return meta if isinstance(meta, dict) else {}, ModelInfo()


def _guess_kind(t: np.ndarray) -> str:
    """labels (integer indices), probabilities (rows summing to 1) or logits, from the values."""
    if t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1):
        return "labels"
    if t.ndim == 2 and t.size and t.min() >= 0 and np.allclose(t.sum(1), 1.0, atol=1e-3):
        return "probabilities"
    return "logits"


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _server_message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _one_line(r.text[:200])
    if isinstance(body, dict):
        for k in ("detail", "error", "message"):
            if k in body:
                return _one_line(str(body[k])[:200])
    return _one_line(str(body)[:200])


def _one_line(s: str) -> str:
    return " ".join(s.split())
