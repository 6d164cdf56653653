"""YAML experiment grids: axes (datasets × models × schemes × attacks × parameters × seeds) expanded
into cells, each a plain JSON-able dict with a stable id.

A grid file::

    name: zhang-mnist
    task: watermark            # the cell task (nnmark.experiments.cells.TASKS)
    defaults: {epochs: 3, n_train: 1000}
    axes:                      # every combination becomes one cell, in the order written
      dataset: [mnist5k]
      model: [digit-cnn]
      scheme: [null, zhang-content]
      attacks: [[], [{name: prune, rate: 0.5}]]
      params: [{}, {keys: 50}]
      seed: [0, 1]
    include:                   # optional extra cells (merged over the defaults)
      - {scheme: zhang-noise, seed: 0}

Axes are expanded as a cartesian product with the first axis outermost. A cell is
``defaults | one value per axis``; its id is a hash of that dict, so the same cell written in two
grids (or twice) is the same cell and runs once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnmark.errors import NnmarkError

Cell = dict[str, Any]


class GridSpec(BaseModel):
    """A grid as written in YAML (unknown top-level names are refused)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("grid", min_length=1)
    task: str = Field("watermark", description="cell task, see nnmark.experiments.cells.TASKS")
    defaults: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[dict[str, Any]] = Field(default_factory=list)


def canonical(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cell_id(cell: Cell) -> str:
    """A stable 16-hex id of a cell's config (SHA-256 of its canonical JSON)."""
    return hashlib.sha256(canonical(cell).encode()).hexdigest()[:16]


def expand(spec: GridSpec) -> list[Cell]:
    """Every cell of ``spec``: the product of its axes, then ``include``; duplicates dropped."""
    for axis, values in spec.axes.items():
        if not values:
            raise NnmarkError(f"grid {spec.name}: axis {axis!r} has no values")
    base = {"task": spec.task, **spec.defaults}
    cells: list[Cell] = []
    names = list(spec.axes)
    if names:
        for combo in itertools.product(*(spec.axes[a] for a in names)):
            cells.append({**base, **dict(zip(names, combo, strict=True))})
    elif not spec.include:
        cells.append(dict(base))
    cells.extend({**base, **extra} for extra in spec.include)
    seen: set[str] = set()
    unique = []
    for c in cells:
        i = cell_id(c)
        if i not in seen:
            seen.add(i)
            unique.append(c)
    return unique


def parse_grid(text: str, where: str = "grid") -> GridSpec:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise NnmarkError(f"{where} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise NnmarkError(f"{where} must be a YAML mapping with 'axes' (and optionally defaults, include)")
    try:
        return GridSpec(**doc)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise NnmarkError(f"{where}: {loc}: {first['msg']}") from None


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path)
    if not path.is_file():
        raise NnmarkError(f"grid file {path} not found")
    return parse_grid(path.read_text(), str(path))
