"""HLS kernels and generated accelerators, C-simulated with g++ and compared bit for bit.

Per kernel, >= 50 random foldings/weights/thresholds are compiled into one
translation unit (one g++ run per kernel) and checked against the emulator
(the single-layer design's hardware artifacts); the width converter against
the identity of the bit string it re-cuts. Small random convolutional chains
(sliding window -> MVAU -> fused max-pool -> ...) are checked against the
emulator too. The whole TFC and SFC designs are checked on the full test set.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import gen_finn_dt_tensor, qonnx_make_model

from flow.artifacts import sha256_file, write_hardware_artifacts
from flow.boards import load_board
from flow.csim import compile_testbench, csim, run_testbench
from flow.driver.packing import IOShapes, pack_input
from flow.emulate import Emulator
from flow.errors import FlowError
from flow.hls import generate, network_files, run_vendor_tools, c_testbench

CONFIGS = 50
VECTORS = 12
# few distinct ap_uint widths keep the one translation unit per kernel quick to compile
DWC_WIDTHS = [1, 3, 8, 14, 28, 32, 64, 112]
# unit tests run a few vectors: compile time matters, not run time
UNIT_OPTIMIZE = "-O0"
BOARD = load_board("pynq-z2")


# --------------------------------------------------------------------------- single-layer designs


def single_layer_model(op_type: str, attrs: dict, idt, odt, in_shape, out_shape, params: dict) -> ModelWrapper:
    """A dataflow model of one HW layer with initializers ``params`` (name -> (array, dtype))."""
    inp = helper.make_tensor_value_info("inp", TensorProto.FLOAT, in_shape)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, out_shape)
    node = helper.make_node(
        op_type, ["inp", *params], ["out"], name=f"{op_type}_0",
        domain="finn.custom_op.fpgadataflow", backend="fpgadataflow", **attrs,
    )
    model = ModelWrapper(qonnx_make_model(helper.make_graph([node], "single_layer", [inp], [out])))
    model.set_tensor_datatype("inp", idt)
    model.set_tensor_datatype("out", odt)
    for name, (value, dtype) in params.items():
        model.set_initializer(name, value.astype(np.float32))
        model.set_tensor_datatype(name, dtype)
    return model


def int_type(lo: int, hi: int):
    """The smallest INT/UINT holding [lo, hi]."""
    if lo >= 0:
        return DataType[f"UINT{max(1, int(hi).bit_length())}"] if hi > 1 else DataType["UINT2"]
    return DataType[f"INT{max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1}"]


def sorted_thresholds(rng, channels: int, steps: int, lo: int, hi: int) -> np.ndarray:
    return np.sort(rng.integers(lo, hi + 1, size=(channels, steps)), axis=1)


def random_mvau(rng, xnor: bool) -> ModelWrapper:
    simd = int(rng.choice([1, 2, 3, 4, 7, 8, 16, 32]))
    pe = int(rng.choice([1, 2, 3, 4, 5, 8]))
    mw, mh = simd * int(rng.integers(1, 5)), pe * int(rng.integers(1, 5))
    if xnor:
        idt, wdt = DataType["BINARY"], DataType["BINARY"]
        weights = rng.integers(0, 2, size=(mw, mh))
        acc_lo, acc_hi = 0, mw
    else:
        idt = DataType[str(rng.choice(["UINT2", "UINT4", "UINT8", "INT2", "INT3", "INT8"]))]
        wdt = DataType["BIPOLAR"]
        weights = rng.choice([-1, 1], size=(mw, mh))
        big = mw * max(abs(idt.min()), abs(idt.max()))
        acc_lo, acc_hi = -big, big
    attrs = dict(MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType=idt.name, weightDataType=wdt.name,
                 binaryXnorMode=int(xnor), numInputVectors=[1], mem_mode="internal_embedded")
    params = {"weights": (weights, wdt)}
    if rng.random() < 0.3:
        # no activation: the accumulator is the output; one bit too few wraps, as in the hardware
        exact = int_type(acc_lo, acc_hi)
        odt = DataType[f"{'INT' if exact.signed() else 'UINT'}{exact.bitwidth() + int(rng.integers(-1, 2))}"]
        attrs.update(noActivation=1, outputDataType=odt.name, accDataType=odt.name)
    else:
        steps = int(rng.integers(1, 4))
        odt = DataType["BINARY"] if steps == 1 else DataType[f"UINT{steps.bit_length()}"]
        thresholds = sorted_thresholds(rng, mh, steps, acc_lo, acc_hi)
        params["thresholds"] = (thresholds, int_type(min(acc_lo, thresholds.min()), max(acc_hi, thresholds.max())))
        attrs.update(noActivation=0, outputDataType=odt.name)
    return single_layer_model("MVAU", attrs, idt, odt, [1, mw], [1, mh], params)


def random_thresholding(rng) -> ModelWrapper:
    pe = int(rng.choice([1, 2, 3, 4, 7, 8, 16]))
    channels = pe * int(rng.integers(1, 6))
    idt = DataType[str(rng.choice(["UINT2", "UINT4", "UINT8", "INT3", "INT5", "INT8"]))]
    steps = int(rng.integers(1, 4))
    odt = DataType["BINARY"] if steps == 1 else DataType[f"UINT{steps.bit_length()}"]
    shared = rng.random() < 0.25  # one threshold row for every channel, as the TFC input layer
    thresholds = sorted_thresholds(rng, 1 if shared else channels, steps, int(idt.min()), int(idt.max()) + 1)
    tdt = int_type(min(thresholds.min(), idt.min()), max(thresholds.max(), idt.max()))
    attrs = dict(NumChannels=channels, PE=pe, numSteps=steps, inputDataType=idt.name, weightDataType=tdt.name,
                 outputDataType=odt.name, numInputVectors=[1], ActVal=0)
    return single_layer_model("Thresholding", attrs, idt, odt, [1, channels], [1, channels],
                              {"thresholds": (thresholds, tdt)})


def random_label_select(rng) -> ModelWrapper:
    pe = int(rng.choice([1, 2, 3, 5]))
    labels = pe * int(rng.integers(1, 7))
    k = int(rng.integers(1, min(labels, 4) + 1))
    # narrow types: many ties and many values at the type's minimum
    idt = DataType[str(rng.choice(["UINT2", "UINT3", "INT2", "INT4", "INT7"]))]
    attrs = dict(Labels=labels, PE=pe, K=k, inputDataType=idt.name, outputDataType="UINT8", numInputVectors=[1])
    return single_layer_model("LabelSelect", attrs, idt, DataType["UINT8"], [1, labels], [1, k], {})


def check_kernel(tmp_path: Path, models: list[ModelWrapper], seed: int) -> None:
    """Generate every model's design into one translation unit, C-simulate each on random
    inputs, and compare the packed outputs with the emulator's."""
    rng = np.random.default_rng(seed)
    files, nets = {}, []
    for i, model in enumerate(models):
        for j, node in enumerate(model.graph.node):
            node.name = f"k{i}_{j}_{node.op_type}"  # unique parameter names in the shared unit
        net, net_files = network_files(model, f"k{i}", BOARD.dma_width_bits)
        nets.append(net)
        files.update(net_files)
    files["tb.cpp"] = c_testbench(nets) + "".join(f'#include "{net.top}.cpp"\n' for net in nets)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    compile_testbench([tmp_path / "tb.cpp"], [tmp_path], tmp_path / "tb", UNIT_OPTIMIZE)
    failures = []
    for i, (model, net) in enumerate(zip(models, nets)):
        write_hardware_artifacts(model, tmp_path / f"hw{i}", board={"board": BOARD.name, "part": BOARD.part, "clock_mhz": BOARD.clock_mhz, "dma_width_bits": BOARD.dma_width_bits})
        io = IOShapes.from_dict(net.io_shape_dict)
        idt = io.input.dtype
        values = gen_finn_dt_tensor(idt, (VECTORS, *io.input.folded[1:]))
        if rng.random() < 0.5:  # extremes, where wrapping and ties happen
            values = rng.choice([idt.min(), idt.max()], size=values.shape).astype(np.float32)
        packed = np.ascontiguousarray(pack_input(values, io)).reshape(VECTORS, -1)
        expected = Emulator(tmp_path / f"hw{i}").execute_packed(packed).reshape(VECTORS, -1)
        actual = run_testbench(tmp_path / "tb", net.top, packed, net.out_bytes, tmp_path)
        if not np.array_equal(actual, expected):
            node = model.graph.node[0]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in ("backend", "domain")}
            failures.append(f"config {i} {node.op_type} {attrs}: C-sim {actual.tolist()} != emulator {expected.tolist()}")
    assert not failures, "\n".join(failures[:5])


