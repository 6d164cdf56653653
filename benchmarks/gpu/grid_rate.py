"""How far a reproduction's grid got and how long the whole would take at that rate (issue 11's
speed goal: the full zhong2020 grid, 50 repeats, in under 30 minutes on one H100).

    python benchmarks/gpu/grid_rate.py zhong2020 RECORDS_DIR WALL_SECONDS [--scale full] [--repeats N]
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime

from nnmark.experiments.grid import cell_id
from nnmark.experiments.records import OK, iter_records
from nnmark.experiments.reproduce import reproductions
from nnmark.experiments.reproduce.base import available_datasets, get_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paper")
    ap.add_argument("records")
    ap.add_argument("wall_seconds", type=float, help="wall-clock seconds the run took")
    ap.add_argument("--scale", default="full")
    ap.add_argument("--repeats", type=int, default=None, help="as the run was given (default: the scale's)")
    ap.add_argument(
        "--since", type=float, default=0.0, help="the run's start (Unix seconds): older records were resumed"
    )
    args = ap.parse_args()
    scale = get_scale(args.scale, args.repeats)
    datasets, _ = available_datasets(scale, None)
    cells = reproductions()[args.paper].cells(scale, datasets)
    ids = {cell_id(c): c["dataset"] for c in cells}
    done = [r for r in iter_records(args.records) if r["id"] in ids]
    ok = [r for r in done if r["status"] == OK]
    # the rate counts only the cells this run made, not those it resumed from an earlier run
    new = [r for r in ok if datetime.fromisoformat(r["timings"]["started"]).timestamp() >= args.since]
    total = Counter(ids.values())
    finished = Counter(ids[r["id"]] for r in ok)
    for name, n in total.items():
        print(f"{args.paper} --scale {args.scale} on {name}: {finished[name]} of {n} cells ok")
    failed = len(done) - len(ok)
    first = next((r.get("error", "") for r in done if r["status"] != OK), "")
    print(f"failed: {failed}" + (f" (first: {first})" if failed else ""))
    if new:
        cell_s = sum(r["timings"]["seconds"] for r in new)
        rate = len(new) / args.wall_seconds
        print(
            f"{len(new)} cells in {args.wall_seconds:.0f} s wall ({cell_s / len(new):.1f} s a cell, "
            f"{rate * 60:.1f} cells a minute); the whole grid ({len(cells)} cells) at that rate: "
            f"{len(cells) / rate / 60:.0f} min; Fashion-MNIST's {total['fashion-mnist']} cells alone: "
            f"about {total['fashion-mnist'] / rate / 60:.0f} min (cells differ in size: a projection)"
        )


if __name__ == "__main__":
    main()
