"""Hardware artifacts: what the built accelerator is made of, in the hardware's own layout.

The build step :func:`step_write_hardware_artifacts` writes ``RUN_DIR/hw/``
from the folded, specialized dataflow model; the emulator (``flow.emulate``),
the C simulation and the deployment package read only these files, never an
ONNX graph.

``hw/`` holds:

- ``<layer>_weights.npy``: an MVAU's weight memory, ``uint8 PE x WMEM x B``:
  one row of ``B`` bytes per memory word, the ``SIMD`` lanes packed as FINN
  packs its ``.dat``/header memories (``get_hw_compatible_weight_tensor``:
  output rows interleaved over the PEs, SIMD axis reversed, then packed with
  ``finnpy_to_packed_bytearray`` MSB first, so lane 0 sits in the lowest
  bits). Bipolar weights are stored as bits (1 = +1, 0 = -1).
- ``<layer>_thresholds.npy``: a threshold memory, ``int64 PE x TMEM x steps``
  (``get_hw_compatible_threshold_tensor``).
- ``accelerator.json``: per layer its operation, folding (PE, SIMD, WMEM,
  TMEM), stream widths, data types (input, weight, accumulator, threshold,
  output), expected cycles; the input/output packing as FINN's driver
  describes it (``io_shape_dict``: idt, odt, ishape/oshape normal, folded,
  packed); the software prefix (the input reshape the driver does for free);
  ``streams``: the generated top's stream plan (``flow.hls.stream_plan``: the
  AXI input and output streams at the board's DMA width, the width converters
  between layers, with their cycles per image).
- ``manifest.json`` (written last): board, part, clock, DMA width and
  bandwidth, the cycle estimate (``flow.cycles``), and every file above with
  its sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flow.errors import FlowError
from flow.files import sha256_file, staged_dir
from flow.terminal import make_console

console = make_console()

FORMAT_VERSION = 2  # 2: accelerator.json has the stream plan, manifest.json the DMA
MANIFEST = "manifest.json"
DESCRIPTION = "accelerator.json"

THRESHOLDING_OPS = {"Thresholding", "Thresholding_hls", "Thresholding_rtl"}
MVAU_OPS = {"MVAU", "MVAU_hls"}
LABELSELECT_OPS = {"LabelSelect", "LabelSelect_hls"}
SLIDING_WINDOW_OPS = {"ConvolutionInputGenerator", "ConvolutionInputGenerator_hls", "ConvolutionInputGenerator_rtl"}
POOL_OPS = {"Pool", "Pool_hls"}
# NCHW -> NHWC at the input of a convolutional network: the driver lays the pixels out so
SOFTWARE_PREFIX_OPS = {"Reshape", "Flatten", "Transpose"}


def step_write_hardware_artifacts(model, cfg):
    """Build step: write ``cfg.output_dir/hw`` from the folded dataflow model."""
    from flow.cycles import board_dma

    parent_path = cfg.intermediate_dir / "dataflow_parent.onnx"
    board = {
        "board": cfg.board.name, "part": cfg.board.part, "clock_mhz": cfg.board.clock_mhz,
        "dma_width_bits": cfg.board.dma_width_bits, "dma": board_dma(cfg.board),
    }
    write_hardware_artifacts(model, cfg.output_dir / "hw", board=board, parent=parent_path if parent_path.exists() else None)
    return model


def write_hardware_artifacts(model, hw_dir: Path, board: dict, parent: Path | None = None) -> dict:
    """Write the artifacts of a dataflow model (a chain of HW layers) into ``hw_dir``.

    ``board``: ``board``, ``part``, ``clock_mhz``, ``dma_width_bits`` (the widest AXI
    stream of the top), optionally ``dma`` (``flow.cycles.board_dma``); ``parent``: the parent model
    whose software prefix (input reshape) precedes the accelerator.
    Returns the manifest. ``hw_dir`` is replaced atomically: a failure leaves
    the previous directory (or none) in place.
    """
    from qonnx.custom_op.registry import getCustomOp

    from flow.cycles import cycle_model
    from flow.hls import stream_plan

    nodes = list(model.graph.node)
    if not nodes:
        raise FlowError("the dataflow model has no layers")
    with staged_dir(Path(hw_dir)) as staging:
        layers = []
        previous_output = model.graph.input[0].name
        for node in nodes:
            if node.input[0] != previous_output:
                raise FlowError(f"layer '{node.name}' does not read the previous layer's output: only layer chains are supported")
            previous_output = node.output[0]
            layers.append(describe_layer(model, node, getCustomOp(node), staging))
        if previous_output != model.graph.output[0].name:
            raise FlowError(f"the last layer '{nodes[-1].name}' does not produce the graph output")
        streams = stream_plan(model, board["dma_width_bits"])
        description = {
            "format": FORMAT_VERSION,
            "layers": layers,
            "io_shape_dict": io_shape_dict(model, getCustomOp(nodes[0]), getCustomOp(nodes[-1])),
            "software_prefix": software_prefix(parent, model.get_tensor_shape(model.graph.input[0].name)),
            "streams": streams,
        }
        (staging / DESCRIPTION).write_text(json.dumps(description, indent=2))
        layer_cycles = {layer["name"]: layer["cycles"] for layer in layers}
        manifest = {
            "format": FORMAT_VERSION,
            "dma": None,
            **board,
            "estimate": cycle_model(layer_cycles, streams, board["clock_mhz"], board.get("dma")),
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir())},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def mvau_datatypes(model, node, inst):
    """How a finn-hlslib MVAU computes, shared by the emulator's artifacts and the generated HLS.

    Returns (XNOR mode?, weight memory type, accumulator type, threshold type
    or None without activation). Bipolar weights are stored as bits, as FINN
    exports them; the unit accumulates into the output type without
    activation (PassThroughActivation<odt>) and into the threshold type with
    thresholds (ThresholdsActivation<.., TA=tdt>).
    """
    from qonnx.core.datatype import DataType

    idt, wdt = inst.get_input_datatype(0), inst.get_input_datatype(1)
    xnor = inst.get_nodeattr("binaryXnorMode") == 1 or (idt == DataType["BIPOLAR"] and wdt == DataType["BIPOLAR"])
    stored_wdt = DataType["BINARY"] if wdt in (DataType["BIPOLAR"], DataType["BINARY"]) else wdt
    if inst.get_nodeattr("noActivation") == 1:
        return xnor, stored_wdt, inst.get_output_datatype(), None
    tdt = model.get_tensor_datatype(node.input[2])
    return xnor, stored_wdt, (tdt if tdt.is_integer() else inst.get_accumulator_datatype()), tdt


def describe_layer(model, node, inst, out_dir: Path) -> dict:
    """One layer's folding, data types and memories; memories saved into ``out_dir``."""
    from qonnx.core.datatype import DataType

    name = node.name
    layer = {
        "name": name,
        "op_type": node.op_type,
        "output_tensor": node.output[0],
        "input_dtype": inst.get_input_datatype(0).name,
        "output_dtype": inst.get_output_datatype().name,
        "PE": inst.get_nodeattr("PE") if "PE" in inst.get_nodeattr_types() else None,
        "instream_width": inst.get_instream_width(0),
        "outstream_width": inst.get_outstream_width(0),
        "folded_input_shape": list(inst.get_folded_input_shape()[1:]),
        "folded_output_shape": list(inst.get_folded_output_shape()[1:]),
        "input_shape": list(inst.get_normal_input_shape()[1:]),
        "output_shape": list(inst.get_normal_output_shape()[1:]),
        "cycles": int(inst.get_exp_cycles()),
    }
    if inst.get_normal_input_shape()[0] != 1:
        raise FlowError(f"layer '{name}': the batch dimension must be 1 in a built design (one image per pass)")
    if node.op_type in THRESHOLDING_OPS:
        thresholds = model.get_initializer(node.input[1])
        layer.update(
            kind="thresholding",
            channels=inst.get_nodeattr("NumChannels"),
            steps=inst.get_nodeattr("numSteps"),
            TMEM=inst.calc_tmem(),
            act_val=inst.get_nodeattr("ActVal"),
            threshold_dtype=model.get_tensor_datatype(node.input[1]).name,
            # Thresholding_rtl finds the count by binary search: it needs sorted thresholds
            threshold_unit="binary_search" if node.op_type == "Thresholding_rtl" else "count",
        )
        if node.op_type == "Thresholding_rtl" and not np.all(np.diff(thresholds, axis=-1) >= 0):
            raise FlowError(f"layer '{name}': thresholds are not sorted; the RTL binary search needs them sorted")
        layer["files"] = {"thresholds": save_thresholds(inst.get_hw_compatible_threshold_tensor(thresholds)[0], name, out_dir)}
    elif node.op_type in MVAU_OPS:
        weights = model.get_initializer(node.input[1])
        if weights is None:
            raise FlowError(f"layer '{name}': weights are not embedded (mem_mode external is not supported)")
        wdt = inst.get_input_datatype(1)
        idt = inst.get_input_datatype(0)
        xnor, stored_wdt, accumulator, tdt = mvau_datatypes(model, node, inst)
        no_activation = tdt is None
        layer.update(
            kind="mvau",
            MW=inst.get_nodeattr("MW"),
            MH=inst.get_nodeattr("MH"),
            SIMD=inst.get_nodeattr("SIMD"),
            WMEM=inst.calc_wmem(),
            TMEM=inst.calc_tmem(),
            binary_xnor=xnor,
            no_activation=no_activation,
            act_val=inst.get_nodeattr("ActVal"),
            weight_dtype=wdt.name,
            weight_memory_dtype=stored_wdt.name,
            bipolar_weights=xnor or wdt == DataType["BIPOLAR"],
            # where the weights live (FINN's MVAU attributes): the RTL maps its weight ROM by them
            mem_mode=inst.get_nodeattr("mem_mode"),
            ram_style=inst.get_nodeattr("ram_style"),
            # the multipliers of a non-binary layer: DSP slices or LUTs (FINN's resType)
            res_type=inst.get_nodeattr("resType"),
        )
        hw_weights = inst.get_hw_compatible_weight_tensor(weights)[0]
        files = {"weights": save_weight_memory(hw_weights, stored_wdt, name, out_dir)}
        if not no_activation:
            thresholds = model.get_initializer(node.input[2])
            layer.update(steps=int(thresholds.shape[1]), threshold_dtype=tdt.name)
            files["thresholds"] = save_thresholds(inst.get_hw_compatible_threshold_tensor(thresholds)[0], name, out_dir)
        layer["accumulator_dtype"] = accumulator.name
        low, high = accumulator_range(weights, idt, xnor)
        if low < accumulator.min() or high > accumulator.max():
            # Our build sizes XNOR accumulators for their popcount
            # (flow.build.SizeXnorPopcountAccumulators); a model built elsewhere
            # may still carry FINN's too-narrow type, and the hardware wraps there
            console.print(
                f"[yellow]warning[/] {name}: the accumulator ({accumulator.name}) cannot hold every value "
                f"{low:.0f}..{high:.0f} this layer can sum; the hardware wraps (the emulator does too; "
                "`make verify` shows whether the test set reaches it)"
            )
        layer["files"] = files
    elif node.op_type in LABELSELECT_OPS:
        layer.update(kind="labelselect", labels=inst.get_nodeattr("Labels"), K=inst.get_nodeattr("K"))
    elif node.op_type in SLIDING_WINDOW_OPS:
        kernel, stride, dilation = (list(inst.get_nodeattr(a)) for a in ("ConvKernelDim", "Stride", "Dilation"))
        if len(set(kernel)) != 1 or len(set(stride)) != 1 or set(dilation) != {1}:
            raise FlowError(f"layer '{name}': only square kernels and strides without dilation are supported ({kernel}, {stride}, {dilation})")
        layer.update(
            kind="sliding_window",
            channels=inst.get_nodeattr("IFMChannels"),
            SIMD=inst.get_nodeattr("SIMD"),
            input_dim=list(inst.get_nodeattr("IFMDim")),
            output_dim=list(inst.get_nodeattr("OFMDim")),
            kernel=kernel[0],
            stride=stride[0],
            depthwise=bool(inst.get_nodeattr("depthwise")),
        )
    elif node.op_type in POOL_OPS:
        if inst.get_nodeattr("Function") != "MaxPool":
            raise FlowError(f"layer '{name}': pool function {inst.get_nodeattr('Function')} is not supported (MaxPool only)")
        layer.update(
            kind="maxpool",
            channels=inst.get_nodeattr("Channels"),
            kernel=list(inst.get_nodeattr("KernelSize")),
            output_dim=list(inst.get_nodeattr("OutImgDims")),
        )
    else:
        raise FlowError(
            f"layer '{name}' ({node.op_type}) has no hardware artifact format; "
            "supported: MVAU, Thresholding, LabelSelect, ConvolutionInputGenerator, Pool (max)"
        )
    return layer


