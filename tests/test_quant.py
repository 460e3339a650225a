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
from flow.quant.base import SurrogateActQuant
from flow.quant.clip import ClipWeightQuant, ClipWeightQuantPerChannel, clip_thresholds
from flow.quant.dft import DftEstimator, dft_series
from flow.quant.fourier import FourierActQuant, fourier_series, odd_cosine_sum
from flow.quant.master import INT8_MAX, int8_scale, stochastic_round_int8
from flow.quant.wavelet import DEFAULT_WIDTH, WaveletEstimator, wavelet_series
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
    act = QuantIdentity(act_quant=FourierActQuant.let(omega=omega, terms=(n, n), grad_mask=grad_mask,
                                                       clamp_negative=False)).double()
    xg = x.clone().requires_grad_(True)
    act(xg.reshape(1, -1)).sum().backward()
    expected = explicit_series_gradient(x, n, omega, grad_mask)
    assert torch.allclose(xg.grad, expected, atol=1e-5, rtol=0)
    assert xg.grad[x == 0].item() == pytest.approx(4 * omega / math.pi * (n + 1), abs=1e-12)


SURROGATE_QUANTIZERS = [name for name in QUANTIZERS if issubclass(QUANTIZERS[name].act, SurrogateActQuant)]


@pytest.mark.parametrize("name", SURROGATE_QUANTIZERS)
def test_default_derivative_has_no_wrong_sign_for_any_epoch_of_the_schedule(name):
    x = torch.linspace(-1.5, 1.5, 30001, dtype=torch.float64)
    layer = QuantIdentity(act_quant=QUANTIZERS[name].act, features=x.numel()).double()
    estimator = next(m for m in layer.modules() if hasattr(m, "derivative"))
    seen = set()
    for epochs in (1, 2, 10, 50):
        for epoch in range(1, epochs + 1):
            start_epoch(layer, epoch, epochs)
            seen.add(getattr(estimator, "n", getattr(estimator, "level", None)))
            grad = estimator.derivative(x)
            assert torch.all(grad >= 0), (name, epoch, epochs, float(grad.min()))
            assert grad[x.abs() < 0.05].min() > 0.5
    if name.startswith(("fourier", "dft")):
        assert seen == set(range(9, 19))  # every n of the default schedule was checked


def test_clamped_fourier_derivative_is_the_series_derivative_up_to_its_first_zero():
    x = torch.linspace(-1.0, 1.0, 4001, dtype=torch.float64)
    for n in range(9, 19):
        act = QuantIdentity(act_quant=FourierActQuant.let(terms=(n, n))).double()
        xg = x.clone().requires_grad_(True)
        act(xg.reshape(1, -1)).sum().backward()
        series = explicit_series_gradient(x, n, 0.1, 1.0)
        first_zero = math.pi / (2 * (n + 1) * 0.1)
        inside = x.abs() < first_zero
        assert torch.allclose(xg.grad[inside], series[inside], atol=1e-9, rtol=0)
        assert torch.all(xg.grad[~inside] == 0)
        assert bool((series < 0).any()) == (n >= 15)  # the unclamped series goes negative from n = 15 on


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_wavelet_backward_is_the_derivative_of_its_spline_expansion(level):
    x = torch.linspace(-2.5, 2.5, 5001, dtype=torch.float64).requires_grad_(True)
    series = wavelet_series(x, level)
    (autograd,) = torch.autograd.grad(series.sum(), x)
    assert torch.allclose(WaveletEstimator((level, level)).derivative(x.detach()), autograd, atol=1e-9, rtol=0)
    outside = x.detach().abs() >= DEFAULT_WIDTH * 2.0**-level
    assert torch.allclose(series.detach()[outside], expected_sign(x.detach())[outside], atol=1e-12)  # sign away from 0


@pytest.mark.parametrize("n", [1, 9, 15, 18])
def test_dft_interpolant_matches_sign_at_its_samples_and_backward_is_its_derivative(n):
    omega = 0.1
    samples = 4 * (n + 1)
    period = 2 * math.pi / omega
    at = (torch.arange(samples, dtype=torch.float64) + 0.5) * period / samples
    assert torch.allclose(dft_series(at, n, omega), torch.where(at < period / 2, 1.0, -1.0).double(), atol=1e-12)
    x = torch.linspace(-1.2, 1.2, 2401, dtype=torch.float64).requires_grad_(True)
    (autograd,) = torch.autograd.grad(dft_series(x, n, omega).sum(), x)
    expected = torch.where(x.detach().abs() <= 1, autograd.clamp(min=0), 0.0)
    assert torch.allclose(DftEstimator(omega, (n, n)).derivative(x.detach()), expected, atol=1e-12, rtol=0)
    # not the continuous series: the sampled square wave's coefficients alias
    assert not torch.allclose(dft_series(x.detach(), n, omega), fourier_series(x.detach(), n, omega), atol=1e-4)


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
        tensor_quant.lower.add_(torch.randn_like(tensor_quant.lower) * 0.3)  # asymmetric, per-channel-distinct
        tensor_quant.upper.add_(torch.randn_like(tensor_quant.upper) * 0.3)
    return layer, tensor_quant


