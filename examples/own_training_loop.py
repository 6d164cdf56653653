"""Watermark a model of your own with your own training loop, then verify it.

Nothing here uses nnmark's model registry or training engine: the model is a plain module defined
below and the loop is an ordinary PyTorch loop over a DataLoader. nnmark supplies the keys
(``make_key``), mixes them into your batches (``mix_keys``) and verifies the finished module.

    python examples/own_training_loop.py            # about a minute on 2 CPU cores
    python examples/own_training_loop.py --quick    # smaller, for the tests
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnmark
from nnmark.data import load_dataset
from nnmark.data.base import ImageDataset
from nnmark.keyfile import save_key


class MyNet(nn.Module):
    """Your own architecture: anything that maps float [0, 1] images to logits."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.13) / 0.31))


def my_training_loop(model: nn.Module, batches, epochs: int, lr: float) -> None:  # type: ignore[no-untyped-def]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in batches():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer images and epochs")
    ap.add_argument("--out", type=Path, default=None, help="where to write watermark.key")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    data = load_dataset("mnist5k")
    n = 2000 if args.quick else len(data.train_x)
    epochs = 2 if args.quick else 4
    x = data.train_x[:n].float() / 255
    y = data.train_y[:n]
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)

    # 1. Clean models of your architecture, trained by other seeds and rates: they tell nnmark which
    #    target class clean models rarely give the keys, and how often they match it by chance.
    references = []
    for i, lr in enumerate((1e-3, 2e-3, 5e-4, 1.5e-3)):
        torch.manual_seed(100 + i)
        ref = MyNet()
        my_training_loop(ref, lambda: iter(loader), epochs=max(1, epochs - 1), lr=lr)
        references.append(ref)

    # 2. The key: 50 training images stamped with "TEST", relabelled to the rarest class. Its secret
    #    (which images, the stamp's noise) comes from the OS's random source, never from a seed; pass
    #    owner=nnmark.identity.load_owner("me.key") to sign it, and dataset= names where a verifier
    #    may draw probe images for schemes that need them.
    key = nnmark.make_key(
        "zhang-content", data.train_x[:n], y, 10, clean_models=references, dataset="mnist5k", keys=50
    )

    # 3. Your loop, with keys appended to every batch.
    torch.manual_seed(1)
    model = MyNet()
    my_training_loop(model, lambda: nnmark.mix_keys(loader, key, per_batch=2), epochs=epochs, lr=1e-3)

    # 4. Verify your module, and a clean one nobody calibrated on. This is the owner's check: p0 comes
    #    from the calibration inside your key (the claimant's), and the verdict says so.
    torch.manual_seed(2)
    other = MyNet()
    my_training_loop(other, lambda: iter(loader), epochs=epochs, lr=1e-3)
    ours = nnmark.verify(key, nnmark.TorchOracle(model))
    theirs = nnmark.verify(key, nnmark.TorchOracle(other))
    acc = (model(data.test_x.float() / 255).argmax(1) == data.test_y).float().mean()
    print(f"test accuracy {acc:.1%}; target class {key.params['target']}, p0 {ours.p0:.3f}")
    print(f"watermarked model: found={ours.watermarked} p={ours.p_value:.2g} ({ours.matches}/{ours.queries})")
    print(
        f"independent model: found={theirs.watermarked} p={theirs.p_value:.2g} "
        f"({theirs.matches}/{theirs.queries})"
    )
    # 5. In a dispute a judge names the clean reference models (at least 3) and uses nothing of yours
    #    but the key; here your reference models stand in for the judge's. The judge re-derives the
    #    key images from the key secret and your training data, which you hand over (the key holds
    #    its fingerprint, so no other data is taken for it).
    yours = ImageDataset("own", data.train_x[:n], y, data.test_x[:0], data.test_y[:0], 10)
    judged = nnmark.verify(
        key,
        nnmark.TorchOracle(model),
        references=[(r, f"reference {i + 1}") for i, r in enumerate(references)],
        probe_data=yours,
    )
    print(
        f"judge's run: found={judged.watermarked} p={judged.p_value:.2g}, "
        f"p0 {judged.p0:.3f} from the {judged.decided_by['p0']['source']}"
    )
    out = args.out or Path(tempfile.mkdtemp()) / "watermark.key"
    save_key(out, key)
    print(f"key written to {out}")
    # the judge also draws control keys of the recipe (other secrets' stamps): a briefly trained
    # model may answer those too, and then the judge says "no verdict" (never "not found")
    return 0 if ours.watermarked and judged.watermarked is not False and theirs.watermarked is False else 1


if __name__ == "__main__":
    raise SystemExit(main())
