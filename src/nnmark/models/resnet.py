"""The CIFAR ResNet of He et al. 2016 (ResNet-32), the model of Namba & Sakuma 2019."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.errors import NnmarkError
from nnmark.models import MODELS, check_input_shape


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a shortcut (He et al. 2016, CIFAR-10 section 4.2).

    When the block changes width or stride, shortcut ``"A"`` (the paper's CIFAR choice) takes every
    other pixel and pads the new channels with zeros (no parameters); ``"B"`` uses a 1×1
    convolution and BatchNorm (a projection).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = out_ch - in_ch
        self.proj: nn.Module | None = None
        if (stride != 1 or in_ch != out_ch) and shortcut == "B":
            self.proj = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.proj is not None:
            short = self.proj(x)
        else:
            short = x
            if self.stride != 1:
                short = short[:, :, :: self.stride, :: self.stride]
            if self.pad > 0:
                half = self.pad // 2
                short = F.pad(short, (0, 0, 0, 0, half, self.pad - half))
        return F.relu(out + short)


@MODELS.register("resnet32")
def resnet32(
    input_shape: tuple[int, int, int], num_classes: int, width: int = 1, shortcut: str = "A"
) -> nn.Module:
    """ResNet-32 (He et al. 2016; Namba & Sakuma 2019): 3 stages × 5 basic blocks, CIFAR-sized.

    He, Zhang, Ren, Sun: "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2:
    a 3×3 conv with 16 channels, then 3 stages of n = 5 basic blocks with 16, 32, 64 channels
    (stride 2 at the start of stages 2 and 3), BatchNorm after every convolution, global average
    pooling and a fully connected layer; 6n + 2 = 32 layers, about 0.46 M parameters. Namba &
    Sakuma, "Robust Watermarking of Neural Network with Exponential Weighting", AsiaCCS 2019,
    use it as the target model (SGD lr 0.1, ×0.1 at epochs 40 and 60, batch 100, 100 epochs).

    Args:
        width: channel multiplier (1 = 16/32/64 channels as in the paper).
        shortcut: "A" = parameter-free zero-padding shortcut (the paper's CIFAR choice),
            "B" = 1×1 convolution projection when the shape changes.
    """
    c, _, _ = check_input_shape(input_shape, min_size=4, arch="resnet32")
    if width < 1:
        raise NnmarkError(f"width must be a positive number, got {width}")
    if shortcut not in ("A", "B"):
        raise NnmarkError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    chans = [16 * width, 32 * width, 64 * width]
    layers: list[nn.Module] = [
        nn.Conv2d(c, chans[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(chans[0]),
        nn.ReLU(inplace=True),
    ]
    in_ch = chans[0]
    for stage, out_ch in enumerate(chans):
        for block in range(5):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(in_ch, out_ch, stride, shortcut))
            in_ch = out_ch
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_ch, num_classes)]
    net = nn.Sequential(*layers)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net
