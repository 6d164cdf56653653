"""Run one cell of a grid and return its record; never raises (a failed cell is a record too).

The ``watermark`` task composes the library's own workflow: :func:`nnmark.workflow.train_run` or
:func:`~nnmark.workflow.embed_run`, then each attack of :mod:`nnmark.attacks` on a copy of the
model (removal and claim attacks; ``query-modification`` wraps the model in Namba 2019's
autoencoder oracle), with :func:`nnmark.verify` after every step. Verification here is owner mode
(p0 from the key's own calibration, as ``nnmark attack`` does), with the verifier's random draws
seeded from the cell's seed so that a cell's record is reproducible.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnmark.errors import NnmarkError
from nnmark.experiments.grid import Cell, cell_id
from nnmark.experiments.records import FAILED, OK, clean_json, versions
from nnmark.registry import Registry

log = logging.getLogger(__name__)

#: a cell task: the cell and the torch device its models train on ("cpu", "cuda", "cuda:N", "auto")
Task = Callable[[Cell, str], dict[str, Any]]
TASKS: Registry[Task] = Registry("cell task")

#: metrics.json entries that are timings or provenance, not results (kept under ``timings``)
TIMING_KEYS = ("seconds", "images_per_second", "created", "device", "pretrain_seconds")


def run_cell(cell: Cell, device: str = "cpu") -> dict[str, Any]:
    """Run ``cell`` with one torch thread, its models trained on ``device`` (everything else on the
    CPU); return its record (status ``failed`` with the error on failure). The device is how a cell
    runs, not what it is: it is not part of the cell's id, and the record's timings name it."""
    import torch

    torch.set_num_threads(1)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    record: dict[str, Any] = {"id": cell_id(cell), "config": cell, "versions": versions()}
    try:
        out = TASKS.get(str(cell.get("task", "watermark")))(cell, device)
        record.update(status=OK, metrics=out.get("metrics", {}), verdicts=out.get("verdicts", {}))
        timings = out.get("timings", {})
    except Exception as e:  # a failed cell is recorded and the grid goes on
        error = f"{e.__class__.__name__}: {e}"
        return failed_record(cell, error, started, time.perf_counter() - t0, traceback.format_exc())
    record["timings"] = {"started": started, "seconds": round(time.perf_counter() - t0, 3), **timings}
    return cast(dict[str, Any], clean_json(record))


def check_cells(cells: list[Cell]) -> None:
    """Refuse, before anything runs, a cell whose task is unknown or whose watermark settings are
    not the task's (one line naming the cell): otherwise each would only fail at run time."""
    for cell in cells:
        task = TASKS.get(str(cell.get("task", "watermark")))  # unknown: NnmarkError naming the known
        if task is watermark_task:
            try:
                watermark_cell(cell)
            except NnmarkError as e:
                raise NnmarkError(f"{e} (in {cell})") from None


def failed_record(cell: Cell, error: str, started: str, seconds: float, trace: str = "") -> dict[str, Any]:
    """The record of a cell that failed with ``error``: one shape whoever saw the failure (run_cell
    for an exception, the runner for a worker process that died running the cell)."""
    record = {
        "id": cell_id(cell),
        "config": cell,
        "versions": versions(),
        "status": FAILED,
        "metrics": {},
        "verdicts": {},
        "error": error,
        "traceback": trace,
        "timings": {"started": started, "seconds": round(seconds, 3)},
    }
    return cast(dict[str, Any], clean_json(record))


class AttackSpec(BaseModel):
    """One attack of a cell: a registered attack (or ``query-modification``) and its parameters."""

    model_config = ConfigDict(extra="allow")

    name: str
    fraction: float = Field(0.1, gt=0, le=1, description="attacker's share of the owner's training set")
    label: str = ""
    attacker_data: str | None = Field(
        None, description="another dataset the attacker's images come from, with its own labels"
    )
    attacker_data_dir: str | None = None
    relabel: int | None = Field(
        None,
        ge=2,
        description="the attacker's labels y mapped to y·k // C: a coarser task of k classes from the same "
        "images (a student task for transfer learning when no second dataset is present)",
    )

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def title(self) -> str:
        return self.label or " ".join([self.name, *(f"{k}={v}" for k, v in sorted(self.params().items()))])


