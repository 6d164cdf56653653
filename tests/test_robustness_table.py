"""benchmarks/robustness.py's aggregation over seeds: mean ± sd, "found k/n", the median p-value,
and a cell list that covers every scheme × attack (the benchmark itself never runs in CI)."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from robustness import (  # noqa: E402
    BASELINE,
    CELLS,
    SCHEMES,
    aggregate,
    calibration_count,
    cells,
    found_k_of_n,
    main,
    matrix,
    mean_sd,
    median_p,
    stealth_record,
    stealth_table,
)

from nnmark.schemes import SCHEMES as REGISTRY  # noqa: E402


def record(
    scheme: str, attack: str, seed: int, acc: float, wm: float, verdict: bool | None, p: float
) -> dict[str, object]:
    return {
        "dataset": "mnist5k",
        "scheme": scheme,
        "attack": attack,
        "seed": seed,
        "accuracy": acc,
        "wm_accuracy": wm,
        "verdict": verdict,
        "p_value": p,
        "seconds": 1.0,
        "note": "",
    }


def test_mean_sd_and_found_k_of_n() -> None:
    assert mean_sd([0.9, 0.95, 1.0]) == "0.950 ± 0.050"  # sample sd
    assert mean_sd([0.5]) == "0.500"
    assert mean_sd([]) == "-"
    assert mean_sd([0.25, 0.75], 2) == "0.50 ± 0.35"
    assert found_k_of_n([True, False, True]) == "found 2/3"
    assert found_k_of_n([True, None, None]) == "found 1/3 (no verdict 2)"
    assert found_k_of_n([False, False, False]) == "found 0/3"


def test_aggregate_groups_seeds_per_scheme_and_attack() -> None:
    records = [
        record("adi", BASELINE, 0, 0.96, 1.0, True, 1e-20),
        record("adi", "finetune ftal", 0, 0.94, 0.8, True, 1e-9),
        record("adi", BASELINE, 1, 0.98, 0.9, True, 1e-18),
        record("adi", "finetune ftal", 1, 0.92, 0.2, False, 0.3),
        record("adi", BASELINE, 2, 0.97, 0.95, True, 1e-19),
        record("adi", "finetune ftal", 2, 0.93, 0.5, None, 1e-3),
        record("label-change", BASELINE, 0, 0.95, 1.0, True, 1e-30),
    ]
    rows = aggregate(records)
    assert [(r["scheme"], r["attack"], r["seeds"]) for r in rows] == [
        ("adi", BASELINE, 3),
        ("adi", "finetune ftal", 3),
        ("label-change", BASELINE, 1),
    ]
    ft = rows[1]
    assert ft["accuracy"] == "0.930 ± 0.010"
    assert ft["wm_accuracy"] == "0.500 ± 0.300"
    assert ft["verdict"] == "found 1/3 (no verdict 1)"
    assert ft["found"] == 1
    assert ft["p_value"] == "0.001"  # the median of 1e-9, 1e-3, 0.3
    assert rows[0]["verdict"] == "found 3/3" and rows[0]["p_value"] == "1e-19"
    table = matrix(rows)
    assert "| `adi` | 3/3 | 1/3 |" in table
    assert "| `label-change` | 1/1 | - |" in table


def test_cells_cover_every_scheme_attack_and_seed() -> None:
    attacks = list(CELLS[1:])
    todo = cells(["mnist5k"], list(SCHEMES), attacks, [0, 1, 2])
    assert len(todo) == len(set(todo)) == len(SCHEMES) * len(CELLS) * 3
    want = set(itertools.product(["mnist5k"], SCHEMES, CELLS, [0, 1, 2]))
    assert {(d, sc, a, s) for d, sc, a, s in todo} == want
    assert todo[0][2] == BASELINE  # each victim's block starts unattacked
    assert cells(["mnist5k"], ["adi"], [BASELINE, "blur σ1"], [0]) == [
        ("mnist5k", "adi", BASELINE, 0),
        ("mnist5k", "adi", "blur σ1", 0),
    ]


def test_stealth_table_averages_auc_over_seeds() -> None:
    rs = [
        {"scheme": "adi", "keys": 50, "auc": a, "flagged_keys": f, "flagged_clean": 0.1}
        for a, f in ((0.6, 0.5), (0.8, 0.7))
    ]
    assert "| `adi` | 2 | 50 | 0.70 ± 0.14 | 0.60 ± 0.14 | 0.100 ± 0.000 |" in stealth_table(rs)


def test_median_p_leaves_out_refused_keys() -> None:
    """NaN p-values (keys the verifier refused) are no evidence either way: the median is over the
    others, "-" when none is left."""
    nan = math.nan
    assert median_p([nan, 1e-9, nan, 1e-3, 0.3]) == "0.001"
    assert median_p([nan, 0.5]) == "0.5"
    assert median_p([nan, nan]) == "-"
    assert median_p([]) == "-"


def test_calibration_count_caps_the_schemes_default() -> None:
    afs = REGISTRY.get("afs").default_calibration
    zhang = REGISTRY.get("zhang-content").default_calibration
    assert afs > 3 and zhang > 3
    assert calibration_count("afs", None) == afs  # no cap: the scheme's default
    assert calibration_count("afs", 3) == 3  # --quick's cap
    assert calibration_count("zhang-content:keys=50", 3) == 3
    assert calibration_count("afs", afs + 10) == afs  # a cap above the default changes nothing
    assert calibration_count("afs", 1) == 3  # never fewer than 3 reference models
    assert calibration_count("label-change", 3) == 0  # p0 known: no reference models


class FakeDetector:
    """Namba's detector as stealth_record uses it: scores = the mean pixel, flagged above 0.5."""

    tau_rec = tau_jsd = 0.5

    def inspect(self, x: torch.Tensor) -> SimpleNamespace:
        m = x.flatten(1).mean(1)
        return SimpleNamespace(rec=m, jsd=m / 2, flagged=m > 0.5)


def test_stealth_record_scores_keys_against_clean_images() -> None:
    """Bright keys (all flagged) against dark clean images (none flagged): AUC 1, and a key set
    darker than the clean images gives AUC 0 — keys on the positive side, clean on the negative."""
    bright = SimpleNamespace(inputs=torch.full((4, 1, 2, 2), 0.9))
    dark = torch.cat([torch.full((3, 1, 2, 2), 0.1), torch.full((3, 1, 2, 2), 0.2)])
    s = stealth_record(FakeDetector(), bright, dark)
    assert s == {"keys": 4, "auc": 1.0, "flagged_keys": 1.0, "flagged_clean": 0.0}
    light = torch.full((5, 1, 2, 2), 0.8)
    s = stealth_record(FakeDetector(), SimpleNamespace(inputs=dark), light)
    assert s == {"keys": 6, "auc": 0.0, "flagged_keys": 0.0, "flagged_clean": 1.0}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--set", "nosuch.epochs=2"], "no attack 'nosuch'"),
        (["--set", "finetune.nosuch=2"], "nosuch"),
        (["--set", "finetune"], "ATTACK.KEY=VALUE"),
        (["--schemes", "bogus"], "unknown scheme 'bogus'"),
        (["--schemes", "adi:nosuch=1"], "nosuch"),
        (["--schemes"], "no scheme"),
        (["--report-from", "missing.json"], "missing.json"),
    ],
)
def test_command_line_mistakes_exit_2_before_any_work(
    argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import nnmark.data

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the command line was checked")

    monkeypatch.setattr(nnmark.data, "load_dataset", no_work)
    monkeypatch.chdir(Path(__file__).parent)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("robustness.py: error:") and says in err, err
