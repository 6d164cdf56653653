"""Each wire protocol's codec round-trips: client encode → server decode → server encode → client decode."""

from __future__ import annotations

import numpy as np
import pytest

from nnmark import wire
from nnmark.wire import jsonio
from nnmark.wire.base import Encoding, ModelInfo, WireError

CHW = (3, 4, 5)
ENCODINGS = [
    Encoding("nchw", "0-1", "float32"),
    Encoding("nhwc", "0-1", "float32"),
    Encoding("nhwc", "0-255", "float32"),
    Encoding("nchw", "0-255", "uint8"),
    Encoding("nhwc", "0-255", "uint8"),
]


def images(n: int = 6, seed: int = 0) -> np.ndarray:
    """Inputs on the 1/255 grid (key images are), so they survive a uint8 transport exactly."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, *CHW)) / 255).astype(np.float32)


def over_json(body: dict) -> dict:
    return jsonio.loads(jsonio.dumps(body))


@pytest.mark.parametrize("protocol", wire.names())
@pytest.mark.parametrize("enc", ENCODINGS, ids=lambda e: f"{e.layout}-{e.dtype}-{e.scale}")
@pytest.mark.parametrize("kind", ["logits", "probabilities", "labels"])
def test_request_and_reply_round_trip(protocol: str, enc: Encoding, kind: str) -> None:
    codec = wire.get(protocol)
    if protocol == "nnmark" and enc != wire.nnmark.ENCODING:
        pytest.skip("the nnmark protocol carries float32 N×C×H×W in [0, 1] only")
    x = images()
    info = ModelInfo(name="m", input_name="input", input_shape=enc.wire_shape(CHW), dtype=enc.dtype,
                     num_classes=7, output=kind)  # fmt: skip
    sent = wire.to_wire(x, enc)
    request = codec.Request.model_validate(over_json(codec.encode_request(sent, enc, info)))
    received = wire.from_wire(codec.decode_request(request, enc), enc, CHW, max_batch=64, what="inputs")
    assert received.dtype == np.float32 and received.shape == x.shape
    assert np.array_equal(received, x)  # exactly: layout, scale and pixel levels all undone

    rng = np.random.default_rng(1)
    out = rng.integers(0, 7, len(x)) if kind == "labels" else rng.normal(size=(len(x), 7)).astype(np.float32)
    reply = codec.decode_reply(over_json(codec.encode_reply(out, kind, info, request)), len(x))
    # TF-Serving's row format names no output when the signature has one: the metadata says what it is
    assert reply.kind == (None if protocol == "tf-serving" else kind)
    assert np.allclose(reply.values.reshape(out.shape), out)


@pytest.mark.parametrize("protocol", wire.names())
@pytest.mark.parametrize("enc", ENCODINGS[:4], ids=lambda e: f"{e.layout}-{e.dtype}")
@pytest.mark.parametrize("kind", ["logits", "labels"])
def test_metadata_round_trips(protocol: str, enc: Encoding, kind: str) -> None:
    codec = wire.get(protocol)
    if protocol == "nnmark":
        enc = wire.nnmark.ENCODING
    info = ModelInfo(name="m", input_name="input", input_shape=enc.wire_shape(CHW), dtype=enc.dtype,
                     num_classes=7, output=kind, output_name=kind)  # fmt: skip
    back = codec.decode_metadata(over_json(codec.encode_metadata(info)))
    assert back.input_shape == info.input_shape and back.dtype == info.dtype and back.output == kind
    assert back.num_classes == (None if kind == "labels" and protocol != "nnmark" else 7)


def test_protocol_defaults_and_registry() -> None:
    assert wire.names()[0] == "nnmark" and set(wire.names()) == {"nnmark", "tf-serving", "kserve-v2"}
    assert wire.get("tf-serving").default_layout == "nhwc"  # TensorFlow's convention
    assert wire.get("kserve-v2").default_layout == "nchw"
    with pytest.raises(Exception, match="unknown protocol"):
        wire.get("grpc")


def test_uint8_refuses_values_it_cannot_carry_and_server_checks_pixels() -> None:
    enc = Encoding("nchw", "0-255", "uint8")
    with pytest.raises(WireError, match="refused, not clipped"):
        wire.to_wire(np.full((1, *CHW), 1.5, np.float32), enc)
    with pytest.raises(WireError, match="integer pixels") as e:
        wire.from_wire(np.full((1, *CHW), 0.5), enc, CHW, 8, "inputs")
    assert e.value.status == 422
    with pytest.raises(WireError, match="N×5×3×4|N×4×5×3"):  # an N×C×H×W batch sent to an N×H×W×C model
        wire.from_wire(images(), Encoding("nhwc"), CHW, 8, "inputs")
    with pytest.raises(WireError, match="at most 2") as e:
        wire.from_wire(images(3), Encoding(), CHW, 2, "inputs")
    assert e.value.status == 413


def test_tf_serving_reads_every_reply_format() -> None:
    codec = wire.get("tf-serving")
    rows = codec.decode_reply({"predictions": [{"probabilities": [0.2, 0.8], "classes": 1}] * 2}, 2)
    assert rows.kind == "probabilities" and rows.values.shape == (2, 2)
    columns = codec.decode_reply({"outputs": {"classes": [1, 0]}}, 2)
    assert columns.kind == "labels" and list(columns.values) == [1, 0]
    with pytest.raises(WireError, match="answered an error: bad input"):
        codec.decode_reply({"error": "bad\ninput"}, 1)
