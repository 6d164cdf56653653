"""The ``nnmark`` command line (typer). Thin: parses, calls the library, prints.

User errors end in one line on stderr and exit status 2 (``--verbose`` shows the traceback).
``verify`` exits 0 when the watermark is found, 1 when not, 2 when no verdict is possible; who
decided each number of a verdict is DESIGN.md's "Who decides a verdict" (owner mode, or
``--judge`` where nothing of the claimant's but the key counts).
"""

from __future__ import annotations

import json
import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeAlias

import typer
from rich.console import Console

from nnmark import __version__
from nnmark.choices import (
    DEFENSES,
    INPUT_DTYPES,
    INPUT_TYPES,
    LISTINGS,
    SERVE_OUTPUTS,
    TESTS,
    registry_enum,
)
from nnmark.cli_experiments import register as register_experiments
from nnmark.cli_remote import (
    BatchSizeOpt,
    HeaderOpt,
    InputLayout,
    InputLayoutOpt,
    InputScale,
    InputScaleOpt,
    OutputKind,
    OutputOpt,
    Protocol,
    RateLimitOpt,
    RemoteOptions,
    RetriesOpt,
    TimeoutOpt,
    build_oracle,
)
from nnmark.errors import NnmarkError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="nnmark",
    help="Prove ownership of neural networks by watermarking: embed, verify, attack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
key_app = typer.Typer(help="Inspect watermark keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")
register_experiments(app)  # nnmark grid run, nnmark reproduce

_state: dict[str, bool] = {"verbose": False}

Seed = Annotated[
    int, typer.Option(help="random seed for training (data order, initial weights); never key secrets")
]
Device = Annotated[str, typer.Option(help="cpu, cuda or auto")]
Force = Annotated[bool, typer.Option("--force", help="replace an existing --out")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="name=value setting (repeatable)")]
DataDir = Annotated[
    str | None, typer.Option("--data-dir", help="folder with dataset files (default $NNMARK_DATA)")
]


if TYPE_CHECKING:
    Test: TypeAlias = StrEnum
    InputType: TypeAlias = StrEnum
    Defense: TypeAlias = StrEnum
    ServeOutput: TypeAlias = StrEnum
    ServeInputType: TypeAlias = StrEnum
    ListWhat: TypeAlias = StrEnum
else:  # the choices are the library's registries (nnmark.choices): a new name needs no edit here
    Test = registry_enum("Test", TESTS)
    InputType = registry_enum("InputType", INPUT_TYPES)
    Defense = registry_enum("Defense", DEFENSES)
    ServeOutput = registry_enum("ServeOutput", SERVE_OUTPUTS)
    ListWhat = registry_enum("ListWhat", LISTINGS)
    ServeInputType = registry_enum("ServeInputType", INPUT_DTYPES)


