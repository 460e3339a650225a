"""Binary quantizers, chosen by name (``QUANT=...``).

Each entry pairs a Brevitas weight quantizer and an activation quantizer
(injector classes usable as ``weight_quant=`` / ``act_quant=`` on any
``brevitas.nn`` layer). All of them export to plain QONNX ``BipolarQuant``
nodes, so export and build are the same whatever was used in training
(the clip quantizers' weight scale alpha > 0 rides on the BipolarQuant node and
FINN absorbs it into thresholds).

Activation quantizers that need the activation width (``fourier+fit``) get it
as ``features=`` from the model (``QuantIdentity(act_quant=..., features=n)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flow.errors import FlowError
from flow.quant.approxsign import ApproxSignActQuant, ApproxSignWeightQuant
from flow.quant.base import start_epoch, store_binarized_weights  # noqa: F401  (used by training)
from flow.quant.clip import (
    ClipWeightQuant,
    ClipWeightQuantPerChannel,
    FourierClipWeightQuant,
    FourierClipWeightQuantPerChannel,
)
from flow.quant.dft import DftActQuant, DftWeightQuant
from flow.quant.dsq import DsqActQuant, DsqWeightQuant
from flow.quant.fit import FourierFitActQuant, FourierFitWeightQuant
from flow.quant.fourier import FourierActQuant, FourierWeightQuant
from flow.quant.ste import SteActQuant, SteWeightQuant
from flow.quant.wavelet import WaveletActQuant, WaveletWeightQuant


@dataclass(frozen=True)
class BinaryQuantizers:
    weight: type
    act: type
    description: str


QUANTIZERS: dict[str, BinaryQuantizers] = {
    "ste": BinaryQuantizers(
        SteWeightQuant, SteActQuant, "Brevitas' binary quantizers: sign forward, clipped straight-through backward"
    ),
    "approxsign": BinaryQuantizers(
        ApproxSignWeightQuant, ApproxSignActQuant, "Bi-Real Net ApproxSign: gradient max(0, 2 - 2|x|)"
    ),
    "dsq": BinaryQuantizers(DsqWeightQuant, DsqActQuant, "DSQ tanh: gradient of s*tanh(k x), alpha = 0.2"),
    "fourier": BinaryQuantizers(
        FourierWeightQuant, FourierActQuant, "Fourier-series gradient (omega 0.1, |x| <= 1, n 9 -> 18, clamped at 0)"
    ),
    "fourier+fit": BinaryQuantizers(
        FourierFitWeightQuant, FourierFitActQuant, "Fourier-series gradient + learned error fit (alpha cosine 1 -> 0)"
    ),
    "wavelet": BinaryQuantizers(
        WaveletWeightQuant, WaveletActQuant, "cubic-spline wavelet approximation's gradient (level 0 -> 1, |x| < 2 -> 1)"
    ),
    "dft": BinaryQuantizers(
        DftWeightQuant, DftActQuant, "discrete-Fourier interpolant's gradient (omega 0.1, |x| <= 1, n 9 -> 18)"
    ),
    "clip": BinaryQuantizers(
        ClipWeightQuant, SteActQuant, "learnable clip thresholds t1 < t2 per tensor, alpha*sign; STE gradients"
    ),
    "clip-channel": BinaryQuantizers(
        ClipWeightQuantPerChannel, SteActQuant, "learnable clip thresholds per output channel; STE gradients"
    ),
    "fourier+clip": BinaryQuantizers(
        FourierClipWeightQuant, FourierActQuant, "learnable clip thresholds (per tensor) + Fourier-series gradient"
    ),
    "fourier+clip-channel": BinaryQuantizers(
        FourierClipWeightQuantPerChannel, FourierActQuant,
        "learnable clip thresholds (per channel) + Fourier-series gradient",
    ),
}

# Variants kept for measurements (docs/quantizers.md), selectable by name but not listed as quantizers.
ABLATIONS: dict[str, BinaryQuantizers] = {
    "fourier-signed": BinaryQuantizers(
        FourierWeightQuant.let(clamp_negative=False), FourierActQuant.let(clamp_negative=False),
        "fourier without the clamp: negative derivative beyond pi/K (n >= 15)",
    ),
    "fourier-tied": BinaryQuantizers(
        FourierWeightQuant.let(omega=None), FourierActQuant.let(omega=None),
        "fourier with omega tied to n: first zero of the derivative at |x| = 1 for every n",
    ),
}


def get_quantizers(name: str) -> BinaryQuantizers:
    if name in ABLATIONS:
        return ABLATIONS[name]
    if name not in QUANTIZERS:
        raise FlowError(f"unknown quantizer '{name}'; known quantizers: {', '.join(QUANTIZERS)}")
    return QUANTIZERS[name]
