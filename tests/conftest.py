"""Shared fixtures: small real data (a slice of MNIST-5k) so the suite stays fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset

# one thread: on a busy 2-core machine two OpenMP threads spin and run ~10x slower
torch.set_num_threads(1)


def subset(data: ImageDataset, n_train: int, n_test: int) -> ImageDataset:
    return ImageDataset(
        data.name,
        data.train_x[:n_train],
        data.train_y[:n_train],
        data.test_x[:n_test],
        data.test_y[:n_test],
        data.num_classes,
        data.class_names,
    )


@pytest.fixture(scope="session")
def mnist5k() -> ImageDataset:
    return load_dataset("mnist5k")


@pytest.fixture(scope="session")
def small_mnist(mnist5k: ImageDataset) -> ImageDataset:
    """1,500 training and 500 test digits: enough for dnn1/digit-cnn to learn in a couple of epochs."""
    return subset(mnist5k, 1500, 500)