def test_mvau_kernel_xnor_and_bipolar_weights(tmp_path):
    rng = np.random.default_rng(1)
    models = [random_mvau(rng, xnor=i % 2 == 0) for i in range(CONFIGS)]
    check_kernel(tmp_path, models, seed=1)


def test_thresholding_kernel(tmp_path):
    rng = np.random.default_rng(2)
    check_kernel(tmp_path, [random_thresholding(rng) for _ in range(CONFIGS)], seed=2)


def test_label_select_kernel_orders_ties_by_lowest_label(tmp_path):
    rng = np.random.default_rng(3)
    check_kernel(tmp_path, [random_label_select(rng) for _ in range(CONFIGS)], seed=3)


def test_label_select_matches_finn_python_execution(tmp_path):
    """The emulator reference itself agrees with FINN's LabelSelect (ONNX TopK) on ties."""
    from finn.core.onnx_exec import execute_onnx

    model = single_layer_model("LabelSelect", dict(Labels=6, PE=2, K=3, inputDataType="UINT2", outputDataType="UINT8",
                                                   numInputVectors=[1]), DataType["UINT2"], DataType["UINT8"], [1, 6], [1, 3], {})
    write_hardware_artifacts(model, tmp_path / "hw", board={"board": BOARD.name, "part": BOARD.part, "clock_mhz": BOARD.clock_mhz, "dma_width_bits": BOARD.dma_width_bits})
    values = np.array([[1, 3, 3, 1, 3, 2]], dtype=np.float32)  # three-way tie at the top
    finn = execute_onnx(model, {"inp": values})["out"].reshape(-1)
    assert finn.tolist() == [1, 2, 4]
    net, files = network_files(model, "ls", BOARD.dma_width_bits)
    files["tb.cpp"] = c_testbench([net])
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    compile_testbench([tmp_path / "tb.cpp", tmp_path / "ls.cpp"], [tmp_path], tmp_path / "tb", UNIT_OPTIMIZE)
    io = IOShapes.from_dict(net.io_shape_dict)
    packed = np.ascontiguousarray(pack_input(values.reshape(1, *io.input.folded[1:]), io)).reshape(1, -1)
    assert run_testbench(tmp_path / "tb", "ls", packed, net.out_bytes, tmp_path).reshape(-1).tolist() == [1, 2, 4]


