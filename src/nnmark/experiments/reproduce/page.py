"""Assemble ``docs/results.md`` from ``nnmark reproduce`` output folders and a discussion file.

    python -m nnmark.experiments.reproduce.page --run RUN_DIR... \\
        --discussion experiments/results-discussion.md --out docs/results.md

For each paper the first ``--run`` folder holding ``PAPER/PAPER.md`` (or ``PAPER.md``) is used (list
the largest run first); its figures are copied next to the page (``results/``) and the paper's
paragraph from the discussion file (a ``## paper`` section) is put above its tables.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

PAPERS = ("zhang2018", "zhong2020", "li2019", "namba2019")


def sections(text: str) -> dict[str, str]:
    """``## name`` sections of a Markdown file (the part before the first is returned under "")."""
    out: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        m = re.match(r"^## (\S+)\s*$", line)
        if m:
            name = m.group(1)
            out[name] = ""
        else:
            out[name] = out.get(name, "") + line
    return {k: v.strip() for k, v in out.items()}


def find_run(runs: list[Path], paper: str) -> Path | None:
    for run in runs:
        for cand in (run / paper / f"{paper}.md", run / f"{paper}.md"):
            if cand.is_file():
                return cand
    return None


def build(runs: list[Path], discussion: Path, out: Path) -> Path:
    text = sections(discussion.read_text())
    fig_dir = out.parent / "results"
    parts = [text.get("", "")]
    for paper in PAPERS:
        md = find_run(runs, paper)
        if md is None:
            parts.append(f"## {paper}\n\nNot run yet.")
            continue
        body = md.read_text()
        for name in re.findall(r"\]\(([^)]+\.png)\)", body):
            fig_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(md.parent / name, fig_dir / name)
            body = body.replace(f"]({name})", f"](results/{name})")
        head, _, rest = body.partition("\n")
        why = text.get(paper, "(to be written)")
        parts.append(f"{head}\n\n**Where we agree, where we differ, and why.** {why}\n{rest}")
    out.write_text("\n\n".join(p for p in parts if p) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, action="append", required=True, help="reproduce output folder")
    ap.add_argument("--discussion", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/results.md"))
    args = ap.parse_args()
    print(build(args.run, args.discussion, args.out))


if __name__ == "__main__":
    main()