def accumulator_range(weights: np.ndarray, idt, xnor: bool) -> tuple[float, float]:
    """The values an MVAU's accumulator can take over all inputs of type ``idt``.

    ``weights``: MW x MH, +-1 for bipolar weights. XNOR mode counts matching
    bits, 0..MW; a bipolar input (without XNOR mode) is +-1.
    """
    if xnor:
        return 0.0, float(weights.shape[0])
    x_low, x_high = (-1, 1) if idt.name == "BIPOLAR" else (idt.min(), idt.max())
    low = np.minimum(weights * x_low, weights * x_high).sum(axis=0)
    high = np.maximum(weights * x_low, weights * x_high).sum(axis=0)
    return float(low.min()), float(high.max())


def save_weight_memory(hw_weights: np.ndarray, stored_wdt, name: str, out_dir: Path) -> str:
    """PE x WMEM x SIMD (FINN's hw-compatible layout) -> PE x WMEM x bytes, one memory word per row."""
    from finn.util.data_packing import finnpy_to_packed_bytearray

    if stored_wdt.name == "BINARY":
        hw_weights = hw_weights.astype(np.uint8)
    packed = np.ascontiguousarray(finnpy_to_packed_bytearray(hw_weights, stored_wdt), dtype=np.uint8)
    filename = f"{name}_weights.npy"
    np.save(out_dir / filename, packed)
    return filename


