"""HLS code generation: the folded dataflow model -> synthesizable C++ on our own kernels.

From ``RUN_DIR/dataflow_model.onnx`` (a chain of HW layers) this writes
``RUN_DIR/hls/``:

- ``params/<layer>.h``: each layer's weight memory (``PE x WMEM`` words of
  ``SIMD`` packed weights, FINN's ``get_hw_compatible_weight_tensor`` layout,
  lane 0 in the lowest bits) and threshold memory (``PE x TMEM x steps``,
  ``get_hw_compatible_threshold_tensor``);
- ``<top>.cpp`` / ``<top>.h``: the network top, ``#pragma HLS DATAFLOW``,
  one AXI4-Stream in (the packed input bytes, as the DMA reads them) and one
  out (the packed output bytes, TLAST on the last word), the image count on
  AXI-Lite; stream width converters between layers of different folding;
- ``tb.cpp``: the C testbench: packed input vectors from a file -> packed
  outputs to a file;
- ``vitis_hls.tcl`` (IP for the board's part and clock) and ``vivado.tcl``
  (flow.vivado's HLS route: the PYNQ block design around that IP, writing
  ``bitfile/<top>.bit`` + ``.hwh``; the default route is the RTL one);
- ``hls.json``: what was generated (top, stream widths, bytes per image).
- ``manifest.json``: the sha256 of every generated file; the C simulation
  compiles only these files, after checking them (flow.csim).

Layers map one to one onto kernels (MVAU, Thresholding, LabelSelect, a
non-depthwise ConvolutionInputGenerator -> ``bnn::sliding_window``), except a
depthwise ConvolutionInputGenerator and the max Pool it feeds, which become one
``bnn::maxpool`` on the pixel stream (see :func:`maxpool_stage`).

The kernels are the headers in ``hls_templates/``. The arithmetic follows the
FINN hardware the emulator models (``flow.artifacts``): an MVAU accumulates
into the threshold type when thresholds follow, else into its output type.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow.boards import Board
from flow.cycles import INPUT_STREAM, OUTPUT_STREAM
from flow.errors import FlowError
from flow.artifacts import MANIFEST, mvau_datatypes
from flow.files import staged_dir
from flow.terminal import make_console
from flow.vivado import hls_route_tcl

console = make_console()

HLS_TEMPLATES = Path(__file__).resolve().parent.parent / "hls_templates"
# The AXI DMA's stream widths: powers of two bytes up to the board's DMA width.
DMA_STREAM_BYTES = (1, 2, 4, 8, 16, 32, 64, 128)
# Images per call of the top in the C testbench (bounds the C-sim stream memory).
TESTBENCH_BATCH = 256


@dataclass
class Stage:
    """One dataflow process of the top: a kernel call between two internal streams."""

    call: str  # C++ statement; {src} / {dst} are the stream names
    out_bits: int  # width of the stream it writes
    header: str = ""  # params/<name>.h contents, if the stage has parameters
    name: str = ""
    in_bits: int = 0  # width of the stream it reads (a layer stage; 0 for converters)
    out_words: int = 0  # words it writes per image (a layer stage; 0 for converters)
    layers: tuple[str, ...] = ()  # the dataflow model's nodes it implements


@dataclass
class Stream:
    """Word width and per-image word count of a stream between stages."""

    bits: int
    words_per_image: int


@dataclass
class Network:
    top: str
    stages: list[Stage] = field(default_factory=list)
    in_axis_bits: int = 0
    out_axis_bits: int = 0
    in_bytes: int = 0  # packed bytes per image into the accelerator
    out_bytes: int = 0
    in_axis_words: int = 0
    out_axis_words: int = 0
    io_shape_dict: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def c_identifier(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return ident if re.match(r"[A-Za-z_]", ident) else "n_" + ident


def hls_type(dtype) -> str:
    """The ap_(u)int of a FINN data type; bipolar values travel as bits (1 = +1), as in FINN."""
    from qonnx.core.datatype import DataType

    if dtype in (DataType["BIPOLAR"], DataType["BINARY"]):
        return "ap_uint<1>"
    if not dtype.is_integer():
        raise FlowError(f"data type {dtype.name} is not an integer type: the HLS kernels compute on integers")
    return f"ap_{'' if dtype.signed() else 'u'}int<{dtype.bitwidth()}>"


def dtype_bits(dtype) -> int:
    from qonnx.core.datatype import DataType

    return 1 if dtype == DataType["BIPOLAR"] else dtype.bitwidth()


def packed_words(hw_tensor: np.ndarray, dtype, word_bits: int) -> list[str]:
    """C literals of ``... x SIMD`` memory words packed with FINN's own packer (lane 0 lowest)."""
    from finn.util.data_packing import pack_innermost_dim_as_hex_string

    # FINN packs the first element into the most significant bits: reverse the lanes
    hex_bits = (word_bits + 3) // 4 * 4  # whole hex digits, zero-padded above the word
    hexes = pack_innermost_dim_as_hex_string(np.flip(hw_tensor, axis=-1), dtype, hex_bits, prefix="")
    flat = [str(h) for h in np.asarray(hexes).reshape(-1)]
    if word_bits <= 64:
        return [f"0x{h}ULL" for h in flat]
    # with the 0x prefix: ap_int's string parser reads a leading "0b" / "0o" as a radix
    # prefix even when the radix argument is 16 (hex "0b64..." would be parsed as binary)
    return [f'ap_uint<{word_bits}>("0x{h}", 16)' for h in flat]


