"""``fourier``: sign forward, Fourier-series gradient backward (FDA-BNN).

The square wave of period ``T = 2*pi/omega`` has the Fourier series
``s_n(t) = 4/pi * sum_{i=0..n} sin((2i+1) omega t) / (2i+1)``; its derivative
``4 omega/pi * sum_{i=0..n} cos((2i+1) omega t)`` stands in for the derivative
of sign. The cosine sum has the closed form
``sin(2(n+1)a) / (2 sin a)`` (limit ``(n+1) cos(a)/|cos(a)|`` where sin a = 0),
so backward costs O(1) per element whatever n is.

Defaults, chosen by measurement (SFC-W1A1, full Fashion-MNIST, 10 epochs,
issue 3): with ``omega = pi/2`` (the series spans (-1, 1)) and n = 9..18 the
derivative is a spike of height ~20 at 0 with negative lobes, and training
collapses to ~45 % (STE: 82.2 %); ``omega = 0.1`` with the gradient kept only
where ``|x| <= 1`` (as in the public FDA re-implementations) trains to 82.6 %.

The curve actually used (omega = 0.1, |x| <= 1): ``(4 omega/pi) sin(Kx) / (2 sin(omega x))``
with ``K = 2(n+1) omega``, close to ``(2/pi) sin(Kx)/x``. Its peak at 0 is
``4 omega (n+1)/pi`` (1.27 at n = 9, 2.42 at n = 18) and its first zero is at
``|x| = pi/K``: outside |x| <= 1 for n <= 14, but inside for every n >= 15
(0.98 at n = 15, 0.83 at n = 18), where the raw derivative goes negative down
to -0.39 (-16 % of the peak, on 17 % of [-1, 1] at n = 18): a gradient of
the wrong sign for the latent weights and activations sitting there. The
default therefore keeps only the central lobe (``clamp_negative=True``): a
bump of height 4 omega (n+1)/pi that narrows as n grows and is exactly 0
beyond its first zero (for n <= 30 at omega 0.1 this is the derivative
clamped at 0 over |x| <= 1; beyond, the later positive lobes are cut too). The alternative, tying omega to n so that the first
zero sits at the mask (``omega=None``: ``omega = pi / (2 (n+1) grad_mask)``,
the same curve for every n), was measured against the clamp and the unclamped
derivative; see docs/quantizers.md (section "fourier: the wrong-sign gradient").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow.quant.base import SurrogateActQuant, SurrogateWeightQuant, scheduled

DEFAULT_OMEGA = 0.1
DEFAULT_TERMS = (9, 18)  # n at the first and at the last epoch
DEFAULT_GRAD_MASK = 1.0  # gradient kept where |x| <= this
DEFAULT_CLAMP_NEGATIVE = True  # no wrong-sign gradient beyond the first zero (n >= 15 at omega 0.1)


def odd_cosine_sum(a: torch.Tensor, n: int) -> torch.Tensor:
    """``sum_{i=0..n} cos((2i+1) a)`` in closed form, exact at multiples of pi too.

    a is first reduced to ``r = a - k pi`` (|r| <= pi/2); the sum is
    ``(-1)^k sin(2(n+1) r) / (2 sin r)``, whose value at r = 0 is ``(-1)^k (n+1)``.
    """
    k = torch.round(a / math.pi)
    r = a - k * math.pi
    sin_r = torch.sin(r)
    at_pole = sin_r == 0
    ratio = torch.sin(2 * (n + 1) * r) / (2 * torch.where(at_pole, 1.0, sin_r))
    value = torch.where(at_pole, float(n + 1), ratio)
    return torch.where(torch.remainder(k, 2) == 1, -value, value)


def fourier_series(t: torch.Tensor, n: int, omega: float) -> torch.Tensor:
    """The truncated series itself, term by term (for tests and plots; O(n))."""
    return 4 / math.pi * sum(torch.sin((2 * i + 1) * omega * t) / (2 * i + 1) for i in range(n + 1))


def first_zero(omega: float, n: int) -> float:
    """|x| of the n-term derivative's first zero, ``pi / (2 (n+1) omega)``."""
    return math.pi / (2 * (n + 1) * omega)


