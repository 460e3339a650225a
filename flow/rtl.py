"""RTL generation: the built accelerator (``RUN_DIR/hw``) as synthesizable SystemVerilog.

From the same artifacts the emulator reads (``hw/accelerator.json``, the packed
weight and threshold memories, the manifest's board) this writes ``RUN_DIR/rtl/``:

- the component modules, copied from ``hls_templates/rtl/`` (each states its
  stream contract in its header): ``bnn_thresholding`` (standalone thresholds,
  e.g. on the 8-bit pixels), ``bnn_mvau`` (MVAU, PE x SIMD, XNOR-popcount or
  integer dot product, FC or conv: one vector per output pixel, weight ROM in
  FINN's hardware layout), ``bnn_swg`` (sliding-window generator),
  ``bnn_maxpool``, ``bnn_label_select``, ``bnn_dwc`` (width converter),
  ``bnn_fifo``. The conv-to-FC flatten is no unit: the last conv layer's pixels
  (1 x 1 in CNV) are the FC layer's vector, the same bits in the same order;
- ``<layer>_weights.mem`` / ``<layer>_thresholds.mem``: the memories for
  ``$readmemh``, one word per line (read at elaboration by Yosys, at start-up
  by the Verilator model, so a changed memory needs no recompile);
- ``<top>.sv``: one wrapper module per layer (its input width converter, input
  FIFO and unit: the rows of the synthesis report) and the top with FINN's
  stitched-IP names: ``ap_clk``, ``ap_rst_n``, AXI-Stream ``s_axis_0`` /
  ``m_axis_0`` at the board's DMA width (``m_axis_0_tlast`` on each image's last
  word);
- ``rtl.json``: the streams (width, words per image, producer), FIFOs, layers and
  the sha256 of the ``hw/manifest.json`` it was made from (a newer build makes
  it stale: :func:`ensure_rtl` regenerates).

The chain: ``s_axis_0 -> DWC (DMA words -> the first layer's words) -> FIFO ->
layer 0 -> DWC -> FIFO -> layer 1 -> ... -> last layer -> DWC -> m_axis_0``.
A stream is each image's elements as one little-endian bit string, re-cut into
words (FINN's folded streams, lane 0 in the low bits).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flow.artifacts import DESCRIPTION, MANIFEST
from flow.errors import FlowError
from flow.files import sha256_file, staged_dir
from flow.hls import HLS_TEMPLATES, axis_bytes, c_identifier, pad8

RTL_TEMPLATES = HLS_TEMPLATES / "rtl"
MODULES = ("bnn_fifo.sv", "bnn_dwc.sv", "bnn_thresholding.sv", "bnn_mvau.sv", "bnn_swg.sv", "bnn_maxpool.sv",
           "bnn_label_select.sv")
SPEC = "rtl.json"
MIN_FIFO_DEPTH = 2
# FINN's stitched-IP block design name; the same for every build, so builds of one folding
# share their sources (the memories are separate files) and one compiled simulation model
TOP = "finn_design"


class UnsupportedLayer(FlowError):
    """A layer (or a parameter of it) the RTL components do not implement."""


@dataclass
class Stream:
    """A stream of the top: its SystemVerilog prefix, word width, words per image, and
    the layer that writes it (``input`` for the DMA side); element width for decoding."""

    name: str
    bits: int
    words_per_image: int
    producer: str
    element_bits: int = 0
    elements: int = 0


def ceil_log2(value: int) -> int:
    return max(1, int(value - 1).bit_length())


def signed_bits(values: np.ndarray) -> int:
    """Bits of the narrowest two's-complement type holding every value (at least 2)."""
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    return max(2, max(high.bit_length(), (-low - 1).bit_length() if low < 0 else 0) + 1)