def c_array(values: list[str], shape: tuple[int, ...], indent: str = "    ") -> str:
    """A nested C initializer ``{{...},{...}}`` of ``values`` in row-major ``shape``."""
    if len(shape) == 1:
        return "{" + ", ".join(values) + "}"
    step = len(values) // shape[0]
    inner = [c_array(values[i * step : (i + 1) * step], shape[1:], indent) for i in range(shape[0])]
    return "{\n" + ",\n".join(indent + s for s in inner) + "}"


def integer_thresholds(thresholds: np.ndarray, layer: str) -> np.ndarray:
    if not np.all(thresholds == np.round(thresholds)):
        raise FlowError(f"layer '{layer}': thresholds are not integers (run RoundAndClipThresholds first)")
    return thresholds.astype(np.int64)


def threshold_header(name: str, hw_thresholds: np.ndarray, tdt, odt, act_val: int) -> str:
    """The declaration of a ``bnn::Thresholds`` memory from a 1 x PE x TMEM x steps tensor."""
    _, pe, tmem, steps = hw_thresholds.shape
    values = [str(int(v)) for v in integer_thresholds(hw_thresholds, name).reshape(-1)]
    ctype = f"bnn::Thresholds<{tmem}, {pe}, {steps}, {hls_type(tdt)}, {hls_type(odt)}, {act_val}>"
    return f"static const {ctype} {name}_thresholds = {{{c_array(values, (pe, tmem, steps))}}};\n"


def threshold_datatype(model, tensor: str, thresholds: np.ndarray):
    """The thresholds' FINN type: the annotated integer type, else the smallest that holds them."""
    from qonnx.core.datatype import DataType

    tdt = model.get_tensor_datatype(tensor)
    if tdt.is_integer() and tdt.allowed(thresholds.min()) and tdt.allowed(thresholds.max()):
        return tdt
    lo, hi = int(thresholds.min()), int(thresholds.max())
    return DataType.get_smallest_possible(lo if -lo > hi else (-hi - 1 if lo < 0 else hi))


def header_file(name: str, body: str) -> str:
    guard = f"PARAMS_{name.upper()}_H"
    return (
        f"// Parameters of layer {name} (generated by flow.hls from the folded dataflow model).\n"
        f"#ifndef {guard}\n#define {guard}\n\n#ifndef AP_INT_MAX_W\n#define AP_INT_MAX_W 4096  // as bnn_common.h\n#endif\n"
        f"#include <ap_int.h>\n#include \"activation.h\"\n\n"
        f"{body}\n#endif\n"
    )


# --------------------------------------------------------------------------- layers


def mvau_stage(model, node, inst, images: str) -> Stage:
    """An MVAU -> bnn::mvtu."""
    from qonnx.core.datatype import DataType

    name = c_identifier(node.name)
    mw, mh = inst.get_nodeattr("MW"), inst.get_nodeattr("MH")
    simd, pe = inst.get_nodeattr("SIMD"), inst.get_nodeattr("PE")
    idt, wdt, odt = inst.get_input_datatype(0), inst.get_input_datatype(1), inst.get_output_datatype()
    weights = model.get_initializer(node.input[1])
    if weights is None:
        raise FlowError(f"layer '{node.name}': weights are not embedded (mem_mode external is not supported)")
    xnor, stored_wdt, accumulator, tdt = mvau_datatypes(model, node, inst)
    if xnor:
        mode = "bnn::XnorPopcount"
    elif wdt == DataType["BIPOLAR"]:
        mode = f"bnn::BipolarWeights<{hls_type(idt)}>"
    elif idt in (DataType["BIPOLAR"], DataType["BINARY"]):
        raise FlowError(f"layer '{node.name}': binary inputs with {wdt.name} weights are not supported (as in FINN)")
    else:
        mode = f"bnn::IntegerWeights<{hls_type(idt)}, {hls_type(wdt)}>"
    wmem = inst.calc_wmem()
    hw_weights = inst.get_hw_compatible_weight_tensor(weights)[0]  # PE x WMEM x SIMD, lanes reversed
    words = packed_words(np.flip(hw_weights, axis=-1), stored_wdt, simd * dtype_bits(stored_wdt))
    body = (
        f"static const ap_uint<{simd * dtype_bits(stored_wdt)}> {name}_weights[{pe}][{wmem}] = "
        f"{c_array(words, (pe, wmem))};\n"
    )
    if tdt is None:
        activation = f"bnn::PassThrough<{hls_type(odt)}>()"
    else:
        thresholds = model.get_initializer(node.input[2])
        body += threshold_header(
            name, inst.get_hw_compatible_threshold_tensor(thresholds), tdt, odt, inst.get_nodeattr("ActVal")
        )
        activation = f"{name}_thresholds"
    vectors = int(np.prod(inst.get_nodeattr("numInputVectors")[1:]))
    call = (
        f"bnn::mvtu<{mw}, {mh}, {simd}, {pe}, {mode}, {hls_type(accumulator)}, {hls_type(odt)}, {vectors}>"
        f"({{src}}, {{dst}}, {name}_weights, {activation}, {images});"
    )
    return Stage(call, pe * dtype_bits(odt), header_file(name, body), name)


