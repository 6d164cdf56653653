"""The command line's choices come from the library's registries: a new test, protocol or defense
registered in the library is accepted without editing the CLI."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nnmark import choices
from nnmark.registry import Registry


def invoke(*args: str | Path) -> tuple[int, str]:
    from nnmark import cli

    result = CliRunner().invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "200"})
    return result.exit_code, result.output + (str(result.exception) if result.exception else "")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Register names in a registry as a library module would, then load the CLI again."""
    from nnmark import cli, cli_experiments, cli_remote

    def reload() -> None:
        for module in (cli_remote, cli_experiments, cli):
            importlib.reload(module)

    def add(registry: Registry[Any], name: str) -> None:
        monkeypatch.setitem(registry._items, name, f"{name} (registered by a test)")
        reload()

    yield add
    monkeypatch.undo()
    reload()


def test_cli_enums_are_the_registries() -> None:
    from nnmark import cli, cli_experiments, cli_remote

    for enum, registry in (
        (cli.Test, choices.TESTS),
        (cli.Protocol, choices.PROTOCOLS),
        (cli_remote.Protocol, choices.PROTOCOLS),
        (cli.InputType, choices.INPUT_TYPES),
        (cli.Defense, choices.DEFENSES),
        (cli.ServeOutput, choices.SERVE_OUTPUTS),
        (cli.ServeInputType, choices.INPUT_DTYPES),
        (cli.ListWhat, choices.LISTINGS),
        (cli_experiments.Backend, choices.GRID_BACKENDS),
        (cli_experiments.Paper, choices.PAPERS),
        (cli_experiments.ScaleName, choices.REPRODUCTION_SCALES),
    ):
        assert [m.value for m in enum] == registry.names(), enum
    for enum, registry in (
        (cli_remote.InputLayout, choices.INPUT_LAYOUTS),
        (cli_remote.InputScale, choices.INPUT_SCALES),
        (cli_remote.OutputKind, choices.SERVE_OUTPUTS),
    ):  # "auto" leaves the choice to the library (the server's metadata, the reply)
        assert [m.value for m in enum] == ["auto", *registry.names()], enum


def test_every_option_with_choices_takes_them_from_a_registry() -> None:
    """No command keeps a hand-written list: each choice option's values are one registry's names."""
    import typing
    from enum import Enum

    import typer

    from nnmark import cli

    known = [set(r.names()) for r in vars(choices).values() if isinstance(r, Registry)]
    seen = 0
    group = typer.main.get_command(cli.app)
    commands = [(name, c) for name, c in group.commands.items()]  # type: ignore[attr-defined]
    for name, command in list(commands):
        commands += [(f"{name} {n}", c) for n, c in getattr(command, "commands", {}).items()]
    for name, command in commands:
        for param in command.params:
            annotation = param.type_descriptor.annotation  # typer 0.29: the parameter's Python type
            for enum in (annotation, *typing.get_args(annotation)):
                if isinstance(enum, type) and issubclass(enum, Enum):
                    seen += 1
                    names = {str(m.value) for m in enum}
                    assert names in known or names - {"auto"} in known, (name, param.name, sorted(names))
    assert seen >= 15, seen