@pytest.mark.parametrize("quantizer", [ClipWeightQuant, ClipWeightQuantPerChannel])
def test_clip_threshold_gradients_match_finite_differences(quantizer):
    # the unrounded scale: the power-of-two rounding is straight-through, invisible to finite differences
    layer, tensor_quant = clip_layer(quantizer.let(clip_pow2_scale=False))
    w = layer.weight
    t1, t2 = (t.detach() for t in tensor_quant.thresholds(w))
    clipped = (w < t1) | (w > t2)
    assert clipped.any() and (~clipped).any()
    params = [tensor_quant.lower, tensor_quant.upper]

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
    train(out, TrainConfig(model="tfc", quant="clip-channel", epochs=3))
    return out


def test_thresholds_stay_inside_the_weights_and_keep_clipping(clip_run):
    from flow.export import load_trained_model

    checkpoint = load_checkpoint(clip_run / "checkpoint.pt")
    history = checkpoint["history"]
    model, _ = load_trained_model(clip_run / "checkpoint.pt")
    layers = dict(model.named_modules())
    hidden = ["features.2", "features.6", "features.10"]
    assert set(checkpoint["clip_thresholds"]) == set(hidden) | {"features.14"}
    for name, thresholds in checkpoint["clip_thresholds"].items():
        weight = checkpoint["model"][f"{name}.weight"]
        t1, t2 = thresholds["t1"], thresholds["t2"]
        assert t1.shape == t2.shape == (weight.shape[0], 1)  # per output channel, as tensors
        largest = weight.abs().amax(dim=1, keepdim=True)
        assert torch.all(-largest < t1) and torch.all(t1 < 0) and torch.all(0 < t2) and torch.all(t2 < largest)
        assert len(t1.unique()) > 1  # channels learned apart
        assert torch.equal(layers[name].quant_weight().value, checkpoint["binarized_weights"][name])
    for entry in history:
        for name in hidden:
            assert entry["clip"][name]["clipped_fraction"] > 0.01, (entry["epoch"], name, entry["clip"][name])
    final = history[-1]["clip"]
    assert all(0.01 < final[name]["clipped_fraction"] < 0.99 for name in hidden)
    first = history[0]["clip"]
    assert any(abs(first[k]["t1"] - final[k]["t1"]) > 1e-4 and abs(first[k]["t2"] - final[k]["t2"]) > 1e-4 for k in first)
    assert history[-1]["test_accuracy"] > 0.6
    assert (clip_run / "clipped_fraction.png").exists()