def test_stream_width_converter_keeps_the_bit_string(tmp_path):
    """bnn::dwc re-cuts a vector's little-endian bit string: the bits out equal the bits in."""
    rng = np.random.default_rng(5)
    configs = []
    while len(configs) < CONFIGS:
        iw, ow = (int(w) for w in rng.choice(DWC_WIDTHS, size=2))
        words = int(rng.integers(1, 6)) * ow // np.gcd(iw, ow)  # a whole number of output words
        if words * iw <= 2000:
            configs.append((iw, ow, words))
    lines = ['#include <iostream>', '#include <string>', '#include "dwc.h"', ""]
    for i, (iw, ow, words) in enumerate(configs):
        lines += [
            f"static std::string run{i}(const std::string &bits, unsigned vectors) {{",
            f"    hls::stream<ap_uint<{iw}> > in; hls::stream<ap_uint<{ow}> > out; std::string result;",
            f"    for (unsigned w = 0; w < vectors * {words}; w++) {{ ap_uint<{iw}> word = 0;",
            f"        for (unsigned b = 0; b < {iw}; b++) word[b] = bits[w * {iw} + b] == '1'; in.write(word); }}",
            f"    bnn::dwc<{iw}, {ow}, {words}>(in, out, vectors);  // one vector per image",
            "    if (!in.empty()) return \"unread input\";",
            f"    while (!out.empty()) {{ ap_uint<{ow}> word = out.read(); for (unsigned b = 0; b < {ow}; b++) result += word[b] ? '1' : '0'; }}",
            "    return result;",
            "}",
        ]
    lines += ["int main() {", "    unsigned index; unsigned vectors; std::string bits;",
              "    while (std::cin >> index >> vectors >> bits) {", "        switch (index) {"]
    lines += [f"            case {i}: std::cout << run{i}(bits, vectors) << std::endl; break;" for i in range(len(configs))]
    lines += ["        }", "    }", "}"]
    (tmp_path / "dwc_tb.cpp").write_text("\n".join(lines) + "\n")
    compile_testbench([tmp_path / "dwc_tb.cpp"], [], tmp_path / "dwc_tb", UNIT_OPTIMIZE)
    requests, inputs = [], []
    for i, (iw, _, words) in enumerate(configs):
        vectors = int(rng.integers(1, 4))
        bits = "".join(rng.choice(["0", "1"], size=vectors * words * iw))
        requests.append(f"{i} {vectors} {bits}")
        inputs.append(bits)
    result = subprocess.run([str(tmp_path / "dwc_tb")], input="\n".join(requests) + "\n", capture_output=True, text=True)
    outputs = result.stdout.split()
    assert len(outputs) == len(configs)
    failures = [f"dwc<{c[0]}, {c[1]}, {c[2]}>" for c, i, o in zip(configs, inputs, outputs) if i != o]
    assert not failures, f"bit string changed by {failures}"