@pytest.mark.parametrize(
    ("registry", "command"),
    [
        (choices.TESTS, ["verify", "--key", "absent.key", "--model", "absent-run", "--test"]),
        (choices.PROTOCOLS, ["verify", "--key", "absent.key", "--url", "http://127.0.0.1:9", "--protocol"]),
        (choices.DEFENSES, ["serve", "--model", "absent-run", "--defense"]),
        (choices.SERVE_OUTPUTS, ["serve", "--model", "absent-run", "--output"]),
        (choices.INPUT_DTYPES, ["serve", "--model", "absent-run", "--input-type"]),
        (
            choices.INPUT_LAYOUTS,
            ["verify", "--key", "absent.key", "--url", "http://127.0.0.1:9", "--input-layout"],
        ),
        (
            choices.INPUT_SCALES,
            ["verify", "--key", "absent.key", "--url", "http://127.0.0.1:9", "--input-scale"],
        ),
        (choices.GRID_BACKENDS, ["grid", "run", "absent.yaml", "--backend"]),
        (choices.REPRODUCTION_SCALES, ["reproduce", "zhang2018", "--out", "absent-out", "--scale"]),
        (choices.PAPERS, ["reproduce", "--out", "absent-out"]),
    ],
)
def test_a_registered_name_is_accepted_without_a_cli_edit(
    registry: Registry[Any],
    command: list[str],
    registered: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = invoke(*command, "brand-new")
    assert code == 2 and "Invalid value" in text and "brand-new" in text  # the parser refuses it
    registered(registry, "brand-new")
    words = [w for w in command if w in ("grid", "run", "reproduce", "verify", "serve")]
    code, text = invoke(*words, "--help")
    assert "brand-new" in text
    code, text = invoke(*command, "brand-new")
    # the parser takes it; the library then decides (the key or run does not exist, or the
    # implementation does not know the name: its own one-line error)
    assert code != 0 and "Invalid value" not in text, text
    assert "absent" in text or "brand-new" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing is written"


def test_registries_match_what_the_library_accepts() -> None:
    from nnmark.schemes import SCHEMES

    offered: set[str] = set()
    for name in SCHEMES.names():
        scheme = SCHEMES.get(name)
        assert set(scheme.tests) <= set(choices.TESTS.names()), name
        assert scheme.default_test in scheme.tests
        offered |= set(scheme.tests)
    # and --test offers nothing that no scheme's protocol runs (review of issue 12: a stray name passed)
    assert offered == set(choices.TESTS.names())
    pytest.importorskip("nnmark.http_oracle")
    pytest.importorskip("nnmark.serve")
    from nnmark import wire

    assert choices.PROTOCOLS is wire.PROTOCOLS  # the client's and server's codecs are the CLI's choices
    from nnmark.attacks.defenses import defenses

    # the CLI reads the defense names from the source (no torch at --help): the same as the registry
    assert sorted(defenses()) == choices.DEFENSES.names()
    assert set(wire.base.OUTPUTS) == set(choices.SERVE_OUTPUTS.names())
    assert set(wire.base.LAYOUTS) == set(choices.INPUT_LAYOUTS.names())
    assert set(wire.base.SCALES) == set(choices.INPUT_SCALES.names())
    assert set(wire.base.DTYPES) == set(choices.INPUT_DTYPES.names())


def test_experiment_registries_match_the_harness() -> None:
    """The papers, scales and backends the CLI offers are exactly those the harness runs."""
    from nnmark.experiments import runner
    from nnmark.experiments.reproduce import reproductions
    from nnmark.experiments.reproduce.base import SCALES
    from nnmark.extras import EXTRAS

    assert sorted(reproductions()) == choices.PAPERS.names()
    assert sorted(SCALES) == choices.REPRODUCTION_SCALES.names()
    assert sorted(runner.BACKENDS) == choices.GRID_BACKENDS.names()
    for backend in choices.GRID_BACKENDS.names():
        extra = choices.GRID_BACKENDS.get(backend)
        assert extra is None or extra in EXTRAS, backend


def test_every_listing_lists_something() -> None:
    from nnmark.listing import listing

    for what in choices.LISTINGS.names():
        rows = listing(what)
        assert rows and all(name and summary for name, summary, _ in rows), what


def test_training_settings_validate_like_other_configs() -> None:
    """TrainConfig is a pydantic dataclass: --set values convert, bad ones are one line, replace re-checks."""
    from dataclasses import replace

    from nnmark.errors import NnmarkError
    from nnmark.training import TrainConfig
    from nnmark.workflow import parse_settings, split_training_settings

    config, rest = split_training_settings(
        parse_settings(["lr=1e-3", "batch_size=32", "optimizer=sgd", "hidden=64"]), TrainConfig(epochs=2)
    )
    assert (config.lr, config.batch_size, config.optimizer, config.epochs) == (1e-3, 32, "sgd", 2)
    assert rest == {"hidden": 64}
    with pytest.raises(NnmarkError, match=r"^training setting batch_size=0 is invalid: .*greater than"):
        replace(config, batch_size=0)
    with pytest.raises(
        NnmarkError, match="training setting optimizer='rmsprop' is invalid: use one of adam, sgd"
    ):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(NnmarkError, match="epochs=True"):
        TrainConfig(epochs=True)
    with pytest.raises(NnmarkError, match="unknown_setting"):
        TrainConfig(unknown_setting=1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        config.lr = 0.1  # type: ignore[misc]
    assert hash(config) == hash(replace(config))


def test_an_unknown_command_or_option_is_a_usage_error_without_click_installed(monkeypatch) -> None:
    """Review of issue 12: typer bundles its own click; the CLI must not import the separate package."""
    import sys as _sys

    from nnmark import cli

    monkeypatch.setitem(_sys.modules, "click", None)  # as on a core install
    for argv in (["nnmark", "frobnicate"], ["nnmark", "verify", "--bogus-opt"]):
        monkeypatch.setattr(_sys, "argv", argv)
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 2


def _choice_options() -> list[tuple[str, str, set[str]]]:
    """(command, option, choices) of every option of the command line whose type is an enum."""
    import typing
    from enum import Enum

    import typer

    from nnmark import cli

    group = typer.main.get_command(cli.app)
    commands = list(group.commands.items())  # type: ignore[attr-defined]
    for name, command in list(commands):
        commands += [(f"{name} {n}", c) for n, c in getattr(command, "commands", {}).items()]
    found = []
    for name, command in commands:
        for param in command.params:
            annotation = param.type_descriptor.annotation
            for enum in (annotation, *typing.get_args(annotation)):
                if isinstance(enum, type) and issubclass(enum, Enum):
                    found.append((name, str(param.name), {str(m.value) for m in enum}))
    return found


@pytest.mark.parametrize(
    "name", [n for n, r in vars(choices).items() if isinstance(r, Registry) and n.isupper()]
)
def test_every_option_offering_a_registry_grows_with_it(name: str, registered: Any) -> None:
    """Review of issue 12: an option whose choices equal a registry's names today but are written by
    hand would pass the name comparisons above; registering a name must reach every such option."""
    registry = getattr(choices, name)
    before = set(registry.names())
    offering = [(c, o) for c, o, names in _choice_options() if before in (names, names - {"auto"})]
    registered(registry, "brand-new")
    after = {(c, o): names for c, o, names in _choice_options()}
    assert offering, name
    for option in offering:
        assert "brand-new" in after[option], f"{option} does not take its choices from {name}"
