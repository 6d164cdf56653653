"""Dynamic batching: requests that arrive while the model is busy are answered in one forward pass.

Leader/follower, with threads only (works under any event loop): each request puts its inputs in
a queue and waits for the model; whoever gets the model next runs every queued input (up to
``max_batch``) as one batch and hands each request its rows. Fifty clients sending one image
each then cost a few batched forward passes instead of fifty single ones. The answers are the
model's, row by row; the order in which queued requests are batched does not change them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class _Slot:
    x: torch.Tensor
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: bool = False


class Batcher:
    """Calls ``fn`` (N×... → N×K) on concatenated queued inputs, at most ``max_batch`` rows at a time."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], max_batch: int) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self._queue: list[_Slot] = []
        self._queue_lock = threading.Lock()
        self._model = threading.Lock()
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        slot = _Slot(x)
        with self._queue_lock:
            self._queue.append(slot)
        while not slot.done:
            with self._model:
                if not slot.done:
                    self._run(self._take())
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def _take(self) -> list[_Slot]:
        with self._queue_lock:
            batch: list[_Slot] = []
            rows = 0
            while self._queue and (not batch or rows + len(self._queue[0].x) <= self.max_batch):
                slot = self._queue.pop(0)
                batch.append(slot)
                rows += len(slot.x)
            return batch

    def _run(self, batch: list[_Slot]) -> None:
        if not batch:
            return
        try:
            self.calls += 1
            out = self.fn(torch.cat([s.x for s in batch]) if len(batch) > 1 else batch[0].x)
            start = 0
            for s in batch:
                s.result = out[start : start + len(s.x)]
                start += len(s.x)
        except BaseException as e:  # every request of the batch gets the error
            for s in batch:
                s.error = e
        finally:
            for s in batch:
                s.done = True
