"""A suspect model behind a prediction API: ``HttpOracle(url, protocol=...)``.

Three wire protocols (``url`` is what the user would paste; a trailing ``/predict``, ``:predict``
or ``/infer`` is accepted and ignored):

``nnmark``
    ``url`` is the server's root (``http://HOST:PORT``, what ``nnmark serve`` prints).
    ``GET {url}/info`` → ``{"input_shape": [C, H, W], "num_classes": K, ...}``;
    ``POST {url}/predict`` with ``{"inputs": N×C×H×W nested floats}`` →
    ``{"logits": N×K}`` (or ``"probabilities"``, or ``"labels"``: N class indices).
    Carries any float value, so null-embedding keys (±λ) pass unchanged.

``tf-serving``
    TensorFlow Serving's REST API; ``url`` is the model's URL,
    ``http://HOST:8501/v1/models/NAME`` (or ``.../versions/V``).
    ``GET {url}/metadata`` (signature, dtypes, shapes; optional) and
    ``POST {url}:predict`` with ``{"instances": [...]}`` → ``{"predictions": [...]}``.

``kserve-v2``
    The KServe / Triton "open inference protocol" v2; ``url`` is the model's URL,
    ``http://HOST:8080/v2/models/NAME``. ``GET {url}`` (metadata; optional) and
    ``POST {url}/infer`` with ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` →
    ``{"outputs": [{"name", "shape", "datatype", "data"}]}`` (data flat, row-major).

Pixel values. nnmark inputs are float32 in [0, 1]. Models deployed with TF-Serving or KServe
often take **uint8 pixels 0–255** instead. ``carry_floats`` says which:

* ``True``: send the float values as they are (any value);
* ``False``: send 0–255 integer pixels (``round(255·x)``). Inputs outside [0, 1] cannot be
  represented and are **refused** with an NnmarkError before any query is sent or counted; they
  are never clipped (a clipped key is another key). Keys made from images are multiples of
  1/255, so they pass exactly; other values are rounded to the nearest level (logged).
* ``None`` (default): the nnmark protocol carries floats; for TF-Serving and KServe the model's
  metadata decides (``DT_UINT8`` / ``UINT8`` input → ``False``, otherwise ``True``).

``carries_any_value`` follows: False when pixels travel as uint8.

Layout. nnmark keys are N×C×H×W. Many TensorFlow models take N×H×W×C: ``channels_last=None``
picks the layout the server declares (when it declares a shape), ``True``/``False`` force it.

Failures (server down, timeout, HTTP error, a reply that is not a prediction) end in one
NnmarkError naming the URL and what to check. Connection errors, timeouts and HTTP 429/502/503/504
are retried ``retries`` times with exponential backoff (``backoff``, 2·backoff, ... seconds, each
at most 10 s; ``Retry-After`` is honoured up to the same cap); other errors are not retried.
Queries are counted when a batch is sent, so a failed request still uses budget.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
import torch

from nnmark.errors import NnmarkError
from nnmark.oracle import Oracle

log = logging.getLogger(__name__)

PROTOCOLS = ("nnmark", "tf-serving", "kserve-v2")
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 10.0
# Output names looked for, in this order, when a server returns several outputs.
OUTPUT_NAMES = (
    "logits",
    "probabilities",
    "probs",
    "scores",
    "predictions",
    "output",
    "output_0",
    "labels",
    "classes",
)


class HttpOracle(Oracle):
    """Queries a model behind a prediction API (see the module docstring for the protocols).

    The constructor asks the server what it serves (input shape, classes, pixel type), so a wrong
    URL or a server that is down fails here, before any query.

    Args:
        url: the server (nnmark) or the model's URL (tf-serving, kserve-v2).
        protocol: ``nnmark``, ``tf-serving`` or ``kserve-v2``.
        budget: most single inputs to send (None: no limit).
        timeout: seconds to wait for each request.
        batch_size: inputs per request.
        carry_floats: send float values (True), uint8 pixels (False), or ask the server (None).
        channels_last: send N×H×W×C (True), N×C×H×W (False), or follow the server (None).
        retries: extra tries for transient failures; ``backoff``: first wait in seconds.
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
        retries: int = 3,
        backoff: float = 0.5,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(budget)
        if protocol not in PROTOCOLS:
            raise NnmarkError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if not url.startswith(("http://", "https://")):
            raise NnmarkError(f"{url!r} is not an http(s) URL; give one such as http://127.0.0.1:8000")
        if batch_size < 1:
            raise NnmarkError(f"batch size must be at least 1, got {batch_size}")
        if timeout <= 0 or retries < 0 or backoff < 0:
            raise NnmarkError("timeout must be positive, retries and backoff 0 or more")
        self.protocol = protocol
        self.url = _base_url(url, protocol)
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(
            timeout=self.timeout, headers=dict(headers or {}), transport=transport, follow_redirects=True
        )
        if protocol == "nnmark":
            self.predict_url, self.meta_url = self.url + "/predict", self.url + "/info"
        elif protocol == "tf-serving":
            self.predict_url, self.meta_url = self.url + ":predict", self.url + "/metadata"
            if "/v1/models/" not in self.url:
                log.warning(
                    "%s does not look like a TF-Serving model URL (http://HOST:8501/v1/models/NAME)", self.url
                )
        else:
            self.predict_url, self.meta_url = self.url + "/infer", self.url
            if "/v2/models/" not in self.url:
                log.warning(
                    "%s does not look like a KServe v2 model URL (http://HOST:8080/v2/models/NAME)", self.url
                )
        try:
            self.metadata = self._fetch_metadata()
        except BaseException:
            self._client.close()
            raise
        self.input_shape: tuple[int, ...] | None = self.metadata.get("input_shape")
        self.num_classes: int | None = self.metadata.get("num_classes")
        self.input_name: str = self.metadata.get("input_name") or "input"
        declared_uint8 = self.metadata.get("uint8")
        if carry_floats is None:
            carry_floats = not declared_uint8
            if declared_uint8 is None and protocol != "nnmark":
                log.info(
                    "%s declares no input type; sending floats in [0, 1] (carry_floats=False sends "
                    "0-255 pixels)",
                    self.url,
                )
        elif carry_floats and declared_uint8:
            raise NnmarkError(
                f"{self.url} declares uint8 inputs, so float values cannot be sent; "
                "use carry_floats=False (--input-type uint8) or auto"
            )
        self.carry_floats = bool(carry_floats)
        self.carries_any_value = self.carry_floats
        self.channels_last = channels_last

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpOracle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HttpOracle({self.url!r}, protocol={self.protocol!r}, carry_floats={self.carry_floats})"

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
        return super().scores(x)

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32)
        channels_last = self._layout(tuple(x.shape[1:]))
        outs = []
        for chunk in x.split(self.batch_size):
            wire = chunk.permute(0, 2, 3, 1).contiguous() if channels_last else chunk
            payload = self._request_body(wire)
            reply = self._post_json(payload)
            outs.append(self._parse_reply(reply, len(chunk)))
        width = max(o.shape[1] for o in outs)
        if any(o.shape[1] != width for o in outs):  # one-hot labels of different widths
            outs = [torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in outs]
        return torch.cat(outs)

    def _layout(self, shape: tuple[int, ...]) -> bool:
        """True to send N×H×W×C. Checks the key's shape against what the server declares."""
        c, h, w = shape
        declared = self.input_shape
        if declared is not None and all(d > 0 for d in declared):
            if self.channels_last is not True and declared == (c, h, w):
                return False
            if self.channels_last is not False and declared == (h, w, c):
                return True
            raise NnmarkError(
                f"the key's inputs are {c}×{h}×{w} but {self.url} takes {'×'.join(map(str, declared))}; "
                "this key is for another kind of model"
            )
        return bool(self.channels_last)

    def _values(self, x: torch.Tensor) -> list[Any]:
        if self.carry_floats:
            return list(x.tolist())
        pixels = x * 255.0
        levels = pixels.round()
        off = (pixels - levels).abs().max().item() if pixels.numel() else 0.0
        if off > 0.01:
            log.info("rounded inputs to 0-255 pixel levels (up to %.2f of a level)", off)
        return list(levels.to(torch.int64).tolist())

    def _request_body(self, x: torch.Tensor) -> dict[str, Any]:
        if self.protocol == "nnmark":
            return {"inputs": self._values(x)}
        if self.protocol == "tf-serving":
            return {"instances": self._values(x)}
        return {
            "inputs": [
                {
                    "name": self.input_name,
                    "shape": list(x.shape),
                    "datatype": "FP32" if self.carry_floats else "UINT8",
                    "data": self._values(x.reshape(-1)),
                }
            ]
        }

    # -- parsing replies ----------------------------------------------------------------------

    def _malformed(self, why: str) -> NnmarkError:
        return NnmarkError(
            f"{self.predict_url} sent a reply that is not a {self.protocol} prediction ({why}); "
            "check --protocol and that the URL points at the model"
        )

    def _parse_reply(self, reply: Any, n: int) -> torch.Tensor:
        if not isinstance(reply, dict):
            raise self._malformed("not a JSON object")
        if self.protocol == "nnmark":
            for name in ("logits", "probabilities", "labels"):
                if name in reply:
                    return self._as_scores(reply[name], n, labels=name == "labels")
            raise self._malformed("no 'logits', 'probabilities' or 'labels'")
        if self.protocol == "tf-serving":
            if "predictions" in reply:
                return self._tf_rows(reply["predictions"], n)
            if "outputs" in reply:  # columnar replies
                outputs = reply["outputs"]
                if isinstance(outputs, dict):
                    name = _pick(list(outputs))
                    return self._as_scores(outputs[name], n, labels=name in ("labels", "classes"))
                return self._as_scores(outputs, n)
            if "error" in reply:
                raise NnmarkError(f"{self.predict_url} answered an error: {_one_line(str(reply['error']))}")
            raise self._malformed("no 'predictions'")
        outputs = reply.get("outputs")
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise self._malformed("no 'outputs' list")
        by_name = {str(o.get("name", i)): o for i, o in enumerate(outputs)}
        out = by_name[_pick(list(by_name))]
        data, shape = out.get("data"), out.get("shape")
        try:
            t = torch.tensor(data, dtype=torch.float64)
            if shape is not None:
                t = t.reshape([int(s) for s in shape])
            elif t.ndim == 1 and len(t) != n and n and len(t) % n == 0:
                t = t.reshape(n, -1)  # flat scores without a shape
        except (TypeError, ValueError, RuntimeError) as e:
            raise self._malformed(f"output data does not fit its shape {shape}: {e}") from e
        integer = str(out.get("datatype", "")).upper().startswith(("INT", "UINT"))
        is_labels = t.ndim == 1 or (integer and t.ndim == 2 and t.shape[1] == 1)
        return self._as_scores(t, n, labels=is_labels)

    def _tf_rows(self, rows: Any, n: int) -> torch.Tensor:
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            name = _pick(list(rows[0]))
            try:
                rows = [r[name] for r in rows]
            except KeyError as e:
                raise self._malformed(f"output {name!r} missing from some predictions") from e
            return self._as_scores(rows, n, labels=name in ("labels", "classes"))
        return self._as_scores(rows, n)

    def _as_scores(self, data: Any, n: int, labels: bool = False) -> torch.Tensor:
        try:
            t = data if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise self._malformed(f"the scores are not a rectangular array of numbers: {e}") from e
        if labels or t.ndim == 1:
            t = t.reshape(-1)
            if len(t) != n:
                raise self._malformed(f"{len(t)} answers for {n} inputs")
            if not torch.all(t == t.round()) or (len(t) and t.min() < 0):
                raise self._malformed("labels are not class indices")
            idx = t.to(torch.int64)
            width = max(self.num_classes or 0, int(idx.max().item()) + 1 if len(idx) else 1)
            return torch.nn.functional.one_hot(idx, width).to(torch.float32)
        t = t.reshape(t.shape[0], -1) if t.ndim > 2 else t
        if t.shape[0] != n:
            raise self._malformed(f"{t.shape[0]} answers for {n} inputs")
        if t.shape[1] == 0:
            raise self._malformed("empty scores")
        return t.to(torch.float32)

    # -- HTTP ---------------------------------------------------------------------------------

    def _post_json(self, payload: dict[str, Any]) -> Any:
        try:
            body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        except ValueError as e:
            raise NnmarkError("inputs contain NaN or infinite values; they cannot be sent as JSON") from e
        r = self._send("POST", self.predict_url, body)
        if r.status_code >= 300:
            raise self._status_error(r, self.predict_url)
        try:
            return r.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise self._malformed(f"not JSON: {_one_line(r.text[:80])!r}") from e

    def _send(self, method: str, url: str, body: bytes | None = None) -> httpx.Response:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            wait = min(delay, MAX_WAIT_S)
            try:
                r = self._client.request(
                    method, url, content=body, headers={"Content-Type": "application/json"} if body else None
                )
            except httpx.TimeoutException as e:
                problem = f"no answer within {self.timeout:g} s ({e.__class__.__name__})"
                hint = "check that the server is up and not overloaded, or raise the timeout"
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
            hint = (
                "check the URL and --protocol (nnmark: http://HOST:PORT, tf-serving: "
                "http://HOST:8501/v1/models/NAME, kserve-v2: http://HOST:8080/v2/models/NAME)"
            )
        elif code in (401, 403):
            hint = "the server refuses these queries (authentication, or a query-rejection defense)"
        elif code == 413:
            hint = "the server takes smaller requests; lower the batch size"
        elif code in (400, 415, 422):
            hint = "the server refuses these inputs; check --protocol, --input-type and the key's model"
        elif code >= 500:
            hint = "the server failed; check its logs"
        else:
            hint = "check the URL and --protocol"
        return NnmarkError(f"{url} answered HTTP {code}{': ' + msg if msg else ''}; {hint}")

    def _fetch_metadata(self) -> dict[str, Any]:
        """What the server declares: input_shape (no batch axis), num_classes, uint8, input_name."""
        r = self._send("GET", self.meta_url)
        if r.status_code >= 300:
            if self.protocol == "nnmark":
                raise self._status_error(r, self.meta_url)
            log.info("%s answered HTTP %d; no metadata, going on without", self.meta_url, r.status_code)
            return {}
        try:
            meta = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if self.protocol == "nnmark":
                raise NnmarkError(
                    f"{self.meta_url} is not an nnmark server (its reply is not JSON); "
                    "check the URL and --protocol"
                ) from e
            return {}
        try:
            if self.protocol == "nnmark":
                return _nnmark_meta(meta)
            if self.protocol == "tf-serving":
                return _tf_meta(meta)
            return _kserve_meta(meta)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            if self.protocol == "nnmark":
                raise NnmarkError(
                    f"{self.meta_url} is not an nnmark server ({e.__class__.__name__} in its "
                    "reply); check the URL and --protocol"
                ) from e
            log.info("unreadable metadata from %s (%s); going on without", self.meta_url, e)
            return {}


