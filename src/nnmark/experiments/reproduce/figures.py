"""PNG figures with matplotlib (the plots extra, imported lazily through nnmark.extras.require, so a
missing extra names itself; Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from nnmark.extras import require


def line_plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    reference: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """One line per series (x, y); ``reference`` series (the paper's points) drawn dashed with markers."""
    matplotlib = require("plots", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", label=name)
    for name, (x, y) in (reference or {}).items():
        ax.plot(list(x), list(y), linestyle="--", marker="x", label=f"paper: {name}")
    if all(float(v).is_integer() for _, (x, _) in series.items() for v in x):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def bar_plot(path: Path, title: str, ylabel: str, groups: dict[str, dict[str, float]]) -> Path:
    """Grouped bars: ``groups[group][bar] = height``."""
    matplotlib = require("plots", "matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    bars = sorted({b for g in groups.values() for b in g}, key=lambda s: (len(s), s))
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 1.2), 4))
    width = 0.8 / max(1, len(bars))
    for j, b in enumerate(bars):
        ax.bar(
            [i + j * width for i in range(len(names))], [groups[n].get(b, 0.0) for n in names], width, label=b
        )
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20, ha="right", fontsize="small"
    )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
