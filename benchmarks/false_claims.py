"""False claims: an adversarial audit of nnmark's verdicts (issue 8, "Verdicts a judge can trust").

    .venv/bin/python benchmarks/false_claims.py --quick              # a few minutes
    .venv/bin/python benchmarks/false_claims.py --out results.json   # the full audit
    .venv/bin/python benchmarks/false_claims.py --schemes adi,zhang-content --quick
    .venv/bin/python benchmarks/false_claims.py --build-only         # train and cache the population

For every scheme, and for every way of attacking the verdict listed below, it counts how many
times a model that never carried the accuser's watermark was called "found", out of how many
tries, at alpha = 1e-6 and at alpha = 0.01 (with the Clopper-Pearson 95 % interval of the observed
rate at 0.01, which the goal "rate <= alpha" can be checked against). Innocent models:

* clean models of >= 20 varied recipes (optimiser, learning rate, batch size, 1-5 epochs, a random
  share of the training set, weight decay, schedule, seed) on MNIST-5k, architectures
  ``digit-cnn`` and ``dnn1`` (:func:`innocent_recipes`);
* clean models with one more output than the task (C + 1 = 11; what a stolen new-label model has);
* models that carry another owner's watermark of the same scheme, made by ``embed_run`` (the
  first of them with exactly the owner's command and ``--seed``: two owners who keep the defaults).

Keys: the owner's key from ``embed_run`` (whose own watermarked model is a positive control, never
part of the innocent population) and keys minted the way ``embed_run`` makes them, signed by many
owners (:func:`mint_key`; training the marked model changes nothing about a key's chance matches
on models that never saw it). A judge's verdict (``judge=True``) takes p0 from >= 3 reference models
the verifier names, trained by recipes disjoint from the innocent population (role ``reference``);
"owner mode" rows use the calibration signed into the claimant's key instead.

Attacks on the verdict (``ATTACKS``), each by an accuser who never trained the suspect:

* ``population: clean`` / ``clean C+1`` / ``other owner's watermark``: honest keys against every
  innocent model, in judge mode and (schemes with measured p0) in owner mode;
* ``same command, other owner (twin)``: the owner's key on the twin's model and the twin's key on
  the owner's (``control: the owner's own model`` shows that the test has power);
* ``labels = suspect's answers``: the accuser's own signed key with its labels replaced by what
  the suspect answers (derived labels must be refused);
* ``picked images``: key inputs chosen among held-out or key-style images because the suspect
  answers them as the key says and the accuser's own clean models do not (derived labels are then
  re-drawn, so choosing is useless); ``adversarial (white-box)``: PGD on the suspect towards the
  key label, away from the accuser's own models; ``adversarial (transfer)``: PGD on the accuser's
  own models only, kept where the suspect agrees (the Li 2019 false-claim attack); ``picked
  probes`` (zhong-new-label, li-null-embedding): probes that favour the claim written into the key;
* ``edited params`` / ``edited num_classes``: thresholds, lambda, n, probes, tau, alpha, every scheme
  parameter x0.1 and x10, and the key's number of classes, written into a key the accuser signs; the
  verdict must not move (a protocol-fixed parameter gives "no verdict");
* ``calibration.json``: beside a key the suspect answers as labelled (and clean models mostly do
  too), a calibration claiming a tiny p0: unsigned, signed by the accuser (measured on untrained
  "clean" models of its choosing), signed by an untrusted third party, or signed and then edited;
  through the CLI (``nnmark verify --judge --reference ...`` and owner mode, in-process);
* ``stripped signature``: the owner's key with its signature removed, the body edited and the
  commitment recomputed (must be refused);
* ``grinding``: 1,000 signed secrets (``--grind``), the one with the best p-value on the suspect
  kept (as the accuser sees it: exact p0, or its own clean models as references), then judged.

Each verdict is one call of ``nnmark.verify(key, TorchOracle(model), alpha, context=...)``. A tried
verification that raises :class:`~nnmark.errors.KeyTamperedError` is "refused", another
:class:`~nnmark.errors.NnmarkError` "rejected", any other exception an "error" (its message kept: e.g.
a scheme whose verifier is being reworked); an attack that fails as a whole is one "attack failed"
row, and the other attacks and schemes still run. Trained models are
cached under ``.data/false_claims/`` (git-ignored), keyed by recipe (and, for watermarked runs, by
the scheme's source code). Not a test: CI never runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import inspect
import json
import math
import shutil
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy import stats as sps

import nnmark
from nnmark import calibration as calib
from nnmark import keysecret
from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset
from nnmark.errors import KeyTamperedError, NnmarkError
from nnmark.identity import OwnerKey, generate_owner
from nnmark.io import METRICS_FILE, new_folder, write_json, write_model_files
from nnmark.keyfile import key_bytes, load_key, parse_key
from nnmark.models import build_model
from nnmark.oracle import TorchOracle
from nnmark.schemes import SCHEMES
from nnmark.training import TrainConfig, evaluate, train
from nnmark.types import Key, Verdict
from nnmark.verify.context import VerifyContext
from nnmark.workflow import build_key, embed_run, load_model, model_spec, prepare_secret

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".data" / "false_claims"
CACHE_VERSION = 1
DATA = "mnist5k"
ARCHS = ("digit-cnn", "dnn1")
ALPHAS = (1e-6, 0.01)
ALL_SCHEMES = (
    "label-change",
    "adi",
    "deepsigns-bb",
    "zhang-content",
    "zhang-noise",
    "zhang-unrelated",
    "afs",
    "zhong-new-label",
    "li-null-embedding",
)
#: the owner's command (``nnmark embed --scheme S --data mnist5k --model M --epochs 3``, default --seed 0)
OWNER_EPOCHS = 3
OWNER_SEED = 0
NL = "\n"


@dataclass(frozen=True)
class Size:
    """How big an audit is (``--quick`` or the full default)."""

    innocent: int  # clean C-output models (recipes alternate between ARCHS)
    innocent_extra: int  # clean models with C + 1 outputs
    references: int  # the judge's reference models
    surrogates: int  # the accuser's own clean models
    other_owners: int  # models with another owner's watermark, per scheme
    keys: int  # honest keys per scheme whose p0 is exact
    keys_calibrated: int  # honest keys per scheme that needs measured p0
    keys_zhong: int  # other-owner patterns for zhong-new-label
    forge_suspects: int  # innocent models each forgery is tried on
    grind: int  # signed secrets a grinding accuser tries per suspect
    grind_costly: int  # the same for COSTLY schemes
    owner_arch: str


FULL = Size(24, 8, 6, 3, 3, 40, 15, 300, 6, 1000, 40, "digit-cnn")
QUICK = Size(8, 2, 4, 3, 1, 5, 3, 40, 2, 100, 5, "dnn1")


# -- the population ------------------------------------------------------------------------------

OPTIMISERS: tuple[dict[str, Any], ...] = (
    {"optimizer": "adam", "lr": 1e-3},
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    {"optimizer": "adam", "lr": 2e-3, "weight_decay": 1e-4},
    {"optimizer": "sgd", "lr": 0.1, "momentum": 0.5},
    {"optimizer": "adam", "lr": 5e-4},
    {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4},
)
BATCHES = (32, 64, 128)
SUBSETS = (1.0, 0.7, 0.5)
SCHEDULES = ("none", "cosine", "step")
MIN_STEPS = 80  # fewer optimiser steps leave a model that is not a plausible suspect


@dataclass(frozen=True)
class Recipe:
    """How one clean model is trained; ``role`` keeps the populations' seeds disjoint."""

    role: str  # innocent | innocent-c+1 | reference | surrogate | owner-calibration | owner-base
    arch: str
    seed: int
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 2
    subset: float = 1.0
    schedule: str = "none"
    extra_outputs: int = 0

    def config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            seed=self.seed,
        )

    def describe(self) -> str:
        extra = f" outputs=C+{self.extra_outputs}" if self.extra_outputs else ""
        wd = f" wd={self.weight_decay:g}" if self.weight_decay else ""
        sched = f" {self.schedule}" if self.schedule != "none" else ""
        return (
            f"{self.arch} {self.optimizer} lr={self.lr:g}{wd}{sched} batch={self.batch_size} "
            f"epochs={self.epochs} data={self.subset:.0%} seed={self.seed}{extra}"
        )

    def cache_name(self) -> str:
        digest = hashlib.sha256(
            json.dumps([CACHE_VERSION, asdict(self)], sort_keys=True).encode()
        ).hexdigest()
        return f"{self.role}-{self.arch}-{digest[:12]}"


