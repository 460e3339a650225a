"""``approxsign``: Bi-Real Net's ApproxSign, gradient ``max(0, 2 - 2|x|)``."""

from __future__ import annotations

import torch
from torch import nn

from flow.quant.base import SurrogateActQuant, SurrogateWeightQuant


class ApproxSignEstimator(nn.Module):
    """Derivative of the piecewise quadratic that Bi-Real Net fits to sign."""

    def __init__(self):  # explicit: Brevitas injectors instantiate by signature
        super().__init__()

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(2 - 2 * x.abs(), min=0)


class ApproxSignWeightQuant(SurrogateWeightQuant):
    estimator = ApproxSignEstimator


class ApproxSignActQuant(SurrogateActQuant):
    estimator = ApproxSignEstimator
