"""Robustness table (issue 9): every scheme × every removal and evasion attack, over seeds.

    OMP_NUM_THREADS=1 python benchmarks/robustness.py [--seeds 3] [--schemes ...] [--attacks ...]
        [--quick | --budget paper|reduced] [--set finetune.epochs=20 ...] [--out robustness.md]

For each dataset (MNIST-5k; Fashion-MNIST too when its files are present — ``load_dataset``
decides, a missing one is skipped with a note) and each seed s = 0 … ``--seeds``-1, the owner
embeds each scheme into a ``--model`` (digit-cnn, 5 epochs, training seed s; schemes that need
clean reference models get their default count, capped by ``--calibrate``; li-null-embedding,
whose keys follow from the owner's signature, is embedded with a fresh owner identity, the others
with unsigned keys; a scheme that cannot be embedded is skipped with its reason), and
:func:`attacks.seed_records` (``benchmarks/attacks.py``'s per-seed loop) measures the victim
unattacked and under every attack. The thief holds 10 % × the owner's training-set size from the
held-out split, drawn with seed s; accuracy is measured on the held-out images the thief does not
hold (600 for MNIST-5k).

Removal attacks, through ``nnmark.attacks.run.attack_run`` with their papers' defaults
(``--budget paper``, the default):

* ``finetune ftal`` / ``finetune rtal``: Adi 2018's modes, the owner's optimiser, 100 epochs (Li 2019 Fig. 5);
* ``prune sweep``: Namba 2019's magnitude pruning, q = 0 … 0.9, 10 retraining epochs each; kept:
  the rate with the lowest watermark accuracy among those losing < 10 % of the victim's accuracy
  (Namba's protocol; the "note" column names it);
* ``neuron-prune 0.5``: Li 2019 Fig. 6, half the units by incoming-weight norm;
* ``fine-prune``: Liu 2018, dormant last-conv channels dropped, 10 fine-tuning epochs;
* ``distill labels``: a fresh model trained on the victim's labels (owner's recipe).

Evasion attacks (query defenses wrapping the victim as an oracle, fitted on the thief's images):
``jpeg q75``, ``blur σ1``, ``noise σ0.1``, ``reject (pixel stats)``, and on Namba 2019's
autoencoder + JSD detector (400 epochs, 10-fold thresholds; fitted once per victim)
``query-modification`` and ``rejection (AE)``.

Reduced budgets change only epochs, and say so in the output's header: ``--budget reduced`` =
finetune 20 epochs, prune 2 retraining epochs per rate (all 10 rates), fine-prune 2 epochs,
autoencoder 100 epochs / 10 folds; ``--quick`` = ``benchmarks/attacks.py``'s ``--quick`` (finetune 2,
prune 1 epoch at q ∈ {0, 0.5, 0.9}, fine-prune 1; autoencoder 60 epochs / 5 folds; dnn1,
3 reference models). ``--set ATTACK.KEY=VALUE`` overrides any single setting.

Verdicts are the verifier's, in owner mode (α = 1e-6, the scheme's default test, p0 from the key's
own signed calibration); the table gives "found k/n" over seeds, the median p-value, and clean
(test) and watermark accuracy as mean ± sd (sample sd) over seeds. Watermark accuracy is the
scheme's own measure (``nnmark.attacks.measure.key_accuracy``, ``metrics.json``'s
``watermark_accuracy``: the key-label match rate for most schemes, min(φ_null, φ_true) on
held-out probes for li-null-embedding) in every row; query-defense rows ask it through the
defended oracle.

Stealth table: Namba's detector (the thief's, as fitted above, on the owner's ``--model``) scores
the inputs **stored in each scheme's key** (for li-null-embedding one blank placeholder; for
schemes that derive or add queries at verification, not what ``verify`` sends) against the clean
held-out test images; AUC = P(key score > clean score) (:func:`stealth.auc`). An AUC far from 0.5
in either direction is a tell: 0.14 separates keys from clean images as well as 0.86 does (the
keys then look *more* ordinary than clean images), so read |AUC − 0.5|; only ≈ 0.5 means the
detector cannot tell them apart. Also the share of each the detector flags at its threshold; mean
± sd over seeds. ``benchmarks/stealth.py`` (README's stealth table) measures something else: the
queries ``verify`` actually sends, on digit-cnn, with the detector as ``nnmark serve`` fits it.

Clean reference models (calibration) are trained once per dataset and seed and shared by the
schemes (they depend only on the architecture, dataset and training config; each scheme would
train the same ones). Benchmarks never gate CI: nothing here is run by the test suite except the
aggregation helpers (``tests/test_robustness_table.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stealth import auc, namba_score  # noqa: E402

from attacks import (  # noqa: E402
    ATTACKS,
    BASELINE,
    DEFENSES,
    QUICK_AE,
    Record,
    attack_settings,
    defended_oracle,
    embed_victim,
    parse_scheme,
    seed_records,
    setting_value,
)
from nnmark.attacks.summary import verdict_word  # noqa: E402

#: every registered trigger-set scheme (all verify through the suspect's predictions)
SCHEMES = (
    "adi",
    "label-change",
    "zhang-content",
    "zhang-noise",
    "zhang-unrelated",
    "zhong-new-label",
    "li-null-embedding",
    "deepsigns-bb",
    "afs",
)
DATASETS = ("mnist5k", "fashion-mnist")
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "reduced": {"finetune": {"epochs": 20}, "prune": {"epochs": 2}, "fine-prune": {"epochs": 2}},
}
BUDGET_AE = {"paper": {}, "reduced": {"epochs": 100}}
CELLS = (BASELINE, *ATTACKS, *DEFENSES)
STEALTH_TEXT = (
    "AUC of the detector's score (fitted on the thief's images against the {model} victim) on the "
    "inputs stored in each scheme's key — not the queries `verify` sends (li-null-embedding's key "
    "stores one blank placeholder; see `benchmarks/stealth.py` for the verifier's queries) — "
    "against the clean held-out test images. An AUC far from 0.5 in either direction is a tell "
    "(read |AUC − 0.5|: 0.14 separates as well as 0.86, the keys looking more ordinary than clean "
    "images); only ≈ 0.5 means the detector cannot tell them apart. Flagged: the share of each the "
    "detector flags at its threshold. Mean ± sd over seeds."
)


def cells(
    datasets: Sequence[str], schemes: Sequence[str], attacks: Sequence[str], seeds: Sequence[int]
) -> list[tuple[str, str, str, int]]:
    """Every (dataset, scheme, attack, seed) the run measures, in the order it measures them; the
    unattacked baseline first in each scheme's block."""
    todo = [BASELINE, *(a for a in attacks if a != BASELINE)]
    return [(d, sc, a, s) for d in datasets for s in seeds for sc in schemes for a in todo]


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``"0.967 ± 0.004"`` (sample sd); one value: the value alone."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def found_k_of_n(verdicts: Sequence[bool | None]) -> str:
    """``"found 2/3"``, with the seeds that gave no verdict named: ``"found 1/3 (no verdict 2)"``."""
    text = f"found {sum(v is True for v in verdicts)}/{len(verdicts)}"
    none = sum(v is None for v in verdicts)
    return f"{text} (no verdict {none})" if none else text