def _version(value: bool) -> None:
    if value:
        out.print(f"nnmark {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log details, full tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """nnmark — watermark neural networks and prove ownership from predictions alone.

    Example: nnmark demo
    """
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _progress(json_mode: bool = False) -> bool:
    return not json_mode


def _config(epochs: int, seed: int, device: str, **kw: Any) -> Any:
    from nnmark.training import TrainConfig, resolve_device

    resolve_device(device)
    return TrainConfig(epochs=epochs, seed=seed, device=device, **kw)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="working folder, replaced each run")] = Path("nnmark-demo"),
    seed: Seed = 0,
    device: Device = "cpu",
) -> None:
    """Train a clean and a watermarked digit-cnn on MNIST-5k, verify both, attack, print verdicts.

    Example: nnmark demo --workdir /tmp/nnmark-demo
    """
    from nnmark.demo import run_demo

    run_demo(workdir, seed=seed, device=device, console=out)


@app.command("train")
def train_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="run folder to create")],
    data: Annotated[str, typer.Option(help="dataset name (nnmark list datasets)")] = "mnist5k",
    model: Annotated[str, typer.Option(help="architecture (nnmark list models)")] = "digit-cnn",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 5,
    seed: Seed = 0,
    device: Device = "cpu",
    settings: Sets = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Train a clean model into a run folder.

    Example: nnmark train --data mnist5k --model digit-cnn --epochs 5 --out runs/clean
    """
    from nnmark.workflow import TRAINING_KEYS, parse_settings, split_training_settings, train_run

    config, rest = split_training_settings(parse_settings(settings), _config(epochs, seed, device))
    if rest:
        raise NnmarkError(
            f"unknown training setting(s): {', '.join(rest)}; known: {', '.join(sorted(TRAINING_KEYS))}"
        )
    result = train_run(data, model, config, out_dir, force=force, data_dir=data_dir)
    out.print(f"trained {model} on {data}: test accuracy {result.metrics['test_accuracy']:.2%} -> {out_dir}")


@app.command()
def embed(
    scheme: Annotated[str, typer.Option(help="watermarking scheme (nnmark list schemes)")],
    out_dir: Annotated[Path, typer.Option("--out", help="run folder to create")],
    data: Annotated[str, typer.Option(help="dataset name")] = "mnist5k",
    model: Annotated[str, typer.Option(help="architecture")] = "digit-cnn",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 5,
    from_run: Annotated[
        Path | None, typer.Option("--from", help="fine-tune this run instead of training from scratch")
    ] = None,
    calibrate: Annotated[
        int | None,
        typer.Option(
            help="clean reference models trained to measure chance matches p0: 0 (none) or at least 3 "
            "(default: 4, afs 8; schemes whose p0 is exact train none)"
        ),
    ] = None,
    owner: Annotated[Path | None, typer.Option(help="owner key STEM.key to sign the watermark key")] = None,
    passphrase_env: Annotated[
        str | None, typer.Option(help="environment variable holding the owner key's passphrase")
    ] = None,
    key_seed: Annotated[
        int | None,
        typer.Option(
            help="research only: derive the key secret from this number, so the key is reproducible, "
            "guessable by anyone, and every verdict says so (default: the OS's random source)"
        ),
    ] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    settings: Sets = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Train a watermarked model; writes the run folder with watermark.key (mode 0600).

    Example: nnmark embed --scheme zhang-content --data mnist5k --model digit-cnn --epochs 5 --out runs/wm
    """
    from nnmark.identity import load_owner
    from nnmark.workflow import embed_run, parse_settings

    signer = load_owner(owner, passphrase_env) if owner else None
    result = embed_run(
        scheme,
        parse_settings(settings),
        data,
        model,
        _config(epochs, seed, device),
        out_dir,
        from_run=from_run,
        calibrate=calibrate,
        owner=signer,
        key_seed=key_seed,
        force=force,
        data_dir=data_dir,
    )
    m = result.metrics
    out.print(
        f"embedded {scheme} into {model} on {data}: test accuracy {m['test_accuracy']:.2%}, "
        f"watermark accuracy {m['watermark_accuracy']:.2%} -> {out_dir}"
    )
    out.print(f"key commitment (publish it now to fix priority): {result.commitment}")
    if key_seed is not None:
        err.print(f"nnmark: warning: --key-seed {key_seed}: anyone can regenerate this key (research only)")


@app.command("import")
def import_cmd(
    state_dict: Annotated[Path, typer.Option("--state-dict", help="a PyTorch state_dict file (.pt)")],
    model: Annotated[str, typer.Option(help="architecture the weights belong to")],
    out_dir: Annotated[Path, typer.Option("--out", help="run folder to create")],
    data: Annotated[str, typer.Option(help="dataset (sets input shape, classes, normalisation)")] = "mnist5k",
    num_classes: Annotated[int | None, typer.Option(help="outputs, if not the dataset's")] = None,
    settings: Sets = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Bring a plain PyTorch checkpoint in as a run folder (--set gives architecture arguments).

    Example: nnmark import --state-dict mine.pt --model digit-cnn --out runs/mine
    """
    from nnmark.importing import import_state_dict
    from nnmark.io import load_metrics
    from nnmark.workflow import parse_settings

    run = import_state_dict(
        state_dict,
        model,
        out_dir,
        data=data,
        num_classes=num_classes,
        data_dir=data_dir,
        force=force,
        arch_args=parse_settings(settings),
    )
    acc = load_metrics(run).get("test_accuracy")
    shown = f" (test accuracy on {data} {acc:.2%})" if isinstance(acc, float) else ""
    out.print(f"imported {state_dict} as {model}{shown} -> {run}")


@app.command("verify")
def verify_cmd(
    key: Annotated[Path, typer.Option(help="watermark.key (or the run folder holding it)")],
    model: Annotated[Path | None, typer.Option(help="suspect run folder")] = None,
    onnx: Annotated[Path | None, typer.Option(help="suspect ONNX file")] = None,
    url: Annotated[str | None, typer.Option(help="suspect prediction API")] = None,
    protocol: Annotated[Protocol, typer.Option(help="the prediction protocol --url speaks")] = Protocol(
        "nnmark"
    ),
    header: HeaderOpt = None,
    timeout: TimeoutOpt = 30.0,
    retries: RetriesOpt = 3,
    rate_limit: RateLimitOpt = None,
    input_layout: InputLayoutOpt = InputLayout("auto"),
    input_scale: InputScaleOpt = InputScale("auto"),
    output: OutputOpt = OutputKind("auto"),
    batch_size: BatchSizeOpt = 256,
    input_type: Annotated[
        InputType,
        typer.Option(
            help="what --url takes: float values, or uint8 pixels 0-255 (inputs outside [0, 1] are then "
            "refused, never clipped); auto asks the server"
        ),
    ] = InputType("auto"),
    test: Annotated[Test | None, typer.Option(help="statistical test (default: the scheme's)")] = None,
    owner_pub: Annotated[
        Path | None, typer.Option(help="the owner's STEM.pub the key must be signed by")
    ] = None,
    judge: Annotated[
        bool,
        typer.Option(
            "--judge",
            help="a judge's verdict: nothing of the claimant's but the key decides (p0 from --reference "
            "models or a --trust'ed calibration, never the claimant's own)",
        ),
    ] = False,
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            help="clean run folder the verifier names to measure p0 (repeat; at least 3; implies --judge)"
        ),
    ] = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(help="STEM.pub whose signed calibration.json counts as the verifier's own (repeatable)"),
    ] = None,
    probe_data: Annotated[
        str | None,
        typer.Option(help="dataset the verifier draws probe images from (default: the key's dataset)"),
    ] = None,
    data_dir: DataDir = None,
    alpha: Annotated[float, typer.Option(help="false-accusation probability allowed")] = 1e-6,
    budget: Annotated[int | None, typer.Option(help="most single inputs to send")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="also write the evidence report: FILE.html (one self-contained page) or FILE.json"),
    ] = None,
    cover_ratio: Annotated[
        float,
        typer.Option(
            help="cover queries per key query, hidden among them in random order and batch sizes (0: none)"
        ),
    ] = 0.0,
    cover_data: Annotated[
        str | None, typer.Option(help="dataset of the cover queries (default: the key's dataset)")
    ] = None,
    spend_log: Annotated[
        bool,
        typer.Option(help="record the key inputs sent in KEY.spent.jsonl and send unspent ones first"),
    ] = True,
    seed: Annotated[
        int,
        typer.Option(
            help="accepted for scripts, unused: the verifier draws probes and query order from the OS's "
            "random source"
        ),
    ] = 0,
    device: Device = "cpu",
) -> None:
    """Query a suspect with the key and decide: exit 0 found, 1 not found, 2 error or no verdict.

    Without --judge an owner checks a suspect and p0 may come from the owner's own signed
    calibration (the verdict says so); a judge names clean models with --reference.

    Example: nnmark verify --key runs/wm/watermark.key --model runs/suspect --judge
    --reference runs/c1 --reference runs/c2 --reference runs/c3 --json
    """
    from nnmark.calibration import load_clean_models
    from nnmark.identity import load_public
    from nnmark.keyfile import load_key
    from nnmark.verify.owner import owner_checked_context
    from nnmark.verify.session import verify_key_file

    del seed  # nothing a verifier draws may be predictable
    _require_extras(onnx=onnx is not None, serve=url is not None)
    k = load_key(key)
    ctx = owner_checked_context(
        key,
        k,
        owner_pub,
        alpha=alpha,
        judge=judge,
        references=load_clean_models(reference or [], k),
        trust=[load_public(t) for t in trust or []],
        probe_data=probe_data,
        data_dir=data_dir,
    )
    remote = RemoteOptions.from_cli(
        header,
        protocol=protocol,
        timeout=timeout,
        retries=retries,
        rate_limit=rate_limit,
        input_type=input_type,
        input_layout=input_layout,
        input_scale=input_scale,
        output=output,
        batch_size=batch_size,
    )
    suspect = build_oracle(model, onnx, url, remote, None, device)
    session = verify_key_file(
        key,
        k,
        suspect,
        ctx,
        suspect_name=str(model or onnx or url),
        alpha=alpha,
        budget=budget,
        test=test.value if test else None,
        cover_ratio=cover_ratio,
        cover_data=cover_data,
        data_dir=data_dir,
        spend_log=spend_log,
    )
    verdict = session.verdict
    for warning in session.warnings:
        err.print(f"nnmark: warning: {warning}", markup=False)
    if report is not None:
        from nnmark.verify.report import describe_suspect, write_report

        write_report(report, k, verdict, describe_suspect(model, onnx, url, suspect), session.oracle.log)
    if as_json:
        sys.stdout.write(json.dumps(verdict.to_json(), allow_nan=True, default=str) + "\n")
    else:
        _print_verdict(verdict)
    if verdict.watermarked is None:
        if not as_json:
            err.print(f"nnmark: no verdict possible: {verdict.reason}")
        raise typer.Exit(2)
    raise typer.Exit(0 if verdict.watermarked else 1)


