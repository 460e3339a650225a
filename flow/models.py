"""FINN-compatible binarized networks built from Brevitas layers.

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
from brevitas.nn import QuantIdentity, QuantLinear
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
        width = in_features
        for out_features in hidden:
            layers += [
                QuantLinear(width, out_features, bias=False, weight_quant=quant.weight),
                nn.BatchNorm1d(out_features),
                QuantIdentity(act_quant=quant.act, features=out_features),
                nn.Dropout(DROPOUT),
            ]
            width = out_features
        layers += [
            QuantLinear(width, num_classes, bias=False, weight_quant=quant.weight),
            LogitScale(1.0 / math.sqrt(width)),
        ]
        self.features = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, QuantLinear):
                nn.init.uniform_(module.weight, -1.0, 1.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels: raw 0..255 values; map to [-1, 1] before the input binarizer.
        x = pixels.flatten(1) * (2.0 / 255.0) - 1.0
        return self.features(x)


def build_model(name: str, quant: str, image_shape: tuple[int, ...], num_classes: int = 10) -> nn.Module:
    quantizers = get_quantizers(quant)
    if name in MLP_HIDDEN:
        return BinaryMLP(MLP_HIDDEN[name], quantizers, math.prod(image_shape), num_classes)
    raise FlowError(f"unknown model '{name}'; known models: {', '.join(MLP_HIDDEN)}")


def known_models() -> list[str]:
    return list(MLP_HIDDEN)
