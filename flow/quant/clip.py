"""``clip`` (and ``fourier+clip``): learnable clip thresholds for weights.

``w_b = alpha * sign(clip(w, t1, t2))`` with ``alpha = mean |clip(w, t1, t2)|``
(per tensor, or per output channel). The thresholds are relative to the
weights' magnitude ``m = mean |w|`` (taken without gradient), so the clip
range follows the weights as they move:

    t1 = m (center - exp(log_half_width)),  t2 = m (center + exp(log_half_width))

``center`` and ``log_half_width`` are the learned parameters; this
parameterization keeps ``t1 < t2`` by construction. Both thresholds get real
gradients: through alpha (the clipped weights' magnitude) and through the
sign's surrogate gradient at the clipped entries (``d clip / d t = 1`` there).
The initial half width ``clip_init`` (in units of m) clips the largest
weights from the start (1.5 m = 0.75 for weights uniform in [-1, 1]: a
quarter of them) so the thresholds receive gradient from the first step.

alpha > 0 is a per-tensor (or per-channel) scale of a bipolar weight: it
exports as the scale of a QONNX ``BipolarQuant`` node and FINN absorbs it into
the following thresholds (or, per tensor, the label select).

alpha is rounded to a power of two in forward (``clip_pow2_scale``, default
on; its gradient is that of the unrounded mean, straight through). Why: a
float sum of +-alpha terms is exact only for such alpha. With alpha = mean
|clip(w)| itself, two classes with equal integer XNOR-popcount sums got
logits differing in the last bit in PyTorch (6.080247 vs 6.0802474), so
PyTorch's arg-max and the accelerator's (integer, first index on a tie)
disagreed on 1 of 1000 mnist5k test images; the same rounding can flip a
hidden threshold. With a power of two PyTorch computes what the integer
hardware computes, times 2^k, exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow.quant.base import SignWeightQuant, SteEstimator, SurrogateSign, SurrogateWeightQuant
from flow.quant.fourier import DEFAULT_GRAD_MASK, DEFAULT_OMEGA, DEFAULT_TERMS, FourierEstimator

DEFAULT_CLIP_INIT = 1.5


class ClipSignWeightQuant(SignWeightQuant):
    def __init__(self, estimator: nn.Module, module: nn.Module, clip_per_channel: bool = False,
                 clip_init: float = DEFAULT_CLIP_INIT, clip_pow2_scale: bool = True):
        super().__init__(estimator)
        weight = module.weight
        self.per_channel = clip_per_channel
        self.pow2_scale = clip_pow2_scale
        shape = (weight.shape[0],) + (1,) * (weight.dim() - 1) if clip_per_channel else ()
        self.center = nn.Parameter(torch.zeros(shape))
        self.log_half_width = nn.Parameter(torch.full(shape, math.log(clip_init)))

    def _mean_abs(self, t: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            return t.abs().mean(dim=tuple(range(1, t.dim())), keepdim=True)
        return t.abs().mean()

    def thresholds(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = self._mean_abs(w.detach())
        half_width = self.log_half_width.exp()
        return magnitude * (self.center - half_width), magnitude * (self.center + half_width)

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t1, t2 = self.thresholds(w)
        clipped = torch.minimum(torch.maximum(w, t1.to(w.dtype)), t2.to(w.dtype))
        alpha = self._mean_abs(clipped)
        if self.pow2_scale:
            # forward 2^round(log2 alpha), gradient of alpha itself (straight through)
            alpha = alpha + (torch.exp2(torch.round(torch.log2(alpha))) - alpha).detach()
        return SurrogateSign.apply(clipped, self.estimator) * alpha, alpha


class ClipWeightQuant(SurrogateWeightQuant):
    tensor_quant = ClipSignWeightQuant
    estimator = SteEstimator
    clip_per_channel = False
    clip_init = DEFAULT_CLIP_INIT
    clip_pow2_scale = True


class ClipWeightQuantPerChannel(ClipWeightQuant):
    clip_per_channel = True


class FourierClipWeightQuant(ClipWeightQuant):
    estimator = FourierEstimator
    omega = DEFAULT_OMEGA
    terms = DEFAULT_TERMS
    grad_mask = DEFAULT_GRAD_MASK


def clip_thresholds(model: nn.Module) -> dict[str, list[float]]:
    """Layer name -> [t1, t2] (averaged over channels) for every clip-quantized layer."""
    found = {}
    for name, layer in model.named_modules():
        tensor_quant = getattr(getattr(layer, "weight_quant", None), "tensor_quant", None)
        if isinstance(tensor_quant, ClipSignWeightQuant):
            with torch.no_grad():
                t1, t2 = tensor_quant.thresholds(layer.weight)
            found[name] = [float(t1.mean()), float(t2.mean())]
    return found