class WatermarkCell(BaseModel):
    """The ``watermark`` task's cell (unknown names are refused)."""

    model_config = ConfigDict(extra="forbid")

    task: str = "watermark"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    n_train: int | None = Field(None, ge=2, description="first N training images (None: all)")
    n_test: int | None = Field(None, ge=1, description="first N test images (None: all)")
    model: str = "digit-cnn"
    scheme: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="scheme and training settings (--set)")
    epochs: int = Field(3, ge=1)
    seed: int = 0
    key_seed: int | None = Field(None, description="research key seed (default: the cell's seed)")
    calibrate: int = Field(0, ge=0)
    owner: bool = Field(False, description="sign the key with a fresh owner identity (Li 2019 needs one)")
    attacks: list[AttackSpec] = Field(default_factory=list)
    measure: list[str] = Field(default_factory=list, description="epoch_curve, fresh_keys, auc")
    verify: bool = True
    random_keys: int = Field(
        0,
        ge=0,
        description="Li 2019 Sec. 7.3: verify this many keys of other owners, never embedded, on the model",
    )
    random_key_scheme: str | None = Field(None, description="scheme of the random keys (default: the cell's)")
    train_share: float | None = Field(
        None,
        gt=0,
        le=1,
        description="train on the attacker's share of this size instead of the owner's training split "
        "(the images an attack of this seed draws; Li 2019 Figs. 2/4: the pirate training from scratch)",
    )
    test: str | None = None
    alpha: float = 1e-6
    label: str = ""
    #: free tags used by the paper tables (ignored by the task)
    tags: dict[str, Any] = Field(default_factory=dict)


MEASURES = ("epoch_curve", "fresh_keys", "auc")


