"""The common slot every surrogate-gradient binarizer plugs into.

Forward is always the QONNX ``BipolarQuant`` sign, ``x >= 0 -> +1`` else
``-1`` (``torch.sign`` would give 0 at 0). Backward multiplies the incoming
gradient by an *estimator*'s ``derivative(x)``: the derivative of the function
that stands in for sign (a Fourier series, a tanh, a piecewise polynomial).

``SignQuant`` is the Brevitas ``tensor_quant`` (returns ``value, scale,
zero_point, bit_width`` like ``brevitas.core.quant.binary.BinaryQuant``) with
scale 1, so Brevitas exports it as a plain ``BipolarQuant`` node. Weight
quantizers also keep the binarized weights they were last asked to store
(``store(weight)``, called by training after every epoch) and, in eval mode,
return exactly those stored values: inference and export use the binarized
weights saved in the checkpoint, not a recomputation from the latent weights.

Estimators and other quantizer parts with per-epoch schedules expose
``on_epoch(epoch, epochs)``; the training loop calls it on every module that
has it at the start of each epoch (see :func:`start_epoch`).
"""

from __future__ import annotations

import torch
from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from torch import nn


def scheduled(schedule: tuple[int, int], epoch: int, epochs: int) -> int:
    """The per-epoch value of a linear schedule ``(first, last)`` over epochs 1..epochs, rounded."""
    first, last = schedule
    progress = (epoch - 1) / (epochs - 1) if epochs > 1 else 1.0
    return round(first + (last - first) * progress)


def bipolar_sign(x: torch.Tensor) -> torch.Tensor:
    """QONNX BipolarQuant semantics in x's dtype: +1 where x >= 0 (0 included), else -1."""
    return (x >= 0).to(x.dtype) * 2 - 1


class SurrogateSign(torch.autograd.Function):
    """sign forward; backward = grad * estimator.derivative(x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, estimator: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.estimator = estimator
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_output * ctx.estimator.derivative(x), None


class SteEstimator(nn.Module):
    """The clipped straight-through estimator: gradient 1 where |x| <= 1."""

    def __init__(self):  # explicit: Brevitas injectors instantiate by signature
        super().__init__()

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() <= 1).to(x.dtype)


class StoredBinarization(nn.Module):
    """Persistent record of a weight quantizer's last binarized output (value and scale).

    Empty until ``store`` is called; in eval mode a quantizer that holds one
    returns it instead of recomputing from the latent weights.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.empty(0))
        self.register_buffer("scale", torch.empty(0))

    @property
    def stored(self) -> bool:
        return self.value.numel() > 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The stored tensors' shapes are only known once something is stored.
        for name in ("value", "scale"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set(self, value: torch.Tensor, scale: torch.Tensor) -> None:
        # In place once allocated: DistributedDataParallel keeps references to buffers.
        if self.value.shape == value.shape and self.scale.shape == scale.shape:
            self.value.copy_(value)
            self.scale.copy_(scale)
        else:
            self.value = value.detach().clone()
            self.scale = scale.detach().clone()


def unit(x: torch.Tensor, value: float) -> torch.Tensor:
    # torch.full, not torch.tensor: no host-to-device copy (and sync) per call on a GPU
    return torch.full((), value, dtype=x.dtype, device=x.device)


class SignQuant(nn.Module):
    """Brevitas tensor_quant: ``sign(x)`` with scale 1 and the estimator's gradient.

    With an ``error_fit`` (see flow.quant.fit) its gradient is added in
    backward while the forward value stays exactly the sign.
    """

    def __init__(self, estimator: nn.Module, error_fit: nn.Module | None = None):
        super().__init__()
        self.estimator = estimator
        self.error_fit = error_fit

    def binarize(self, x: torch.Tensor) -> torch.Tensor:
        y = SurrogateSign.apply(x, self.estimator)
        if self.error_fit is not None:
            y = y + self.error_fit.gradient_only(x)
        return y

    def forward(self, x: torch.Tensor):
        return self.binarize(x), unit(x, 1.0), unit(x, 0.0), unit(x, 1.0)


class SignWeightQuant(SignQuant):
    """SignQuant for weights, with the stored binarized weights used in eval mode."""

    def __init__(self, estimator: nn.Module, error_fit: nn.Module | None = None):
        super().__init__(estimator, error_fit)
        self.binarized = StoredBinarization()

    def quantize(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.binarize(w), unit(w, 1.0)

    def store(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.binarized.set(*self.quantize(w))

    def forward(self, w: torch.Tensor):
        if not self.training and self.binarized.stored:
            value, scale = self.binarized.value, self.binarized.scale
        else:
            value, scale = self.quantize(w)
        return value, scale, unit(w, 0.0), unit(w, 1.0)


class SurrogateWeightQuant(SignedBinaryWeightPerTensorConst):
    """Injector base for weight binarizers: subclasses set ``estimator`` (and options)."""

    tensor_quant = SignWeightQuant
    error_fit = None


class SurrogateActQuant(SignedBinaryActPerTensorConst):
    """Injector base for activation binarizers: subclasses set ``estimator`` (and options)."""

    tensor_quant = SignQuant
    error_fit = None


def start_epoch(model: nn.Module, epoch: int, epochs: int) -> None:
    """Advance every per-epoch schedule in ``model`` (epochs count from 1)."""
    for module in model.modules():
        if hasattr(module, "on_epoch"):
            module.on_epoch(epoch, epochs)


def store_binarized_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Store each weight quantizer's current binarization; return all layers' binarized weights.

    The returned mapping (layer name -> weight as the layer uses it, e.g.
    ``+-alpha``) covers every Brevitas layer, whichever quantizer it uses.
    """
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    binarized = {}
    for name, layer in model.named_modules():
        if isinstance(layer, QuantWeightBiasInputOutputLayer):
            tensor_quant = layer.weight_quant.tensor_quant
            if hasattr(tensor_quant, "store"):
                tensor_quant.store(layer.weight)
            with torch.no_grad():
                binarized[name] = layer.quant_weight().value.detach().clone()
    return binarized
