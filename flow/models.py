"""FINN-compatible binarized networks built from Brevitas layers.

MLPs (TFC/SFC/LFC) and CNV, the six-convolution network of FINN/BNN-PYNQ.

The MLPs follow Brevitas' bnn_pynq TFC/SFC/LFC: a binarized input, then per
hidden layer QuantLinear (no bias) -> BatchNorm1d -> binary activation, then a
last QuantLinear. Differences, each for the accelerator's sake:

- The network takes raw pixel values (0..255) and scales them itself, so the
  same uint8 bytes go to PyTorch, to the QONNX/FINN graphs and to the board;
  FINN folds the scaling into the first threshold unit.
- The logits are scaled by one learned *positive* scalar instead of
  bnn_pynq's TensorNorm: a positive scale never changes the arg-max, so FINN
  absorbs it into the label-select unit, whatever training does to it.
"""

from __future__ import annotations

import math

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from flow.errors import FlowError
from flow.quant import BinaryQuantizers, get_quantizers

MLP_HIDDEN = {
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
}
DROPOUT = 0.2


class LogitScale(nn.Module):
    """Multiply by exp(log_scale): a learned positive temperature for the loss."""

    def __init__(self, init_scale: float):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()


def binary_classifier(width: int, hidden: tuple[int, ...], num_classes: int, quant: BinaryQuantizers,
                      dropout: float | None = None) -> list[nn.Module]:
    """Binary FC layers (QuantLinear -> BatchNorm1d -> sign [-> Dropout]) and the scaled logits."""
    layers: list[nn.Module] = []
    for out_features in hidden:
        layers += [
            QuantLinear(width, out_features, bias=False, weight_quant=quant.weight),
            nn.BatchNorm1d(out_features),
            QuantIdentity(act_quant=quant.act, features=out_features),
        ]
        if dropout is not None:
            layers.append(nn.Dropout(dropout))
        width = out_features
    # No batch-norm follows the last layer, so a weight scale there reaches the logits; a per-channel
    # scale would change the arg-max and could not go into the label select: per tensor (flow.quant.clip).
    return layers + [
        QuantLinear(width, num_classes, bias=False, weight_quant=quant.weight, weight_clip_scale_per_channel=False),
        LogitScale(1.0 / math.sqrt(width)),
    ]


def init_latent_weights(model: nn.Module) -> None:
    """Latent weights uniform in [-1, 1], the range training keeps them in."""
    for module in model.modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            nn.init.uniform_(module.weight, -1.0, 1.0)


class BinaryMLP(nn.Module):
    def __init__(
        self,
        hidden: tuple[int, ...],
        quant: BinaryQuantizers,
        in_features: int = 28 * 28,
        num_classes: int = 10,
    ):
        super().__init__()
        # features=: the activation width, for quantizers that need it (fourier+fit).
        layers: list[nn.Module] = [QuantIdentity(act_quant=quant.act, features=in_features), nn.Dropout(DROPOUT)]
        layers += binary_classifier(in_features, hidden, num_classes, quant, dropout=DROPOUT)
        self.features = nn.Sequential(*layers)
        init_latent_weights(self)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: raw 0..255 values; map to [-1, 1] before the input binarizer.
        x = pixels.flatten(1) * (2.0 / 255.0) - 1.0
        return self.features(x)


# CNV: pairs of 3x3 binary convolutions (no padding), a 2x2 max-pool after
# the first two pairs, then two binary FC layers: 32x32 -> 30 -> 28 -> 14 ->
# 12 -> 10 -> 5 -> 3 -> 1, as FINN/BNN-PYNQ's CNV-W1A1.
CNV_CONV_CHANNELS = ((64, 64), (128, 128), (256, 256))
CNV_POOLED_PAIRS = 2
CNV_FC = (512, 512)
# block order per model name: where the 2x2 max-pool sits in a pooled block
CNV_BLOCK_ORDERS = {
    "cnv": "conv-pool-bn",  # conv -> max-pool -> batch-norm -> sign (the spec's order)
    "cnv-bnn-pynq": "conv-bn-pool",  # conv -> batch-norm -> sign -> max-pool (Brevitas bnn_pynq)
}


class BinaryCNV(nn.Module):
    """CNV-W1A1: the first convolution reads the 8-bit pixels with bipolar weights.

    The pixels are mapped to [-1, 1] exactly as the MLPs do (no input
    quantizer: 0..255 integers are already the 8-bit input the hardware
    reads); every later convolution and FC layer is binary x binary.
    ``block_order`` places the max-pool before batch-norm (``conv-pool-bn``)
    or after the sign (``conv-bn-pool``); both compute the same function
    when every batch-norm scale is positive, and the build moves the
    max-pool past the thresholds in either case (flow.build).
    """

    def __init__(self, quant: BinaryQuantizers, in_channels: int, num_classes: int = 10,
                 block_order: str = "conv-pool-bn"):
        super().__init__()
        if block_order not in CNV_BLOCK_ORDERS.values():
            raise FlowError(f"unknown CNV block order '{block_order}'")
        layers: list[nn.Module] = []
        channels = in_channels
        for pair, widths in enumerate(CNV_CONV_CHANNELS):
            for i, out_channels in enumerate(widths):
                pooled = pair < CNV_POOLED_PAIRS and i == len(widths) - 1
                layers.append(QuantConv2d(channels, out_channels, 3, bias=False, weight_quant=quant.weight))
                if pooled and block_order == "conv-pool-bn":
                    layers.append(nn.MaxPool2d(2))
                layers += [
                    nn.BatchNorm2d(out_channels),
                    QuantIdentity(act_quant=quant.act, features=out_channels),
                ]
                if pooled and block_order == "conv-bn-pool":
                    layers.append(nn.MaxPool2d(2))
                channels = out_channels
        layers.append(nn.Flatten())
        # the last convolution's output is 1 x 1: its channels are the FC input
        layers += binary_classifier(channels, CNV_FC, num_classes, quant)
        self.features = nn.Sequential(*layers)
        init_latent_weights(self)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.features(pixels * (2.0 / 255.0) - 1.0)


def build_model(name: str, quant: str, image_shape: tuple[int, ...], num_classes: int = 10) -> nn.Module:
    quantizers = get_quantizers(quant)
    if name in MLP_HIDDEN:
        return BinaryMLP(MLP_HIDDEN[name], quantizers, math.prod(image_shape), num_classes)
    if name in CNV_BLOCK_ORDERS:
        if tuple(image_shape[1:]) != (32, 32):
            raise FlowError(
                f"model {name} takes 32x32 images, the dataset has {'x'.join(map(str, image_shape))}; "
                "use DATASET=cifar10, fashion-mnist32 or fashion-mnist32-rgb"
            )
        return BinaryCNV(quantizers, image_shape[0], num_classes, CNV_BLOCK_ORDERS[name])
    raise FlowError(f"unknown model '{name}'; known models: {', '.join(known_models())}")


def known_models() -> list[str]:
    return [*MLP_HIDDEN, *CNV_BLOCK_ORDERS]
