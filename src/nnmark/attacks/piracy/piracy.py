"""Piracy attack of Li et al., "Piracy Resistant Watermarks for Deep Neural Networks" (2019), Sec. 4
and 7.2: the thief embeds its *own* null-embedding watermark into the owner's model, so that it
can claim the model too.

The attacker derives a watermark from its own signature (the same Transform as the owner, see
:mod:`nnmark.schemes.null_embedding`) and trains the stolen model on its own images with the
dual-embedding loss — 5,000 images where its share allows (the paper's attacker), else its whole
share — for 10 epochs (Digit), at the last learning rate of the owner's training (nnmark's
default recipe: Adam 1e-3, constant). The claim is the pirated model with the pirate's key,
signed by the attacker.

Paper, Table 3 (Digit): normal accuracy 98.72 % → 19.02 %, owner watermark 98.51 % → 1.21 %,
pirate watermark 9.31 %: the pirated model is useless and carries neither watermark.

Measured (MNIST-5k, digit-cnn, owner λ = 2000 ramped, seeds 0–2; the attacker's 10 % share =
400 images, 10 epochs; φ given as null/true):

==========================  =====================  ======================  =====================
pirate's optimizer          accuracy before→after  owner φ after           pirate φ after
==========================  =====================  ======================  =====================
SGD lr 0.001 (Li's Digit)   94.8 → 10.0/10.0/15.6  11.5/0, 10/0, 0/0       11/0, 11/0, 17/100
Adam lr 0.001 (nnmark's)    94.8 → 93.6/93.2/91.6  11/100, 15/100, 6.5/100 37/100, 8.5/100, 9/100
==========================  =====================  ======================  =====================

With SGD the λ-sized gradients blow the weights up in the first epoch (NaN; seed 2 ends at
15.6 %) — Li's outcome. But the same SGD attack also wrecks a *clean* model (97.5 → 10 %, NaN),
and an Adam pirate cannot embed a λ = 2000 watermark into a clean model either (97.5 → 96.0 %,
pirate φ_null 9 %): what stops the pirate here is the extreme λ, not the owner's watermark. An
Adam pirate keeps a useful model (−2 points) and erases the owner's null component (φ_null
≈ 10 %; φ_true stays 100 %), so the owner's verification fails on the pirated model. The
table's pirate rates depend on the pattern the pirate's signature gives: with other patterns
(re-measured later over five pirate signatures each) the Adam pirate's φ_null reached 83–90 % on
digit-cnn for 2 of 5 patterns, and 42–84 % with φ_true 100 % on a tiny CNN, where at one pattern
both owner and pirate passed Li's 80 % rule. So at λ = 2000 an Adam pirate sometimes succeeds;
piracy is resisted, not prevented, and the owner's priority then rests on the published
commitment. At λ = 20 the pirate wins outright (see
:mod:`nnmark.schemes.null_embedding`). ``metrics["diverged"]`` says when training blew up.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from pydantic import Field

from nnmark.attacks.base import AttackParams, Claim, ClaimAttack, register_attack
from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError
from nnmark.identity import OwnerKey
from nnmark.schemes.null_embedding import DEFAULT_LAMBDA, SCHEME_NAME, NullEmbedding, null_rates
from nnmark.training import TrainConfig, evaluate, train
from nnmark.types import Key, ModelSpec

log = logging.getLogger(__name__)


class PiracyParams(AttackParams):
    epochs: int = Field(10, ge=1, description="epochs of pirate embedding (Li: 10 for Digit)")
    images: int = Field(5000, ge=1, description="attacker images used, at most its share (Li: 5,000)")
    optimizer: str = Field(
        "adam", pattern="^(adam|sgd)$", description="the owner's optimizer (nnmark: adam; Li's Digit: sgd)"
    )
    lr: float = Field(1e-3, gt=0, description="learning rate: the owner's last one (nnmark and Li: 0.001)")
    batch_size: int = Field(64, ge=1, description="images per step")
    lam: float | None = Field(
        None, gt=0, description="λ of the pirate stamp (default: the owner key's, else 2000)"
    )
    alpha: float = Field(0.5, gt=0, description="α of the pirate's dual embedding")
    beta: float = Field(0.5, gt=0, description="β of the pirate's dual embedding")
    probes: int = Field(
        200, ge=1, description="held-out images (the attacker's) on which φ is measured before and after"
    )


def _rates(model: torch.nn.Module, key: Key, probes: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    phi_null, phi_true = null_rates(model, key, *probes)
    return {"phi_null": phi_null, "phi_true": phi_true}


@register_attack
class Piracy(ClaimAttack[PiracyParams]):
    """Piracy (Li 2019): embed the attacker's own null watermark into the stolen model (10 epochs)."""

    name = "piracy"

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
        from nnmark.workflow import build_key, fingerprint, prepare_secret

        p = self.params
        owner_keys = [k for k in victim_keys if k.scheme == SCHEME_NAME]
        lam = (
            p.lam
            if p.lam is not None
            else (float(owner_keys[0].params["lam"]) if owner_keys else DEFAULT_LAMBDA)
        )
        n = min(p.images, len(data.train_x))
        own = replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
        # the pirate's key follows the protocol (λ, n, T, probes) unless another λ is asked for
        scheme = NullEmbedding(owner=attacker, lam=lam, alpha=p.alpha, beta=p.beta, tag="piracy")
        secret, gen = prepare_secret(scheme, attacker, None)
        material = scheme.generate(own, gen)
        key = build_key(scheme, material, replace(spec, dataset=spec.dataset or data.name), None, secret)
        # φ before and after on the attacker's held-out images (the test split, else its own images)
        pool_x, pool_y = (data.test_x, data.test_y) if len(data.test_x) else (own.train_x, own.train_y)
        pick = torch.randperm(len(pool_x), generator=torch.Generator().manual_seed(config.seed + 4242))
        probes = (pool_x[pick[: p.probes]].float().div(255), pool_y[pick[: p.probes]].long())

        def measure() -> dict[str, Any]:
            out: dict[str, Any] = {
                "accuracy": evaluate(model, data.test_x, data.test_y),
                "pirate": _rates(model, key, probes),
            }
            for i, k in enumerate(owner_keys):
                out["owner" if i == 0 else f"owner_{i + 1}"] = _rates(model, k, probes)
            return out

        before = measure()
        cfg = replace(
            config, epochs=p.epochs, lr=p.lr, batch_size=p.batch_size, optimizer=p.optimizer, schedule="none"
        )
        diverged = False
        try:
            train(
                model,
                own.train_x,
                own.train_y,
                cfg,
                mixer=scheme.mixer(key),
                progress=progress,
                description="attack: piracy",
            )
        except NnmarkError as e:
            if "diverged" not in str(e):
                raise
            # λ-sized gradients blew the weights up: the pirated model is what the thief is left with
            log.warning("piracy: the attacker's training diverged (%s)", e)
            diverged = True
        model = model.cpu().eval()
        after = measure()
        key = replace(key, fingerprint=fingerprint(model))
        metrics = {
            "attack": self.name,
            "images": n,
            "epochs": p.epochs,
            "lam": lam,
            "optimizer": p.optimizer,
            "lr": p.lr,
            "diverged": diverged,
            "probes": len(probes[0]),
            "before": before,
            "after": after,
        }
        return Claim(model, key, attacker, metrics)
