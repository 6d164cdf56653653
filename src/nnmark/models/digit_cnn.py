"""The Digit CNN of Li et al. 2019 (null-embedding watermarks), Table 10 of the paper."""

from __future__ import annotations

from torch import nn

from nnmark.errors import NnmarkError
from nnmark.models import MODELS, check_input_shape


@MODELS.register("digit-cnn")
def digit_cnn(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 512) -> nn.Module:
    """Digit CNN (Li et al. 2019): conv32 5×5, pool, conv64 5×5, pool, fc512, fc — MNIST-sized.

    Li, Wang, Zheng, Zhao: "Piracy Resistant Watermarks for Deep Neural Networks" (2019),
    Table 10 ("Model Architecture for Digit"): conv_1 Conv 32 5×5 ReLU, pool_1 MaxPool 2×2,
    conv_2 Conv 64 5×5 ReLU, pool_2 MaxPool 2×2, fc_1 FC 512 ReLU, fc_2 FC classes (softmax in
    the paper; here the logits). The convolutions use padding 2 ("same"), so 28×28 inputs give a
    64×7×7 feature map and 32×32 inputs 64×8×8; the flatten size follows the input shape. The
    paper trains it with SGD, lr 0.001, batch 128.

    Args:
        hidden: width of the fully connected layer (512 in the paper).
    """
    c, h, w = check_input_shape(input_shape, min_size=4, arch="digit-cnn")
    if hidden < 1:
        raise NnmarkError(f"hidden must be a positive number, got {hidden}")
    flat = 64 * (h // 2 // 2) * (w // 2 // 2)
    return nn.Sequential(
        nn.Conv2d(c, 32, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
