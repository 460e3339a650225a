"""``dft``: sign forward, the gradient of sign's discrete Fourier interpolant backward.

Sample the square wave of period ``T = 2 pi / omega`` at ``N = 4(n+1)`` points
``x_m = (m + 1/2) T / N`` (half a sample off 0, so no sample sits on the
jump) and take its discrete Fourier transform. The half-wave symmetry leaves
only odd harmonics, and N is chosen so that the highest, ``2n+1``, stays below
the Nyquist harmonic ``N/2``: the trigonometric interpolant of the samples is

    s(x) = (4/N) sum_{i=0..n} sin((2i+1) omega x) / sin(pi (2i+1) / N),

equal to sign at every sample. Its coefficients are the continuous series'
``4 / (pi (2i+1))`` with ``pi k / N`` replaced by ``sin(pi k / N)`` (the
aliasing of the sampled square wave), so the discrete expansion weights the
high harmonics more. The derivative used in backward,

    s'(x) = (4 omega / N) sum_{i=0..n} (2i+1) cos((2i+1) omega x) / sin(pi (2i+1) / N),

has no closed form; it is evaluated term by term, each term vectorized over
all elements (n+1 fused multiply-adds of a cosine per element). As for
``fourier``: omega = 0.1, gradient kept where |x| <= 1, n scheduled 9 -> 18,
and the derivative clamped at 0 where it turns negative (for n >= 15, like
the continuous series').
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow.quant.base import SurrogateActQuant, SurrogateWeightQuant, scheduled
from flow.quant.fourier import DEFAULT_GRAD_MASK, DEFAULT_OMEGA, DEFAULT_TERMS


def dft_coefficients(n: int) -> list[float]:
    """The interpolant's sine coefficients ``(4/N) / sin(pi (2i+1) / N)``, i = 0..n, N = 4(n+1)."""
    samples = 4 * (n + 1)
    return [4 / samples / math.sin(math.pi * (2 * i + 1) / samples) for i in range(n + 1)]


def dft_series(t: torch.Tensor, n: int, omega: float) -> torch.Tensor:
    """The interpolant itself (for tests and plots)."""
    return sum(b * torch.sin((2 * i + 1) * omega * t) for i, b in enumerate(dft_coefficients(n)))


class DftEstimator(nn.Module):
    def __init__(self, omega: float = DEFAULT_OMEGA, terms: tuple[int, int] = DEFAULT_TERMS,
                 grad_mask: float = DEFAULT_GRAD_MASK):
        super().__init__()
        self.omega = omega
        self.terms_schedule = tuple(terms)
        self.grad_mask = grad_mask
        self.set_terms(terms[0])

    def set_terms(self, n: int) -> None:
        self.n = n
        self.weights = [self.omega * (2 * i + 1) * b for i, b in enumerate(dft_coefficients(n))]

    def on_epoch(self, epoch: int, epochs: int) -> None:
        self.set_terms(scheduled(self.terms_schedule, epoch, epochs))

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        a = self.omega * x
        grad = torch.zeros_like(x)
        for i, weight in enumerate(self.weights):
            grad.add_(torch.cos((2 * i + 1) * a), alpha=weight)
        return torch.where((x.abs() <= self.grad_mask) & (grad > 0), grad, 0.0)

    def extra_repr(self) -> str:
        return f"omega={self.omega}, n={self.n}, terms={self.terms_schedule}, grad_mask={self.grad_mask}"


class DftWeightQuant(SurrogateWeightQuant):
    estimator = DftEstimator
    omega = DEFAULT_OMEGA
    terms = DEFAULT_TERMS
    grad_mask = DEFAULT_GRAD_MASK


class DftActQuant(SurrogateActQuant):
    estimator = DftEstimator
    omega = DEFAULT_OMEGA
    terms = DEFAULT_TERMS
    grad_mask = DEFAULT_GRAD_MASK