class FourierEstimator(nn.Module):
    """Derivative of the n-term Fourier series of sign, masked to |x| <= grad_mask.

    ``grad_mask=None`` keeps the gradient over the open half period
    ``|x| < pi/omega``, where the series represents sign. n follows a linear
    per-epoch schedule from ``terms[0]`` to ``terms[1]``. ``clamp_negative``
    sets the derivative to 0 beyond its first zero ``pi / (2 (n+1) omega)``
    (where it would turn negative). ``omega=None`` ties omega to n so that the first
    zero is at ``grad_mask``: ``omega = pi / (2 (n+1) grad_mask)``.
    """

    def __init__(self, omega: float | None = DEFAULT_OMEGA, terms: tuple[int, int] = DEFAULT_TERMS,
                 grad_mask: float | None = DEFAULT_GRAD_MASK, clamp_negative: bool = DEFAULT_CLAMP_NEGATIVE):
        super().__init__()
        if omega is None and grad_mask is None:
            raise ValueError("fourier: omega tied to n (omega=None) needs a grad_mask")
        if grad_mask is not None and omega is not None and not 0 < grad_mask < math.pi / omega:
            raise ValueError(f"fourier grad_mask {grad_mask} must lie in (0, half period {math.pi / omega:g})")
        self.tied = omega is None
        self.terms_schedule = tuple(terms)
        self.grad_mask = grad_mask
        self.clamp_negative = clamp_negative
        self.omega = omega
        self.set_terms(terms[0])

    def set_terms(self, n: int) -> None:
        self.n = n
        if self.tied:
            self.omega = first_zero(1.0, n) / self.grad_mask
        # where the gradient is kept: the mask, and with the clamp only up to the first zero
        # (the bump; for n <= 30 at omega 0.1 exactly the derivative clamped at 0 over |x| <= 1)
        self.support = self.grad_mask
        if self.clamp_negative and self.grad_mask is not None:
            self.support = min(self.grad_mask, first_zero(self.omega, n))

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.set_terms(scheduled(self.terms_schedule, epoch, epochs))

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        scale = 4 * self.omega / math.pi
        if self.support is not None and self.support * self.omega < math.pi / 2:
            # every kept a = omega x lies in (-pi/2, pi/2): no range reduction, and sin a = 0
            # only at x = 0, where 0/0 gives NaN that becomes the limit n + 1. In place, without
            # torch.where (its scalar operands cost copies): this runs on every weight in every step (issue 15: <= 1.05x ste's epoch)
            a = x * self.omega
            grad = torch.sin(a * (2 * (self.n + 1)))
            grad.div_(torch.sin(a)).mul_(scale / 2)
            # times the 0/1 support mask (masked_fill_ costs 8x more when most of x is outside)
            grad.mul_(x.abs().le_(self.support))
            return grad.nan_to_num_(nan=scale * (self.n + 1))
        grad = scale * odd_cosine_sum(self.omega * x, self.n)
        keep = x.abs() * self.omega < math.pi if self.grad_mask is None else x.abs() <= self.grad_mask
        if self.clamp_negative:
            keep = keep & (grad > 0)
        return torch.where(keep, grad, 0.0)

    def extra_repr(self) -> str:
        return (f"omega={self.omega:g}{' (tied to n)' if self.tied else ''}, n={self.n}, terms={self.terms_schedule}, "
                f"grad_mask={self.grad_mask}, clamp_negative={self.clamp_negative}")


class FourierWeightQuant(SurrogateWeightQuant):
    estimator = FourierEstimator
    omega = DEFAULT_OMEGA
    terms = DEFAULT_TERMS
    grad_mask = DEFAULT_GRAD_MASK
    clamp_negative = DEFAULT_CLAMP_NEGATIVE


class FourierActQuant(SurrogateActQuant):
    estimator = FourierEstimator
    omega = DEFAULT_OMEGA
    terms = DEFAULT_TERMS
    grad_mask = DEFAULT_GRAD_MASK
    clamp_negative = DEFAULT_CLAMP_NEGATIVE
