"""Oracles count queries, refuse past a budget and reject inputs of the wrong shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnmark.errors import BudgetExceededError, NnmarkError
from nnmark.oracle import TorchOracle


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_counts_queries_and_returns_labels_and_probabilities():
    o = TorchOracle(model())
    x = torch.rand(5, 1, 2, 2)
    labels = o.labels(x)
    probs = o.probabilities(x)
    assert labels.shape == (5,) and probs.shape == (5, 3)
    assert torch.allclose(probs.sum(1), torch.ones(5)) and torch.equal(probs.argmax(1), labels)
    assert o.queries == 10


def test_budget_refuses_before_sending():
    o = TorchOracle(model(), budget=6)
    o.labels(torch.rand(4, 1, 2, 2))
    with pytest.raises(BudgetExceededError, match="budget"):
        o.labels(torch.rand(3, 1, 2, 2))
    assert o.queries == 4


def test_wrong_shape_is_a_user_error():
    o = TorchOracle(model(), input_shape=(1, 2, 2))
    with pytest.raises(NnmarkError, match="another kind of model"):
        o.labels(torch.rand(2, 1, 3, 3))
    with pytest.raises(NnmarkError):
        o.labels(torch.rand(2, 4))