def thresholding_stage(model, node, inst, images: str) -> Stage:
    name = c_identifier(node.name)
    channels, pe = inst.get_nodeattr("NumChannels"), inst.get_nodeattr("PE")
    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype()
    thresholds = model.get_initializer(node.input[1])
    if node.op_type.endswith("_rtl") and not np.all(np.diff(thresholds, axis=-1) >= 0):
        raise FlowError(f"layer '{node.name}': thresholds are not sorted; the RTL binary search needs them sorted")
    tdt = threshold_datatype(model, node.input[1], thresholds)
    decl = threshold_header(
        name, inst.get_hw_compatible_threshold_tensor(thresholds), tdt, odt, inst.get_nodeattr("ActVal")
    )
    pixels = int(np.prod(inst.get_nodeattr("numInputVectors")[1:]))
    call = (
        f"bnn::thresholding<{channels}, {pe}, {hls_type(idt)}, {hls_type(odt)}, {pixels}>"
        f"({{src}}, {{dst}}, {name}_thresholds, {images});"
    )
    return Stage(call, pe * dtype_bits(odt), header_file(name, decl), name)


def label_select_stage(model, node, inst, images: str) -> Stage:
    labels, pe, k = inst.get_nodeattr("Labels"), inst.get_nodeattr("PE"), inst.get_nodeattr("K")
    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype()
    vectors = int(np.prod(inst.get_nodeattr("numInputVectors")[1:]))
    call = (
        f"bnn::label_select<{labels}, {pe}, {k}, {hls_type(idt)}, {hls_type(odt)}, {vectors}>"
        f"({{src}}, {{dst}}, {images});"
    )
    return Stage(call, dtype_bits(odt), name=c_identifier(node.name))


