"""Key forgery: the thief makes up a key *after* stealing the model and signs it with its own
identity, claiming the model as its own (the ownership ambiguity of Li et al. 2019, Sec. 3–4).

For schemes whose keys are inputs with labels (trigger sets, label change), the attacker picks
inputs that the stolen model maps to labels of its choosing: its own images moved by a targeted
iterative gradient attack (L∞ ≤ ``eps``) until the stolen model gives the chosen label — a
random label other than the image's own, the way label-change keys are made, or one shared
target for trigger-set schemes. Such a key matches the stolen model by construction, and on
statistics alone it is indistinguishable from a real one: what stops it is (1) ``verify
--owner-pub`` with the true owner's public key (the forged key is signed by someone else), and
(2) time: a signature proves who, not when, so priority rests on when each commitment hash
(``nnmark key info``) was published.

For ``li-null-embedding`` the attacker cannot choose anything: pattern, label and position follow
from a signature over a message naming the attacker. The best it can do is grind — sign
``tries`` messages and keep the watermark the stolen model happens to fit best — which the
1,000-random-key test shows to be hopeless (Li Sec. 7.3: 0 % false positives).
"""

from __future__ import annotations

import base64
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nnmark.attacks.base import AttackParams, Claim, ClaimAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey
from nnmark.schemes.null_embedding import (
    SCHEME_NAME,
    NullEmbeddingParams,
    Watermark,
    derive_watermark,
    stamp,
    watermark_params,
)
from nnmark.training import TrainConfig
from nnmark.types import Key, ModelSpec


class ForgeryParams(AttackParams):
    scheme: str = Field(
        "auto", description="scheme of the forged key; auto: the owner key's (--key), else label-change"
    )
    keys: int = Field(100, ge=1, le=10_000, description="forged key inputs (probes for li-null-embedding)")
    eps: float = Field(0.3, gt=0, le=1, description="L∞ bound of the perturbation on [0, 1] pixels")
    steps: int = Field(50, ge=1, description="gradient steps of the targeted attack")
    tries: int = Field(200, ge=1, description="li-null-embedding: signed messages tried (grinding)")


@torch.no_grad()
def _labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (
        torch.cat([model(c).argmax(1) for c in x.split(512)]) if len(x) else torch.empty(0, dtype=torch.long)
    )


def targeted_inputs(
    model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each image (L∞ ≤ eps, staying in [0, 1]) until ``model`` answers its target; returns the
    moved images and a mask of those that got there."""
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    step = 2.5 * eps / steps
    adv = x.clone()
    done = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        adv.requires_grad_(True)
        logits = model(adv)
        done = logits.argmax(1) == targets
        if bool(done.all()):
            break
        loss = F.cross_entropy(logits, targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        with torch.no_grad():
            moved = adv - step * grad.sign() * (~done).float()[:, None, None, None]
            adv = torch.min(torch.max(moved, x - eps), x + eps).clamp(0, 1)
    adv = adv.detach()
    return adv, _labels(model, adv) == targets


@register_attack
class Forgery(ClaimAttack):
    """Key forgery: pick inputs the stolen model maps to chosen labels, sign the key as the attacker."""

    name = "forgery"
    Params = ForgeryParams

    def make_claim(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        config: TrainConfig,
        attacker: OwnerKey,
        victim_keys: list[Key],
        progress: bool,
    ) -> Claim:
        from nnmark.schemes import SCHEMES

        p = self.params
        assert isinstance(p, ForgeryParams)
        scheme = p.scheme
        if scheme == "auto":
            scheme = victim_keys[0].scheme if victim_keys else "label-change"
        scheme_cls = SCHEMES.get(scheme)
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed + 777)
        if scheme == SCHEME_NAME:
            key, metrics = self._grind(model, spec, data, attacker, gen)
        else:
            key, metrics = self._pick(model, spec, data, scheme_cls, gen)
        for q in model.parameters():
            q.requires_grad_(True)
        return Claim(model.eval(), key, attacker, {"attack": self.name, "scheme": scheme, **metrics})

    def _pick(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        scheme_cls: Any,
        gen: torch.Generator,
    ) -> tuple[Key, dict[str, Any]]:
        p = self.params
        assert isinstance(p, ForgeryParams)
        classes = spec.num_classes
        idx = torch.randperm(len(data.train_x), generator=gen)[: min(len(data.train_x), 3 * p.keys)]
        x = data.train_x[idx].float().div(255)
        y = data.train_y[idx].long()
        if scheme_cls.shared_target:
            target = int(torch.randint(classes, (1,), generator=gen))
            keep = y != target
            x, y = x[keep], y[keep]
            targets = torch.full_like(y, target)
        else:
            targets = (y + torch.randint(1, classes, y.shape, generator=gen)) % classes
        adv, ok = targeted_inputs(model, x, targets, p.eps, p.steps)
        if not bool(ok.any()):
            raise NnmarkError(
                "forgery: the stolen model could not be led to any chosen label; raise --set eps"
            )
        adv, targets = adv[ok][: p.keys], targets[ok][: p.keys]
        params = scheme_cls.Params().model_dump()
        if "keys" in params:
            params["keys"] = len(adv)
        if scheme_cls.shared_target:
            params["target"] = int(targets[0])
        key = Key(
            scheme=scheme_cls.name,
            params=params,
            input_shape=spec.input_shape,
            num_classes=classes,
            inputs=adv.float().contiguous(),
            labels=targets.long(),
        )
        return key, {"keys": len(adv), "reached": float(ok.float().mean()), "eps": p.eps}

    def _grind(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        data: ImageDataset,
        attacker: OwnerKey,
        gen: torch.Generator,
    ) -> tuple[Key, dict[str, Any]]:
        p = self.params
        assert isinstance(p, ForgeryParams)
        defaults = NullEmbeddingParams.model_validate({"probes": p.keys})
        n = min(p.keys, len(data.test_x))
        pick = torch.randperm(len(data.test_x), generator=gen)[:n]
        x, y = data.test_x[pick].float().div(255), data.test_y[pick].long()
        clean = _labels(model, x)
        best: tuple[float, dict[str, Any], Watermark] | None = None
        for i in range(p.tries):
            extra = watermark_params(
                attacker, spec.input_shape, spec.num_classes, defaults.n, tag=f"claim {i}"
            )
            wm = Watermark.from_json(extra["watermark"])
            null = _labels(model, stamp(x, wm, defaults.lam))
            true = _labels(model, stamp(x, wm, defaults.lam, inverse=True))
            phi_null = float(((null == clean) & (clean == y)).float().mean())
            other = y != wm.label
            phi_true = float((true[other] == wm.label).float().mean()) if bool(other.any()) else 0.0
            score = min(phi_null, phi_true)
            if best is None or score > best[0]:
                best = (score, extra, wm)
        assert best is not None
        score, extra, wm = best
        assert (
            derive_watermark(
                base64.b64decode(extra["signature"]), spec.input_shape, spec.num_classes, defaults.n
            )
            == wm
        )
        params = {**defaults.model_dump(), **extra, "kept": []}
        key = Key(
            scheme=SCHEME_NAME,
            params=params,
            input_shape=spec.input_shape,
            num_classes=spec.num_classes,
            inputs=x.contiguous(),
            labels=y,
        )
        return key, {"tries": p.tries, "best_min_phi": score}