def hex_lines(words: list[int], bits: int) -> str:
    digits = max(1, -(-bits // 4))
    return "".join(f"{w & ((1 << bits) - 1):0{digits}x}\n" for w in words)


def dtype_of(name: str):
    from qonnx.core.datatype import DataType

    return DataType[name]


def threshold_memory(hw_dir: Path, spec: dict, rows: int) -> tuple[np.ndarray, int]:
    """PE x TMEM x steps thresholds (FINN's layout) and their word width."""
    memory = np.load(hw_dir / spec["files"]["thresholds"], allow_pickle=False)
    expected = (spec["PE"], rows // spec["PE"], spec["steps"])
    if memory.shape != expected:
        raise FlowError(f"{hw_dir / spec['files']['thresholds']}: shape {memory.shape}, expected PE x TMEM x steps {expected}")
    return memory, signed_bits(memory)


def weight_words(hw_dir: Path, spec: dict) -> tuple[list[int], int]:
    """WMEM words of PE x SIMD lanes of WBITS bits, and WBITS: PE p's lane s (column f * SIMD + s of
    row n * PE + p) at bits (p * SIMD + s) * WBITS, two's complement for signed weight types."""
    from flow.emulate import unpack_memory

    pe, simd, wmem = spec["PE"], spec["SIMD"], spec["WMEM"]
    memory_dt = dtype_of(spec["weight_memory_dtype"])
    wbits = memory_dt.bitwidth()
    packed = np.load(hw_dir / spec["files"]["weights"], allow_pickle=False)
    if packed.shape != (pe, wmem, -(-simd * wbits // 8)) or packed.dtype != np.uint8:
        raise FlowError(f"{hw_dir / spec['files']['weights']}: {packed.dtype} {packed.shape}, expected uint8 PE x WMEM x bytes")
    lanes = np.flip(unpack_memory(packed, memory_dt, (pe, wmem, simd)), axis=-1).astype(np.int64)
    fields = lanes.transpose(1, 0, 2).reshape(wmem, pe * simd) & ((1 << wbits) - 1)  # address x (pe, lane)
    bits = ((fields[..., None] >> np.arange(wbits)) & 1).astype(np.uint8).reshape(wmem, -1)
    as_bytes = np.packbits(bits, axis=-1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in as_bytes], wbits


def weight_ram_style(spec: dict) -> str:
    """FINN's decision, as its MVAU BRAM estimate makes it: LUTs when the estimate has no BRAM."""
    mem_mode, ram_style = spec.get("mem_mode", "internal_decoupled"), spec.get("ram_style", "auto")
    distributed = (mem_mode == "internal_decoupled" and ram_style in ("distributed", "ultra")) or (
        mem_mode == "internal_embedded" and spec["WMEM"] <= 128
    )
    return "distributed" if distributed else "block"


def layer_unit(hw_dir: Path, spec: dict, files: dict[str, str]) -> tuple[str, dict]:
    """(module, parameters) of one layer; memories go into ``files``. Unsupported -> FlowError."""
    name, kind = spec["name"], spec["kind"]
    odt = dtype_of(spec["output_dtype"])
    if kind == "thresholding":
        idt = dtype_of(spec["input_dtype"])
        if not idt.is_integer():
            raise UnsupportedLayer(f"layer '{name}': input_dtype {idt.name}: the RTL thresholding takes integer inputs")
        memory, tbits = threshold_memory(hw_dir, spec, spec["channels"])
        files[f"{name}_thresholds.mem"] = hex_lines([int(v) for v in memory.reshape(-1)], tbits)
        return "bnn_thresholding", dict(
            CHANNELS=spec["channels"], PE=spec["PE"], IBITS=idt.bitwidth(), ISIGNED=int(idt.signed()),
            STEPS=spec["steps"], TBITS=tbits, OBITS=odt.bitwidth(), ACT_VAL=spec["act_val"],
            THRESH_FILE=f'"{name}_thresholds.mem"',
        )
    if kind == "mvau":
        return mvau_unit(hw_dir, spec, files)
    if kind == "sliding_window":
        idt = dtype_of(spec["input_dtype"])
        if spec["channels"] % spec["SIMD"]:
            raise UnsupportedLayer(f"layer '{name}': SIMD = {spec['SIMD']} does not divide {spec['channels']} channels")
        return "bnn_swg", dict(
            IH=spec["input_dim"][0], IW=spec["input_dim"][1], CHANNELS=spec["channels"], SIMD=spec["SIMD"],
            EBITS=idt.bitwidth(), K=spec["kernel"], STRIDE=spec["stride"], BUFFER=swg_buffer(spec),
        )
    if kind == "maxpool":
        idt = dtype_of(spec["input_dtype"])
        window = int(np.prod(spec["kernel"]))
        if spec["input_shape"][-1] != window * spec["channels"]:
            raise UnsupportedLayer(f"layer '{name}': input_shape {spec['input_shape']} is not a {spec['kernel']} window "
                                   f"of {spec['channels']} channels per pixel")
        return "bnn_maxpool", dict(CHANNELS=spec["channels"], PE=spec["PE"], WINDOW=window, IBITS=idt.bitwidth(),
                                   ISIGNED=int(idt.signed()))
    if kind == "labelselect":
        if spec["K"] != 1:
            raise UnsupportedLayer(f"layer '{name}': K = {spec['K']}: the RTL label select returns the top label only (K = 1)")
        idt = dtype_of(spec["input_dtype"])
        return "bnn_label_select", dict(
            LABELS=spec["labels"], PE=spec["PE"], IBITS=idt.bitwidth(), ISIGNED=int(idt.signed()), OBITS=odt.bitwidth()
        )
    raise UnsupportedLayer(f"layer '{name}': kind {kind}: the RTL covers thresholding, MVAU, sliding window, "
                           "max-pool and label select")


def mvau_unit(hw_dir: Path, spec: dict, files: dict[str, str]) -> tuple[str, dict]:
    """An MVAU, FC or conv (one vector per output pixel): XNOR-popcount or integer dot product."""
    name = spec["name"]
    odt, idt, acc = dtype_of(spec["output_dtype"]), dtype_of(spec["input_dtype"]), dtype_of(spec["accumulator_dtype"])
    mw, xnor = spec["MW"], spec["binary_xnor"]
    if not idt.is_integer():
        raise UnsupportedLayer(f"layer '{name}': input_dtype {idt.name}: the RTL MVAU takes integer or binary inputs")
    if xnor and acc.min() <= 0 and acc.max() >= mw:
        acc_bits, acc_signed = ceil_log2(mw + 1), 0  # the popcount's width
    else:  # the build's accumulator type: it wraps as that type (ap_int) when too narrow
        acc_bits, acc_signed = acc.bitwidth(), int(acc.signed())
    words, wbits = weight_words(hw_dir, spec)
    files[f"{name}_weights.mem"] = hex_lines(words, spec["PE"] * spec["SIMD"] * wbits)
    memory_dt = dtype_of(spec["weight_memory_dtype"])
    params = dict(
        MW=mw, MH=spec["MH"], SIMD=spec["SIMD"], PE=spec["PE"], XNOR=int(xnor), IBITS=idt.bitwidth(),
        ISIGNED=int(idt.signed()), IBIPOLAR=int(idt.name == "BIPOLAR" and not xnor), WBITS=wbits,
        WSIGNED=int(memory_dt.signed()), WBIPOLAR=int(spec["bipolar_weights"] and not xnor),
        # FINN's resType (the HLS MVAU's default: LUTs); builds before it was recorded: the default
        RES_TYPE=f'"{"dsp" if spec.get("res_type", "lut") == "dsp" and not xnor else "lut"}"',
        ACC_BITS=acc_bits, ACC_SIGNED=acc_signed, STEPS=0, TBITS=2, OBITS=odt.bitwidth(), ACT_VAL=spec["act_val"],
        WEIGHT_FILE=f'"{name}_weights.mem"', THRESH_FILE='""', RAM_STYLE=f'"{weight_ram_style(spec)}"',
    )
    if not spec["no_activation"]:
        memory, tbits = threshold_memory(hw_dir, spec, spec["MH"])
        files[f"{name}_thresholds.mem"] = hex_lines([int(v) for v in memory.reshape(-1)], tbits)
        params.update(STEPS=spec["steps"], TBITS=tbits, THRESH_FILE=f'"{name}_thresholds.mem"')
    return "bnn_mvau", params


def swg_buffer(spec: dict) -> int:
    """The sliding window's ring: one window's span plus the step from an image's last window to
    the next image's first, so the next image streams in while the last windows leave."""
    (ih, iw), k, stride = spec["input_dim"], spec["kernel"], spec["stride"]
    cf = spec["channels"] // spec["SIMD"]
    oh, ow = (ih - k) // stride + 1, (iw - k) // stride + 1
    if [oh, ow] != list(spec["output_dim"]):
        raise UnsupportedLayer(f"layer '{spec['name']}': output_dim {spec['output_dim']} != {[oh, ow]}: the RTL "
                               "sliding window has no padding")
    span = ((k - 1) * iw + k) * cf
    step_to_next_image = ih * iw * cf - ((oh - 1) * stride * iw + (ow - 1) * stride) * cf
    return span + step_to_next_image


def layer_streams(spec: dict) -> tuple[int, int, int, int]:
    """(input word bits, input words, output word bits, output words) per image, from the folded shapes."""
    in_words = int(np.prod(spec["folded_input_shape"][:-1]))
    out_words = int(np.prod(spec["folded_output_shape"][:-1]))
    return spec["instream_width"], in_words, spec["outstream_width"], out_words


def check_widths(spec: dict, module: str, params: dict) -> None:
    """The unit's port widths must be the build's stream widths (the folding is one the RTL supports)."""
    name = spec["name"]
    in_bits, _, out_bits, _ = layer_streams(spec)
    lanes = {"bnn_thresholding": ("PE", "IBITS", "PE", "OBITS"), "bnn_mvau": ("SIMD", "IBITS", "PE", "OBITS"),
             "bnn_swg": ("SIMD", "EBITS", "SIMD", "EBITS"), "bnn_maxpool": ("PE", "IBITS", "PE", "IBITS"),
             "bnn_label_select": ("PE", "IBITS", None, "OBITS")}[module]
    expected_in = params[lanes[0]] * params[lanes[1]]
    expected_out = (params[lanes[2]] if lanes[2] else 1) * params[lanes[3]]
    if in_bits != expected_in:
        raise FlowError(f"layer '{name}': instream_width {in_bits} != {expected_in} the RTL unit reads")
    if out_bits != expected_out:
        raise FlowError(f"layer '{name}': outstream_width {out_bits} != {expected_out} the RTL unit writes")
    for key, total in (("SIMD", params.get("MW")), ("PE", params.get("MH", params.get("CHANNELS", params.get("LABELS"))))):
        if key in params and total and total % params[key]:
            raise FlowError(f"layer '{name}': {key} = {params[key]} does not divide {total}")


def fifo_depth(words_per_image: int) -> int:
    """One image's words: a producer never waits for a consumer that is busy with the previous image."""
    return max(MIN_FIFO_DEPTH, words_per_image)


def sv_params(params: dict) -> str:
    return ", ".join(f".{k}({v})" for k, v in params.items())


def stream_decl(stream: Stream) -> str:
    return (f"    logic {stream.name}_tvalid, {stream.name}_tready;\n"
            f"    logic [{stream.bits - 1}:0] {stream.name}_tdata;\n")


def connect(port: str, stream: Stream) -> str:
    return (f".{port}_tvalid({stream.name}_tvalid), .{port}_tready({stream.name}_tready), "
            f".{port}_tdata({stream.name}_tdata)")


def dwc_instance(src: Stream, dst_bits: int, name: str, clock: str = "clk", reset: str = "rst_n") -> tuple[str, Stream]:
    """A width converter from ``src`` to ``dst_bits``-bit words (none when equal); ``clock``, ``reset``:
    the module's own (a layer wrapper's ``clk``, ``rst_n``; the top's ``ap_clk``, ``ap_rst_n``)."""
    if src.bits == dst_bits:
        return "", src
    total = src.bits * src.words_per_image
    if total % dst_bits:
        raise FlowError(f"stream {src.name}: {src.words_per_image} x {src.bits} bits per image do not fill whole {dst_bits}-bit words")
    dst = Stream(f"{name}", dst_bits, total // dst_bits, src.producer, src.element_bits, src.elements)
    code = (stream_decl(dst) + f"    bnn_dwc #(.IW({src.bits}), .OW({dst_bits})) {name}_dwc (.clk({clock}), .rst_n({reset}), "
            f"{connect('s', src)}, {connect('m', dst)});\n")
    return code, dst


def repad_instance(src: Stream, dst_bits: int, name: str) -> tuple[str, Stream]:
    """Each word's low ``dst_bits`` (dropping the DMA's byte padding) or zero-padded to them: wires only."""
    if src.bits == dst_bits:
        return "", src
    dst = Stream(name, dst_bits, src.words_per_image, src.producer, src.element_bits, src.elements)
    keep = min(src.bits, dst_bits)
    data = f"{src.name}_tdata[{keep - 1}:0]" if dst_bits <= src.bits else f"{dst_bits}'({src.name}_tdata)"
    code = (stream_decl(dst) + f"    assign {dst.name}_tvalid = {src.name}_tvalid;\n"
            f"    assign {src.name}_tready = {dst.name}_tready;\n    assign {dst.name}_tdata = {data};\n")
    return code, dst


@dataclass
class Design:
    top: str
    in_axis_bits: int
    in_axis_words: int
    in_bytes: int
    out_axis_bits: int
    out_axis_words: int
    out_bytes: int
    streams: list[dict]
    fifos: list[dict]
    layers: list[dict]
    trace_bits: int
    hw_manifest_sha256: str
    generator_sha256: str
    board: str
    part: str
    clock_mhz: float
    dma_width_bits: int


def generate(hw_dir: Path, top: str, dma_width_bits: int) -> tuple[Design, dict[str, str]]:
    """The top and the memories (file name -> text) of the accelerator in ``hw_dir``."""
    from flow.emulate import verify_manifest

    manifest = verify_manifest(hw_dir)
    description = json.loads((hw_dir / DESCRIPTION).read_text())
    specs = description["layers"]
    files: dict[str, str] = {}
    units = []
    for spec in specs:
        module, params = layer_unit(hw_dir, spec, files)
        check_widths(spec, module, params)
        units.append((spec, module, params))

    first_in_bits, first_in_words, _, _ = layer_streams(specs[0])
    in_bytes = pad8(first_in_bits) // 8 * first_in_words
    in_axis_bits = 8 * axis_bytes(in_bytes, dma_width_bits // 8)
    idt = dtype_of(specs[0]["input_dtype"])
    element_bits = idt.bitwidth()
    stream = Stream("in0", in_axis_bits, in_bytes * 8 // in_axis_bits, "input")
    body = stream_decl(stream)
    body += (f"    assign {stream.name}_tvalid = s_axis_0_tvalid;\n    assign s_axis_0_tready = {stream.name}_tready;\n"
             f"    assign {stream.name}_tdata = s_axis_0_tdata;\n")
    streams = [stream]
    fifos, layers, wrappers = [], [], []
    for index, (spec, module, params) in enumerate(units):
        in_bits, in_words, out_bits, out_words = layer_streams(spec)
        name = c_identifier(spec["name"])
        # the layer's wrapper: input width converter (via the DMA's byte-padded words first), FIFO, unit.
        # The FIFO sits after the converter: an MVAU reads its whole vector in its first fold pass, at one
        # word per cycle, from words a narrow upstream converter could only deliver one per several cycles
        inner = ""
        current = Stream("s", stream.bits, stream.words_per_image, stream.producer)
        if index == 0:
            code, current = dwc_instance(current, pad8(in_bits), "padded")
            inner += code
            code, current = repad_instance(current, in_bits, "unpadded")
            inner += code
        else:
            code, current = dwc_instance(current, in_bits, "words")
            inner += code
        if current.words_per_image != in_words:
            raise FlowError(f"layer '{spec['name']}': {current.words_per_image} input words per image arrive, "
                            f"folded_input_shape {spec['folded_input_shape']} needs {in_words}")
        fifo = Stream(f"f{index}", current.bits, current.words_per_image, current.producer)
        depth = fifo_depth(current.words_per_image)
        fifos.append({"id": index, "name": f"{spec['name']}.in_fifo", "stream": fifo.name, "depth": depth,
                      "bits": current.bits, "words_per_image": current.words_per_image})
        inner += stream_decl(fifo)
        inner += (f"    bnn_fifo #(.WIDTH({current.bits}), .DEPTH({depth}), .ID({index})) in_fifo (.clk(clk), .rst_n(rst_n), "
                  f"{connect('s', current)}, {connect('m', fifo)});\n")
        current = fifo
        out = Stream("m", out_bits, out_words, spec["name"])
        inner += (f"    {module} #({sv_params(params)}) unit (.clk(clk), .rst_n(rst_n), "
                  f"{connect('s', current)}, {connect('m', out)});\n")
        wrapper = f"{top}_{name}"
        wrappers.append(
            f"// layer {spec['name']} ({spec['kind']}): width converter, input FIFO, {module}\n"
            f"module {wrapper} (\n    input logic clk, rst_n,\n"
            f"    input logic s_tvalid, output logic s_tready, input logic [{stream.bits - 1}:0] s_tdata,\n"
            f"    output logic m_tvalid, input logic m_tready, output logic [{out_bits - 1}:0] m_tdata\n);\n"
            f"{inner}endmodule\n"
        )
        odt = dtype_of(spec["output_dtype"])
        elements = int(np.prod(spec["output_shape"]))
        result = Stream(f"l{index}", out_bits, out_words, spec["name"], odt.bitwidth(), elements)
        body += stream_decl(result)
        body += f"    {wrapper} {name} (.clk(ap_clk), .rst_n(ap_rst_n), {connect('s', stream)}, {connect('m', result)});\n"
        streams.append(result)
        layers.append({"name": spec["name"], "kind": spec["kind"], "module": module, "wrapper": wrapper,
                       "instance": name, "params": params, "output_stream": result.name,
                       "output_dtype": odt.name, "cycles": spec.get("cycles")})
        stream = result
        element_bits = odt.bitwidth()

    # output: byte-padded words re-cut into DMA words
    out_bytes = pad8(stream.bits) // 8 * stream.words_per_image
    out_axis_bits = 8 * axis_bytes(out_bytes, dma_width_bits // 8)
    code, stream = repad_instance(stream, pad8(stream.bits), "out_padded")
    body += code
    code, stream = dwc_instance(stream, out_axis_bits, "out_words", "ap_clk", "ap_rst_n")
    body += code
    out_axis_words = out_bytes * 8 // out_axis_bits
    body += (f"    assign m_axis_0_tvalid = {stream.name}_tvalid;\n    assign {stream.name}_tready = m_axis_0_tready;\n"
             f"    assign m_axis_0_tdata = {stream.name}_tdata;\n")
    word_bits = ceil_log2(out_axis_words + 1)
    body += (f"    // TLAST on each image's last output word\n    logic [{word_bits - 1}:0] out_word;\n"
             f"    assign m_axis_0_tlast = out_word == {word_bits}'({out_axis_words - 1});\n"
             f"    always_ff @(posedge ap_clk)\n        if (!ap_rst_n) out_word <= '0;\n"
             f"        else if (m_axis_0_tvalid && m_axis_0_tready) out_word <= m_axis_0_tlast ? '0 : out_word + 1'b1;\n")
    traced = streams + [Stream("m_axis_0", out_axis_bits, out_axis_words, "output")]
    trace_bits = max(s.bits for s in traced)
    body += trace_code(traced, trace_bits)

    source = (
        f"// {top}: a built accelerator (RUN_DIR/hw) as RTL, generated by flow.rtl; components in hls_templates/rtl/.\n"
        f"// s_axis_0: {in_axis_bits}-bit words, {in_bytes * 8 // in_axis_bits} per image (FINN's packed input bytes);\n"
        f"// m_axis_0: {out_axis_bits}-bit words, {out_axis_words} per image, TLAST on each image's last word.\n\n"
        + "\n".join(wrappers)
        + f"\nmodule {top} (\n    input logic ap_clk,\n    input logic ap_rst_n,\n"
        f"    input logic s_axis_0_tvalid,\n    output logic s_axis_0_tready,\n    input logic [{in_axis_bits - 1}:0] s_axis_0_tdata,\n"
        f"    output logic m_axis_0_tvalid,\n    input logic m_axis_0_tready,\n    output logic [{out_axis_bits - 1}:0] m_axis_0_tdata,\n"
        f"    output logic m_axis_0_tlast\n);\n{body}endmodule\n"
    )
    files[f"{top}.sv"] = source
    design = Design(
        top=top, in_axis_bits=in_axis_bits, in_axis_words=in_bytes * 8 // in_axis_bits, in_bytes=in_bytes,
        out_axis_bits=out_axis_bits, out_axis_words=out_axis_words, out_bytes=out_bytes,
        streams=[asdict(s) for s in traced], fifos=fifos, layers=layers, trace_bits=trace_bits,
        hw_manifest_sha256=sha256_file(hw_dir / MANIFEST), generator_sha256=generator_hash(), board=manifest["board"], part=manifest["part"],
        clock_mhz=manifest["clock_mhz"], dma_width_bits=dma_width_bits,
    )
    return design, files


def trace_code(streams: list[Stream], trace_bits: int) -> str:
    """Under RTLSIM: every transfer of every stream and each cycle's valid/ready, to the testbench (DPI)."""
    if len(streams) > 64:
        raise FlowError(f"{len(streams)} streams: the testbench traces at most 64")
    n = len(streams)
    lines = [
        "`ifdef RTLSIM",
        f"    import \"DPI-C\" function void rtlsim_word(input int stream, input bit [{trace_bits - 1}:0] data);",
        f"    import \"DPI-C\" function void rtlsim_cycle(input bit [{n - 1}:0] valid, input bit [{n - 1}:0] ready);",
        "    always_ff @(posedge ap_clk) if (ap_rst_n) begin",
        f"        rtlsim_cycle({{{', '.join(f'{s.name}_tvalid' for s in reversed(streams))}}}, "
        f"{{{', '.join(f'{s.name}_tready' for s in reversed(streams))}}});",
    ]
    for i, s in enumerate(streams):
        lines.append(f"        if ({s.name}_tvalid && {s.name}_tready) rtlsim_word({i}, {trace_bits}'({s.name}_tdata));")
    lines += ["    end", "`endif"]
    return "\n".join(lines) + "\n"


def generator_hash() -> str:
    """This generator and its templates: RTL made by another version is stale."""
    digest = hashlib.sha256()
    for path in [Path(__file__), *(RTL_TEMPLATES / m for m in MODULES)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def rtl(run_dir: Path) -> Path:
    """``RUN_DIR/hw`` -> ``RUN_DIR/rtl`` (written whole or not at all); returns the directory."""
    run_dir = Path(run_dir)
    hw_dir = run_dir / "hw"
    if not (hw_dir / MANIFEST).exists():
        raise FlowError(f"{hw_dir / MANIFEST}: no hardware artifacts; run `make build` first")
    manifest = json.loads((hw_dir / MANIFEST).read_text())
    top = TOP
    # the DMA width the build planned its streams for
    design, files = generate(hw_dir, top, manifest["dma_width_bits"])
    out_dir = run_dir / "rtl"
    with staged_dir(out_dir) as staging:
        for module in MODULES:
            shutil.copy(RTL_TEMPLATES / module, staging / module)
        for name, text in files.items():
            (staging / name).write_text(text)
        (staging / SPEC).write_text(json.dumps(asdict(design), indent=2))
    return out_dir


def ensure_rtl(run_dir: Path) -> dict:
    """The RTL of RUN_DIR, regenerated when missing or made from another build or by another
    generator version; returns rtl.json. (A memory file edited by hand is kept: rtlsim shows it.)"""
    run_dir = Path(run_dir)
    hw_manifest = run_dir / "hw" / MANIFEST
    if not hw_manifest.exists():
        raise FlowError(f"{hw_manifest}: no hardware artifacts; run `make build` first")
    spec_path = run_dir / "rtl" / SPEC
    if spec_path.exists():
        spec = json.loads(spec_path.read_text())
        if spec.get("hw_manifest_sha256") == sha256_file(hw_manifest) and spec.get("generator_sha256") == generator_hash():
            return spec
    rtl(run_dir)
    return json.loads(spec_path.read_text())
