"""Issue-level accuracy targets on the full MNIST-5k (slow: `make test-slow`).

digit-cnn reaches >= 95 % clean test accuracy and a Zhang watermark costs at most 1 point, both as
means over 3 seeds (single runs differ by about ±1 point).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scheme", ["zhang-content", "zhang-unrelated", "zhang-noise"])
def test_digit_cnn_accuracy_and_watermark_cost(scheme):
    from accuracy_cost import measure

    res = measure([scheme], seeds=3, epochs=5, arch="digit-cnn", data="mnist5k")
    clean = statistics.mean(a for a, _ in res["clean"])
    marked = statistics.mean(a for a, _ in res[scheme])
    assert clean >= 0.95
    assert clean - marked <= 0.01
    assert statistics.mean(w for _, w in res[scheme]) >= 0.9
