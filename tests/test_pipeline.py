"""The spine end to end: train -> export -> build, and the ladder
PyTorch == QONNX == streamlined FINN graph == HW-layer graph, exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flow import data as datasets
from flow.boards import load_board
from flow.export import load_trained_model, torch_predictions
from flow.finn_env import init_finn
from flow.graphs import execute_batched, predictions
from tests.conftest import run_flow


def test_tfc_trains_to_the_accuracy_floor(tfc_run):
    metrics = json.loads((tfc_run / "train_metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.88
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 51))
    assert metrics["history"][-1]["test_accuracy"] == metrics["test_accuracy"]
    assert (tfc_run / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ladder_is_exact_on_every_test_image(tfc_run):
    init_finn(tfc_run)
    images = datasets.load("mnist5k").test_images
    model, _ = load_trained_model(tfc_run / "checkpoint.pt")
    reference = torch_predictions(model, images)
    levels = {
        "qonnx": tfc_run / "model.onnx",
        "streamlined": tfc_run / "intermediate_models" / "step_streamline.onnx",
        "hw_layers": tfc_run / "intermediate_models" / "step_convert_to_hw.onnx",
    }
    assert len(images) >= 500
    for level, path in levels.items():
        predicted = predictions(execute_batched(ModelWrapper(str(path)), images))
        differing = np.flatnonzero(predicted != reference)
        assert differing.size == 0, f"{level} differs from PyTorch on images {differing[:10]}"


def test_streamlining_leaves_xnor_popcount_and_thresholds_only(tfc_run):
    streamlined = ModelWrapper(str(tfc_run / "intermediate_models" / "step_streamline.onnx"))
    assert {n.op_type for n in streamlined.graph.node} == {"Reshape", "MultiThreshold", "XnorPopcountMatMul", "TopK"}
    hw = ModelWrapper(str(tfc_run / "intermediate_models" / "step_convert_to_hw.onnx"))
    mvaus = [getCustomOp(n) for n in hw.graph.node if n.op_type == "MVAU"]
    assert len(mvaus) == 4
    assert all(m.get_nodeattr("binaryXnorMode") == 1 for m in mvaus)
    # batch-norm + sign absorbed into the threshold units of all hidden layers
    assert [m.get_nodeattr("noActivation") for m in mvaus] == [0, 0, 0, 1]


def test_default_build_fits_pynq_z2_above_a_million_fps(tfc_run):
    board = load_board("pynq-z2")
    performance = json.loads((tfc_run / "report" / "estimate_network_performance.json").read_text())
    resources = json.loads((tfc_run / "report" / "estimate_layer_resources.json").read_text())
    cycles = json.loads((tfc_run / "report" / "estimate_layer_cycles.json").read_text())
    assert performance["estimated_throughput_fps"] >= 1_000_000
    assert performance["max_cycles"] == max(cycles.values())
    assert resources["total"]["LUT"] <= board.resources["LUT"]
    assert resources["total"]["BRAM_18K"] <= board.resources["BRAM_18K"]
    folding = json.loads((tfc_run / "folding_config.json").read_text())
    dataflow = ModelWrapper(str(tfc_run / "dataflow_model.onnx"))
    for node in dataflow.get_nodes_by_op_type("MVAU_hls"):
        inst = getCustomOp(node)
        assert folding[node.name]["SIMD"] == inst.get_nodeattr("SIMD")
        assert inst.get_nodeattr("MW") % inst.get_nodeattr("SIMD") == 0
        assert inst.get_nodeattr("MH") % inst.get_nodeattr("PE") == 0
    assert json.loads((tfc_run / "build.json").read_text())["board"] == "pynq-z2"


def test_target_fps_gives_a_smaller_design_that_meets_it(tfc_run, tmp_path):
    result = run_flow("build", tfc_run / "model.onnx", "--out", tmp_path, "--target-fps", 200_000)
    performance = json.loads((tmp_path / "report" / "estimate_network_performance.json").read_text())
    assert performance["estimated_throughput_fps"] >= 200_000
    small = json.loads((tmp_path / "report" / "estimate_layer_resources.json").read_text())["total"]["LUT"]
    fastest = json.loads((tfc_run / "report" / "estimate_layer_resources.json").read_text())["total"]["LUT"]
    assert small < fastest
    assert "MVAU_hls_0" in result.stdout and "estimated throughput" in result.stdout


def test_build_accepts_brevitas_bnn_pynq_models(tmp_path):
    """A user's own model: Brevitas' bnn_pynq TFC, exported by Brevitas, built by the flow."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models.FC import FC

    torch.manual_seed(1)
    model = FC(num_classes=10, weight_bit_width=1, act_bit_width=1, in_bit_width=1, in_channels=1, out_features=[64, 64, 64])
    model.eval()
    export_qonnx(model, input_t=torch.zeros(1, 1, 28, 28), export_path=str(tmp_path / "bnn_pynq_tfc.onnx"))
    run_flow("build", tmp_path / "bnn_pynq_tfc.onnx", "--input-scale", 255, "--out", tmp_path)
    init_finn(tmp_path)
    images = datasets.load("mnist5k").test_images[:500]
    with torch.no_grad():
        reference = model(torch.from_numpy(images).float() / 255).argmax(1).numpy()
    hw = ModelWrapper(str(tmp_path / "intermediate_models" / "step_convert_to_hw.onnx"))
    np.testing.assert_array_equal(predictions(execute_batched(hw, images)), reference)


@pytest.mark.parametrize("level", ["model.onnx", "intermediate_models/step_convert_to_hw.onnx"])
def test_graph_execution_batches_agree_with_single_images(tfc_run, level):
    init_finn(tfc_run)
    images = datasets.load("mnist5k").test_images[:20]
    model = ModelWrapper(str(tfc_run / level))
    batched = execute_batched(model, images, batch=7)
    single = np.concatenate([execute_batched(model, images[i : i + 1], batch=1) for i in range(len(images))])
    np.testing.assert_array_equal(batched, single)