def watermark_cell(raw: Cell) -> WatermarkCell:
    """``raw`` as the watermark task's cell; an unknown or ill-typed setting, or an unknown measure,
    is one NnmarkError naming the cell (at run time, and by :func:`check_cells` before a grid runs)."""
    try:
        c = WatermarkCell(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise NnmarkError(f"cell {cell_id(raw)}: {where}: {first['msg']}") from None
    unknown = set(c.measure) - set(MEASURES)
    if unknown:
        raise NnmarkError(
            f"cell {cell_id(raw)}: unknown measure(s) {sorted(unknown)}; known: {', '.join(MEASURES)}"
        )
    return c


def subset_data(name: str, data_dir: str | None, n_train: int | None, n_test: int | None) -> Any:
    from nnmark.data import load_dataset

    data = load_dataset(name, data_dir)
    return replace(
        data,
        train_x=data.train_x[:n_train],
        train_y=data.train_y[:n_train],
        test_x=data.test_x[:n_test],
        test_y=data.test_y[:n_test],
    )


def coarse_labels(data: Any, classes: int) -> Any:
    """``data`` with its training labels y mapped to y·k // C (k = ``classes``, C = its classes): a
    coarser task from the same images (digits 0-1 → 0, 2-3 → 1, ... for k = 5 on MNIST)."""
    if classes >= data.num_classes:
        raise NnmarkError(f"relabel={classes} must be fewer than the data's {data.num_classes} classes")
    return replace(
        data,
        train_y=data.train_y * classes // data.num_classes,
        num_classes=classes,
        class_names=tuple(str(i) for i in range(classes)),
    )


def verdict_json(v: Any) -> dict[str, Any]:
    keep = (
        "scheme",
        "test",
        "watermarked",
        "p_value",
        "alpha",
        "queries",
        "matches",
        "threshold",
        "p0",
        "reason",
    )
    d = v.to_json()
    return {**{k: d[k] for k in keep}, "evidence": d.get("evidence", {})}


@TASKS.register("watermark")
def watermark_task(raw: Cell, device: str = "cpu") -> dict[str, Any]:
    """Train (clean) or embed, then attack; metrics and verdicts at every step (module docstring)."""
    import torch

    from nnmark.attacks import ATTACKS, ClaimAttack, attacker_share
    from nnmark.attacks.base import RemovalAttack, with_victim_ew
    from nnmark.attacks.measure import OracleModule
    from nnmark.data import load_dataset
    from nnmark.experiments import probes
    from nnmark.identity import generate_owner
    from nnmark.io import load_spec
    from nnmark.models import build_model
    from nnmark.oracle import Oracle, TorchOracle
    from nnmark.training import TrainConfig, evaluate, train
    from nnmark.verify.context import VerifyContext
    from nnmark.verify.verifier import verify
    from nnmark.workflow import embed_run, load_model, model_spec, split_training_settings, train_run

    c = watermark_cell(raw)
    data = subset_data(c.dataset, c.data_dir, c.n_train, c.n_test)
    if c.train_share is not None:
        data = attacker_share(data, c.train_share, c.seed)
    base = TrainConfig(epochs=c.epochs, seed=c.seed, device=device)
    metrics: dict[str, Any] = {}
    verdicts: dict[str, Any] = {}
    timings: dict[str, Any] = {}

    def split(m: dict[str, Any], where: str) -> dict[str, Any]:
        timings[where] = {k: m[k] for k in TIMING_KEYS if k in m}
        return {k: v for k, v in m.items() if k not in TIMING_KEYS}

    def judge(key: Any, oracle: Oracle, salt: int) -> dict[str, Any]:
        ctx = VerifyContext(rng=cast(Any, random.Random(c.seed * 1000 + salt)), data_dir=c.data_dir)
        return verdict_json(verify(key, oracle, alpha=c.alpha, test=c.test, context=ctx))

    with tempfile.TemporaryDirectory(prefix="nnmark-cell-") as tmp:
        run = Path(tmp) / "run"
        key = None
        model: torch.nn.Module
        curve: list[float] = []
        if c.scheme is None:
            config, rest = split_training_settings(c.params, base)
            if rest:
                raise NnmarkError(f"a clean cell takes training settings only, not {sorted(rest)}")
            if "epoch_curve" in c.measure:  # train_run's steps, with a probe in the training loop
                spec = model_spec(c.model, data)
                torch.manual_seed(config.seed)
                model = build_model(spec)
                probe = probes.EpochProbe(model, data.test_x, data.test_y, steps_per_epoch(data, config))
                t0 = time.perf_counter()
                train(model, data.train_x, data.train_y, config, mixer=probe, progress=False)
                timings["model"] = {"seconds": round(time.perf_counter() - t0, 3)}
                model = model.cpu().eval()
                metrics["model"] = {"test_accuracy": evaluate(model, data.test_x, data.test_y)}
                curve = probe.curve
            else:
                result = train_run(data, c.model, config, run, progress=False)
                metrics["model"] = split(result.metrics, "model")
                model = load_model(run)
                spec = load_spec(run)
        else:
            config, _ = split_training_settings(c.params, base)
            owner = generate_owner("nnmark grid owner") if c.owner else None
            key_seed = c.seed if c.key_seed is None else c.key_seed
            if "epoch_curve" in c.measure:
                with probes.probe_embedding(c.scheme, data, config) as probe:
                    result = embed_run(
                        c.scheme,
                        c.params,
                        data,
                        c.model,
                        base,
                        run,
                        calibrate=c.calibrate,
                        owner=owner,
                        key_seed=key_seed,
                        progress=False,
                    )
                    curve = list(probe.curve)
            else:
                result = embed_run(
                    c.scheme,
                    c.params,
                    data,
                    c.model,
                    base,
                    run,
                    calibrate=c.calibrate,
                    owner=owner,
                    key_seed=key_seed,
                    progress=False,
                )
            metrics["model"] = split(result.metrics, "model")
            model = load_model(run)
            spec = load_spec(run)
            key = result.key
        if "epoch_curve" in c.measure:
            metrics["model"]["epoch_curve"] = [*curve, metrics["model"]["test_accuracy"]]
        clean_ref = None
        if "auc" in c.measure and key is not None:  # Namba's AUC needs a clean model of the same recipe
            ref_cfg = replace(config, seed=c.seed + 1000)
            ref = train_run(data, c.model, ref_cfg, Path(tmp) / "clean", progress=False)
            timings["clean_reference"] = {k: ref.metrics[k] for k in TIMING_KEYS if k in ref.metrics}
            clean_ref = load_model(Path(tmp) / "clean")
            metrics["clean_reference"] = {"test_accuracy": ref.metrics["test_accuracy"]}

        def key_metrics(m: torch.nn.Module) -> dict[str, Any]:
            if key is None:
                return {}
            scheme = probes.scheme_for_key(key)
            out: dict[str, Any] = {"watermark_accuracy": scheme.watermark_accuracy(m, key)}
            out.update(scheme.metrics(m, key))
            if "fresh_keys" in c.measure:
                out["new_key_accuracy"] = probes.fresh_key_accuracy(key, m, data, c.seed)
            if clean_ref is not None:
                out["auc"] = probes.namba_auc(m, clean_ref, key, c.seed)
            return out

        if key is not None:
            for name, value in key_metrics(model).items():  # embed_run's metrics already hold most
                metrics["model"].setdefault(name, value)
            if c.verify:
                verdicts["model"] = judge(key, TorchOracle(model), 0)

        if c.random_keys:
            scheme_name = c.random_key_scheme or c.scheme
            if scheme_name is None:
                raise NnmarkError("random_keys needs a scheme (random_key_scheme for a clean cell)")
            found = random_key_verdicts(
                scheme_name, c.params if c.scheme else {}, model, spec, data, c.random_keys, Path(tmp), judge
            )
            metrics["model"]["random_keys"] = {"tested": c.random_keys, **found}

        for i, spec_a in enumerate(c.attacks):
            label = spec_a.title()
            other = (
                load_dataset(spec_a.attacker_data, spec_a.attacker_data_dir) if spec_a.attacker_data else None
            )
            share = attacker_share(data, spec_a.fraction, c.seed, other)
            # accuracy after the attack: on the owner's test images the attacker does not hold; the
            # unattacked model on the same images beside it (``test_accuracy_before``), as the papers'
            # before/after columns set them (Zhong Table 1, Namba Table 3): ``model``'s test_accuracy
            # is on every test image, the attacker's share included
            held_x, held_y = share.test_x, share.test_y
            before = evaluate(model, held_x, held_y)
            if spec_a.relabel is not None:
                share = coarse_labels(share, spec_a.relabel)
            t0 = time.perf_counter()
            if spec_a.name == "query-modification":
                from nnmark.attacks.query import QueryModification

                qm = QueryModification(model, seed=c.seed, **{"device": device, **spec_a.params()}).fit(
                    share.train_x, progress=False
                )
                m_out: dict[str, Any] = {
                    "test_accuracy": float(
                        (qm.labels(held_x.float().div(255)) == held_y).float().mean()
                    ),
                    "test_accuracy_before": before,
                }
                normal = qm.inspect(held_x.float().div(255))
                m_out["false_alarm_rate"] = float(normal.flagged.float().mean())
                if key is not None:
                    seen = qm.inspect(key.inputs)
                    m_out["detection"] = {
                        "rec": float(seen.by_rec.float().mean()),
                        "jsd": float(seen.by_jsd.float().mean()),
                        "both": float((seen.by_rec | seen.by_jsd).float().mean()),
                        "flagged": float(seen.flagged.float().mean()),
                    }
                    # the scheme's own measure, as key_metrics takes it, asked through the defense
                    m_out["watermark_accuracy"] = probes.scheme_for_key(key).watermark_accuracy(
                        OracleModule(qm), key
                    )
                    if clean_ref is not None:  # Namba Fig. 2: the suspect's answers through the defense
                        m_out["auc"] = probes.namba_auc(qm, clean_ref, key, c.seed)
                    if c.verify:
                        verdicts[label] = judge(key, qm, i + 1)
            else:
                # as `nnmark attack` does: through the victim's own EW layers (Namba's thief holds f_K)
                settings, _ = with_victim_ew(ATTACKS.get(spec_a.name), spec_a.params(), run)
                attack = cast(RemovalAttack[Any], ATTACKS.create(spec_a.name, **settings))
                attack.owner_data = data  # the owner's step of an attack (transfer's recovery)
                extra: dict[str, Any] = {}
                if isinstance(attack, ClaimAttack):
                    claim = attack.claim(
                        model, spec, share, config, victim_keys=[key] if key else [], progress=False
                    )
                    attacked, extra = claim.model, claim.metrics
                else:
                    attacked = attack(model, spec, share, config, False)
                attacked = attacked.cpu().eval()
                m_out = {
                    "test_accuracy": evaluate(attacked, held_x, held_y),
                    "test_accuracy_before": before,
                    **key_metrics(attacked),
                    **({"ew": settings["ew"]} if "ew" in settings else {}),
                }
                if extra:
                    m_out["claim"] = extra
                if attack.report:  # what the attack measured (anomaly index, queries, student accuracy)
                    m_out["report"] = attack.report
                if key is not None and c.verify:
                    verdicts[label] = judge(key, TorchOracle(attacked), i + 1)
            timings[label] = {"seconds": round(time.perf_counter() - t0, 3)}
            metrics[label] = m_out
    return {"metrics": metrics, "verdicts": verdicts, "timings": timings}


def random_key_verdicts(
    scheme_name: str,
    settings: dict[str, Any],
    model: Any,
    spec: Any,
    data: Any,
    count: int,
    folder: Path,
    judge: Callable[[Any, Any, int], dict[str, Any]],
) -> dict[str, Any]:
    """Li 2019 Sec. 7.3's false-positive test: ``count`` keys of other owners (each a fresh identity and
    key secret, made by the workflow's own key steps, never embedded) verified on ``model``."""
    from nnmark.identity import generate_owner
    from nnmark.keyfile import load_key, save_key
    from nnmark.oracle import TorchOracle
    from nnmark.schemes import SCHEMES
    from nnmark.training import TrainConfig
    from nnmark.workflow import build_key, prepare_secret, split_training_settings

    _, scheme_params = split_training_settings(settings, TrainConfig())
    found = not_found = no_verdict = 0
    accuracies: list[float] = []
    for i in range(count):
        owner = generate_owner(f"random owner {i}")
        scheme = SCHEMES.get(scheme_name)(owner=owner, **scheme_params)
        secret, gen = prepare_secret(scheme, owner, None)
        material = scheme.assign_labels(scheme.generate(data, gen), data.num_classes, [])
        path = folder / f"random-{i}.key"
        save_key(
            path,
            build_key(scheme, material, replace(spec, num_classes=spec.num_classes), None, secret),
            owner,
        )
        key = load_key(path)
        accuracies.append(SCHEMES.get(scheme_name)(**scheme_params).watermark_accuracy(model, key))
        v = judge(key, TorchOracle(model), 10_000 + i)
        found += v["watermarked"] is True
        not_found += v["watermarked"] is False
        no_verdict += v["watermarked"] is None
    return {
        "found": found,
        "not_found": not_found,
        "no_verdict": no_verdict,
        "accuracy_mean": sum(accuracies) / len(accuracies),
        "accuracy_max": max(accuracies),
        "above_80": sum(a > 0.8 for a in accuracies),
    }


def steps_per_epoch(data: Any, config: Any) -> int:
    from nnmark.experiments.probes import steps_per_epoch as steps

    return steps(len(data.train_x), config.batch_size)


@TASKS.register("fail")
def fail_task(raw: Cell, device: str = "cpu") -> dict[str, Any]:
    """A task that always fails (for checking that a grid goes on past a failed cell)."""
    raise RuntimeError(str(raw.get("message", "this cell fails on purpose")))


@TASKS.register("echo")
def echo_task(raw: Cell, device: str = "cpu") -> dict[str, Any]:
    """A task that returns its cell's ``value`` (and sleeps ``sleep`` s): tests runners without training."""
    time.sleep(float(raw.get("sleep", 0.0)))
    return {"metrics": {"value": raw.get("value")}}


@TASKS.register("crash")
def crash_task(raw: Cell, device: str = "cpu") -> dict[str, Any]:
    """A task that kills its own process with exit code ``code`` (default 3), as a segfault or an
    out-of-memory kill would: tests that a runner records the cell and goes on (with worker
    processes only: in-process, ``workers`` = 0, it ends the grid's own process). With ``after``
    (seconds) the cell finishes and a thread it left behind kills the process that much later, so
    the death falls on no cell of its own."""
    code = int(raw.get("code", 3))
    if "after" in raw:
        import threading

        def die() -> None:
            time.sleep(float(raw["after"]))
            os._exit(code)

        threading.Thread(target=die, daemon=True).start()
        return {"metrics": {}}
    os._exit(code)
