"""The quantizers of flow.quant: exact sign forward, the gradients they claim,
learnable clip thresholds, the error fit, and export/build/ladder for each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity, QuantLinear
from qonnx.core.modelwrapper import ModelWrapper

from flow import data as datasets
from flow.quant import QUANTIZERS, start_epoch
from flow.quant.clip import ClipWeightQuant, ClipWeightQuantPerChannel, clip_thresholds
from flow.quant.fourier import FourierActQuant, fourier_series, odd_cosine_sum
from flow.train import TrainConfig, load_checkpoint, train

NEW_QUANTIZERS = [name for name in QUANTIZERS if name != "ste"]


def expected_sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def values_with_zeros(shape, dtype) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=dtype) * 2 - 1
    x.view(-1)[::7] = 0.0
    x.view(-1)[1::11] = -0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_forward_is_bipolar_sign_with_zero_to_plus_one(name, dtype):
    quant = QUANTIZERS[name]
    layer = QuantLinear(24, 16, bias=False, weight_quant=quant.weight).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(values_with_zeros((16, 24), dtype))
    for mode in (layer.train, layer.eval):
        mode()
        weight = layer.quant_weight()
        assert weight.value.dtype == dtype
        scale = weight.scale
        assert torch.all(scale > 0)
        assert torch.equal(weight.value / scale, expected_sign(layer.weight))

    act = QuantIdentity(act_quant=quant.act, features=24).to(dtype)
    start_epoch(act, 1, 10)  # the error fit (fourier+fit) is active: alpha = 1
    x = values_with_zeros((5, 24), dtype).requires_grad_(True)
    y = act(x)
    assert y.dtype == dtype
    assert torch.equal(y, expected_sign(x))


def explicit_series_gradient(x: torch.Tensor, n: int, omega: float, grad_mask: float | None) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    fourier_series(x, n, omega).sum().backward()
    keep = x.abs() * omega < math.pi if grad_mask is None else x.abs() <= grad_mask
    return torch.where(keep, x.grad, 0.0)


@pytest.mark.parametrize("n", [1, 9, 18, 50])
@pytest.mark.parametrize("omega, grad_mask", [(0.1, 1.0), (math.pi / 2, None)])
def test_fourier_backward_is_the_derivative_of_the_truncated_series(n, omega, grad_mask):
    half_period = math.pi / omega
    x = torch.cat([torch.linspace(-1.2 * half_period, 1.2 * half_period, 4001, dtype=torch.float64),
                   torch.tensor([0.0, 1.0, -1.0, half_period, -half_period], dtype=torch.float64)])
    act = QuantIdentity(act_quant=FourierActQuant.let(omega=omega, terms=(n, n), grad_mask=grad_mask)).double()
    xg = x.clone().requires_grad_(True)
    act(xg.reshape(1, -1)).sum().backward()
    expected = explicit_series_gradient(x, n, omega, grad_mask)
    assert torch.allclose(xg.grad, expected, atol=1e-5, rtol=0)
    assert xg.grad[x == 0].item() == pytest.approx(4 * omega / math.pi * (n + 1), abs=1e-12)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 2e-3)])
@pytest.mark.parametrize("n", [1, 9, 18, 50])
def test_closed_form_matches_the_sum_at_zero_and_multiples_of_the_period(n, dtype, tolerance):
    omega = 0.1
    period = 2 * math.pi / omega
    t = torch.tensor(
        [0.0, -0.0, period, -period, 2 * period, 0.5 * period, -0.5 * period, 1.5 * period, 1e-7, period + 1e-3]
        + list(np.linspace(-3 * period, 3 * period, 997)),
        dtype=dtype,
    )
    a = omega * t
    explicit = sum(torch.cos((2 * i + 1) * a.double()) for i in range(n + 1))
    closed = odd_cosine_sum(a, n)
    assert closed.dtype == dtype
    assert torch.isfinite(closed).all()
    assert torch.allclose(closed.double(), explicit, atol=tolerance * (n + 1), rtol=0)
    assert closed[0].item() == n + 1 and closed[2].item() == n + 1  # t = 0, t = T exactly


def clip_layer(quantizer, seed=0):
    torch.manual_seed(seed)
    layer = QuantLinear(32, 8, bias=False, weight_quant=quantizer).double()
    with torch.no_grad():
        layer.weight.uniform_(-1, 1)
        tensor_quant = layer.weight_quant.tensor_quant
        tensor_quant.center.normal_(0, 0.2)  # asymmetric and per-channel-distinct thresholds
        tensor_quant.log_half_width.add_(torch.randn_like(tensor_quant.log_half_width) * 0.1)
    return layer, tensor_quant


@pytest.mark.parametrize("quantizer", [ClipWeightQuant, ClipWeightQuantPerChannel])
def test_clip_threshold_gradients_match_finite_differences(quantizer):
    # the unrounded scale: the power-of-two rounding is straight-through, invisible to finite differences
    layer, tensor_quant = clip_layer(quantizer.let(clip_pow2_scale=False))
    w = layer.weight
    t1, t2 = (t.detach() for t in tensor_quant.thresholds(w))
    clipped = (w < t1) | (w > t2)
    assert clipped.any() and (~clipped).any()
    params = [tensor_quant.center, tensor_quant.log_half_width]

    def loss(weights_r):
        return (layer.quant_weight().value * weights_r).sum()

    # 1. With the loss blind to the clipped entries, the thresholds act only
    #    through alpha = mean |clip(w)|, which the forward sees: finite differences apply.
    r = torch.randn_like(w).masked_fill(clipped, 0.0)
    grads = torch.autograd.grad(loss(r), params)
    eps = 1e-6
    for param, grad in zip(params, grads):
        assert grad.abs().max() > 1e-3
        for index in np.ndindex(*param.shape):
            with torch.no_grad():
                param[index] += eps
                up = loss(r).item()
                param[index] -= 2 * eps
                down = loss(r).item()
                param[index] += eps
            assert grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)

    # 2. On the clipped entries the sign's surrogate gradient (STE: 1 where |c| <= 1)
    #    adds alpha * dL/dw_b * dt/dparam: the thresholds' own, forward-invisible share.
    r_full = torch.randn_like(w)
    grads_full = torch.autograd.grad(loss(r_full), params)
    grads_alpha_only = torch.autograd.grad(loss(r_full.masked_fill(clipped, 0.0)), params)
    alpha = layer.quant_weight().scale.detach()
    below, above = (w < t1) & (t1.abs() <= 1), (w > t2) & (t2.abs() <= 1)
    weight_below = (r_full * alpha * below).sum(dim=1, keepdim=True)
    weight_above = (r_full * alpha * above).sum(dim=1, keepdim=True)
    if not tensor_quant.per_channel:
        weight_below, weight_above = weight_below.sum(), weight_above.sum()
    t1_p, t2_p = tensor_quant.thresholds(w)
    for param, full, alpha_only in zip(params, grads_full, grads_alpha_only):
        extra = torch.autograd.grad((t1_p * weight_below).sum() + (t2_p * weight_above).sum(), param, retain_graph=True)[0]
        # alpha's gradient also changes with r on the clipped entries: isolate it by linearity
        alpha_part = torch.autograd.grad(
            (layer.quant_weight().scale * (r_full * expected_sign(torch.clamp(w, t1, t2))).sum(dim=1, keepdim=True)
             .reshape(layer.quant_weight().scale.shape if tensor_quant.per_channel else -1)).sum(), param)[0]
        assert torch.allclose(full, alpha_part + extra, atol=1e-9)
        assert not torch.allclose(full, alpha_only)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "tfc"
    train(out, TrainConfig(model="tfc", quant="clip", epochs=2))
    return out


def test_thresholds_move_and_stay_ordered_in_training(clip_run):
    checkpoint = load_checkpoint(clip_run / "checkpoint.pt")
    history = checkpoint["history"]
    initial = math.log(1.5)
    moved = 0
    for name, tensor in checkpoint["model"].items():
        if name.endswith("tensor_quant.log_half_width"):
            center = checkpoint["model"][name.replace("log_half_width", "center")]
            assert torch.all(tensor.exp() > 0)  # t2 - t1 = 2 m exp(log_half_width) > 0
            moved += int(not torch.equal(tensor, torch.full_like(tensor, initial)) and bool(center.abs().max() > 0))
    assert moved == 4
    for entry in history:
        assert len(entry["clip_thresholds"]) == 4
        assert all(t1 < t2 for t1, t2 in entry["clip_thresholds"].values())
    first, last = history[0]["clip_thresholds"], history[-1]["clip_thresholds"]
    assert any(abs(first[k][0] - last[k][0]) > 1e-4 and abs(first[k][1] - last[k][1]) > 1e-4 for k in first)
    assert history[-1]["test_accuracy"] > 0.6


def test_clip_scale_is_a_power_of_two_with_the_gradient_of_the_mean():
    layer, tensor_quant = clip_layer(ClipWeightQuant)
    weight = layer.quant_weight()
    exponent = torch.log2(weight.scale)
    assert torch.equal(exponent, torch.round(exponent))
    t1, t2 = tensor_quant.thresholds(layer.weight)
    mean_clipped = torch.clamp(layer.weight, t1.detach(), t2.detach()).abs().mean()
    assert weight.scale / 2 ** 0.5 <= mean_clipped <= weight.scale * 2 ** 0.5
    unrounded, _ = clip_layer(ClipWeightQuant.let(clip_pow2_scale=False))
    grads = [torch.autograd.grad(q.quant_weight().scale, q.weight_quant.tensor_quant.log_half_width)[0]
             for q in (layer, unrounded)]
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


def test_checkpoint_stores_binarized_weights_and_eval_uses_them(clip_run):
    from flow.export import load_trained_model

    model, checkpoint = load_trained_model(clip_run / "checkpoint.pt")
    stored = checkpoint["binarized_weights"]
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert set(stored) == set(layers)
    images = torch.from_numpy(datasets.load("mnist5k").test_images[:200]).float()
    with torch.no_grad():
        before = model(images)
        for name, layer in layers.items():
            assert torch.equal(layer.quant_weight().value, stored[name])
            assert len(stored[name].abs().unique()) == 1  # +-alpha
            layer.weight.mul_(-1)  # latent weights changed, stored binarization not
        assert torch.equal(model(images), before)
        assert clip_thresholds(model)  # the thresholds are in the model state too
        model.train()
        assert not torch.equal(layers["features.2"].quant_weight().value, stored["features.2"])


def test_error_fit_adds_gradient_while_alpha_is_positive_and_none_at_zero():
    fit_quant, series_quant = QUANTIZERS["fourier+fit"].act, QUANTIZERS["fourier"].act
    torch.manual_seed(0)
    x = torch.randn(8, 128) * 0.5

    def run(quant, epoch):
        act = QuantIdentity(act_quant=quant, features=128)
        start_epoch(act, epoch, 10)
        xg = x.clone().requires_grad_(True)
        g = torch.randn(8, 128, generator=torch.Generator().manual_seed(1))
        y = act(xg)
        (y * g).sum().backward()
        fit_grads = [p.grad for n, p in act.named_parameters() if "error_fit" in n]
        return y, xg.grad, fit_grads

    for epoch, active in [(1, True), (5, True), (9, True), (10, False)]:
        series_y, series_grad, _ = run(series_quant, epoch)
        y, grad, fit_grads = run(fit_quant, epoch)
        assert torch.equal(y, series_y)
        assert len(fit_grads) == 3
        if active:
            assert not torch.allclose(grad, series_grad)
            assert all(g is not None and g.abs().sum() > 0 for g in fit_grads)
        else:
            assert torch.equal(grad, series_grad)
            assert all(g is None for g in fit_grads)


QONNX_QUANT_OPS = {"BipolarQuant", "Quant"}


@pytest.mark.parametrize("name", NEW_QUANTIZERS)
def test_export_build_and_ladder_are_exact_for_every_quantizer(name, tmp_path):
    from flow.boards import load_board
    from flow.build import build
    from flow.export import export, load_trained_model, torch_predictions
    from flow.finn_env import init_finn
    from flow.graphs import execute_batched, predictions

    metrics = train(tmp_path, TrainConfig(model="tfc", quant=name, epochs=1))
    assert metrics["test_accuracy"] > 0.5
    export(tmp_path / "checkpoint.pt", tmp_path / "model.onnx")
    qonnx = ModelWrapper(str(tmp_path / "model.onnx"))
    custom = {(n.domain, n.op_type) for n in qonnx.graph.node if n.domain not in ("", "ai.onnx")}
    assert {op for _, op in custom} <= QONNX_QUANT_OPS, custom
    assert all(domain.startswith("qonnx.custom_op.general") for domain, _ in custom), custom
    assert sum(n.op_type == "BipolarQuant" for n in qonnx.graph.node) == 8  # 4 weights, 4 activations

    build(tmp_path / "model.onnx", tmp_path, load_board("pynq-z2"), None, None)
    init_finn(tmp_path)
    streamlined = ModelWrapper(str(tmp_path / "intermediate_models" / "step_streamline.onnx"))
    assert {n.op_type for n in streamlined.graph.node} == {"Reshape", "MultiThreshold", "XnorPopcountMatMul", "TopK"}

    images = datasets.load("mnist5k").test_images
    model, _ = load_trained_model(tmp_path / "checkpoint.pt")
    reference = torch_predictions(model, images)
    for level in ("model.onnx", "intermediate_models/step_streamline.onnx", "intermediate_models/step_convert_to_hw.onnx"):
        predicted = predictions(execute_batched(ModelWrapper(str(tmp_path / level)), images))
        differing = np.flatnonzero(predicted != reference)
        assert differing.size == 0, f"{name}: {level} differs from PyTorch on images {differing[:10]}"