# --------------------------------------------------------------------------- whole networks


@pytest.mark.parametrize("run_fixture", ["tfc_run", "sfc_run"])
def test_network_csim_equals_emulator_on_the_test_set(run_fixture, request):
    run_dir = request.getfixturevalue(run_fixture)
    report = csim(run_dir)
    assert report["bit_exact"] and report["images"] >= 1000
    assert report["compile_seconds"] > 0 and report["run_seconds"] > 0


def copy_run(run_dir: Path, target: Path) -> Path:
    """The parts of a run directory the C simulation reads."""
    target.mkdir()
    for name in ("hls", "hw"):
        shutil.copytree(run_dir / name, target / name)
    for name in ("train_metrics.json", "build.json", "model.onnx", "board.toml"):
        shutil.copy(run_dir / name, target)
    return target


def rewrite_listed(path: Path, text: str) -> None:
    """Change a generated file and its sha256 in hls/manifest.json, as a build writing it would."""
    path.write_text(text)
    hls_dir = next(p for p in path.parents if (p / "manifest.json").exists())
    manifest = json.loads((hls_dir / "manifest.json").read_text())
    manifest["files"][path.relative_to(hls_dir).as_posix()] = sha256_file(path)
    (hls_dir / "manifest.json").write_text(json.dumps(manifest))


def test_wrong_weight_header_fails_the_comparison(tfc_run, tmp_path):
    run = copy_run(tfc_run, tmp_path / "run")
    header = sorted((run / "hls" / "params").glob("MVAU_*.h"))[-1]  # the layer before the label select
    text = header.read_text()
    # invert every weight word: each popcount becomes MW - popcount
    inverted = re.sub(r"0x([0-9a-f]+)ULL", lambda m: "0x%0*xULL" % (len(m[1]), ~int(m[1], 16) & ((1 << 4 * len(m[1])) - 1)), text)
    assert inverted != text
    rewrite_listed(header, inverted)
    with pytest.raises(FlowError, match="differs from the emulator"):
        csim(run)


def test_compile_error_names_the_generated_file_and_line(tfc_run, tmp_path):
    run = copy_run(tfc_run, tmp_path / "run")
    header = sorted((run / "hls" / "params").glob("MVAU_*.h"))[0]
    lines = header.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"activation.h"' in line) + 1  # the first line after the includes
    lines[index] += " this is not C++"
    rewrite_listed(header, "\n".join(lines) + "\n")
    with pytest.raises(FlowError, match=rf"{re.escape(header.name)}:{index + 1}:\d+: error"):
        csim(run)


# --------------------------------------------------------------------------- vendor path