def test_clip_scale_is_a_power_of_two_with_the_gradient_of_the_mean():
    layer, tensor_quant = clip_layer(ClipWeightQuant)
    weight = layer.quant_weight()
    exponent = torch.log2(weight.scale)
    assert torch.equal(exponent, torch.round(exponent))
    t1, t2 = tensor_quant.thresholds(layer.weight)
    mean_clipped = torch.clamp(layer.weight, t1.detach(), t2.detach()).abs().mean()
    assert weight.scale / 2 ** 0.5 <= mean_clipped <= weight.scale * 2 ** 0.5
    unrounded, _ = clip_layer(ClipWeightQuant.let(clip_pow2_scale=False))
    grads = [torch.autograd.grad(q.quant_weight().scale, q.weight_quant.tensor_quant.upper)[0]
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
            assert torch.all(stored[name].abs() == stored[name].abs().amax(dim=1, keepdim=True))  # +-alpha per row
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
# one case per export mechanism in `make test` (clip scale per tensor and per channel, float64 and
# int8 masters); the other quantizers (the expansions) differ only in backward: `make test-slow`
FAST_LADDER_QUANTIZERS = {"fourier+clip", "clip-channel"}
LADDER_CASES = [
    pytest.param(name, {}, marks=() if name in FAST_LADDER_QUANTIZERS else pytest.mark.slow, id=name)
    for name in NEW_QUANTIZERS
] + [
    pytest.param("fourier", {"dtype": "float64"}, id="fourier-float64"),
    pytest.param("clip", {"master_weights": "int8"}, marks=pytest.mark.slow, id="clip-int8"),
]


def flip_latent_weights(checkpoint_path) -> int:
    """Negate every stored-binarization layer's latent weights in the checkpoint (stored values untouched).

    Afterwards sign(latent) differs from the stored binarization on (nearly) every weight; returns
    how many weights differ.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    state = checkpoint["model"]
    differing = 0
    for key in [k for k in state if k.endswith(".tensor_quant.binarized.value")]:
        latent_key = key.split(".weight_quant.")[0] + ".weight"
        state[latent_key] = -state[latent_key]
        differing += int(((state[latent_key] >= 0) != (state[key] > 0)).sum())
    torch.save(checkpoint, checkpoint_path)
    return differing


@pytest.mark.parametrize("name, options", LADDER_CASES)
def test_export_build_and_ladder_use_the_stored_binarization_exactly(name, options, tmp_path):
    """Trained, then the latent weights negated: export, build and the ladder down to the emulator must
    still compute what PyTorch's eval computes from the stored binarized weights, image for image."""
    from flow.boards import load_board
    from flow.build import build
    from flow.export import export
    from flow.finn_env import init_finn
    from flow.verify import verify

    metrics = train(tmp_path, TrainConfig(model="tfc", quant=name, epochs=1, **options))
    assert metrics["test_accuracy"] > 0.5
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    if options.get("dtype") == "float64":
        assert checkpoint["model"]["features.2.weight"].dtype == torch.float64
    if options.get("master_weights") == "int8":
        for layer, master in checkpoint["master_weights"].items():
            assert master["codes"].dtype == torch.int8
            assert torch.equal(master["codes"].double() * master["scale"], checkpoint["model"][f"{layer}.weight"].double())
    weights = sum(v.numel() for k, v in checkpoint["model"].items() if k.endswith("binarized.value"))
    assert flip_latent_weights(tmp_path / "checkpoint.pt") > 0.99 * weights

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

    report = verify(tmp_path, jobs=1)
    assert report["agree"], [level.get("first_diverging_layer") for level in report["levels"]]
    accuracies = {level["level"]: level["accuracy"] for level in report["levels"]}
    # the stored binarization, not sign(latent): the accuracy training measured, at every level
    assert set(accuracies.values()) == {metrics["test_accuracy"]}, accuracies


def test_int8_master_weights_round_stochastically_without_bias():
    torch.manual_seed(0)
    w = torch.rand(200_000, dtype=torch.float64) * 2 - 1
    scale = int8_scale(w)
    assert scale == 2.0**-7 and w.abs().max() <= (INT8_MAX + 1) * scale
    codes = stochastic_round_int8(w, scale, torch.Generator().manual_seed(1))
    assert codes.dtype == torch.int8
    assert torch.all((codes.double() * scale - w).abs() < scale)  # one of the two neighbours
    assert stochastic_round_int8(w.new_ones(4), int8_scale(w.new_ones(4)), torch.Generator()).tolist() == [INT8_MAX] * 4
    step = w.new_full((50_000,), 0.3 * scale)  # a third of a grid step above 0
    mean = stochastic_round_int8(step, scale, torch.Generator().manual_seed(2)).double().mean()
    assert mean == pytest.approx(0.3, abs=0.01)  # unbiased: round-to-nearest would give 0


def test_confidence_interval_and_paired_t_test():
    from flow.compare import mean_interval, paired_difference

    mean, half_width = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2) * s / sqrt(n)
    paired = paired_difference([2.0, 3.0, 5.0], [1.0, 1.0, 2.0])  # differences 1, 2, 3: t = 2 sqrt(3), 2 dof
    assert paired["differences"] == [1.0, 2.0, 3.0] and paired["mean"] == 2.0
    assert paired["p_value"] == pytest.approx(0.07417990022744862)
    assert paired_difference([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0  # identical: no difference at all


def test_compare_writes_cis_and_paired_p_values_into_its_block(tmp_path):
    from flow.compare import compare

    doc = tmp_path / "quantizers.md"
    doc.write_text("# kept\n\n<!-- compare-tiny:begin -->\nold\n<!-- compare-tiny:end -->\n\nkept too\n")
    report = compare(tmp_path / "runs", doc, ("ste", "clip"), "tfc", "mnist5k:300:200", epochs=1, seeds=3,
                     name="compare-tiny")
    clip = report["summary"]["clip"]
    assert len(clip["accuracies"]) == 3 and clip["ci95"] > 0
    assert 0 <= clip["paired"]["p_value"] <= 1 and len(clip["paired"]["differences"]) == 3
    text = doc.read_text()
    assert text.startswith("# kept") and text.rstrip().endswith("kept too") and "old" not in text
    block = text[text.index("compare-tiny:begin"):text.index("compare-tiny:end")]
    assert "p (paired t)" in block and "| clip |" in block and "| ste |" in block
    assert (tmp_path / "quantizers_compare-tiny_clipping.png").exists()
