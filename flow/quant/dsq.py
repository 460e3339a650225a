"""``dsq``: Differentiable Soft Quantization's tanh as the stand-in for sign.

For one bit over the clipping range [-1, 1] (one interval of width 2, centre
m = 0) DSQ's soft function is ``phi(x) = s tanh(k x)`` with the characteristic
variable alpha: ``k = log(2/alpha - 1) / 2``, ``s = 1 / (1 - alpha)`` (so that
phi(+-1) = +-1). The gradient is ``s k (1 - tanh^2(k x))`` inside the range and
0 outside, as DSQ clips before quantizing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow.quant.base import SurrogateActQuant, SurrogateWeightQuant

DEFAULT_ALPHA = 0.2


class DsqEstimator(nn.Module):
    def __init__(self, dsq_alpha: float = DEFAULT_ALPHA):
        super().__init__()
        if not 0 < dsq_alpha < 1:
            raise ValueError(f"dsq alpha {dsq_alpha} must lie in (0, 1)")
        self.dsq_alpha = dsq_alpha
        self.k = math.log(2 / dsq_alpha - 1) / 2
        self.s = 1 / (1 - dsq_alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        grad = self.s * self.k * (1 - torch.tanh(self.k * x) ** 2)
        return torch.where(x.abs() <= 1, grad, 0.0)


class DsqWeightQuant(SurrogateWeightQuant):
    estimator = DsqEstimator
    dsq_alpha = DEFAULT_ALPHA


class DsqActQuant(SurrogateActQuant):
    estimator = DsqEstimator
    dsq_alpha = DEFAULT_ALPHA