def median_p(values: Iterable[float]) -> str:
    ps = [p for p in values if p == p]  # NaN: refused keys
    return f"{statistics.median(ps):.2g}" if ps else "-"


def group(records: Iterable[Record], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Record]]:
    """Records by ``keys``' values, groups in first-seen order."""
    out: dict[tuple[Any, ...], list[Record]] = {}
    for r in records:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def aggregate(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One row per (dataset, scheme, attack): seeds, accuracies mean ± sd, found k/n, median p."""
    rows = []
    for (dataset, scheme, attack), rs in group(records, ("dataset", "scheme", "attack")).items():
        rows.append(
            {
                "dataset": dataset,
                "scheme": scheme,
                "attack": attack,
                "seeds": len(rs),
                "accuracy": mean_sd([r["accuracy"] for r in rs]),
                "wm_accuracy": mean_sd([r["wm_accuracy"] for r in rs]),
                "verdict": found_k_of_n([r["verdict"] for r in rs]),
                "found": sum(r["verdict"] is True for r in rs),
                "p_value": median_p(r["p_value"] for r in rs),
                "note": ", ".join(sorted({r["note"] for r in rs if r.get("note")})),
            }
        )
    return rows


def robustness_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| scheme | attack | seeds | clean acc | wm acc | verdict | median p | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cols = [f"`{r['scheme']}`", r["attack"], str(r["seeds"]), r["accuracy"], r["wm_accuracy"]]
        cols += [r["verdict"], r["p_value"], r["note"]]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def matrix(rows: Sequence[dict[str, Any]]) -> str:
    """Scheme × attack, each cell "k/n" seeds found: the table at a glance."""
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    by = {(r["scheme"], r["attack"]): r for r in rows}
    lines = ["| scheme | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 1) + "|"]
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        cols = [
            f"{by[scheme, a]['found']}/{by[scheme, a]['seeds']}" if (scheme, a) in by else "-"
            for a in attacks
        ]
        lines.append(f"| `{scheme}` | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def stealth_table(records: Iterable[Record]) -> str:
    lines = [
        "| scheme | seeds | key inputs | Namba AE+JSD AUC | flagged keys | flagged clean |",
        "|---|---|---|---|---|---|",
    ]
    for (scheme,), rs in group(records, ("scheme",)).items():
        cols = [
            f"`{scheme}`",
            str(len(rs)),
            str(rs[0]["keys"]),
            mean_sd([r["auc"] for r in rs], 2),
            mean_sd([r["flagged_keys"] for r in rs], 2),
            mean_sd([r["flagged_clean"] for r in rs], 3),
        ]
        lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def shared_references() -> Iterator[None]:
    """Clean reference models trained once per (dataset, spec, config, count) while inside: every
    scheme embedded with the same training config would train the very same models."""
    from nnmark import calibration

    original = calibration.train_reference_models
    memo: dict[str, Any] = {}

    def cached(data: Any, spec: Any, config: Any, count: int, progress: bool = False) -> Any:
        key = repr((data.name, spec, config, count))
        if key not in memo:
            memo[key] = original(data, spec, config, count, progress)
        return memo[key]

    calibration.train_reference_models = cached  # type: ignore[assignment]
    try:
        yield
    finally:
        calibration.train_reference_models = original  # type: ignore[assignment]


def stealth_record(detector: Any, key: Any, clean: Any) -> dict[str, Any]:
    """Namba's detector on the key inputs against clean images (float [0, 1])."""
    keys, neg = key.inputs.float(), clean
    return {
        "keys": len(keys),
        "auc": auc(namba_score(detector, keys), namba_score(detector, neg)),
        "flagged_keys": float(detector.inspect(keys).flagged.float().mean()),
        "flagged_clean": float(detector.inspect(neg).flagged.float().mean()),
    }


def fail(message: str) -> NoReturn:
    """A command-line mistake: one line on stderr, exit status 2 (argparse's), nothing measured."""
    print(f"robustness.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["finetune.epochs=20"]`` -> ``{"finetune": {"epochs": 20}}`` (values as JSON where they parse)."""

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name_key, _, value = item.partition("=")
        name, _, key = name_key.partition(".")
        if not key or not value:
            fail(f"--set wants ATTACK.KEY=VALUE, got {item!r}")
        out.setdefault(name, {})[key] = setting_value(value)
    return out


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before any work, what would otherwise be ignored or fail late: ``--set`` for an
    attack this benchmark does not run or with a setting the attack does not take, a scheme (or a
    scheme setting) that does not exist, no scheme at all, a ``--report-from`` file that is not
    there."""
    from nnmark.attacks.base import ATTACKS as REGISTRY
    from nnmark.errors import NnmarkError
    from nnmark.schemes import SCHEMES as SCHEME_REGISTRY

    names = sorted({spec["name"] for spec in ATTACKS.values()})
    for name in args.overrides:
        if name not in names:
            fail(f"--set {name}.…: no attack {name!r} in this benchmark (known: {', '.join(names)})")
    for label, spec in ATTACKS.items():
        try:
            REGISTRY.get(spec["name"])(**attack_settings(spec, args.quick, args.overrides))
        except NnmarkError as e:
            fail(f"{label}: {str(e).splitlines()[0]}")
    if not args.schemes:
        fail("--schemes names no scheme")
    for spec in args.schemes:
        try:
            name, settings = parse_scheme(spec)
            SCHEME_REGISTRY.get(name)(**settings)
        except NnmarkError as e:
            fail(f"--schemes {spec}: {str(e).splitlines()[0]}")
    for path in args.report_from:
        if not path.is_file():
            fail(f"--report-from {path}: no such file")


def settings_line(args: argparse.Namespace, overrides: dict[str, dict[str, Any]]) -> str:
    shown = []
    for label in args.attacks:
        if label in ATTACKS:
            st = attack_settings(ATTACKS[label], args.quick, overrides)
            shown.append(f"{label}: {st or 'paper defaults'}")
    ae = args.ae_settings or "paper defaults (400 epochs, 10 folds)"
    return "; ".join(shown) + f"; Namba's autoencoder: {ae}"


def progress_line(r: Record, done: int, total: int, elapsed: float) -> str:
    return (
        f"[{done}/{total} {elapsed:6.0f} s] {r['dataset']} seed {r['seed']} {r['scheme']:16} "
        f"{r['attack']:20} acc {r['accuracy']:.3f} wm {r['wm_accuracy']:.3f} {verdict_word(r['verdict']):10} "
        f"p {r['p_value']:.2g} ({r['seconds']:.0f} s) {r['note']}"
    ).rstrip()


def calibration_count(scheme: str, cap: int | None) -> int:
    """Reference models for ``scheme``: its default (0 when its p0 is known), at most ``cap`` (≥ 3)."""
    from nnmark.schemes import SCHEMES as REGISTRY

    cls = REGISTRY.get(scheme.partition(":")[0])
    count = cls.default_calibration if cls.needs_calibration else 0
    return max(3, min(count, cap)) if count and cap is not None else count


def measure_victim(
    dname: str, data: Any, seed: int, scheme: str, args: argparse.Namespace, root: Path
) -> Iterator[Record]:
    """Embed ``scheme`` (seed ``seed``), then yield its records (:func:`attacks.seed_records`, with
    ``dataset`` added) and last its stealth record (``attack`` = ``"stealth"``)."""
    from nnmark.attacks.data import attacker_data
    from nnmark.keyfile import load_key
    from nnmark.training import TrainConfig
    from nnmark.workflow import load_model

    t0 = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, seed=seed)
    run = embed_victim(scheme, data, args.model, config, root / "victim", calibration_count(scheme, args.cap))
    print(f"{dname} seed {seed} {scheme}: embedded in {time.perf_counter() - t0:.0f} s", flush=True)
    detector: dict[str, Any] = {}
    for r in seed_records(
        scheme,
        run,
        data,
        seed,
        root,
        attacks=[a for a in args.attacks if a in ATTACKS],
        defenses=[a for a in args.attacks if a in DEFENSES],
        attacker_fraction=args.attacker_fraction,
        quick=args.quick,
        overrides=args.overrides,
        ae_settings=args.ae_settings,
        detector=detector,
    ):
        yield {**r, "dataset": dname}
    share = attacker_data(data, args.attacker_fraction, seed).data
    if "detector" not in detector:
        defended_oracle("autoencoder", {}, load_model(run), share, seed, args.ae_settings, detector)
    clean = share.test_x.float() / 255
    s = stealth_record(detector["detector"], load_key(run / "watermark.key"), clean)
    print(
        f"{dname} seed {seed} {scheme}: Namba AUC on the key's stored inputs {s['auc']:.2f} "
        f"(|AUC − 0.5| = {abs(s['auc'] - 0.5):.2f}); {time.perf_counter() - t0:.0f} s in all",
        flush=True,
    )
    yield {"dataset": dname, "scheme": scheme, "seed": seed, "attack": "stealth", **s}


def report(
    args: argparse.Namespace, seeds: list[int], records: list[Record], notes: list[str], wall: float
) -> str:
    """The Markdown: settings header, then per dataset the k/n matrix, every cell, stealth."""
    budget = "--quick" if args.quick else f"--budget {args.budget}"
    sets = " --set " + " ".join(args.sets) if args.sets else ""
    head = [
        f"# benchmarks/robustness.py ({budget}{sets})",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.model}, {args.epochs} embedding epochs; "
        f"seeds {', '.join(map(str, seeds))}; thief's share {args.attacker_fraction:g} × the owner's "
        "training set (held-out split); owner-mode verdicts at α = 1e-6, each scheme's default test; "
        f"wall time {wall / 60:.1f} min.",
        "",
        f"Attack settings: {settings_line(args, args.overrides)}.",
        *[f"\n{n}." for n in notes],
    ]
    parts = ["\n".join(head)]
    for dname in dict.fromkeys(r["dataset"] for r in records):
        mine = [r for r in records if r["dataset"] == dname]
        rows = aggregate(r for r in mine if r["attack"] != "stealth")
        parts += [
            f"## {dname}: seeds found (k/n)\n\n{matrix(rows)}",
            f"## {dname}: every cell\n\nclean acc and wm acc: mean ± sd over seeds; verdict: seeds "
            "where the owner's verifier found the watermark; median p over seeds.\n\n"
            f"{robustness_table(rows)}",
            f"## {dname}: stealth (Namba 2019 autoencoder + JSD detector, the thief's)\n\n"
            f"{STEALTH_TEXT.format(model=args.model)}\n\n"
            f"{stealth_table(r for r in mine if r['attack'] == 'stealth')}",
        ]
    return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0 … N-1 (default 3)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--schemes", nargs="*", default=list(SCHEMES), help="scheme[:k=v,...] (default: all)")
    ap.add_argument("--attacks", nargs="*", default=list(CELLS[1:]), choices=CELLS[1:])
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS))
    ap.add_argument("--model", default=None, help="architecture (default digit-cnn; --quick: dnn1)")
    ap.add_argument("--epochs", type=int, default=5, help="owner's embedding epochs")
    ap.add_argument(
        "--calibrate", type=int, default=None, help="most reference models (default: the scheme's)"
    )
    ap.add_argument("--attacker-fraction", type=float, default=0.1)
    ap.add_argument("--budget", choices=list(BUDGETS), default="paper", help="attack epochs (see above)")
    ap.add_argument("--quick", action="store_true", help="benchmarks/attacks.py's --quick cuts; dnn1")
    ap.add_argument("--set", dest="sets", nargs="*", default=[], metavar="ATTACK.KEY=VALUE")
    ap.add_argument("--ae-epochs", type=int, default=None)
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    ap.add_argument("--records", type=Path, default=None, help="append every record here as a JSON line")
    ap.add_argument(
        "--report-from",
        nargs="*",
        type=Path,
        default=[],
        help="measure nothing: tabulate these --records files",
    )
    ap.add_argument("--wall", type=float, default=None, help="with --report-from: the runs' wall time (s)")
    args = ap.parse_args(argv)

    import torch

    from nnmark.data import load_dataset
    from nnmark.errors import NnmarkError

    torch.set_num_threads(args.threads)
    args.model = args.model or ("dnn1" if args.quick else "digit-cnn")
    args.cap = args.calibrate if args.calibrate is not None else (3 if args.quick else None)
    args.overrides = {k: dict(v) for k, v in BUDGETS[args.budget].items()}
    for name, st in parse_sets(args.sets).items():
        args.overrides.setdefault(name, {}).update(st)
    check_args(args)
    args.ae_settings = {**(QUICK_AE if args.quick else BUDGET_AE[args.budget])}
    if args.ae_epochs:
        args.ae_settings["epochs"] = args.ae_epochs
    if args.folds:
        args.ae_settings["folds"] = args.folds
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    notes, loaded = [], {}
    for name in args.datasets:
        try:
            loaded[name] = load_dataset(name)
        except NnmarkError as e:
            notes.append(f"{name} skipped: {str(e).split(':')[0]} on this machine")
            print(notes[-1], flush=True)
    todo = cells(list(loaded), args.schemes, args.attacks, seeds)
    print(
        f"{len(todo)} cells: {len(loaded)} dataset(s) × {len(seeds)} seeds × {len(args.schemes)} schemes",
        flush=True,
    )

    records: list[Record] = []
    t_start = time.perf_counter()
    if args.report_from:  # no measuring: the table of records saved by --records
        for path in args.report_from:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
                records += [json.loads(line) for line in lines if line]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                fail(f"--report-from {path}: not a --records file ({e})")
        keep = set(args.schemes)
        records = [r for r in records if r["scheme"] in keep and r["seed"] in seeds]
        order = {s: i for i, s in enumerate(args.schemes)}
        records.sort(key=lambda r: (r["dataset"], order[r["scheme"]], r["seed"]))
    else:
        try:
            measure_all(args, loaded, todo, records, notes, t_start)
        except KeyboardInterrupt:  # Ctrl-C: report what was measured
            notes.append("interrupted: the table holds only the cells measured before")
    text = report(args, seeds, records, notes, args.wall or time.perf_counter() - t_start)
    print("\n" + text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


def measure_all(
    args: argparse.Namespace,
    loaded: dict[str, Any],
    todo: list[tuple[str, str, str, int]],
    records: list[Record],
    notes: list[str],
    t_start: float,
) -> None:
    from nnmark.errors import NnmarkError

    with tempfile.TemporaryDirectory() as tmp, shared_references():
        for dname, seed, scheme in dict.fromkeys((d, s, sc) for d, sc, _a, s in todo):
            root = Path(tmp) / f"{dname}-{seed}-{scheme.replace(':', '_')}"
            root.mkdir()
            try:
                for r in measure_victim(dname, loaded[dname], seed, scheme, args, root):
                    records.append(r)
                    if args.records is not None:
                        with args.records.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(r) + "\n")
                    if r["attack"] != "stealth":
                        done = sum(x["attack"] != "stealth" for x in records)
                        print(progress_line(r, done, len(todo), time.perf_counter() - t_start), flush=True)
            except NnmarkError as e:  # a scheme that cannot be embedded on this model / dataset
                notes.append(
                    f"{scheme} skipped on {dname}/{args.model} (seed {seed}): {str(e).splitlines()[0]}"
                )
                print(notes[-1], flush=True)


if __name__ == "__main__":
    main()