def sliding_window_geometry(node, inst) -> tuple[int, int, int, int, int, int]:
    """(IH, IW, C, K, S, SIMD) of a ConvolutionInputGenerator the kernels implement, else FlowError."""
    kernel, stride = list(inst.get_nodeattr("ConvKernelDim")), list(inst.get_nodeattr("Stride"))
    dilation = list(inst.get_nodeattr("Dilation"))
    (ih, iw), (oh, ow) = inst.get_nodeattr("IFMDim"), inst.get_nodeattr("OFMDim")
    channels, simd = inst.get_nodeattr("IFMChannels"), inst.get_nodeattr("SIMD")
    if len(set(kernel)) != 1 or len(set(stride)) != 1 or set(dilation) != {1}:
        raise FlowError(
            f"layer '{node.name}': only square kernels and strides without dilation have an HLS kernel "
            f"(ConvKernelDim {kernel}, Stride {stride}, Dilation {dilation})"
        )
    k, stride = kernel[0], stride[0]
    if k > min(ih, iw) or [oh, ow] != [(ih - k) // stride + 1, (iw - k) // stride + 1]:
        raise FlowError(
            f"layer '{node.name}': OFMDim {[oh, ow]} is not the unpadded window count of IFMDim {[ih, iw]} "
            f"with kernel {k}, stride {stride}: padding is not supported"
        )
    if channels % simd:
        raise FlowError(f"layer '{node.name}': IFMChannels {channels} is not a multiple of SIMD {simd}")
    return ih, iw, channels, k, stride, simd


def sliding_window_stage(model, node, inst, images: str) -> Stage:
    """A non-depthwise ConvolutionInputGenerator -> bnn::sliding_window (im2col, order kh, kw, c).

    The kernel's words are SIMD channels of one pixel (CF = C/SIMD words per pixel), in and
    out. Each window is the K*K*C-element vector the next MVAU reads as one input vector,
    element (kh*K + kw)*C + c at bit position element*bits of the window's bit string (word
    (kh*K + kw)*CF + c/SIMD, lane c%SIMD, lane 0 lowest). The MVAU's word sf holds elements
    sf*SIMD' .. sf*SIMD' + SIMD'-1, lane 0 lowest: the same bit string, so a bnn::dwc re-cut
    (little-endian, word 0 first) between a SIMD and an MVAU of another SIMD is exact.
    """
    ih, iw, channels, k, stride, simd = sliding_window_geometry(node, inst)
    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype()
    if idt != odt:
        raise FlowError(f"layer '{node.name}': input type {idt.name} != output type {odt.name}")
    width = simd * dtype_bits(idt)
    if inst.get_instream_width(0) != width:
        raise FlowError(f"layer '{node.name}': input stream width {inst.get_instream_width(0)} != SIMD x bits = {width}")
    oh, ow = (ih - k) // stride + 1, (iw - k) // stride + 1
    out_words = oh * ow * k * k * (channels // simd)
    # the node's own output words (SIMD wide; K*K*SIMD wide in the RTL variant's parallel_window
    # mode) carry the same bit string; the converter before the next layer re-cuts it
    if inst.get_outstream_width(0) * int(np.prod(inst.get_folded_output_shape()[1:-1])) != width * out_words:
        raise FlowError(f"layer '{node.name}': its output stream is not the im2col vectors the HLS kernel writes")
    call = (
        f"bnn::sliding_window<{ih}, {iw}, {channels // simd}, {k}, {stride}, {width}>"
        f"({{src}}, {{dst}}, {images});"
    )
    return Stage(call, width, name=c_identifier(node.name), in_bits=width, out_words=out_words, layers=(node.name,))


def maxpool_stage(window_node, window, pool_node, pool, images: str) -> Stage:
    """A depthwise ConvolutionInputGenerator (K = stride) + Pool_hls(MaxPool) -> ONE bnn::maxpool.

    The pair is fused because bnn::maxpool consumes the pixel stream itself (keeping a row of
    running maxima), not the depthwise window stream FINN's generator would feed the Pool:
    its input is the window generator's input (the image, CF = C/PE words of PE channels per
    pixel) and its output the Pool's output stream (OH x OW pixels, CF words each). The
    window stream between the two nodes does not exist in the generated design.
    """
    where = f"layers '{window_node.name}' -> '{pool_node.name}'"
    ih, iw, channels, k, stride, _ = sliding_window_geometry(window_node, window)
    if k != stride:
        raise FlowError(f"{where}: a max-pool window needs kernel == stride (kernel {k}, stride {stride})")
    function = pool.get_nodeattr("Function")
    if function != "MaxPool":
        raise FlowError(f"{where}: pool function {function} has no HLS kernel (MaxPool only)")
    pe, pool_channels = pool.get_nodeattr("PE"), pool.get_nodeattr("Channels")
    pool_kernel, out_dims = list(pool.get_nodeattr("KernelSize")), list(pool.get_nodeattr("OutImgDims"))
    oh, ow = ih // k, iw // k
    if pool_channels != channels or pool_kernel != [k, k] or out_dims != [oh, ow]:
        raise FlowError(
            f"{where}: the Pool (Channels {pool_channels}, KernelSize {pool_kernel}, OutImgDims {out_dims}) "
            f"does not pool the window's {channels}-channel {k}x{k} windows into {[oh, ow]}"
        )
    if channels % pe:
        raise FlowError(f"{where}: Channels {channels} is not a multiple of the Pool's PE {pe}")
    idt, odt = window.get_input_datatype(0), pool.get_output_datatype()
    if pool.get_input_datatype(0) != idt or odt != idt:
        raise FlowError(f"{where}: max-pool types differ ({idt.name} -> {pool.get_input_datatype(0).name} -> {odt.name})")
    width = pe * dtype_bits(idt)
    if pool.get_outstream_width(0) != width:
        raise FlowError(f"layer '{pool_node.name}': output stream width {pool.get_outstream_width(0)} != PE x bits = {width}")
    # the pixel stream is C channels per pixel, channel innermost, lane 0 lowest: a window
    # SIMD other than the Pool's PE is a re-cut of the same bit string (converter before)
    call = (
        f"bnn::maxpool<{ih}, {iw}, {channels // pe}, {pe}, {k}, {hls_type(idt)} >"
        f"({{src}}, {{dst}}, {images});"
    )
    return Stage(
        call, width, name=c_identifier(pool_node.name), in_bits=width, out_words=oh * ow * (channels // pe),
        layers=(window_node.name, pool_node.name),
    )


def is_sliding_window(node) -> bool:
    return node.op_type.startswith("ConvolutionInputGenerator")


def is_pool(node) -> bool:
    return node.op_type in ("Pool", "Pool_hls")


def layer_groups(nodes) -> list[tuple]:
    """The layers of the chain ``nodes`` as the top's stages: one node each, except a depthwise
    window and the max Pool after it, which are one stage (see maxpool_stage)."""
    from qonnx.custom_op.registry import getCustomOp

    groups, i = [], 0
    while i < len(nodes):
        node = nodes[i]
        if is_sliding_window(node) and getCustomOp(node).get_nodeattr("depthwise"):
            following = nodes[i + 1] if i + 1 < len(nodes) else None
            if following is None or not is_pool(following):
                raise FlowError(
                    f"layer '{node.name}': a depthwise sliding window has an HLS kernel only as the window of a "
                    f"max Pool, fused with it; it is followed by "
                    f"{'nothing' if following is None else repr(following.name) + ' (' + following.op_type + ')'}"
                )
            groups.append((node, following))
            i += 2
            continue
        if is_pool(node):
            raise FlowError(f"layer '{node.name}': a Pool has an HLS kernel only after its depthwise sliding window")
        groups.append((node,))
        i += 1
    return groups


def group_stream(group) -> tuple[int, int, int]:
    """(input word bits, output word bits, output words per image) of a layer stage's kernel."""
    from qonnx.custom_op.registry import getCustomOp

    first, last = getCustomOp(group[0]), getCustomOp(group[-1])
    if len(group) == 2:  # window + max Pool: bnn::maxpool reads and writes PE-channel pixel words
        (oh, ow) = last.get_nodeattr("OutImgDims")
        width = last.get_outstream_width(0)
        return width, width, oh * ow * (last.get_nodeattr("Channels") // last.get_nodeattr("PE"))
    if is_sliding_window(group[0]):  # bnn::sliding_window writes SIMD-channel words, K*K per window pixel
        _, _, channels, k, _, simd = sliding_window_geometry(group[0], first)
        (oh, ow) = first.get_nodeattr("OFMDim")
        width = simd * dtype_bits(first.get_input_datatype(0))
        return width, width, oh * ow * k * k * (channels // simd)
    return first.get_instream_width(0), last.get_outstream_width(0), int(np.prod(last.get_folded_output_shape()[1:-1]))


def layer_stages(model, nodes, images: str) -> list[Stage]:
    """The kernel stage of every layer group of the chain ``nodes`` (see layer_groups)."""
    from qonnx.custom_op.registry import getCustomOp

    stages = []
    for group in layer_groups(nodes):
        if len(group) == 2:
            stage = maxpool_stage(group[0], getCustomOp(group[0]), group[1], getCustomOp(group[1]), images)
        else:
            stage = layer_stage(model, group[0], images)
        stage.in_bits, out_bits, stage.out_words = group_stream(group)
        if stage.out_bits != out_bits:
            raise FlowError(f"layer '{group[-1].name}': its kernel writes {stage.out_bits}-bit words, its stream has {out_bits}")
        stage.layers = tuple(node.name for node in group)
        stages.append(stage)
    return stages


def layer_stage(model, node, images: str) -> Stage:
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    if node.op_type.startswith("MVAU"):
        return mvau_stage(model, node, inst, images)
    if node.op_type.startswith("Thresholding"):
        return thresholding_stage(model, node, inst, images)
    if node.op_type.startswith("LabelSelect"):
        return label_select_stage(model, node, inst, images)
    if is_sliding_window(node):
        return sliding_window_stage(model, node, inst, images)
    raise FlowError(
        f"layer '{node.name}' ({node.op_type}) has no HLS kernel in hls_templates/; "
        "supported: MVAU, Thresholding, LabelSelect, ConvolutionInputGenerator, "
        "depthwise ConvolutionInputGenerator + Pool (MaxPool)"
    )


def converter(src: Stream, dst_bits: int) -> tuple[list[dict], Stream]:
    """Re-cut ``src`` into ``dst_bits``-bit words (bnn::dwc) when the widths differ: the plan's
    converter element (none when equal) and the stream it writes."""
    if src.bits == dst_bits:
        return [], src
    total = src.bits * src.words_per_image
    if total % dst_bits:
        raise FlowError(f"cannot convert {src.bits}-bit words into {dst_bits}-bit words: {total} bits per image")
    out_words = total // dst_bits
    element = {
        "kind": "dwc", "in_bits": src.bits, "out_bits": dst_bits, "in_words": src.words_per_image,
        "out_words": out_words, "cycles": dwc_cycles(src.words_per_image, out_words),
    }
    return [element], Stream(dst_bits, out_words)


def dwc_cycles(in_words: int, out_words: int) -> int:
    """bnn::dwc reads and writes in the same cycle while its buffer allows: the longer side's words."""
    return max(in_words, out_words)


def repad(bits: int, to_bits: int, words: int) -> dict:
    """bnn::repad: the same words, padding bits dropped or added, one word per cycle."""
    return {"kind": "repad", "in_bits": bits, "out_bits": to_bits, "words": words, "cycles": words}


def axis_bytes(image_bytes: int, max_bytes: int) -> int:
    """The widest DMA stream (power-of-two bytes, at most the DMA width) that divides an image."""
    return max(b for b in DMA_STREAM_BYTES if b <= max_bytes and image_bytes % b == 0)


def pad8(bits: int) -> int:
    return (bits + 7) // 8 * 8


# --------------------------------------------------------------------------- network


def stream_plan(model, dma_width_bits: int) -> list[dict]:
    """The top's streams from AXI stream in to AXI stream out, in order, without the code.

    Elements (JSON-ready dicts, ``kind``): ``axis_in`` / ``axis_out`` (the DMA's stream: width,
    words and bytes per image), ``dwc`` and ``repad`` (converters), ``layer`` (a layer stage:
    its nodes and stream widths). Every element but ``layer`` carries its ``cycles`` per
    image; layers' cycles are the layers' own (flow.cycles). Each converter is named after
    the stage it feeds. ``build_network`` generates exactly these stages.
    """
    from qonnx.custom_op.registry import getCustomOp

    nodes = list(model.graph.node)
    if not nodes:
        raise FlowError("the dataflow model has no layers")
    previous = model.graph.input[0].name
    for node in nodes:
        if node.input[0] != previous:
            raise FlowError(f"layer '{node.name}' does not read the previous layer's output: only layer chains are supported")
        previous = node.output[0]
    first = getCustomOp(nodes[0])

    # input: DMA words -> the first layer's byte-padded words -> its unpadded words
    in_width = first.get_instream_width(0)
    in_words = int(np.prod(first.get_folded_input_shape()[1:-1]))
    in_bytes = pad8(in_width) // 8 * in_words
    axis_bits = 8 * axis_bytes(in_bytes, dma_width_bits // 8)
    axis_words = in_bytes * 8 // axis_bits
    plan = [{"kind": "axis_in", "name": INPUT_STREAM, "bits": axis_bits, "words": axis_words, "bytes": in_bytes, "cycles": axis_words}]
    converters, stream = converter(Stream(axis_bits, axis_words), pad8(in_width))
    plan += [c | {"name": f"dwc after {INPUT_STREAM}"} for c in converters]
    if pad8(in_width) != in_width:
        plan.append(repad(pad8(in_width), in_width, in_words) | {"name": f"repad {pad8(in_width)}->{in_width} after {INPUT_STREAM}"})
    stream = Stream(in_width, in_words)
    for group in layer_groups(nodes):
        in_bits, out_bits, out_words = group_stream(group)
        converters, stream = converter(stream, in_bits)
        plan += [c | {"name": f"dwc before {group[0].name}"} for c in converters]
        layers = [node.name for node in group]
        plan.append({"kind": "layer", "name": group[-1].name, "layers": layers, "in_bits": in_bits, "out_bits": out_bits, "out_words": out_words})
        stream = Stream(out_bits, out_words)

    # output: the last layer's words, byte-padded, re-cut into DMA words
    out_bytes = pad8(stream.bits) // 8 * stream.words_per_image
    if pad8(stream.bits) != stream.bits:
        plan.append(repad(stream.bits, pad8(stream.bits), stream.words_per_image) | {"name": f"repad {stream.bits}->{pad8(stream.bits)} before {OUTPUT_STREAM}"})
        stream = Stream(pad8(stream.bits), stream.words_per_image)
    axis_bits = 8 * axis_bytes(out_bytes, dma_width_bits // 8)
    converters, stream = converter(stream, axis_bits)
    plan += [c | {"name": f"dwc before {OUTPUT_STREAM}"} for c in converters]
    plan.append({"kind": "axis_out", "name": OUTPUT_STREAM, "bits": axis_bits, "words": stream.words_per_image, "bytes": out_bytes, "cycles": stream.words_per_image})
    return plan


def build_network(model, top: str, dma_width_bits: int) -> Network:
    """The dataflow processes of the top: the stream plan's elements as kernel calls."""
    from flow.artifacts import io_shape_dict
    from qonnx.custom_op.registry import getCustomOp

    plan = stream_plan(model, dma_width_bits)
    nodes = list(model.graph.node)
    net = Network(top, io_shape_dict=io_shape_dict(model, getCustomOp(nodes[0]), getCustomOp(nodes[-1])))
    images = "num_images"
    axis_in, axis_out = plan[0], plan[-1]
    net.in_axis_bits, net.in_axis_words, net.in_bytes = axis_in["bits"], axis_in["words"], axis_in["bytes"]
    net.out_axis_bits, net.out_axis_words, net.out_bytes = axis_out["bits"], axis_out["words"], axis_out["bytes"]
    layer_stage_iter = iter(layer_stages(model, nodes, images))
    for element in plan[1:-1]:
        if element["kind"] == "dwc":
            call = f"bnn::dwc<{element['in_bits']}, {element['out_bits']}, {element['in_words']}>({{src}}, {{dst}}, {images});"
            net.stages.append(Stage(call, element["out_bits"]))
        elif element["kind"] == "repad":
            call = f"bnn::repad<{element['in_bits']}, {element['out_bits']}, {element['words']}>({{src}}, {{dst}}, {images});"
            net.stages.append(Stage(call, element["out_bits"]))
        else:
            net.stages.append(next(layer_stage_iter))
    return net


def top_source(net: Network) -> tuple[str, str]:
    """(<top>.h, <top>.cpp) of the network top."""
    signature = (
        f"void {net.top}(hls::stream<ap_axiu<{net.in_axis_bits}, 0, 0, 0> > &in, "
        f"hls::stream<ap_axiu<{net.out_axis_bits}, 0, 0, 0> > &out, unsigned num_images)"
    )
    guard = f"{net.top.upper()}_H"
    header = (
        f"// Network top (generated by flow.hls).\n#ifndef {guard}\n#define {guard}\n\n"
        f'#include "bnn_common.h"\n\n'
        f"// Bytes per image on the input / output DMA stream (FINN's packed I/O layout).\n"
        f"#define {net.top.upper()}_IN_BYTES {net.in_bytes}\n#define {net.top.upper()}_OUT_BYTES {net.out_bytes}\n"
        f"#define {net.top.upper()}_IN_BITS {net.in_axis_bits}\n#define {net.top.upper()}_OUT_BITS {net.out_axis_bits}\n\n"
        f"{signature};\n\n#endif\n"
    )
    includes = ['"mvtu.h"', '"thresholding.h"', '"label_select.h"', '"sliding_window.h"', '"maxpool.h"', '"dwc.h"']
    includes.append(f'"{net.top}.h"')
    includes += [f'"params/{s.name}.h"' for s in net.stages if s.header]
    lines = ["// Network top (generated by flow.hls from the folded dataflow model)."]
    lines += [f"#include {i}" for i in includes]
    lines += [
        "",
        f"{signature} {{",
        "#pragma HLS INTERFACE axis port = in",
        "#pragma HLS INTERFACE axis port = out",
        "#pragma HLS INTERFACE s_axilite port = num_images bundle = control",
        "#pragma HLS INTERFACE s_axilite port = return bundle = control",
        "#pragma HLS DATAFLOW",
    ]
    streams = ["stream_in", *[f"stream_{i}" for i in range(len(net.stages))]]
    lines.append(f"    hls::stream<ap_uint<{net.in_axis_bits}> > stream_in(\"stream_in\");")
    lines.append(f"    bnn::axis_to_stream<{net.in_axis_bits}, {net.in_axis_words}>(in, stream_in, num_images);")
    for i, stage in enumerate(net.stages):
        lines.append(f"    hls::stream<ap_uint<{stage.out_bits}> > {streams[i + 1]}(\"{streams[i + 1]}\");")
        lines.append("    " + stage.call.format(src=streams[i], dst=streams[i + 1]))
    lines.append(f"    bnn::stream_to_axis<{net.out_axis_bits}, {net.out_axis_words}>({streams[-1]}, out, num_images);")
    lines.append("}")
    return header, "\n".join(lines) + "\n"


def c_testbench(tops: list[Network]) -> str:
    """A C testbench running packed input files through one of ``tops``: ``tb TOP IN OUT``."""
    lines = ["// C testbench (generated by flow.hls): tb TOP INPUT.bin OUTPUT.bin", '#include "testbench.h"']
    lines += [f'#include "{net.top}.h"' for net in tops]
    lines += ["", "int main(int argc, char **argv) {", "    if (argc != 4) {", '        std::cerr << "usage: tb TOP INPUT.bin OUTPUT.bin" << std::endl;', "        return 2;", "    }", "    const std::string top = argv[1];"]
    for net in tops:
        lines.append(
            f'    if (top == "{net.top}") return bnn::run_packed_file<{net.in_axis_bits}, {net.out_axis_bits}>('
            f"{net.top}, argv[2], argv[3], {net.in_bytes}, {net.out_bytes}, {TESTBENCH_BATCH});"
        )
    lines += ['    std::cerr << "unknown top " << top << std::endl;', "    return 2;", "}"]
    return "\n".join(lines) + "\n"


def network_files(model, top: str, dma_width_bits: int) -> tuple[Network, dict[str, str]]:
    """The generated sources of one network: relative path -> text."""
    net = build_network(model, top, dma_width_bits)
    header, source = top_source(net)
    files = {f"{top}.h": header, f"{top}.cpp": source}
    files.update({f"params/{s.name}.h": s.header for s in net.stages if s.header})
    return net, files


def write_files(files: dict[str, str], out_dir: Path) -> None:
    """Write ``files`` into a fresh ``out_dir`` atomically (a failure leaves the old one)."""
    with staged_dir(out_dir) as staging:
        for rel, text in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text)


# Identifiers the generated top may not take: C++ keywords and the names the testbench
# and the templates already use in the global scope (a run directory named `main`
# would otherwise define `void main(...)` beside the testbench's `int main`).
RESERVED_IDENTIFIERS = set(
    "alignas alignof and and_eq asm auto bitand bitor bool break case catch char char16_t char32_t class compl "
    "const constexpr const_cast continue decltype default delete do double dynamic_cast else enum explicit "
    "export extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq "
    "nullptr operator or or_eq private protected public register reinterpret_cast return short signed sizeof "
    "static static_assert static_cast struct switch template this thread_local throw true try typedef typeid "
    "typename union unsigned using virtual void volatile wchar_t while xor xor_eq "
    "main std bnn hls ap_int ap_uint ap_axiu abs exit printf".split()
)


def top_name(run_dir: Path) -> str:
    """The HLS top's name: the run directory's name as a C identifier that collides with nothing."""
    name = c_identifier(Path(run_dir).resolve().name.lower())
    return name + "_top" if name in RESERVED_IDENTIFIERS else name


# --------------------------------------------------------------------------- vendor tcl


def vitis_hls_tcl(net: Network, board: Board) -> str:
    """Vitis HLS: synthesize and export the top as an IP for the board's part and clock."""
    return f"""# Vitis HLS: {net.top} for {board.name} ({board.part}, {board.clock_mhz:g} MHz). Generated by flow.hls.
# Run from RUN_DIR/hls:  vitis_hls -f vitis_hls.tcl
set templates [file normalize {HLS_TEMPLATES}]
open_project -reset {net.top}_prj
set_top {net.top}
add_files {net.top}.cpp -cflags "-std=c++14 -I$templates -I."
add_files -tb tb.cpp -cflags "-std=c++14 -I$templates -I."
open_solution -reset solution -flow_target vivado
set_part {{{board.part}}}
create_clock -period {board.clock_period_ns:g} -name default
csynth_design
export_design -format ip_catalog -vendor bnn-flow -library hls -ipname {net.top}
exit
"""


# --------------------------------------------------------------------------- entry points


def generate(model, out_dir: Path, top: str, board: Board) -> Network:
    """Write the HLS sources, testbench and vendor tcl of ``model`` into ``out_dir``."""
    net, files = network_files(model, top, board.dma_width_bits)
    files["tb.cpp"] = c_testbench([net])
    files["vitis_hls.tcl"] = vitis_hls_tcl(net, board)
    files["vivado.tcl"] = hls_route_tcl(net.top, net.in_axis_bits, net.out_axis_bits, board)
    files["hls.json"] = json.dumps(
        {
            "top": net.top,
            "board": board.name,
            "part": board.part,
            "clock_mhz": board.clock_mhz,
            "in_axis_bits": net.in_axis_bits,
            "out_axis_bits": net.out_axis_bits,
            "in_bytes_per_image": net.in_bytes,
            "out_bytes_per_image": net.out_bytes,
            "io_shape_dict": net.io_shape_dict,
            "layers": [layer for s in net.stages for layer in s.layers],
        },
        indent=2,
    )
    # what the C simulation compiles, and nothing else (flow.csim checks it first)
    files[MANIFEST] = json.dumps(
        {"files": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in sorted(files.items())}}, indent=2
    )
    write_files(files, Path(out_dir))
    return net


def hls(run_dir: Path) -> Path:
    """RUN_DIR/dataflow_model.onnx of a complete build -> RUN_DIR/hls/ again; returns that directory."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.rundir import require_complete_build, run_board

    run_dir = Path(run_dir)
    require_complete_build(run_dir)
    model_path = run_dir / "dataflow_model.onnx"
    generate(ModelWrapper(str(model_path)), run_dir / "hls", top_name(run_dir), run_board(run_dir))
    return run_dir / "hls"


def run_vendor_tools(hls_dir: Path) -> None:
    """vitis_hls then vivado on the generated tcl, when they are on PATH; else say why not."""
    for tool, script in (("vitis_hls", "vitis_hls.tcl"), ("vivado", "vivado.tcl")):
        if shutil.which(tool) is None:
            console.print(f"[yellow]skipped[/] {tool} {hls_dir / script}: {tool} is not on PATH", soft_wrap=True)
            continue
        args = [tool, "-f", script] if tool == "vitis_hls" else [tool, "-mode", "batch", "-source", script]
        result = subprocess.run(args, cwd=hls_dir)
        if result.returncode != 0:
            raise FlowError(f"{tool} failed on {hls_dir / script} (exit {result.returncode}); see {hls_dir}/{tool}.log")


def step_generate_hls(model, cfg):
    """Build step: our HLS sources into RUN_DIR/hls (vendor synthesis: flow.vivado's step, after hw/)."""
    generate(model, cfg.output_dir / "hls", top_name(cfg.output_dir), cfg.board)
    return model


def hls_backend() -> str:
    backend = os.environ.get("HLS_BACKEND", "bnn") or "bnn"
    if backend not in ("bnn", "finn"):
        raise FlowError(f"HLS_BACKEND={backend} is unknown: use bnn (our hls_templates) or finn (FINN's finn-hlslib route)")
    return backend
