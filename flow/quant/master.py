"""Master weights: the precision the optimizer's copy of the latent weights is kept in.

``float32`` (default) and ``float64`` are the network's dtype (``flow train
--dtype``). ``int8`` is fixed point on top of it: every latent weight tensor is
``scale * q`` with ``q`` an int8 code and ``scale`` a per-tensor power of two
(the smallest with ``max |w| <= 128 scale``; latent weights live in [-1, 1], so
2^-7; a weight of +1 becomes code 127, 1 - 2^-7). After every optimizer step the updated weights are put back on that grid
by stochastic rounding, ``q = floor(w / scale + u)``, ``u ~ U[0, 1)``: unbiased,
so an update smaller than one grid step still moves the weight by that step with
the update's probability, where round-to-nearest would drop it. The codes and
scales are stored in the checkpoint (``master_weights``); the layer's float
parameter holds exactly ``scale * q``, so everything downstream is unchanged.
Applies to the weights of every weight quantizer (not the thresholds, batch-norm
or the logit scale, which stay in the network's dtype).
"""

from __future__ import annotations

import math

import torch
from brevitas.nn import QuantConv2d, QuantLinear
from torch import nn

MASTER_WEIGHTS = ("float", "int8")
INT8_MAX = 127
INT8_RANGE = 128  # |code| <= 128 on the negative side, 127 on the positive


def int8_scale(w: torch.Tensor) -> float:
    """The per-tensor power-of-two scale of ``w``'s int8 grid."""
    largest = float(w.detach().abs().max())
    return 2.0 ** math.ceil(math.log2(largest / INT8_RANGE)) if largest > 0 else 1.0


def stochastic_round_int8(w: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """int8 codes of ``w / scale``, rounded down or up with probability given by the remainder."""
    noise = torch.rand(w.shape, generator=generator, device=generator.device, dtype=w.dtype).to(w.device)
    return torch.clamp(torch.floor(w / scale + noise), -INT8_MAX - 1, INT8_MAX).to(torch.int8)


def round_master_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Put every binarized layer's latent weights back on its int8 grid (stochastic rounding)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (QuantLinear, QuantConv2d)):
                scale = int8_scale(module.weight)
                module.weight.copy_(stochastic_round_int8(module.weight, scale, generator).to(module.weight.dtype) * scale)


def master_weight_codes(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Layer name -> {"codes": int8 tensor, "scale": its power-of-two scale} (weights already on the grid)."""
    codes = {}
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            scale = int8_scale(module.weight)
            q = torch.clamp(torch.round(module.weight.detach() / scale), -INT8_MAX - 1, INT8_MAX)
            codes[name] = {"codes": q.to(torch.int8).cpu(), "scale": torch.tensor(scale)}
    return codes
