"""The cycle model (flow.cycles): the interval is the slowest layer or stream of the generated
top, the folding search stops at the stream bound, and every consumer reports the same FPS."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flow.boards import load_board
from flow.cycles import cycle_model
from flow.emulate import Emulator
from tests.conftest import make_run, run_flow


@pytest.fixture(scope="module")
def lfc_run(tmp_path_factory) -> Path:
    """LFC-W1A1 (STE), one epoch on 500 mnist5k images: the folding does not depend on the weights."""
    return make_run(tmp_path_factory.mktemp("runs"), "lfc", epochs=1, quant="ste", dataset="mnist5k:500:100")


@pytest.fixture(scope="module")
def tfc_zcu104_run(tfc_run, tmp_path_factory) -> Path:
    """The TFC fixture's model built for the ZCU104 (128-bit DMA)."""
    out = tmp_path_factory.mktemp("runs") / "tfc-zcu104"
    out.mkdir()
    for name in ("train_metrics.json", "model.onnx"):
        shutil.copy(tfc_run / name, out / name)
    run_flow("build", out / "model.onnx", "--board", "zcu104", "--out", out)
    return out


def layer_cycles_from_folding(run_dir: Path) -> dict[str, int]:
    """Cycles per image of every layer from folding_config.json's PE/SIMD and the layer's shape."""
    folding = json.loads((run_dir / "folding_config.json").read_text())
    model = ModelWrapper(str(run_dir / "dataflow_model.onnx"))
    cycles = {}
    for node in model.graph.node:
        inst, fold = getCustomOp(node), folding[node.name]
        if node.op_type.startswith("MVAU"):
            vectors = int(np.prod(inst.get_nodeattr("numInputVectors")))
            cycles[node.name] = vectors * (inst.get_nodeattr("MW") // fold["SIMD"]) * (inst.get_nodeattr("MH") // fold["PE"])
        elif node.op_type.startswith("Thresholding"):
            pixels = int(np.prod(inst.get_nodeattr("numInputVectors")))
            cycles[node.name] = pixels * inst.get_nodeattr("NumChannels") // fold["PE"]
        elif node.op_type.startswith("LabelSelect"):
            cycles[node.name] = inst.get_nodeattr("Labels") // fold["PE"]
        else:  # sliding windows and pools: FINN's estimate of the node with that folding
            assert {k: inst.get_nodeattr(k) for k in ("SIMD", "PE") if k in fold} == {k: fold[k] for k in ("SIMD", "PE") if k in fold}
            cycles[node.name] = int(inst.get_exp_cycles())
    return cycles


def stream_cycles_from_widths(run_dir: Path, board) -> tuple[int, int, int, int]:
    """(input cycles, output cycles, input bytes, output bytes) per image: the image's bytes over the
    stream width the generated top has (hls/hls.json), which is the board's DMA width for these models."""
    hls = json.loads((run_dir / "hls" / "hls.json").read_text())
    io = hls["io_shape_dict"]
    assert io["idt"] == ["UINT8"]
    in_bytes = math.prod(io["ishape_normal"][0])  # one byte per pixel
    out_bytes = math.prod(io["oshape_packed"][0])
    assert hls["in_axis_bits"] == board.dma_width_bits  # 784 and 3072 B are whole DMA words
    assert hls["in_bytes_per_image"] == in_bytes and hls["out_bytes_per_image"] == out_bytes
    return in_bytes * 8 // hls["in_axis_bits"], out_bytes * 8 // hls["out_axis_bits"], in_bytes, out_bytes


@pytest.mark.parametrize(
    "run_fixture, board_name",
    [("tfc_run", "pynq-z2"), ("sfc_run", "pynq-z2"), ("lfc_run", "pynq-z2"), ("cnv_run", "pynq-z2"), ("tfc_zcu104_run", "zcu104")],
)
def test_interval_is_the_slowest_layer_or_stream(run_fixture, board_name, request):
    run_dir = request.getfixturevalue(run_fixture)
    board = load_board(board_name)
    layers = layer_cycles_from_folding(run_dir)
    in_cycles, out_cycles, in_bytes, out_bytes = stream_cycles_from_widths(run_dir, board)
    interval = max(*layers.values(), in_cycles, out_cycles)
    clock_hz = board.clock_mhz * 1e6
    dma_fps = min(board.dma_mm2s_mb_per_s * 1e6 / in_bytes, board.dma_s2mm_mb_per_s * 1e6 / out_bytes)

    performance = json.loads((run_dir / "report" / "estimate_network_performance.json").read_text())
    assert performance["initiation_interval_cycles"] == interval
    assert performance["estimated_throughput_fps"] == pytest.approx(min(clock_hz / interval, dma_fps))
    assert performance["io_bound_fps"] == pytest.approx(clock_hz / max(in_cycles, out_cycles))
    assert performance["compute_bound_fps"] == pytest.approx(clock_hz / max(layers.values()))
    assert performance["dma_bound_fps"] == pytest.approx(dma_fps)
    slowest = [name for name, c in {**layers, "input stream": in_cycles, "output stream": out_cycles}.items() if c == interval]
    assert performance["bounded_by"] in slowest
    # FINN's own keys stay: its slowest layer
    assert performance["max_cycles"] == max(layers.values())
    # the deployment manifest, the emulator and `make emulate` report the same estimate
    assert json.loads((run_dir / "build.json").read_text())["estimated_throughput_fps"] == performance["estimated_throughput_fps"]
    manifest = json.loads((run_dir / "hw" / "manifest.json").read_text())
    assert manifest["estimate"]["initiation_interval_cycles"] == interval
    assert Emulator(run_dir / "hw").cycles["estimated_fps"] == performance["estimated_throughput_fps"]
    # the search never went below the stream bound, and chose its fastest fitting point
    search = json.loads((run_dir / "report" / "folding_search.json").read_text())
    assert all(point["max_cycles"] >= in_cycles for point in search)
    (chosen,) = [point for point in search if point["chosen"]]
    assert chosen["estimated_fps"] == max(point["estimated_fps"] for point in search if point["fits"])


def test_tfc_reaches_the_stream_bound_with_a_small_design(tfc_run):
    """784 B over a 64-bit stream: 98 cycles, about 1.02 M FPS at 100 MHz; no layer is folded faster
    than it needs, so the design is a fraction of the budget."""
    performance = json.loads((tfc_run / "report" / "estimate_network_performance.json").read_text())
    assert performance["initiation_interval_cycles"] == 98
    assert performance["bounded_by"] == "input stream"
    assert performance["estimated_throughput_fps"] <= 100e6 / 98
    resources = json.loads((tfc_run / "report" / "estimate_layer_resources.json").read_text())["total"]
    assert resources["LUT"] < 0.25 * load_board("pynq-z2").resources["LUT"]


def test_make_emulate_reports_the_builds_estimate(tfc_zcu104_run):
    result = json.loads(run_flow("emulate", tfc_zcu104_run, "--json").stdout)
    performance = json.loads((tfc_zcu104_run / "report" / "estimate_network_performance.json").read_text())
    assert result["estimated_fps"] == performance["estimated_throughput_fps"]
    assert result["bounded_by"] == performance["bounded_by"]


def test_target_fps_above_the_stream_bound_is_refused(tfc_run, tmp_path):
    result = run_flow("build", tfc_run / "model.onnx", "--out", tmp_path, "--target-fps", 1_500_000, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: TARGET_FPS=1500000 is above what pynq-z2's streams can carry: 1,020,408 FPS: each image is 784 B "
        "on the 64-bit input stream, 98 cycles at 100 MHz; the DMA (MM2S 798.1 MB/s, S2MM 597.1 MB/s) allows 1,017,985 FPS"
    )
    assert not (tmp_path / "build.json").exists()


def stream(kind: str, name: str, cycles: int, nbytes: int = 0) -> dict:
    return {"kind": kind, "name": name, "bits": 64, "bytes": nbytes, "cycles": cycles}


def test_cycle_model_names_the_bound_and_takes_the_lower_of_streams_and_dma():
    plan = [stream("axis_in", "input stream", 98, 784), {"kind": "layer", "name": "L"}, stream("dwc", "dwc before L", 40),
            stream("axis_out", "output stream", 1, 1)]
    tied = cycle_model({"L": 98}, plan, 100.0)
    assert tied["initiation_interval_cycles"] == 98 and tied["bounded_by"] == "input stream"  # a tie names the stream
    assert tied["estimated_fps"] == pytest.approx(100e6 / 98) and tied["dma_bound_fps"] is None
    slow = cycle_model({"L": 120}, plan, 100.0, {"mm2s_mb_per_s": 800.0, "s2mm_mb_per_s": 600.0})
    assert slow["bounded_by"] == "L" and slow["estimated_fps"] == pytest.approx(100e6 / 120)
    assert slow["latency_cycles"] == 98 + 120 + 40 + 1
    dma = cycle_model({"L": 50}, plan, 100.0, {"mm2s_mb_per_s": 392.0, "s2mm_mb_per_s": 600.0})
    assert dma["estimated_fps"] == pytest.approx(392e6 / 784) and dma["estimated_fps_bounded_by"] == "DMA bandwidth"
    assert dma["initiation_interval_cycles"] == 98  # the fabric's interval, without the DMA