def save_thresholds(hw_thresholds: np.ndarray, name: str, out_dir: Path) -> str:
    """PE x TMEM x steps; integer (the build rounds thresholds for integer inputs)."""
    if not np.all(hw_thresholds == np.round(hw_thresholds)):
        raise FlowError(f"layer '{name}': thresholds are not integers (run RoundAndClipThresholds first)")
    filename = f"{name}_thresholds.npy"
    np.save(out_dir / filename, hw_thresholds.astype(np.int64))
    return filename


def io_shape_dict(model, first, last) -> dict:
    """The accelerator's I/O as FINN's driver describes it (``get_driver_shapes``'s keys)."""
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.util.basic import gen_finn_dt_tensor

    idt, odt = first.get_input_datatype(0), last.get_output_datatype()
    ifolded, ofolded = tuple(first.get_folded_input_shape()), tuple(last.get_folded_output_shape())
    return {
        "idt": [idt.name],
        "odt": [odt.name],
        "ishape_normal": [list(model.get_tensor_shape(model.graph.input[0].name))],
        "ishape_folded": [list(ifolded)],
        "ishape_packed": [list(finnpy_to_packed_bytearray(gen_finn_dt_tensor(idt, ifolded), idt).shape)],
        "oshape_normal": [list(model.get_tensor_shape(model.graph.output[0].name))],
        "oshape_folded": [list(ofolded)],
        "oshape_packed": [list(finnpy_to_packed_bytearray(gen_finn_dt_tensor(odt, ofolded), odt).shape)],
        "num_inputs": 1,
        "num_outputs": 1,
    }


