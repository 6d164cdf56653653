"""``nnmark --help`` answers at once: the command line and ``import nnmark`` load torch (and scipy)
only when a command needs them, and the lazy Python API still gives the same objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "scipy", "safetensors", "nnmark.schemes", "nnmark.verify.verifier")


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, timeout=120
    )


def test_help_of_every_command_imports_no_torch() -> None:
    """`nnmark --help`, `nnmark COMMAND --help` and `nnmark --version` run without importing torch."""
    proc = run_python(
        f"""
        import json, sys
        import typer
        from nnmark import cli

        group = typer.main.get_command(cli.app)
        argvs = [["--help"], ["--version"]]
        for name, command in group.commands.items():
            argvs.append([name, "--help"])
            for sub in getattr(command, "commands", {{}}):
                argvs.append([name, sub, "--help"])
        codes = {{}}
        for argv in argvs:
            sys.argv = ["nnmark", *argv]
            try:
                cli.main()
                codes[" ".join(argv)] = 0
            except SystemExit as e:
                codes[" ".join(argv)] = e.code
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["codes"]) > 15, result  # every command was asked
    assert all(code in (0, None) for code in result["codes"].values()), result["codes"]
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_import_nnmark_is_lazy_and_the_api_is_still_there() -> None:
    proc = run_python(
        """
        import sys
        import nnmark
        light = "torch" not in sys.modules
        import nnmark.verify.stats  # the subpackage `nnmark.verify` must not hide the function
        from nnmark import verify
        from nnmark.verify.verifier import verify as real
        from nnmark.oracle import TorchOracle
        from nnmark.workflow import load_model
        assert verify is real and nnmark.verify is real, (verify, nnmark.verify)
        assert nnmark.TorchOracle is TorchOracle and nnmark.load_model is load_model
        assert set(nnmark.__all__) <= set(dir(nnmark))
        try:
            nnmark.no_such_name
        except AttributeError:
            pass
        else:
            raise SystemExit("no AttributeError")
        print(light)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True"], "import nnmark imported torch"