def _require_extras(onnx: bool = False, serve: bool = False) -> None:
    """Stop before any work when a feature's extra is missing: one line naming it (nnmark.extras)."""
    from nnmark.extras import require, require_all

    if onnx:
        require_all("onnx")
    if serve:
        require_all("serve")
        require("serve", "nnmark.http_oracle")
        require("serve", "nnmark.serve")


def _print_verdict(v: Any) -> None:
    word = {True: "[bold green]FOUND[/]", False: "[bold red]NOT FOUND[/]", None: "[yellow]NO VERDICT[/]"}
    claimant = v.decided_by.get("p0", {}).get("source") == "claimant"
    who = " — the owner's check: p0 from the claimant's calibration, not a judge's" if claimant else ""
    out.print(f"watermark {word[v.watermarked]}  ({v.scheme}, test {v.test}){who}")
    out.print(
        f"  p-value {v.p_value:.3g} (alpha {v.alpha:g}); matches {v.matches}, "
        f"threshold {v.threshold}, queries {v.queries}"
    )
    if v.reason:
        out.print(f"  {v.reason}", markup=False)
    if v.decided_by:
        out.print("  decided by:")
        for name, entry in v.decided_by.items():
            how = f" — {entry['how']}" if entry.get("how") else ""
            out.print(f"    {name} = {_shown(entry.get('value'))} [{entry.get('source')}]{how}", markup=False)
    if v.guarantee:
        out.print(f"  guarantee: {v.guarantee}", markup=False)
    for n in v.notes:
        out.print(f"  note: {n}", markup=False)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def attack(
    name: Annotated[str, typer.Argument(help="attack (nnmark list attacks)")],
    model: Annotated[Path, typer.Option(help="run folder to attack")],
    out_dir: Annotated[Path, typer.Option("--out", help="run folder to create")],
    data: Annotated[
        str, typer.Option(help="the owner's dataset (accuracy is measured on its held-out split)")
    ] = "mnist5k",
    attacker_fraction: Annotated[
        float,
        typer.Option(
            help="attacker's images as a share of the owner's training-set size (Namba: 0.01, 0.05, 0.1), "
            "drawn from the held-out split, never the owner's training images"
        ),
    ] = 0.1,
    attacker_data: Annotated[
        str | None,
        typer.Option(help="draw the attacker's images from this dataset instead (e.g. fashion-mnist)"),
    ] = None,
    key: Annotated[
        list[Path] | None, typer.Option(help="keys to verify after the attack (repeatable)")
    ] = None,
    owner: Annotated[
        Path | None, typer.Option(help="piracy/forgery: the attacker's STEM.key (default: a new identity)")
    ] = None,
    seed: Seed = 0,
    device: Device = "cpu",
    settings: Sets = None,
    data_dir: DataDir = None,
    force: Force = False,
) -> None:
    """Run a removal attack on a model and write the attacked model as a new run folder.

    The victim folder is never changed; the new folder's metrics.json records accuracy before and
    after, seconds, queries used, the attacker's data and the verdict of every --key.
    piracy and forgery also write the attacker's key (watermark.key, signed by the attacker) and,
    without --owner, the attacker's attacker.pub into the folder. Attacks that change the weights
    (finetune, prune, fine-prune, neuron-prune, transfer) run through the victim's exponential-
    weighting layers when it was embedded with --set ew=T (Namba's thief); --set ew=0 attacks the
    folded weights.

    Example: nnmark attack finetune --model runs/wm --data mnist5k --out runs/wm-ft --set epochs=3
    """
    from nnmark.attacks.run import attack_run
    from nnmark.attacks.summary import attack_lines
    from nnmark.workflow import parse_settings

    result = attack_run(
        name,
        model,
        out_dir,
        data,
        _config(1, seed, device),
        settings=parse_settings(settings),
        attacker_fraction=attacker_fraction,
        attacker_data=attacker_data,
        keys=key or [],
        owner=owner,
        data_dir=data_dir,
        force=force,
    )
    for line in attack_lines(name, out_dir, result):
        out.print(line, markup=False)