def software_prefix(parent: Path | None, accelerator_input_shape) -> dict:
    """The parent graph's input shape and the data-movement ops before the accelerator.

    ``input_permutation``: the axes of a Transpose before the accelerator (NCHW
    images -> the NHWC pixel stream of a convolutional network), else null.
    """
    if parent is None:
        return {"input_shape": list(accelerator_input_shape), "ops": [], "input_permutation": None}
    from qonnx.core.modelwrapper import ModelWrapper

    parent_model = ModelWrapper(str(parent))
    ops = [n.op_type for n in parent_model.graph.node if n.op_type != "StreamingDataflowPartition"]
    unsupported = [op for op in ops if op not in SOFTWARE_PREFIX_OPS]
    if unsupported:
        raise FlowError(f"{parent}: software prefix op(s) {', '.join(unsupported)} cannot be emulated (only a reshape or transpose)")
    transposes = parent_model.get_nodes_by_op_type("Transpose")
    if len(transposes) > 1:
        raise FlowError(f"{parent}: more than one Transpose before the accelerator")
    permutation = list(next(a.ints for a in transposes[0].attribute if a.name == "perm")) if transposes else None
    return {
        "input_shape": list(parent_model.get_tensor_shape(parent_model.graph.input[0].name)),
        "ops": ops,
        "input_permutation": permutation,
    }


def images_in_stream_order(images: np.ndarray, hw_dir: Path) -> np.ndarray:
    """Test images (N x C x H x W) in the order the accelerator streams pixels.

    A convolutional accelerator reads NHWC (channels innermost): the software
    prefix's Transpose, done by whoever lays out the input buffer (the driver,
    the C-sim testbench, the deployment package's packed test set).
    """
    description = json.loads((Path(hw_dir) / DESCRIPTION).read_text())
    permutation = description["software_prefix"].get("input_permutation")
    if permutation is None or images.ndim != len(permutation):
        return images
    return np.ascontiguousarray(images.transpose(permutation))
