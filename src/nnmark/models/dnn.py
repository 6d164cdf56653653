"""DNN-1 and DNN-2 of Zhong et al. 2020 ("A New Label Helps"), section 4 of the paper."""

from __future__ import annotations

from torch import nn

from nnmark.errors import NnmarkError
from nnmark.models import MODELS, check_input_shape


@MODELS.register("dnn1")
def dnn1(input_shape: tuple[int, int, int], num_classes: int, hidden: int = 100) -> nn.Module:
    """DNN-1 (Zhong et al. 2020): conv32 3×3, pool 2×2, dense 100, dense — small MNIST model.

    Zhong, Zhang, Zhang, Zhou: "Protecting IP of Deep Neural Networks with Watermarking: A New
    Label Helps", PAKDD 2020, section 4: "conv.ReLU32(3×3), MaxPooling(2×2), Dense.ReLU100,
    Dens.Softmax" (here the logits). The convolution is unpadded ("valid", the Keras default), so
    28×28 inputs give 32×13×13 features; the flatten size follows the input shape.

    Args:
        hidden: width of the hidden dense layer (100 in the paper).
    """
    c, h, w = check_input_shape(input_shape, min_size=4, arch="dnn1")
    if hidden < 1:
        raise NnmarkError(f"hidden must be a positive number, got {hidden}")
    flat = 32 * ((h - 2) // 2) * ((w - 2) // 2)
    return nn.Sequential(
        nn.Conv2d(c, 32, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


@MODELS.register("dnn2")
def dnn2(input_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> nn.Module:
    """DNN-2 (Zhong et al. 2020): VGG-like conv 64-64-pool-128-128-pool-256-256-pool, dense.

    Zhong, Zhang, Zhang, Zhou: "Protecting IP of Deep Neural Networks with Watermarking: A New
    Label Helps", PAKDD 2020, section 4: "conv.ReLU64(3×3), conv.ReLU64(3×3), MaxPooling(2×2),
    conv.ReLU128(3×3), conv.ReLU128(3×3), MaxPooling(2×2), conv.ReLU256(3×3),
    conv.ReLU256(3×3), MaxPooling(2×2), Dens.Softmax" (here the logits). Convolutions use
    padding 1, so 32×32 inputs give 256×4×4 features and 28×28 inputs 256×3×3.

    Args:
        width: channels of the first stage (64 in the paper); the stages use 1×, 2×, 4× it.
    """
    c, h, w = check_input_shape(input_shape, min_size=8, arch="dnn2")
    if width < 1:
        raise NnmarkError(f"width must be a positive number, got {width}")
    layers: list[nn.Module] = []
    in_ch = c
    for mult in (1, 2, 4):
        out_ch = width * mult
        for _ in range(2):
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(2))
    flat = in_ch * (h // 8) * (w // 8)
    layers += [nn.Flatten(), nn.Linear(flat, num_classes)]
    return nn.Sequential(*layers)