def _recipe(role: str, i: int, seed: int, extra: int = 0) -> Recipe:
    """The ``i``-th recipe of a role: arch, optimiser, batch, subset, schedule and epochs each cycle
    with a different period, so that no two recipes of a role agree on everything."""
    arch = ARCHS[i % 2]
    opt = OPTIMISERS[(i // 2) % len(OPTIMISERS)]
    batch = BATCHES[(i + i // 6) % len(BATCHES)]
    subset = SUBSETS[(i // 3) % len(SUBSETS)]
    schedule = SCHEDULES[(i // 4) % len(SCHEDULES)]
    epochs = 1 + (i * 7 // 5) % 3
    steps_per_epoch = math.ceil(4000 * subset / batch)
    epochs = max(epochs, math.ceil(MIN_STEPS / steps_per_epoch))
    return Recipe(
        role=role,
        arch=arch,
        seed=seed,
        batch_size=batch,
        epochs=epochs,
        subset=subset,
        schedule=schedule,
        extra_outputs=extra,
        **opt,
    )


def innocent_recipes(size: Size) -> list[Recipe]:
    out = [_recipe("innocent", i, 10_000 + i) for i in range(size.innocent)]
    out += [_recipe("innocent-c+1", i + 3, 20_000 + i, extra=1) for i in range(size.innocent_extra)]
    return out


def reference_recipes(size: Size) -> list[Recipe]:
    """The judge's clean models, both architectures, seeds disjoint from the innocents'."""
    return [_recipe("reference", i + 7, 30_000 + i) for i in range(size.references)]


def surrogate_recipes(size: Size) -> list[Recipe]:
    """The accuser's own clean models (what a forger trains to pick or craft keys)."""
    return [_recipe("surrogate", i + 5, 40_000 + i) for i in range(size.surrogates)]


def owner_calibration_recipes(size: Size) -> list[Recipe]:
    """The clean models ``embed --calibrate 4`` trains for the owner's key (calibration.RECIPES)."""
    base = TrainConfig(epochs=OWNER_EPOCHS, seed=OWNER_SEED)
    out = []
    for i in range(4):
        c = calib.reference_config(base, i)
        out.append(
            Recipe(
                "owner-calibration",
                size.owner_arch,
                c.seed,
                c.optimizer,
                c.lr,
                c.momentum,
                c.weight_decay,
                c.batch_size,
                c.epochs,
            )
        )
    return out


def owner_base_recipe(size: Size) -> Recipe:
    """The owner's trained model that AFS keys are crafted on (embed trains it before crafting)."""
    return Recipe("owner-base", size.owner_arch, OWNER_SEED, epochs=OWNER_EPOCHS)


@dataclass
class Member:
    """One trained model with where it came from."""

    recipe: Recipe | None
    model: torch.nn.Module
    describe: str
    accuracy: float
    run: Path
    kind: str  # clean | clean C+1 | other owner's watermark | ...


def data_subset(data: ImageDataset, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    if recipe.subset >= 1.0:
        return data.train_x, data.train_y
    gen = torch.Generator().manual_seed(recipe.seed * 31 + 7)
    idx = torch.randperm(len(data.train_x), generator=gen)[: round(recipe.subset * len(data.train_x))]
    return data.train_x[idx], data.train_y[idx]


def trained(recipe: Recipe, data: ImageDataset, log: Callable[[str], None]) -> Member:
    """The model of ``recipe``, from the cache or trained now (and cached as a run folder)."""
    run = CACHE / "models" / recipe.cache_name()
    if not (run / "model.safetensors").is_file():
        t0 = time.perf_counter()
        spec = model_spec(recipe.arch, data, recipe.extra_outputs)
        torch.manual_seed(recipe.seed)
        model = build_model(spec)
        x, y = data_subset(data, recipe)
        train(model, x, y, recipe.config(), progress=False)
        acc = evaluate(model.cpu(), data.test_x, data.test_y)
        with new_folder(run, force=True) as tmp:
            write_model_files(tmp, model, spec)
            write_json(
                tmp / METRICS_FILE,
                {"test_accuracy": acc, "recipe": asdict(recipe), "seconds": time.perf_counter() - t0},
            )
        log(f"  trained {recipe.describe()}: accuracy {acc:.3f} ({time.perf_counter() - t0:.1f} s)")
    metrics = json.loads((run / METRICS_FILE).read_text())
    kind = "clean C+1" if recipe.extra_outputs else "clean"
    return Member(recipe, load_model(run), recipe.describe(), float(metrics["test_accuracy"]), run, kind)


def scheme_fingerprint(scheme: str) -> str:
    """A hash of the scheme's and the key machinery's source: cached keys and marked models are
    rebuilt whenever either changes (the APIs of several schemes are still moving)."""
    h = hashlib.sha256(str(CACHE_VERSION).encode())
    modules = [sys.modules[SCHEMES.get(scheme).__module__], keysecret, sys.modules["nnmark.workflow"]]
    modules += [sys.modules["nnmark.schemes.base"], sys.modules["nnmark.keyfile"]]
    for module in modules:
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:12]


@dataclass
class EmbeddedRun:
    key: Key
    member: Member
    owner_name: str
    settings: dict[str, Any]


def embedded(
    scheme: str,
    role: str,
    arch: str,
    seed: int,
    settings: dict[str, Any],
    calibrate: int,
    data: ImageDataset,
    log: Callable[[str], None],
    epochs: int = OWNER_EPOCHS,
) -> EmbeddedRun:
    """``embed_run`` by a fresh owner (cached: the key, its owner's name, the marked model)."""
    tag = json.dumps([scheme, role, arch, seed, settings, calibrate, epochs], sort_keys=True)
    name = (
        f"{scheme}-{role}-{arch}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}-{scheme_fingerprint(scheme)}"
    )
    run = CACHE / "embedded" / name
    owner_name = f"{role}-{hashlib.sha256(tag.encode()).hexdigest()[:6]}"
    key: Key | None = None
    for _ in range(2):
        if not (run / "watermark.key").is_file():
            t0 = time.perf_counter()
            embed_run(
                scheme,
                dict(settings),
                data,
                arch,
                TrainConfig(epochs=epochs, seed=seed),
                run,
                calibrate=calibrate,
                owner=generate_owner(owner_name),
                force=True,
                progress=False,
            )
            log(f"  embedded {scheme} ({role}, {arch}, seed {seed}) in {time.perf_counter() - t0:.1f} s")
        try:
            key = load_key(run)
            break
        except NnmarkError as e:  # a key of an older format in the cache: make it again
            log(f"  cached {run.name} is stale ({e}); embedding again")
            shutil.rmtree(run)
    assert key is not None
    metrics = json.loads((run / METRICS_FILE).read_text())
    model = load_model(run)
    extra = f", {settings}" if settings else ""
    whose = "the owner's own" if role == "owner" else "another owner's"
    desc = f"{arch} marked with {whose} {scheme} key (seed {seed}{extra})"
    member = Member(None, model, desc, float(metrics["test_accuracy"]), run, "other owner's watermark")
    return EmbeddedRun(key, member, owner_name, settings)


def clean_population(size: Size, data: ImageDataset, log: Callable[[str], None]) -> dict[str, list[Member]]:
    """Every clean model the audit needs, by role (trained once, then read from the cache)."""
    groups = {
        "innocent": innocent_recipes(size),
        "reference": reference_recipes(size),
        "surrogate": surrogate_recipes(size),
        "owner-calibration": owner_calibration_recipes(size),
        "owner-base": [owner_base_recipe(size)],
    }
    out: dict[str, list[Member]] = {}
    for role, recipes in groups.items():
        log(f"{role}: {len(recipes)} model(s)")
        out[role] = [trained(r, data, log) for r in recipes]
    return out


# -- keys ----------------------------------------------------------------------------------------


@dataclass
class KeyMaker:
    """What making a key needs besides the scheme: the owner's data, architecture, the trained model
    AFS crafts on, and the clean models ``embed --calibrate`` would have trained."""

    data: ImageDataset
    arch: str
    base_model: torch.nn.Module
    calibration_models: list[Member]


def sign(key: Key, owner: OwnerKey | None) -> Key:
    """The key as ``load_key`` would read it back after ``save_key`` (signed by ``owner``)."""
    return parse_key(key_bytes(key, owner), "minted key")


def mint_key(
    scheme_name: str,
    owner: OwnerKey | None,
    maker: KeyMaker,
    *,
    settings: dict[str, Any] | None = None,
    calibrate: bool = True,
    choose_target: Callable[[Any], int] | None = None,
) -> Key:
    """A key made the way :func:`nnmark.workflow.embed_run` makes it (fresh signed secret, generate,
    craft, assign_labels, build_key, calibrate_key), without training the marked model: a key's
    chance matches on a model that never saw it do not depend on that training.
    ``choose_target`` lets an accuser pick a shared target class after seeing the key inputs."""
    scheme = SCHEMES.get(scheme_name)(owner=owner, **(settings or {}))
    spec = model_spec(maker.arch, maker.data, scheme.extra_classes)
    secret, gen = prepare_secret(scheme, owner, None)
    material = scheme.craft(maker.base_model, maker.data, scheme.generate(maker.data, gen), gen)
    cal = [m.model for m in maker.calibration_models]
    if material.labels is None and choose_target is not None:
        chooser = type(scheme)(owner=owner, **{**(settings or {}), "target": choose_target(material)})
        material = chooser.assign_labels(material, maker.data.num_classes, [])
    preds = calib.predictions(cal, material.inputs) if material.labels is None else []
    material = scheme.assign_labels(material, maker.data.num_classes, preds)
    key = build_key(scheme, material, spec, None, secret)
    if calibrate and scheme.needs_calibration and cal:
        key = replace(
            key, calibration=calib.calibrate_key(key, cal, [m.describe for m in maker.calibration_models])
        )
    return sign(key, owner)


def answers(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if len(x) == 0:
        return torch.empty(0, dtype=torch.int64)
    return TorchOracle(model).labels(x)


# -- verdicts and tallies ------------------------------------------------------------------------

FOUND, NOT_FOUND, NO_VERDICT = "found", "not found", "no verdict"
#: KeyTamperedError; any other NnmarkError (a one-line user error); any other exception (a bug)
REFUSED, REJECTED, ERROR = "refused", "rejected", "error"


@dataclass(frozen=True)
class Outcome:
    state: str
    p_value: float
    why: str


def run_verify(key: Key, model: torch.nn.Module, alpha: float, ctx: VerifyContext) -> Outcome:
    """One verification: a tampered key is "refused", another user error (NnmarkError) "rejected",
    any other exception an "error" with its message."""
    try:
        v: Verdict = nnmark.verify(key, TorchOracle(model), alpha, context=ctx)
    except KeyTamperedError as e:
        return Outcome(REFUSED, math.nan, str(e))
    except NnmarkError as e:
        return Outcome(REJECTED, math.nan, str(e))
    except Exception as e:  # a bug in the verifier (or an API in flux): counted, never fatal
        where = traceback.extract_tb(e.__traceback__)[-1]
        return Outcome(
            ERROR, math.nan, f"{type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"
        )
    state = {True: FOUND, False: NOT_FOUND, None: NO_VERDICT}[v.watermarked]
    return Outcome(state, float(v.p_value), v.reason)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(sps.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(sps.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


@dataclass
class Tally:
    """False "found" (and every other outcome) of one attack on one scheme, at each alpha."""

    scheme: str
    attack: str
    mode: str = "judge"
    #: a positive control: "found" is the right answer (the owner's own model), not a false claim
    control: bool = False
    tries: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {f"{a:g}": Counter() for a in ALPHAS})
    min_p: float = math.inf
    min_p_case: str = ""
    accused: list[dict[str, Any]] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    note: str = ""
    seconds: float = 0.0

    def add(self, outcomes: dict[float, Outcome], suspect: str, key_desc: str) -> None:
        self.tries += 1
        for alpha, o in outcomes.items():
            self.counts[f"{alpha:g}"][o.state] += 1
            if o.state in (ERROR, REFUSED, REJECTED, NO_VERDICT):
                self.messages[f"{o.state}: {o.why[:160]}"] += 1
            if not math.isnan(o.p_value) and o.p_value < self.min_p:
                self.min_p, self.min_p_case = o.p_value, f"{suspect} / {key_desc}"
            if o.state == FOUND and not self.control:
                self.accused.append(
                    {"alpha": alpha, "p_value": o.p_value, "suspect": suspect, "key": key_desc, "why": o.why}
                )

    def found(self, alpha: float) -> int:
        return self.counts[f"{alpha:g}"][FOUND]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scheme": self.scheme,
            "attack": self.attack,
            "mode": self.mode,
            "control": self.control,
            "tries": self.tries,
            "counts": {a: dict(c) for a, c in self.counts.items()},
            "min_p_value": None if math.isinf(self.min_p) else self.min_p,
            "min_p_case": self.min_p_case,
            "accused": self.accused,
            "messages": dict(self.messages.most_common(8)),
            "note": self.note,
            "seconds": round(self.seconds, 1),
        }
        k, n = self.found(0.01), self.tries
        lo, hi = clopper_pearson(k, n)
        out["rate_at_0.01"] = {"found": k, "tries": n, "rate": k / n if n else None, "cp95": [lo, hi]}
        return out


def contexts(env: Env) -> dict[str, Callable[[], VerifyContext]]:
    refs = [(m.model, m.describe) for m in env.pop["reference"]]
    return {
        "judge": lambda: VerifyContext(judge=True, references=refs),
        "owner": lambda: VerifyContext(),
    }


def judge_pair(
    tally: Tally, key: Key, suspect: Member, ctx: Callable[[], VerifyContext], key_desc: str
) -> dict[float, Outcome]:
    outcomes = {a: run_verify(key, suspect.model, a, ctx()) for a in ALPHAS}
    tally.add(outcomes, suspect.describe, key_desc)
    return outcomes


# -- the audit's world ---------------------------------------------------------------------------


@dataclass
class Env:
    size: Size
    data: ImageDataset
    pop: dict[str, list[Member]]
    maker: KeyMaker
    log: Callable[[str], None]
    grind_suspects: int
    cli: bool
    workdir: Path
    #: the accuser's identity: it signs every key it forges (so its secrets check out)
    accuser: OwnerKey = field(default_factory=lambda: generate_owner("accuser"))

    @property
    def innocents(self) -> list[Member]:
        return self.pop["innocent"]

    @property
    def surrogates(self) -> list[Member]:
        return self.pop["surrogate"]

    def forge_suspects(self) -> list[Member]:
        """Innocent models forgeries are tried on: both architectures, C and C + 1 outputs."""
        clean = [m for m in self.innocents if m.kind == "clean"]
        extra = [m for m in self.innocents if m.kind == "clean C+1"]
        n = self.size.forge_suspects
        picked = clean[: max(1, n - max(1, n // 3))] + extra[: max(1, n // 3)]
        return picked[:n]


def owner_settings(scheme: str) -> dict[str, Any]:
    return {}


def other_owner_settings(scheme: str, i: int) -> dict[str, Any]:
    """Another owner's settings; a shared-target scheme without calibration names its target."""
    if SCHEMES.get(scheme).shared_target:
        return {"target": (3 * i + 5) % 10}
    return {}


def owner_runs(scheme: str, env: Env) -> tuple[EmbeddedRun, list[EmbeddedRun]]:
    """The owner's own run (positive control) and other owners' runs; the first of these is a twin:
    the same command, seed and settings as the owner's, by someone else."""
    cls = SCHEMES.get(scheme)
    cal = cls.default_calibration if cls.needs_calibration else 0
    arch = env.size.owner_arch
    owner = embedded(scheme, "owner", arch, OWNER_SEED, owner_settings(scheme), cal, env.data, env.log)
    others = [embedded(scheme, "twin", arch, OWNER_SEED, owner_settings(scheme), cal, env.data, env.log)]
    for i in range(1, env.size.other_owners):
        other_arch = ARCHS[i % 2]
        others.append(
            embedded(scheme, "other", other_arch, i, other_owner_settings(scheme, i), 0, env.data, env.log)
        )
    others[0].member.describe = f"twin: {others[0].member.describe} (same command and --seed as the owner)"
    return owner, others


SPECIAL = ("zhong-new-label", "li-null-embedding")
#: schemes whose key generation or verification is slow (FGSM per key; lambda-stamped probes)
COSTLY = ("afs", "li-null-embedding")


def derived(scheme: str) -> bool:
    """Key labels follow from the secret and a hash of the key inputs (the verifier re-derives them)."""
    return SCHEMES.get(scheme).derived_labels is not None


def claimant_labelled(scheme: str) -> bool:
    """Key inputs and labels are the claimant's own (Zhang's shared target, AFS's true labels)."""
    return not derived(scheme) and scheme not in SPECIAL


def key_size(scheme: str) -> int:
    return int(getattr(SCHEMES.get(scheme).Params(), "keys", 100))


def forger_maker(env: Env) -> KeyMaker:
    """An accuser makes keys with its own trained model and its own clean models (which choose a
    shared target as ``embed --calibrate`` would; the accuser's calibration is never trusted)."""
    return KeyMaker(env.data, env.maker.arch, env.surrogates[0].model, env.surrogates)


# -- attack: honest keys against the innocent population ------------------------------------------


def attack_population(
    scheme: str, env: Env, owner: EmbeddedRun | None, others: list[EmbeddedRun]
) -> list[Tally]:
    cls = SCHEMES.get(scheme)
    size = env.size
    if scheme == "zhong-new-label":
        n = size.keys_zhong
    else:
        n = size.keys_calibrated if cls.needs_calibration else size.keys
    keys: list[tuple[Key, str]] = [(owner.key, "the owner's key (embed_run)")] if owner else []
    t0 = time.perf_counter()
    while len(keys) < n:
        i = len(keys)
        keys.append((mint_key(scheme, generate_owner(f"owner {i}"), env.maker), f"minted key #{i}"))
    env.log(f"  {len(keys)} honest keys ready ({time.perf_counter() - t0:.0f} s)")
    suspects = list(env.innocents) + [o.member for o in others[1:]]
    ctxs = contexts(env)
    modes = ["judge", "owner"] if cls.needs_calibration else ["judge"]
    out: list[Tally] = []
    for mode in modes:
        t0 = time.perf_counter()
        by_kind: dict[str, Tally] = {}
        for s in suspects:
            tally = by_kind.setdefault(s.kind, Tally(scheme, f"population: {s.kind}", mode))
            for key, desc in keys:
                judge_pair(tally, key, s, ctxs[mode], desc)
        rows = list(by_kind.values())
        if owner is not None and others:
            twin = Tally(scheme, "same command, other owner (twin)", mode)
            judge_pair(twin, owner.key, others[0].member, ctxs[mode], "the owner's key")
            judge_pair(twin, others[0].key, owner.member, ctxs[mode], "the twin's key (on the owner's model)")
            control = Tally(scheme, "control: the owner's own model", mode, control=True)
            judge_pair(control, owner.key, owner.member, ctxs[mode], "the owner's key")
            control.note = "not a false claim: 'found' is the right answer (shows the test has power)"
            rows += [twin, control]
        for r in rows:
            r.seconds = time.perf_counter() - t0
            if mode == "owner":
                r.note = (r.note + "; " if r.note else "") + "p0 from the calibration signed into the key"
        out += rows
    return out


# -- attack: the accuser writes the key's labels ---------------------------------------------------


def attack_labels(scheme: str, env: Env) -> list[Tally]:
    forger = env.accuser
    tally = Tally(scheme, "labels = suspect's answers")
    ctx = contexts(env)["judge"]
    for s in env.forge_suspects():
        key = mint_key(scheme, forger, forger_maker(env), calibrate=False)
        if len(key.inputs) == 0:
            tally.note = "the key stores no inputs (nothing to relabel)"
            continue
        forged = sign(replace(key, labels=answers(s.model, key.inputs)), forger)
        judge_pair(tally, forged, s, ctx, "the accuser's key, labels replaced by the suspect's answers")
    if derived(scheme):
        tally.note = "labels are re-derived from the secret: must be refused"
    return [tally]


# -- attack: hand-picked key inputs ----------------------------------------------------------------


def candidate_pool(scheme: str, env: Env, want: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-style images an accuser can pick from (with their stated classes, -1 for none): what the
    scheme's own generator makes from many fresh secrets (for AFS: FGSM on the accuser's model)."""
    if scheme == "label-change":
        return env.data.test_x.float().div(255), env.data.test_y.long()
    xs, ys = [], []
    count = 0
    maker = forger_maker(env)
    while count < want:
        sch = SCHEMES.get(scheme)(owner=None)
        _, gen = prepare_secret(sch, None, None)
        material = sch.craft(maker.base_model, env.data, sch.generate(env.data, gen), gen)
        xs.append(material.inputs)
        ys.append(material.source_labels.long())
        count += len(material.inputs)
    return torch.cat(xs)[:want], torch.cat(ys)[:want]


def forged_claimant_key(base: Key, inputs: torch.Tensor, labels: torch.Tensor, owner: OwnerKey) -> Key:
    params = dict(base.params)
    if "target" in params and len(labels):
        params["target"] = int(labels[0])
    return sign(replace(base, inputs=inputs, labels=labels, params=params, calibration=None), owner)


def attack_picked(scheme: str, env: Env) -> list[Tally]:
    if scheme in PICKERS:
        return PICKERS[scheme](scheme, env)
    forger = env.accuser
    tally = Tally(scheme, "picked images")
    ctx = contexts(env)["judge"]
    pool_x, pool_y = candidate_pool(scheme, env)
    sur = [answers(m.model, pool_x) for m in env.surrogates]
    n = key_size(scheme)
    for s in env.forge_suspects():
        base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
        mine = answers(s.model, pool_x)
        if derived(scheme):
            # the best an accuser can do: images the suspect answers alike (or wrongly), any stated class;
            # the labels then follow from the secret and a hash of the picked images
            common = int(torch.mode(mine).values)
            pick = (mine == common).nonzero().flatten()
            if scheme == "label-change":
                pick = (mine != pool_y).nonzero().flatten()
            pick = pick[:n] if len(pick) >= n else torch.cat([pick, torch.arange(len(pool_x))])[:n]
            x = pool_x[pick]
            avoid = (mine[pick] + 1) % env.data.num_classes if scheme == "label-change" else None
            secret = keysecret.key_secret(base)
            labels = keysecret.derive_labels(secret, x, base.num_classes, avoid)
            tensors = dict(base.tensors)
            if avoid is not None:
                tensors["source_labels"] = avoid
            forged = sign(replace(base, inputs=x, labels=labels, tensors=tensors), forger)
            desc = "picked images, stated classes chosen, labels re-derived"
        else:
            # images this suspect answers as the key says and none of the accuser's own models does
            if scheme == "afs":
                good = mine == pool_y
                for a in sur:
                    good &= a != pool_y
                x, labels = pool_x[good][:n], pool_y[good][:n]
            else:
                best_t, best = 0, torch.zeros(len(pool_x), dtype=torch.bool)
                for t in range(env.data.num_classes):
                    good = (mine == t) & (pool_y != t)
                    for a in sur:
                        good &= a != t
                    if int(good.sum()) > int(best.sum()):
                        best_t, best = t, good
                x = pool_x[best][:n]
                labels = torch.full((len(x),), best_t, dtype=torch.int64)
            if len(x) == 0:
                tally.messages["no image qualified"] += 1
                continue
            forged = forged_claimant_key(base, x, labels, forger)
            desc = f"{len(x)} picked images the suspect answers as labelled and the accuser's models do not"
        judge_pair(tally, forged, s, ctx, desc)
    if derived(scheme):
        tally.note = "labels follow from a hash of the picked images: picking is useless"
    return [tally]


def pgd(
    x: torch.Tensor,
    labels: torch.Tensor,
    toward: Sequence[torch.nn.Module],
    away: Sequence[torch.nn.Module],
    eps: float,
    steps: int = 20,
) -> torch.Tensor:
    """L-inf PGD: make ``toward`` models answer ``labels`` and ``away`` models not (capped loss)."""
    step = 2.5 * eps / steps
    x0 = x.clone()
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = torch.zeros(())
        for m in toward:
            loss = loss + F.cross_entropy(m(xa), labels) / len(toward)
        for m in away:
            loss = loss - F.cross_entropy(m(xa), labels, reduction="none").clamp(max=5.0).mean() / len(away)
        (grad,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() - step * grad.sign()
        xa = torch.min(torch.max(xa, x0 - eps), x0 + eps).clamp(0, 1)
    return xa.detach()


def attack_adversarial(scheme: str, env: Env) -> list[Tally]:
    """Li 2019's false claim: adversarial key inputs (white-box on the suspect, or from the accuser's
    own models) that the suspect answers as the key says."""
    forger = env.accuser
    white = Tally(scheme, "adversarial (white-box)")
    transfer = Tally(scheme, "adversarial (transfer)")
    ctx = contexts(env)["judge"]
    own = [m.model for m in env.surrogates]
    for s in env.forge_suspects():
        base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
        x, labels = base.inputs, base.labels
        for tally, toward, away, eps in ((white, [s.model], own, 0.15), (transfer, own, [], 0.25)):
            if scheme == "afs":  # keep the true label on the suspect; push other models off it
                xa = pgd(x, labels, toward if tally is white else [], own, eps)
            else:
                xa = pgd(x, labels, toward, away, eps)
            keep = answers(s.model, xa) == labels
            if int(keep.sum()) == 0:
                tally.messages["no adversarial key reached the suspect"] += 1
                continue
            forged = forged_claimant_key(base, xa[keep], labels[keep], forger)
            desc = f"{int(keep.sum())}/{len(x)} adversarial keys (eps {eps}) the suspect answers as labelled"
            judge_pair(tally, forged, s, ctx, desc)
    return [white, transfer]


# -- attack: parameters written into the key -------------------------------------------------------

EXTRA_EDITS: dict[str, Any] = {
    "threshold": 0.05,
    "tau": 1.0,
    "p0": 1e-9,
    "alpha": 0.5,
    "lam": 20.0,
    "n": 2,
    "probes": 5,
    "keys": 5,
    "target": 0,
    "new_label": 0,
    "test": "threshold",
    "protocol": 1,
}


def param_edits(scheme: str, key: Key) -> list[tuple[str, Any]]:
    edits: list[tuple[str, Any]] = []
    for name, info in SCHEMES.get(scheme).Params.model_fields.items():
        d = key.params.get(name, info.default)
        if isinstance(d, bool) or d is None:
            continue
        if isinstance(d, int):
            edits += [(name, max(0, d // 10)), (name, d * 10 + 1)]
        elif isinstance(d, float):
            edits += [(name, d / 10), (name, min(d * 10, 1000.0))]
    edits += [(k, v) for k, v in EXTRA_EDITS.items() if (k, v) not in edits]
    return edits


def attack_params(scheme: str, env: Env) -> list[Tally]:
    forger = env.accuser
    tally = Tally(scheme, "edited params")
    ctx = contexts(env)["judge"]
    base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
    for s in env.forge_suspects()[: 1 if env.size is QUICK else 2]:
        for name, value in param_edits(scheme, base):
            forged = sign(replace(base, params={**base.params, name: value}), forger)
            judge_pair(tally, forged, s, ctx, f"{name}={value!r}")
    tally.note = (
        "every scheme parameter x0.1 and x10, and threshold/tau/p0/lam/n/probes/... set in a signed key"
    )
    return [tally]


# -- attack: stripped signatures -------------------------------------------------------------------


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _rewrite(doc: dict[str, Any]) -> bytes:
    """The key file with a recomputed commitment (what anyone can do without the private key)."""
    doc = dict(doc)
    doc["commitment"] = hashlib.sha256(_canonical(doc["body"])).hexdigest()
    return _canonical(doc) + b"\n"


def attack_strip(scheme: str, env: Env, owner: EmbeddedRun | None) -> list[Tally]:
    from nnmark.keyfile import encode_tensor

    tally = Tally(scheme, "stripped signature")
    if owner is None:
        tally.note = "no owner run"
        return [tally]
    raw = (owner.member.run / "watermark.key").read_bytes()
    forger = env.accuser
    ctx = contexts(env)["judge"]
    for s in env.forge_suspects()[:2]:
        key = parse_key(raw)
        variants: list[tuple[str, bytes]] = []
        doc = json.loads(raw)
        doc["signature"] = None
        variants.append(("signature removed", _rewrite(doc)))
        doc2 = copy.deepcopy(doc)
        doc2["body"]["tensors"]["labels"] = encode_tensor(answers(s.model, key.inputs))
        variants.append(("signature removed, labels = suspect's answers", _rewrite(doc2)))
        doc3 = copy.deepcopy(doc2)
        doc3["body"]["owner"] = None
        variants.append(("signature and owner removed, labels = suspect's answers", _rewrite(doc3)))
        swapped = replace(key, labels=answers(s.model, key.inputs), owner=None, signed=False)
        variants.append(("owner swapped for the accuser, re-signed", key_bytes(swapped, forger)))
        doc4 = copy.deepcopy(doc)
        doc4["body"]["owner"] = None
        secret = keysecret.new_secret(scheme, None)
        doc4["body"]["params"][keysecret.SECRET_PARAM] = secret
        if derived(scheme):
            unsigned = replace(key, owner=None, params={**key.params, keysecret.SECRET_PARAM: secret})
            own = (
                unsigned.tensors.get("source_labels")
                if SCHEMES.get(scheme).derived_labels == "other"
                else None
            )
            labels = keysecret.derive_labels(keysecret.key_secret(unsigned), key.inputs, key.num_classes, own)
            doc4["body"]["tensors"]["labels"] = encode_tensor(labels)
        variants.append(("owner removed, fresh unsigned secret (labels re-derived)", _rewrite(doc4)))
        for desc, data in variants:
            try:
                forged = parse_key(data, "forged key")
            except KeyTamperedError as e:
                tally.add({a: Outcome(REFUSED, math.nan, str(e)) for a in ALPHAS}, s.describe, desc)
                continue
            judge_pair(tally, forged, s, ctx, desc)
    tally.note = "all but the last must be refused; the last is an honest unsigned key of the accuser's"
    return [tally]


# -- attack: files beside the key (calibration.json), through the CLI ------------------------------


def _cli(args: list[str]) -> Outcome:
    """Run ``nnmark ARGS`` in this process (typer's runner, so an NnmarkError arrives as an exception
    where ``nnmark.cli.main`` would print one line and exit 2) and read its verdict."""
    from typer.testing import CliRunner

    from nnmark.cli import app

    result = CliRunner().invoke(app, args)
    out = result.stdout if hasattr(result, "stdout") else result.output
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                obj = json.loads(line)
                state = {True: FOUND, False: NOT_FOUND, None: NO_VERDICT}[obj.get("watermarked")]
                p = obj.get("p_value")
                return Outcome(state, float(p) if p is not None else math.nan, str(obj.get("reason", "")))
            break
    e = result.exception
    if isinstance(e, KeyTamperedError):
        return Outcome(REFUSED, math.nan, str(e))
    if isinstance(e, NnmarkError):
        return Outcome(REJECTED, math.nan, str(e))
    if e is not None and not isinstance(e, SystemExit):
        return Outcome(ERROR, math.nan, f"{type(e).__name__}: {e}")
    try:
        err = result.stderr
    except (ValueError, AttributeError):
        err = out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return Outcome(
        REJECTED if result.exit_code == 2 else ERROR, math.nan, lines[-1] if lines else "no output"
    )


def _forge_rates(obj: Any) -> None:
    """Set every "rates" list in ``obj`` to zeros and every "p0" to 1e-9 (in place)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "rates" and isinstance(v, list):
                obj[k] = [0.0] * len(v)
            elif k == "p0":
                obj[k] = 1e-9
            else:
                _forge_rates(v)
    elif isinstance(obj, list):
        for v in obj:
            _forge_rates(v)


def attack_calibration_file(scheme: str, env: Env) -> list[Tally]:
    """An accuser's key that the suspect answers as labelled (and so do most clean models: a judge
    finds nothing) with a calibration.json beside it claiming a tiny p0:
    unsigned, signed by the accuser (measured on untrained "clean" models of its choosing), signed by
    an untrusted third party, or signed and then edited; verified through the CLI in judge mode
    (``--judge --reference ...``) and in owner mode (issue 8, defect 3)."""
    tallies: dict[tuple[str, str], Tally] = {}
    forger = env.accuser
    suspect = env.forge_suspects()[0]
    key = mint_key(scheme, forger, forger_maker(env), calibrate=False)
    if claimant_labelled(scheme):  # keys the suspect answers as labelled, and so do most clean models
        pool_x, pool_y = candidate_pool(scheme, env)
        mine = answers(suspect.model, pool_x)
        if scheme == "afs":
            keep, labels = mine == pool_y, pool_y
        else:
            t = max(range(env.data.num_classes), key=lambda c: int(((mine == c) & (pool_y != c)).sum()))
            keep, labels = (mine == t) & (pool_y != t), torch.full_like(pool_y, t)
        n = key_size(scheme)
        key = forged_claimant_key(key, pool_x[keep][:n], labels[keep][:n], forger)
    folder = env.workdir / f"cal-{scheme}"
    folder.mkdir(parents=True, exist_ok=True)
    forger = env.accuser
    third = generate_owner("third party")
    key_path = folder / "watermark.key"
    key_path.write_bytes(key_bytes(key, forger))
    cal_path = folder / "calibration.json"
    refs = [str(m.run) for m in env.pop["reference"]]
    junk = []
    for i in range(4):
        run = folder / f"untrained-{i}"
        if not run.exists():
            torch.manual_seed(90_000 + i)
            spec = model_spec(env.maker.arch, env.data)
            with new_folder(run, force=True) as tmp:
                write_model_files(tmp, build_model(spec), spec)
                write_json(tmp / METRICS_FILE, {"test_accuracy": 0.1})
        junk.append(str(run))
    fake = {
        "rates": [0.0] * 4,
        "queries": len(key.inputs),
        "p0": 1e-9,
        "method": "forged",
        "models": ["a"] * 4,
    }

    def make(variant: str) -> str:
        """Write calibration.json for ``variant``; returns "" or why it could not be made."""
        if cal_path.exists():
            cal_path.unlink()
        if variant == "none":
            return ""
        if variant == "unsigned":
            write_json(cal_path, {"commitment": key.commitment, "calibration": fake})
            return ""
        signer = third if variant == "signed by an untrusted third party" else forger
        try:  # "clean" models of the accuser's choosing: untrained ones, which rarely agree with anyone
            calib.calibrate_later(key_path, junk, signer)  # type: ignore[attr-defined]
        except (AttributeError, TypeError, NnmarkError) as e:
            return f"no signed calibration.json could be made: {type(e).__name__}: {e}"
        if variant == "signed by the accuser, then edited":
            doc = json.loads(cal_path.read_text())
            _forge_rates(doc)
            cal_path.write_text(json.dumps(doc))
        return ""

    variants = (
        "none",
        "unsigned",
        "signed by the accuser",
        "signed by an untrusted third party",
        "signed by the accuser, then edited",
    )
    for variant in variants:
        why = make(variant)
        for mode in ("judge", "owner"):
            tally = tallies.setdefault((variant, mode), Tally(scheme, f"calibration.json: {variant}", mode))
            if why:
                tally.messages[why] += 1
                continue
            outcomes = {}
            for alpha in ALPHAS:
                args = [
                    "verify",
                    "--key",
                    str(key_path),
                    "--model",
                    str(suspect.run),
                    "--json",
                    "--alpha",
                    f"{alpha:g}",
                ]
                if mode == "judge":
                    args += ["--judge", *sum((["--reference", r] for r in refs), [])]
                outcomes[alpha] = _cli(args)
            tally.add(outcomes, suspect.describe, f"forged key + calibration.json {variant}")
            if mode == "owner" and variant == "signed by the accuser":
                tally.note = "owner mode may use the key owner's own signed calibration (flagged 'claimant')"
    return list(tallies.values())


# -- attack: grinding signed secrets ---------------------------------------------------------------


def target_chooser(
    suspect: torch.nn.Module, own: Sequence[torch.nn.Module], classes: int = 10
) -> Callable[[Any], int]:
    """An accuser's shared target: the class the suspect gives the key inputs most often, beyond what
    its own clean models give (a grinding accuser picks it for every secret)."""

    def choose(material: Any) -> int:
        x, src = material.inputs, material.source_labels
        mine = answers(suspect, x)
        theirs = [answers(m, x) for m in own]
        score = []
        for c in range(classes):
            ok = src != c
            score.append(
                int(((mine == c) & ok).sum()) - max((int(((t == c) & ok).sum()) for t in theirs), default=0)
            )
        return int(max(range(len(score)), key=lambda c: score[c]))

    return choose


def attack_grind(scheme: str, env: Env) -> list[Tally]:
    tries = env.size.grind_costly if scheme in COSTLY else env.size.grind
    tally = Tally(scheme, f"grinding {tries} signed secrets")
    forger = generate_owner("grinder")
    maker = forger_maker(env)
    own = [(m.model, m.describe) for m in env.surrogates]
    cls = SCHEMES.get(scheme)

    def scorer() -> VerifyContext:  # the accuser's view: exact p0, or its own clean models
        return VerifyContext(judge=True, references=own) if cls.needs_calibration else VerifyContext()

    ctx = contexts(env)["judge"]
    suspects = env.forge_suspects()
    if cls.extra_classes:  # a new-label key can only be answered by a model with the extra output
        suspects = sorted(suspects, key=lambda m: m.kind != "clean C+1")
    for s in suspects[: env.grind_suspects if derived(scheme) else 1]:
        chooser = target_chooser(s.model, [m for m, _ in own]) if cls.shared_target else None
        best: tuple[float, Key | None] = (math.inf, None)
        errors: Counter[str] = Counter()
        for _ in range(tries):
            key = mint_key(scheme, forger, maker, calibrate=False, choose_target=chooser)
            if cls.derived_labels == "other":  # state classes the suspect never answers: each key can match
                avoid = (answers(s.model, key.inputs) + 1) % key.num_classes
                labels = keysecret.derive_labels(
                    keysecret.key_secret(key), key.inputs, key.num_classes, avoid
                )
                key = sign(
                    replace(key, labels=labels, tensors={**key.tensors, "source_labels": avoid}), forger
                )
            o = run_verify(key, s.model, 0.5, scorer())
            if o.state == ERROR:
                errors[o.why[:160]] += 1
            if not math.isnan(o.p_value) and o.p_value < best[0]:
                best = (o.p_value, key)
        if best[1] is None:
            tally.messages.update({f"error: {m}": c for m, c in errors.items()})
            best = (math.nan, mint_key(scheme, forger, maker, calibrate=False, choose_target=chooser))
        assert best[1] is not None
        judge_pair(tally, best[1], s, ctx, f"best of {tries} secrets (accuser's own p = {best[0]:.3g})")
    tally.note = (
        f"P(found) <= {tries} x alpha by the union bound: a key must be committed before the suspect is seen"
    )
    return [tally]


# -- scheme-specific picks (schemes whose verifier draws its own probes) -------------------------


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def pick_zhong(scheme: str, env: Env) -> list[Tally]:
    """Probes hand-picked so that the suspect answers the new label under the accuser's pattern,
    written into the key (the verifier must draw its own probes and ignore them)."""
    from nnmark.schemes import zhong

    forger = env.accuser
    tally = Tally(scheme, "picked probes")
    ctx = contexts(env)["judge"]
    pool = env.data.test_x.float().div(255)
    delta = env.data.num_classes
    for s in env.forge_suspects():
        base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
        beta = float(base.params.get("beta", 0.35))
        if hasattr(zhong, "owner_patterns"):
            eps = zhong.owner_patterns(keysecret.key_secret(base), tuple(pool.shape[1:]))[0]
        else:  # the API before issue 8
            eps = zhong.pattern(int(base.params["pattern_seed"]), tuple(pool.shape[1:]))
        hit = answers(s.model, (pool + beta * eps).clamp(0, 1)) == delta
        order = torch.cat([hit.nonzero().flatten(), (~hit).nonzero().flatten()])
        probes = _uint8(pool[order[:200]])
        forged = sign(replace(base, tensors={**base.tensors, "probes": probes}), forger)
        judge_pair(tally, forged, s, ctx, f"{int(hit.sum())} probes answered with the new label put first")
    tally.note = "probes are the verifier's: stored ones must not matter"
    return [tally]


def pick_null(scheme: str, env: Env) -> list[Tally]:
    """Li 2019's false claim on null embedding: probes hand-picked so that the suspect keeps its answer
    under the accuser's stamp (phi_null high), written into the key; the verifier must draw its own."""
    from nnmark.schemes import null_embedding as ne

    forger = env.accuser
    tally = Tally(scheme, "picked probes")
    ctx = contexts(env)["judge"]
    pool, truth = env.data.test_x.float().div(255), env.data.test_y.long()
    for s in env.forge_suspects():
        base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
        wm = ne.key_watermark(base)
        lam = float(base.params.get("lam", 2000.0))
        plain, stamped = answers(s.model, pool), answers(s.model, ne.stamp(pool, wm, lam))
        keep = (plain == truth) & (stamped == truth)
        probes = _uint8(pool[keep][:110])
        tensors = {**base.tensors, "probes": probes, "probe_labels": truth[keep][:110].clone()}
        forged = sign(replace(base, tensors=tensors), forger)
        judge_pair(tally, forged, s, ctx, f"{len(probes)} probes the suspect keeps under the stamp")
    tally.note = "probes are the verifier's: stored ones must not matter"
    return [tally]


PICKERS: dict[str, Callable[[str, Env], list[Tally]]] = {
    "zhong-new-label": pick_zhong,
    "li-null-embedding": pick_null,
}


def attack_num_classes(scheme: str, env: Env) -> list[Tally]:
    """The number of classes written into a signed key (labels re-derived with it where they are
    derived): the verifier should take the number of outputs from the suspect."""
    forger = env.accuser
    tally = Tally(scheme, "edited num_classes")
    ctx = contexts(env)["judge"]
    base = mint_key(scheme, forger, forger_maker(env), calibrate=False)
    kind = SCHEMES.get(scheme).derived_labels
    for s in env.forge_suspects()[:2]:
        for c in (2, 11, 1000):
            key = replace(base, num_classes=c)
            if kind is not None:
                own = key.tensors.get("source_labels") if kind == "other" else None
                key = replace(
                    key, labels=keysecret.derive_labels(keysecret.key_secret(base), key.inputs, c, own)
                )
            judge_pair(tally, sign(key, forger), s, ctx, f"num_classes={c}")
    return [tally]


# -- the report ----------------------------------------------------------------------------------


def _p(v: float) -> str:
    return "-" if math.isinf(v) or math.isnan(v) else f"{v:.2g}"


def table(tallies: Sequence[Tally]) -> str:
    head = (
        "| scheme | attack | mode | tries | found @1e-6 | found @0.01 | rate @0.01 (CP 95 %) "
        "| refused / rejected | no verdict @1e-6 / 0.01 | errors | min p |"
    )
    lines = [head, "|" + "---|" * 11]
    for t in tallies:
        k, n = t.found(0.01), t.tries
        lo, hi = clopper_pearson(k, n)
        rate = f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]" if n else "-"
        if n and not t.control and lo > 0.01:
            rate += " **> alpha**"
        f6 = f"{t.found(1e-6)}/{n}"
        if t.found(1e-6) and not t.control:
            f6 = f"**{f6}**"
        c6, c2 = t.counts["1e-06"], t.counts["0.01"]
        attack = t.attack + (" (control)" if t.control else "")
        lines.append(
            f"| {t.scheme} | {attack} | {t.mode} | {n} | {f6} | {k}/{n} | {rate} "
            f"| {c6[REFUSED]} / {c6[REJECTED]} | {c6[NO_VERDICT]} / {c2[NO_VERDICT]} "
            f"| {c6[ERROR] + c2[ERROR]} | {_p(t.min_p)} |"
        )
    return "\n".join(lines)


def findings(tallies: Sequence[Tally]) -> str:
    out = []
    for t in tallies:
        for a in t.accused:
            out.append(
                f"- {t.scheme} / {t.attack} ({t.mode}) at alpha {a['alpha']:g}: p = {a['p_value']:.3g}, "
                f"suspect {a['suspect']}, key {a['key']}"
            )
    return "\n".join(out) if out else "- none"


def problems(tallies: Sequence[Tally]) -> str:
    out = []
    for t in tallies:
        errs = {m: c for m, c in t.messages.items() if m.startswith("error")}
        if errs or t.note.startswith("attack failed"):
            first = next(iter(errs), t.note)
            out.append(f"- {t.scheme} / {t.attack} ({t.mode}): {sum(errs.values())} x {first[:220]}")
    return "\n".join(out) if out else "- none"


# -- main ----------------------------------------------------------------------------------------

ATTACKS = (
    "population",
    "labels",
    "picked",
    "adversarial",
    "params",
    "num_classes",
    "strip",
    "calibration",
    "grind",
)


def audit_scheme(scheme: str, env: Env, attacks: Sequence[str]) -> list[Tally]:
    out: list[Tally] = []

    def attempt(name: str, fn: Callable[[], list[Tally]]) -> None:
        if name not in attacks:
            return
        t0 = time.perf_counter()
        try:
            rows = fn()
        except Exception as e:  # an API in flux must not stop the other schemes
            where = traceback.extract_tb(e.__traceback__)[-1]
            msg = f"attack failed: {type(e).__name__}: {e} ({Path(where.filename).name}:{where.lineno})"
            env.log(f"  {name}: {msg}")
            rows = [Tally(scheme, name, note=msg)]
            rows[0].messages[msg] += 1
        dt = time.perf_counter() - t0
        for r in rows:
            r.seconds = r.seconds or dt
        env.log(f"  {name}: {sum(r.tries for r in rows)} tries in {dt:.0f} s")
        out.extend(rows)

    owner: EmbeddedRun | None = None
    others: list[EmbeddedRun] = []
    if {"population", "strip"} & set(attacks):
        try:
            owner, others = owner_runs(scheme, env)
        except Exception as e:
            msg = f"embed_run failed: {type(e).__name__}: {e}"
            env.log(f"  {msg}")
            t = Tally(scheme, "embed_run", note=msg)
            t.messages[msg] += 1
            out.append(t)
    attempt("population", lambda: attack_population(scheme, env, owner, others))
    attempt("labels", lambda: attack_labels(scheme, env))
    attempt("picked", lambda: attack_picked(scheme, env))
    if claimant_labelled(scheme):
        attempt("adversarial", lambda: attack_adversarial(scheme, env))
    attempt("params", lambda: attack_params(scheme, env))
    attempt("num_classes", lambda: attack_num_classes(scheme, env))
    attempt("strip", lambda: attack_strip(scheme, env, owner))
    if SCHEMES.get(scheme).needs_calibration and env.cli:
        attempt("calibration", lambda: attack_calibration_file(scheme, env))
    attempt("grind", lambda: attack_grind(scheme, env))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small audit (a few minutes)")
    parser.add_argument("--schemes", default=",".join(ALL_SCHEMES), help="comma-separated scheme names")
    parser.add_argument(
        "--attacks", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}"
    )
    parser.add_argument("--grind", type=int, default=None, help="signed secrets a grinding accuser tries")
    parser.add_argument("--no-cli", action="store_true", help="skip the calibration.json attack (CLI)")
    parser.add_argument("--out", type=Path, default=None, help="write every tally as JSON here")
    parser.add_argument("--build-only", action="store_true", help="train and cache the clean population")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    if args.grind is not None:
        size = replace(size, grind=args.grind, grind_costly=min(args.grind, size.grind_costly))
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    for s in schemes:
        SCHEMES.get(s)
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(sorted(unknown))}; use {', '.join(ATTACKS)}")
    data = load_dataset(DATA)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    pop = clean_population(size, data, log)
    log(f"clean population ready in {time.perf_counter() - t_start:.0f} s")
    if args.build_only:
        return 0
    import tempfile

    maker = KeyMaker(data, size.owner_arch, pop["owner-base"][0].model, pop["owner-calibration"])
    with tempfile.TemporaryDirectory(prefix="false-claims-") as work:
        env = Env(size, data, pop, maker, log, 2 if size is FULL else 1, not args.no_cli, Path(work))
        tallies: list[Tally] = []
        per_scheme: dict[str, float] = {}
        for scheme in schemes:
            t0 = time.perf_counter()
            log(f"{scheme}:")
            tallies += audit_scheme(scheme, env, attacks)
            per_scheme[scheme] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    population = [
        {"role": role, "model": m.describe, "accuracy": m.accuracy, "kind": m.kind}
        for role, members in pop.items()
        for m in members
    ]
    accs = [m.accuracy for m in pop["innocent"]]
    print(f"# False claims audit ({'quick' if args.quick else 'full'}, {total:.0f} s)\n")
    recipes = len({m.recipe for m in pop["innocent"]})
    archs = ", ".join(sorted({m.recipe.arch for m in pop["innocent"] if m.recipe}))
    print(
        f"Innocent population: {len(pop['innocent'])} clean models ({recipes} recipes, {archs}; "
        f"test accuracy {min(accs):.3f}-{max(accs):.3f}), plus {size.other_owners} model(s) per scheme "
        f"marked by other owners; judge references: {len(pop['reference'])} clean models of their own "
        "recipes.\n"
    )
    print(table(tallies))
    print("\nInnocent models called 'found':\n" + findings(tallies))
    print("\nErrors (attacks or verifiers that did not run):\n" + problems(tallies))
    if args.out:
        doc = {
            "size": asdict(size),
            "seconds": round(total, 1),
            "seconds_per_scheme": {k: round(v, 1) for k, v in per_scheme.items()},
            "population": population,
            "tallies": [t.to_json() for t in tallies],
        }
        args.out.write_text(json.dumps(doc, indent=1, default=str))
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