def test_generated_tcl_has_the_boards_part_clock_and_top(tfc_run, tmp_path):
    board_file = tmp_path / "other.toml"
    board_file.write_text(
        'name = "other"\npart = "xczu3eg-sbva484-1-e"\nclock_mhz = 150.0\npynq_platform = "zynqmp"\n'
        'finn_board = "Ultra96"\ndma_width_bits = 128\n[resources]\nLUT = 70560\nFF = 141120\nBRAM_18K = 432\nDSP = 360\n'
    )
    for board, period in ((load_board("pynq-z2"), "10"), (load_board(str(board_file)), "6.66667")):
        out = tmp_path / board.name
        generate(ModelWrapper(str(tfc_run / "dataflow_model.onnx")), out, "tfc_accel", board)
        vitis = (out / "vitis_hls.tcl").read_text()
        vivado = (out / "vivado.tcl").read_text()
        assert f"set_part {{{board.part}}}" in vitis and f"create_clock -period {period} " in vitis
        assert "set_top tfc_accel" in vitis
        assert f"-part {board.part}" in vivado and "set top tfc_accel" in vivado
        frequency = "PCW_FPGA0_PERIPHERAL_FREQMHZ" if board.pynq_platform == "zynq" else "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"
        assert f"CONFIG.{frequency} {{{board.clock_mhz:g}}}" in vivado
        assert "../bitfile/$top.bit" in vivado and "../bitfile/$top.hwh" in vivado
        top = (out / "tfc_accel.cpp").read_text()
        assert "void tfc_accel(" in top and "#pragma HLS DATAFLOW" in top and "axis port = in" in top


def test_vendor_tools_run_only_when_on_path(tmp_path, monkeypatch, capsys):
    (tmp_path / "hls").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    run_vendor_tools(tmp_path / "hls")
    printed = capsys.readouterr().out
    assert "skipped vitis_hls" in printed and "skipped vivado" in printed and "not on PATH" in printed
    # a stand-in vitis_hls records that it ran on the generated tcl
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "vitis_hls"
    fake.write_text('#!/bin/sh\necho "$@" > ran.txt\n')
    fake.chmod(0o755)
    run_vendor_tools(tmp_path / "hls")
    assert (tmp_path / "hls" / "ran.txt").read_text().split() == ["-f", "vitis_hls.tcl"]
    assert "skipped vivado" in capsys.readouterr().out


# --------------------------------------------------------------------------- convolution kernels


def pack_elements(values: np.ndarray, bits: int) -> np.ndarray:
    """... x P integer elements -> ... words, element 0 in the lowest bits (two's complement)."""
    mask = (1 << bits) - 1
    words = np.zeros(values.shape[:-1], dtype=object)
    for p in range(values.shape[-1]):
        words = words + ((values[..., p].astype(object) & mask) << (p * bits))
    return words


def finn_sliding_window(images: np.ndarray, k: int, s: int, simd: int, dtype) -> np.ndarray:
    """FINN's ConvolutionInputGenerator, executed in Python: N x H x W x C -> N x OH x OW x K*K*C."""
    from finn.core.onnx_exec import execute_onnx

    n, ih, iw, c = images.shape
    oh, ow = (ih - k) // s + 1, (iw - k) // s + 1
    attrs = dict(ConvKernelDim=[k, k], IFMChannels=c, IFMDim=[ih, iw], OFMDim=[oh, ow], SIMD=simd, Stride=[s, s],
                 Dilation=[1, 1], inputDataType=dtype.name, outputDataType=dtype.name, depthwise=0)
    # one image per execution: FINN's Python execution of this op handles batch 1 only
    model = single_layer_model("ConvolutionInputGenerator", attrs, dtype, dtype, [1, ih, iw, c], [1, oh, ow, k * k * c], {})
    return np.concatenate(
        [execute_onnx(model, {"inp": image[None].astype(np.float32)})["out"] for image in images]
    ).astype(np.int64)


