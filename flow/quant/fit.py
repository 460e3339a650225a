"""``fourier+fit``: the Fourier-series gradient plus a learned error-function fit.

FDA-BNN writes sign as the truncated series plus an error function
``sign - s_n`` and fits the latter by a small network applied to each
feature vector t (a weight row, or one sample's activations) of width d:
``e(t) = W2 relu(W1 t) + a sin(t)``, hidden width ``d // 64`` (at least 1),
zero-mean initialization (W1 ~ N(0, 1/d), W2 ~ N(0, 0.01^2), a = 0), trained at
1/100 of the network's learning rate (with W2 ~ N(0, 1/h) or at the full rate
the fit's Jacobian swamps the series gradient: TFC on mnist5k fell to 27-48 %
in 4 epochs, against 83 % for fourier alone). The fit acts in backward only: the quantizer
returns ``sign(t) + (alpha e(t) - detach(alpha e(t)))``, which is exactly
``sign(t)`` in value while its gradient is the series gradient plus
``alpha de/dt``, and W1, W2, a receive the loss gradient through it.
alpha decays from ``fit_alpha`` to 0 with a cosine over the epochs, so the
last epoch trains with the series gradient alone. Weights and activations
each get their own fit module (one per layer).
"""

from __future__ import annotations

import math

import torch
from brevitas.inject import value
from torch import nn

from flow.quant.fourier import FourierActQuant, FourierWeightQuant

FIT_DIVISOR = 64
DEFAULT_FIT_ALPHA = 1.0
FIT_INIT_STD = 0.01  # of W2; W1 is N(0, 1/d)
FIT_LR_SCALE = 0.01  # the fits' learning rate relative to the network's (see flow.train.parameter_groups)


class ErrorFit(nn.Module):
    def __init__(self, features: int, fit_alpha: float = DEFAULT_FIT_ALPHA):
        super().__init__()
        hidden = max(1, features // FIT_DIVISOR)
        self.w1 = nn.Linear(features, hidden, bias=False)
        self.w2 = nn.Linear(hidden, features, bias=False)
        self.a = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.w1.weight, 0.0, 1.0 / math.sqrt(features))
        # Small: the fit's Jacobian starts as a perturbation of the series gradient.
        nn.init.normal_(self.w2.weight, 0.0, FIT_INIT_STD)
        self.alpha_start = fit_alpha
        self.alpha = fit_alpha

    def on_epoch(self, epoch: int, epochs: int) -> None:
        progress = (epoch - 1) / (epochs - 1) if epochs > 1 else 1.0
        self.alpha = self.alpha_start * 0.5 * (1 + math.cos(math.pi * progress))
        if progress >= 1.0:
            self.alpha = 0.0  # exactly 0 at the last epoch, not cos rounding

    def error(self, t: torch.Tensor) -> torch.Tensor:
        """e(t) for every feature vector of t.

        A feature vector is everything after the first dim (a weight row, one
        sample's activations) or, for a convolution's activation map
        (N x C x H x W with C = features), each pixel's C channels.
        """
        per_pixel = t.dim() == 4 and t[0].numel() != self.w1.in_features
        source = t.movedim(1, -1) if per_pixel else t
        rows = source.reshape(-1, self.w1.in_features).to(self.w1.weight.dtype)
        e = (self.w2(torch.relu(self.w1(rows))) + self.a * torch.sin(rows)).to(t.dtype)
        return e.reshape(source.shape).movedim(-1, 1) if per_pixel else e.reshape(t.shape)

    def gradient_only(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor that is exactly 0 but carries alpha * de/dt (and the fit's own gradients)."""
        if self.alpha == 0:
            return torch.zeros((), dtype=t.dtype, device=t.device)
        fit = self.alpha * self.error(t)
        return fit - fit.detach()

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:.4f} (from {self.alpha_start})"


class FourierFitWeightQuant(FourierWeightQuant):
    error_fit = ErrorFit
    fit_alpha = DEFAULT_FIT_ALPHA

    @value
    def features(module):
        return module.weight[0].numel()


class FourierFitActQuant(FourierActQuant):
    """Needs ``features`` (the activation width), e.g. ``QuantIdentity(act_quant=..., features=256)``."""

    error_fit = ErrorFit
    fit_alpha = DEFAULT_FIT_ALPHA