@app.command()
def calibrate(
    key: Annotated[Path, typer.Option(help="watermark.key to calibrate")],
    model: Annotated[list[Path], typer.Option(help="clean run folders (repeat; at least 3)")],
    signer: Annotated[
        Path,
        typer.Option(
            help="STEM.key that signs calibration.json: the key's owner (owner mode) or a verifier whom "
            "a judge trusts (--trust STEM.pub)"
        ),
    ],
    passphrase_env: Annotated[
        str | None, typer.Option(help="environment variable holding the signer key's passphrase")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the calibration as JSON")] = False,
) -> None:
    """Measure the chance match rate p0 on clean models; writes calibration.json, signed, beside the key.

    Example: nnmark calibrate --key runs/wm/watermark.key --model runs/c1 --model runs/c2 --model runs/c3
    --signer ada.key
    """
    from nnmark.calibration import calibrate_later
    from nnmark.identity import load_owner

    owner = load_owner(signer, passphrase_env)
    cal, path = calibrate_later(key, model, owner)
    if as_json:
        sys.stdout.write(json.dumps(cal.to_json()) + "\n")
        return
    out.print(f"rates per clean model: {', '.join(f'{r:.3f}' for r in cal.rates)}")
    out.print(f"p0 = {cal.p0:.4f} ({cal.method}) -> {path}, signed by {owner.name}", markup=False)


@app.command()
def keygen(
    owner: Annotated[str, typer.Option(help="the owner's name")],
    out_stem: Annotated[Path, typer.Option("--out", help="writes STEM.key (0600) and STEM.pub")],
    passphrase_env: Annotated[
        str | None, typer.Option(help="environment variable whose value encrypts STEM.key")
    ] = None,
    force: Force = False,
) -> None:
    """Create an owner identity (Ed25519).

    Example: nnmark keygen --owner "Ada Lovelace" --out ada
    """
    from nnmark.identity import generate_owner, save_owner
    from nnmark.passphrase import passphrase_from_env

    phrase = passphrase_from_env(passphrase_env)
    key_path, pub_path = save_owner(generate_owner(owner), out_stem, phrase, force=force)
    out.print(f"owner {owner}: private key {key_path} (keep it secret), public key {pub_path}")


@key_app.command("info")
def key_info(
    key: Annotated[Path, typer.Argument(help="watermark.key")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a key's owner, scheme, commitment and signature state, never its inputs or secret.

    Example: nnmark key info runs/wm/watermark.key
    """
    from nnmark.keyfile import load_key
    from nnmark.keyinfo import key_info, key_info_lines
    from nnmark.verify.spend import balance

    k = load_key(key)
    info = {**key_info(k), "spent": str(balance(key, k))}
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    for line in key_info_lines(info):  # plain lines: hashes must never be cut to the terminal width
        out.print(line, markup=False)


@app.command("export-onnx")
def export_onnx(
    model: Annotated[Path, typer.Option(help="run folder")],
    out_file: Annotated[Path, typer.Option("--out", help="ONNX file to write")],
    force: Force = False,
) -> None:
    """Export a run's model to ONNX (float32 N×C×H×W in [0, 1] -> logits).

    Example: nnmark export-onnx --model runs/wm --out wm.onnx
    """
    _require_extras(onnx=True)
    from nnmark.onnx_export import export

    export(model, out_file, force=force)
    out.print(f"exported {model} -> {out_file}")


@app.command()
def serve(
    model: Annotated[Path, typer.Option(help="run folder to serve")],
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8000,
    defense: Annotated[
        Defense,
        typer.Option(
            help="a query defense of `nnmark list attacks`, fitted on the run's training images: "
            "autoencoder (Namba 2019 query modification, trained once, cached in RUN/defense/), rejection, "
            "reject (wrong labels for inputs a detector flags), jpeg, blur, noise (every input "
            "transformed)"
        ),
    ] = Defense("none"),
    output: Annotated[ServeOutput, typer.Option(help="what predictions carry")] = ServeOutput("logits"),
    name: Annotated[
        str | None, typer.Option(help="model name in TF-Serving/KServe URLs (default: the run folder's name)")
    ] = None,
    input_layout: Annotated[
        InputLayout,
        typer.Option(
            help="image layout of the tf-serving and kserve-v2 endpoints (auto: tf-serving nhwc, "
            "kserve-v2 nchw; the nnmark endpoint is always nchw floats in [0, 1])"
        ),
    ] = InputLayout("auto"),
    input_scale: Annotated[
        InputScale, typer.Option(help="float values the tf-serving and kserve-v2 endpoints take (auto: 0-1)")
    ] = InputScale("auto"),
    input_type: Annotated[
        ServeInputType,
        typer.Option(help="number type of the tf-serving and kserve-v2 endpoints (uint8: pixels 0-255)"),
    ] = ServeInputType("float32"),
    max_batch: Annotated[int, typer.Option(help="most inputs in one request (more: HTTP 413)")] = 1024,
    max_body_mb: Annotated[float, typer.Option(help="largest request body in MiB (larger: HTTP 413)")] = 32.0,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="name=value parameter of the defense (repeatable; `nnmark list attacks --verbose`), "
            "e.g. --defense jpeg --set quality=50",
        ),
    ] = None,
    defense_fraction: Annotated[
        float, typer.Option(help="share of the training images the autoencoder detector trains on")
    ] = 0.1,
    data_dir: DataDir = None,
    seed: Seed = 0,
) -> None:
    """Serve a run's model over HTTP (nnmark, TF-Serving and KServe v2 protocols) until Ctrl-C.

    Example: nnmark serve --model runs/wm --port 8000, then
    nnmark verify --key runs/wm/watermark.key --url http://127.0.0.1:8000
    """
    _require_extras(serve=True)
    from nnmark.serve import run_server
    from nnmark.workflow import parse_settings

    shown = name or model.resolve().name

    def announce(url: str) -> None:
        err.print(f"serving {model} at {url} (Ctrl-C stops)")
        err.print(
            f"  nnmark: {url}   tf-serving: {url}/v1/models/{shown}   kserve-v2: {url}/v2/models/{shown}",
            soft_wrap=True,
        )

    run_server(
        model,
        host,
        port,
        defense.value,
        announce=announce,
        name=name,
        output=output.value,
        input_layout=None if input_layout == "auto" else input_layout.value,
        input_scale="0-1" if input_scale == "auto" else input_scale.value,
        input_dtype=input_type.value,
        max_batch=max_batch,
        max_body_bytes=max(1, int(max_body_mb * 2**20)),
        data_dir=data_dir,
        seed=seed,
        defense_fraction=defense_fraction,
        defense_settings=parse_settings(settings),
        progress=True,
    )


@app.command("list")
def list_cmd(
    what: Annotated[ListWhat, typer.Argument(help="schemes, attacks, models or datasets")],
    verbose: Annotated[bool, typer.Option("--verbose", help="show parameters and defaults")] = False,
) -> None:
    """List registered schemes, attacks, models or datasets.

    Example: nnmark list schemes --verbose
    """
    from nnmark.listing import listing

    for name, summary, params in listing(what.value):
        out.print(f"[bold]{name}[/]  {summary}")
        if verbose:
            for pname, default, desc in params:
                out.print(f"    {pname} = {default}  {desc}")


def _fail(message: str) -> NoReturn:
    err.print(f"nnmark: error: {message}", soft_wrap=True, markup=False)
    raise SystemExit(2)


def main() -> None:
    """Entry point: user errors become one line and exit 2."""
    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except NnmarkError as e:
        if _state["verbose"]:
            raise
        _fail(str(e))
    except KeyboardInterrupt:
        err.print("nnmark: interrupted")
        raise SystemExit(130) from None
    except (typer.BadParameter, typer.Abort) as e:
        _fail(str(e))
    except Exception as e:  # click usage errors and anything unexpected
        # typer bundles its own click (typer._click) and no longer depends on click itself
        click_error = typer.BadParameter.__mro__[2]
        if isinstance(e, click_error):
            e.show()  # type: ignore[attr-defined]
            raise SystemExit(2) from None
        if _state["verbose"]:
            raise
        _fail(f"{e.__class__.__name__}: {e} (rerun with --verbose for the traceback)")


if __name__ == "__main__":
    main()
