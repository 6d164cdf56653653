"""The attacker's data, disjoint from the owner's training images (Namba 2019 Sec. 6.1.1).

Namba & Sakuma: "we suppose training samples and samples used for watermark invalidation are
mutually exclusive" (Sec. 6.1.1, Table 6), and the attacker holds 1 % (MNIST), 5 % (GTSRB) or
10 % (CIFAR) *of the total training samples*. nnmark's owner trains on a dataset's whole training
split, so the attacker draws from the dataset's held-out (test) split instead:

* ``fraction`` × (number of the owner's training images) attacker images, drawn at random
  (seeded) from the test split; the rest of the test split is where accuracy before and after
  the attack is measured (never on an image the attacker trained on). At least
  :data:`MIN_EVALUATION` test images (or a fifth of them) stay for evaluation; a larger share is
  refused with a hint to use another dataset.
* ``other``: images from another dataset (``--attacker-data``, e.g. Fashion-MNIST for an MNIST
  model, Li 2019's out-of-distribution extraction): ``fraction`` × (owner's training images) of its
  training split, the whole owner test split for evaluation.

Either way, any attacker image that is byte-identical to one of the owner's training images is
dropped (so a dataset that contains the owner's, such as full MNIST for MNIST-5k, can be named).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import torch

from nnmark.data.base import ImageDataset
from nnmark.errors import NnmarkError

#: the fewest held-out images left for measuring accuracy (or a fifth of the test split if fewer)
MIN_EVALUATION = 100
_SPLIT_STREAM = 99991


def image_hashes(x: torch.Tensor) -> list[bytes]:
    """One SHA-256 digest per image (its raw bytes), to compare images across datasets."""
    flat = x.contiguous().reshape(len(x), -1).numpy()
    return [hashlib.sha256(row.tobytes()).digest() for row in flat]


@dataclass(frozen=True)
class AttackerData:
    """``data.train_*``: the attacker's images and labels (``num_classes``: their task's); ``data.test_*``:
    the owner's evaluation images, none of which the attacker holds; ``info``: provenance."""

    data: ImageDataset
    info: dict[str, Any]


def evaluation_images(n_test: int) -> int:
    """Test images that always stay for measuring accuracy: :data:`MIN_EVALUATION`, or a fifth of the
    test split if that is more (all of it when it is smaller); the rest may go to the attacker."""
    return min(n_test, max(MIN_EVALUATION, n_test // 5))


def attacker_data(
    owner: ImageDataset, fraction: float, seed: int, other: ImageDataset | None = None
) -> AttackerData:
    """The attacker's share (see the module docstring); never one of ``owner``'s training images."""
    if not 0 < fraction <= 1:
        raise NnmarkError(f"--attacker-fraction must be in (0, 1], got {fraction}")
    want = max(1, round(len(owner.train_x) * fraction))
    gen = torch.Generator().manual_seed(seed + _SPLIT_STREAM)
    owner_hashes = set(image_hashes(owner.train_x))
    if other is None or other.name == owner.name:
        pool_x, pool_y = owner.test_x, owner.test_y
        n_test = len(pool_x)
        keep = evaluation_images(n_test)
        if want > n_test - keep:
            raise NnmarkError(
                f"the attacker's {fraction:g} share of {owner.name} is {want} images, but its held-out part "
                f"({n_test} images, of which {keep} stay to measure accuracy) gives at most "
                f"{max(n_test - keep, 0)}; lower --attacker-fraction or name another dataset with "
                "--attacker-data"
            )
        perm = torch.randperm(n_test, generator=gen)
        take, rest = perm[:want], perm[want:].sort().values
        att_x, att_y = pool_x[take], pool_y[take]
        eval_x, eval_y = owner.test_x[rest], owner.test_y[rest]
        source = f"{owner.name} held-out (test) split"
    else:
        if other.input_shape != owner.input_shape:
            raise NnmarkError(
                f"--attacker-data {other.name} has {other.input_shape} images but the model takes "
                f"{owner.input_shape}; name a dataset of the same image size"
            )
        perm = torch.randperm(len(other.train_x), generator=gen)
        att_x, att_y = other.train_x[perm], other.train_y[perm]
        eval_x, eval_y = owner.test_x, owner.test_y
        source = f"{other.name} training split"
    fresh = torch.tensor([h not in owner_hashes for h in image_hashes(att_x)], dtype=torch.bool)
    excluded = int((~fresh).sum())
    att_x, att_y = att_x[fresh][:want], att_y[fresh][:want]
    if len(att_x) < want:
        raise NnmarkError(
            f"{source} holds only {len(att_x)} images that are not the owner's training images; "
            f"{want} were asked (--attacker-fraction {fraction:g})"
        )
    data = replace(owner, train_x=att_x, train_y=att_y, test_x=eval_x, test_y=eval_y)
    if other is not None and other.name != owner.name:  # the attacker's labels are the other task's
        data = replace(data, num_classes=other.num_classes, class_names=other.class_names)
    info = {
        "source": source,
        "fraction_of_owner_training": fraction,
        "images": len(att_x),
        "evaluation_images": len(eval_x),
        "owner_training_images": len(owner.train_x),
        "overlap_with_owner_training": 0,
        "owner_images_excluded": excluded,
    }
    return AttackerData(data, info)