def _base_url(url: str, protocol: str) -> str:
    url = url.strip().rstrip("/")
    suffixes = {
        "nnmark": ("/predict", "/info"),
        "tf-serving": (":predict", "/metadata"),
        "kserve-v2": ("/infer",),
    }[protocol]
    for s in suffixes:
        if url.endswith(s):
            return url[: -len(s)].rstrip("/")
    return url


def _pick(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    for want in OUTPUT_NAMES:
        if want in names:
            return want
    return names[0]


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in dims)


def _nnmark_meta(meta: dict[str, Any]) -> dict[str, Any]:
    shape = _shape(meta["input_shape"])
    if len(shape) != 3:
        raise ValueError("input_shape")
    return {
        "input_shape": shape,
        "num_classes": int(meta["num_classes"]),
        "uint8": False,
        "input_name": "inputs",
    }


def _tf_meta(meta: dict[str, Any]) -> dict[str, Any]:
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    sig = sigs.get("serving_default") or next(iter(sigs.values()))
    inputs = sig["inputs"]
    name, spec = next(iter(inputs.items()))
    out: dict[str, Any] = {"input_name": name, "uint8": spec.get("dtype") == "DT_UINT8"}
    dims = spec.get("tensor_shape", {}).get("dim")
    if dims and len(inputs) == 1:
        shape = _shape(d["size"] for d in dims)
        if len(shape) == 4:
            out["input_shape"] = shape[1:]
    outputs = sig.get("outputs", {})
    if outputs:
        ospec = outputs[_pick(list(outputs))]
        odims = ospec.get("tensor_shape", {}).get("dim")
        if odims and int(odims[-1]["size"]) > 0:
            out["num_classes"] = int(odims[-1]["size"])
    return out


def _kserve_meta(meta: dict[str, Any]) -> dict[str, Any]:
    inp = meta["inputs"][0]
    uint8 = str(inp.get("datatype", "")).upper() == "UINT8"
    out: dict[str, Any] = {"input_name": str(inp["name"]), "uint8": uint8}
    shape = _shape(inp.get("shape", []))
    if len(shape) == 4 and len(meta["inputs"]) == 1:
        out["input_shape"] = shape[1:]
    outputs = meta.get("outputs") or []
    if outputs:
        by_name = {str(o["name"]): o for o in outputs}
        oshape = _shape(by_name[_pick(list(by_name))].get("shape", []))
        if len(oshape) == 2 and oshape[-1] > 0:
            out["num_classes"] = oshape[-1]
    return out


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