def test_sliding_window_and_maxpool_kernels(tmp_path):
    """bnn::sliding_window against FINN's ConvolutionInputGenerator, bnn::maxpool against
    numpy, >= 50 random shapes/foldings each, in one translation unit."""
    rng = np.random.default_rng(6)
    swg, pool = [], []
    while len(swg) < CONFIGS:
        k, s = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        ih, iw = int(rng.integers(k, 8)), int(rng.integers(k, 8))
        simd = int(rng.choice([1, 2, 4]))
        swg.append((ih, iw, simd * int(rng.integers(1, 3)), simd, k, s))
    while len(pool) < CONFIGS:
        k = int(rng.integers(1, 4))
        ih, iw = int(rng.integers(k, 9)), int(rng.integers(k, 9))
        pe, bits = int(rng.choice([1, 2, 4])), int(rng.choice([1, 2, 4]))
        pool.append((ih, iw, pe * int(rng.integers(1, 3)), pe, k, bits, bool(rng.random() < 0.5) and bits > 1))
    dtype = DataType["UINT4"]
    lines = ['#include <iostream>', '#include "sliding_window.h"', '#include "maxpool.h"', ""]
    for i, (ih, iw, c, simd, k, s) in enumerate(swg):
        w = simd * dtype.bitwidth()
        lines += [
            f"static void swg{i}(unsigned images) {{ hls::stream<ap_uint<{w}> > in, out;",
            f"    for (unsigned j = 0; j < images * {ih * iw * c // simd}; j++) {{ unsigned long long v; std::cin >> v; in.write(v); }}",
            f"    bnn::sliding_window<{ih}, {iw}, {c // simd}, {k}, {s}, {w}>(in, out, images);",
            "    if (!in.empty()) std::cout << \"unread \"; while (!out.empty()) std::cout << out.read().to_uint64() << ' '; std::cout << std::endl; }",
        ]
    for i, (ih, iw, c, pe, k, bits, signed) in enumerate(pool):
        t = f"ap_{'' if signed else 'u'}int<{bits}>"
        lines += [
            f"static void pool{i}(unsigned images) {{ hls::stream<ap_uint<{pe * bits}> > in, out;",
            f"    for (unsigned j = 0; j < images * {ih * iw * c // pe}; j++) {{ unsigned long long v; std::cin >> v; in.write(v); }}",
            f"    bnn::maxpool<{ih}, {iw}, {c // pe}, {pe}, {k}, {t} >(in, out, images);",
            "    if (!in.empty()) std::cout << \"unread \"; while (!out.empty()) std::cout << out.read().to_uint64() << ' '; std::cout << std::endl; }",
        ]
    lines += ["int main() {", "    std::string kind; unsigned index, images;", "    while (std::cin >> kind >> index >> images) {"]
    lines += [f'        if (kind == "swg" && index == {i}) swg{i}(images);' for i in range(len(swg))]
    lines += [f'        if (kind == "pool" && index == {i}) pool{i}(images);' for i in range(len(pool))]
    lines += ["    }", "}"]
    (tmp_path / "conv_tb.cpp").write_text("\n".join(lines) + "\n")
    compile_testbench([tmp_path / "conv_tb.cpp"], [], tmp_path / "conv_tb", UNIT_OPTIMIZE)

    requests, expected, names = [], [], []
    for i, (ih, iw, c, simd, k, s) in enumerate(swg):
        n = int(rng.integers(1, 3))
        images = rng.integers(0, 16, size=(n, ih, iw, c))
        windows = finn_sliding_window(images, k, s, simd, dtype)
        words_in = pack_elements(images.reshape(n, ih, iw, c // simd, simd), 4)
        words_out = pack_elements(windows.reshape(*windows.shape[:3], -1, simd), 4)
        requests.append(f"swg {i} {n} " + " ".join(map(str, words_in.reshape(-1))))
        expected.append(" ".join(map(str, words_out.reshape(-1))))
        names.append(f"sliding_window{swg[i]}")
    for i, (ih, iw, c, pe, k, bits, signed) in enumerate(pool):
        n = int(rng.integers(1, 3))
        lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
        images = rng.integers(lo, hi, size=(n, ih, iw, c))
        oh, ow = ih // k, iw // k
        pooled = images[:, : oh * k, : ow * k].reshape(n, oh, k, ow, k, c).max(axis=(2, 4))
        requests.append(f"pool {i} {n} " + " ".join(map(str, pack_elements(images.reshape(n, ih, iw, c // pe, pe), bits).reshape(-1))))
        expected.append(" ".join(map(str, pack_elements(pooled.reshape(n, oh, ow, c // pe, pe), bits).reshape(-1))))
        names.append(f"maxpool{pool[i]}")
    result = subprocess.run([str(tmp_path / "conv_tb")], input="\n".join(requests) + "\n", capture_output=True, text=True)
    outputs = result.stdout.split("\n")
    failures = [name for name, out, exp in zip(names, outputs, expected) if out.strip() != exp]
    assert len(outputs) >= len(expected) and not failures, f"wrong output from {failures[:5]}"


# --------------------------------------------------------------------------- convolutional chains


def chain_model(layers: list[tuple[str, dict, dict]], idt, in_shape, out_shape) -> ModelWrapper:
    """A dataflow model of a chain of HW layers: (op_type, attrs, params name -> (array, dtype))."""
    nodes, initializers = [], []
    for j, (op_type, attrs, params) in enumerate(layers):
        names = {name: f"{name}{j}" for name in params}
        nodes.append(helper.make_node(
            op_type, [f"t{j}", *names.values()], [f"t{j + 1}"], name=f"{op_type}_{j}",
            domain="finn.custom_op.fpgadataflow" + {"_rtl": ".rtl", "_hls": ".hls"}.get(op_type[-4:], ""),
            backend="fpgadataflow", **attrs,
        ))
        initializers += [(names[name], value, dtype) for name, (value, dtype) in params.items()]
    inp = helper.make_tensor_value_info("t0", TensorProto.FLOAT, in_shape)
    out = helper.make_tensor_value_info(f"t{len(layers)}", TensorProto.FLOAT, out_shape)
    model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "conv_chain", [inp], [out])))
    model.set_tensor_datatype("t0", idt)
    for name, value, dtype in initializers:
        model.set_initializer(name, value.astype(np.float32))
        model.set_tensor_datatype(name, dtype)
    return model


def divisor(rng, n: int) -> int:
    return int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))


def random_conv_weights(rng, idt, mw: int, mh: int):
    """(xnor, weight type, MW x MH weights, accumulator range) of a conv MVAU reading ``idt``:
    XNOR on binary inputs, else bipolar or INT2 weights."""
    xnor = idt == DataType["BINARY"]
    if xnor:
        return xnor, DataType["BINARY"], rng.integers(0, 2, size=(mw, mh)), 0, mw
    wdt = DataType[str(rng.choice(["BIPOLAR", "INT2"]))]
    weights = rng.choice([-1, 1], size=(mw, mh)) if wdt == DataType["BIPOLAR"] else rng.integers(-2, 2, size=(mw, mh))
    big = mw * max(abs(idt.min()), abs(idt.max())) * (1 if wdt == DataType["BIPOLAR"] else 2)
    return xnor, wdt, weights, -big, big


def random_conv_chain(rng) -> ModelWrapper:
    """sliding window -> conv MVAU (-> depthwise window + max Pool) -> sliding window -> conv MVAU,
    random sizes, foldings (window SIMD, MVAU SIMD and Pool PE independent) and data types."""
    h, w, c = int(rng.integers(4, 9)), int(rng.integers(4, 9)), int(rng.choice([1, 2, 3, 4]))
    first_idt = DataType[str(rng.choice(["BINARY", "UINT4", "INT3"]))]
    idt, layers = first_idt, []
    pool = bool(rng.random() < 0.7)
    for conv in range(2):
        k = int(rng.integers(1, min(h, w, 3) + 1))
        s = int(rng.integers(1, 3)) if k > 1 else 1
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        layers.append(("ConvolutionInputGenerator_rtl", dict(
            ConvKernelDim=[k, k], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], SIMD=divisor(rng, c), Stride=[s, s],
            Dilation=[1, 1], inputDataType=idt.name, outputDataType=idt.name, depthwise=0), {}))
        mw, mh = k * k * c, int(rng.choice([2, 4, 6, 8]))
        xnor, wdt, weights, lo, hi = random_conv_weights(rng, idt, mw, mh)
        attrs = dict(MW=mw, MH=mh, SIMD=divisor(rng, mw), PE=divisor(rng, mh), inputDataType=idt.name,
                     weightDataType=wdt.name, binaryXnorMode=int(xnor), numInputVectors=[1, oh, ow],
                     mem_mode="internal_embedded")
        params = {"weights": (weights, wdt)}
        if conv == 1 and rng.random() < 0.5:
            odt = int_type(lo, hi)
            attrs.update(noActivation=1, outputDataType=odt.name, accDataType=odt.name)
        else:
            odt = DataType[str(rng.choice(["BINARY", "UINT2"]))]
            steps = 1 if odt == DataType["BINARY"] else 3
            thresholds = sorted_thresholds(rng, mh, steps, lo, hi)
            params["thresholds"] = (thresholds, int_type(min(lo, thresholds.min()), max(hi, thresholds.max())))
            attrs.update(noActivation=0, outputDataType=odt.name, ActVal=0)
        layers.append(("MVAU", attrs, params))
        h, w, c, idt = oh, ow, mh, odt
        if conv == 0 and pool and min(h, w) >= 2:
            k = int(rng.integers(2, min(h, w, 3) + 1))
            oh, ow = h // k, w // k
            layers.append(("ConvolutionInputGenerator_rtl", dict(
                ConvKernelDim=[k, k], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], SIMD=divisor(rng, c),
                Stride=[k, k], Dilation=[1, 1], inputDataType=idt.name, outputDataType=idt.name, depthwise=1), {}))
            layers.append(("Pool_hls", dict(Channels=c, PE=divisor(rng, c), KernelSize=[k, k], Function="MaxPool",
                                         OutImgDims=[oh, ow], InputDataType=idt.name, OutputDataType=idt.name), {}))
            h, w = oh, ow
    in_shape = [1, *layers[0][1]["IFMDim"], layers[0][1]["IFMChannels"]]
    return chain_model(layers, first_idt, in_shape, [1, h, w, c])


def test_convolutional_chains(tmp_path):
    """Sliding window + conv MVAU (+ fused max-pool) chains of random folding against the emulator."""
    rng = np.random.default_rng(7)
    models = [random_conv_chain(rng) for _ in range(16)]
    assert sum(any(n.op_type == "Pool_hls" for n in m.graph.node) for m in models) >= 5
    check_kernel(tmp_path, models, seed=7)


def conv_pool_model(window: dict, pool: dict | None) -> ModelWrapper:
    base = dict(ConvKernelDim=[2, 2], IFMChannels=4, IFMDim=[4, 4], OFMDim=[2, 2], SIMD=2, Stride=[2, 2],
                Dilation=[1, 1], inputDataType="BINARY", outputDataType="BINARY", depthwise=1)
    base.update(window)
    layers = [("ConvolutionInputGenerator_rtl", base, {})]
    if pool is not None:
        layers.append(("Pool_hls", dict(dict(Channels=4, PE=2, KernelSize=[2, 2], Function="MaxPool", OutImgDims=[2, 2],
                                         InputDataType="BINARY", OutputDataType="BINARY"), **pool), {}))
    return chain_model(layers, DataType["BINARY"], [1, 4, 4, 4], [1, 2, 2, 4])


@pytest.mark.parametrize(
    "window, pool, message",
    [
        ({}, None, "depthwise sliding window .* followed by nothing"),
        ({"ConvKernelDim": [3, 3], "OFMDim": [1, 1], "Stride": [3, 3]}, {"KernelSize": [3, 3], "OutImgDims": [1, 1]},
         None),
        ({"ConvKernelDim": [2, 2], "OFMDim": [3, 3], "Stride": [1, 1]}, {"OutImgDims": [3, 3]}, "kernel == stride"),
        ({}, {"Function": "AvgPool"}, "pool function AvgPool"),
        ({"OFMDim": [3, 3]}, {"OutImgDims": [3, 3]}, "padding is not supported"),
    ],
)
def test_unsupported_window_and_pool_combinations_name_the_layer(window, pool, message):
    model = conv_pool_model(window, pool)
    if message is None:  # the supported case: one fused max-pool stage
        net, files = network_files(model, "pool", BOARD.dma_width_bits)
        assert sum("bnn::maxpool<4, 4, 2, 2, 3, ap_uint<1> >" in s.call for s in net.stages) == 1
        return
    with pytest.raises(FlowError, match=message) as error:
        network_files(model, "pool", BOARD.dma_width_bits)
    assert "ConvolutionInputGenerator_rtl_0" in str(error.value)
