"""CNV-W1A1 end to end on a Fashion-MNIST-32 subset (offline, CPU): both block
orders, negative batch-norm scales, the ladder exact on every test image of the
subset, C-sim == emulator, and the reordering's errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flow.boards import load_board
from flow.errors import FlowError
from flow.reorder import MoveMaxPoolPastThresholds
from tests.conftest import CNV_SUBSET as SUBSET
from tests.conftest import make_run, run_flow, skip_without_fashion_mnist
from tests.test_verify import copy_run, flip_weight_bit

FAST_BUILD = ("--target-fps", "1000")  # one folding instead of the search


def verification(run_dir, *options: str) -> dict:
    run_flow("verify", run_dir, *options)  # exits non-zero when any level or layer disagrees on any image
    return json.loads((run_dir / "report" / "verification.json").read_text())


def test_cnv_learns_and_its_folding_fits_pynq_z2(cnv_run):
    assert json.loads((cnv_run / "train_metrics.json").read_text())["test_accuracy"] >= 0.4  # chance: 0.1
    board = load_board("pynq-z2")
    search = json.loads((cnv_run / "report" / "folding_search.json").read_text())
    chosen = [point for point in search if point["chosen"]]
    assert len(chosen) == 1 and chosen[0]["fits"]
    assert chosen[0]["LUT"] <= 0.85 * board.resources["LUT"] and chosen[0]["BRAM_18K"] <= 0.85 * board.resources["BRAM_18K"]
    # the fastest folding that fits: every faster point of the search does not fit
    assert all(not p["fits"] for p in search if p["estimated_fps"] > chosen[0]["estimated_fps"])
    performance = json.loads((cnv_run / "report" / "estimate_network_performance.json").read_text())
    assert performance["estimated_throughput_fps"] == pytest.approx(chosen[0]["estimated_fps"])
    kinds = [layer["kind"] for layer in json.loads((cnv_run / "hw" / "accelerator.json").read_text())["layers"]]
    assert kinds.count("sliding_window") == 8 and kinds.count("maxpool") == 2 and kinds.count("mvau") == 9


def test_cnv_ladder_is_exact_on_every_image(cnv_run):
    report = verification(cnv_run)
    assert report["agree"] and report["images"] == 100
    # PyTorch's pooled activations are compared with the accelerator's Pool outputs
    pools = [name for name in report["layers"] if name.startswith("Pool")]
    assert len(pools) == 2
    for name in pools:
        assert all(level["layers"][name]["compared"] for level in report["levels"][1:] if not level.get("skipped"))
    rtl = next(level for level in report["levels"] if level["level"] == "rtl")
    assert rtl["agrees"] and rtl["images"] >= 20 and all(entry["compared"] for entry in rtl["layers"].values())


def test_a_flipped_conv_weight_bit_is_found_across_worker_processes(cnv_run, tmp_path):
    # 100 images are two chunks of the ladder, run by two worker processes
    run = copy_run(cnv_run, tmp_path / "flipped")
    flip_weight_bit(run / "hw", "MVAU_hls_2", resign=True)
    result = run_flow("verify", run, "--no-rtl", check=False)  # the RTL level: test_cnv_ladder_is_exact_on_every_image
    assert result.returncode != 0
    levels = json.loads((run / "report" / "verification.json").read_text())["levels"]
    emulator = next(level for level in levels if level["level"] == "emulator")
    assert emulator["first_diverging_layer"] == "MVAU_hls_2" and emulator["layers"]["MVAU_hls_2"]["mismatched_images"] > 0
    assert "2 worker processes" in result.stdout


def test_cnv_csim_equals_the_emulator(cnv_run):
    run_flow("csim", cnv_run, "--images", "10")  # exits non-zero on any differing byte
    assert json.loads((cnv_run / "report" / "csim.json").read_text())["bit_exact"] is True


@pytest.mark.slow  # ~75 s; the synthetic-block reorder tests cover negated scales in `make test`
def test_negative_batchnorm_scales_before_a_pool_are_reordered_exactly(cnv_run, tmp_path):
    run = tmp_path / "negated"
    run.mkdir()
    checkpoint = torch.load(cnv_run / "checkpoint.pt", weights_only=True)
    generator = torch.Generator().manual_seed(0)
    for key, value in checkpoint["model"].items():
        if key.endswith(".weight") and value.dim() == 1:  # every batch-norm scale: ~30 % negated
            value[torch.rand(value.shape, generator=generator) < 0.3] *= -1
    torch.save(checkpoint, run / "checkpoint.pt")
    shutil.copy(cnv_run / "train_metrics.json", run)
    run_flow("export", run)
    run_flow("build", run / "model.onnx", "--board", "pynq-z2", "--out", run, *FAST_BUILD)
    report = verification(run)
    assert report["agree"]


def test_bnn_pynq_block_order_builds_and_is_exact(tmp_path):
    skip_without_fashion_mnist()
    run = make_run(tmp_path, "cnv-bnn-pynq", epochs=1, quant="fourier+clip", dataset=SUBSET, build_options=FAST_BUILD)
    # this block order's RTL: test-slow (test_cnv_rtl_equals_the_emulator_at_the_cycle_models_interval)
    report = verification(run, "--no-rtl")
    assert report["agree"] and report["levels"][-1] == {"level": "rtl", "title": "RTL (Verilator)", "skipped": "left out (--no-rtl)",
                                                        "layers": {name: {"compared": False} for name in report["layers"]}}


def pooled_block(mul_factor: np.ndarray) -> ModelWrapper:
    """MaxPool -> Mul -> MultiThreshold(bipolar) -> Conv, as streamlining leaves a pooled block."""
    channels = len(mul_factor)
    shape = [1, channels, 4, 4]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Mul", ["pooled", "factor"], ["scaled"]),
        helper.make_node("MultiThreshold", ["scaled", "thresholds"], ["bits"], domain="qonnx.custom_op.general",
                         out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0),
        helper.make_node("Conv", ["bits", "weights"], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "pooled_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
    )
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_initializer("factor", mul_factor.reshape(1, channels, 1, 1).astype(np.float32))
    model.set_initializer("thresholds", np.arange(channels, dtype=np.float32).reshape(channels, 1) - 0.5)
    model.set_initializer("weights", np.where(np.arange(2 * channels) % 3 == 0, -1.0, 1.0).astype(np.float32).reshape(2, channels, 1, 1))
    model.set_tensor_datatype("weights", DataType["BIPOLAR"])
    return model


def test_pool_reordering_with_negated_channels_computes_the_same_function():
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    model = pooled_block(np.array([1.0, -1.0, -1.0, 1.0])).transform(InferShapes())
    reordered = model.transform(MoveMaxPoolPastThresholds())
    assert [n.op_type for n in reordered.graph.node] == ["MultiThreshold", "MaxPool", "Conv"]
    x = np.random.default_rng(0).integers(-5, 6, size=(1, 4, 4, 4)).astype(np.float32)
    expected = execute_onnx(model, {"x": x})["y"]
    assert np.array_equal(execute_onnx(reordered, {"x": x})["y"], expected)


def test_a_pool_that_cannot_be_reordered_is_named():
    from qonnx.transformation.infer_shapes import InferShapes

    model = pooled_block(np.array([0.5, -1.0, 1.0, 1.0])).transform(InferShapes())
    with pytest.raises(FlowError, match="scales by values other than"):
        model.transform(MoveMaxPoolPastThresholds())


@pytest.mark.parametrize("block_model", ["cnv", "cnv-bnn-pynq"])
def test_every_quantizer_trains_cnv(block_model):
    """Forward and backward through CNV with each quantizer: finite loss, a gradient for every weight."""
    from flow.models import build_model
    from flow.quant import QUANTIZERS

    pixels = torch.randint(0, 256, (4, 3, 32, 32)).float()
    labels = torch.arange(4)
    for name in QUANTIZERS:
        model = build_model(block_model, name, (3, 32, 32))
        model.train()
        loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        loss.backward()
        assert torch.isfinite(loss), name
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 6
        for conv in convs:
            assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all(), name
            assert conv.weight.grad.abs().sum() > 0, f"{name}: no gradient reaches {conv}"


def test_both_emulator_routes_agree_layer_by_layer_on_cnv(cnv_run):
    from flow import data
    from flow.emulate import Emulator

    images = data.load(SUBSET).test_images[:50]
    packed = Emulator(cnv_run / "hw", route="packed").execute_layers(images)
    gemm = Emulator(cnv_run / "hw", route="gemm").execute_layers(images)
    assert packed.keys() == gemm.keys()
    for name in packed:
        np.testing.assert_array_equal(packed[name], gemm[name], err_msg=name)


@pytest.mark.slow  # a CNV top compiles in ~40 s and simulates ~60k cycles/s: 20 images x 12,544 cycles, twice
@pytest.mark.parametrize("block_model", ["cnv", "cnv-bnn-pynq"])
def test_cnv_rtl_equals_the_emulator_at_the_cycle_models_interval(block_model, cnv_run, tmp_path):
    from flow.rtlsim import rtlsim

    run = cnv_run if block_model == "cnv" else make_run(tmp_path, block_model, epochs=1, quant="ste", dataset=SUBSET)
    report = rtlsim(run, images=20)  # raises unless every layer's stream equals the emulator's, with random stalls
    assert report["bit_exact"] and report["images"] == 20
    assert abs(report["interval_vs_model"] - 1) <= 0.10, report["interval_vs_model"]
