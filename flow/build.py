"""Build: a QONNX BNN -> a folded FINN dataflow design for one board.

The steps have FINN's build-step signature ``step(model, cfg) -> model`` and
FINN's names; each result is saved as ``intermediate_models/<step>.onnx``.
FINN's own ``finn.builder.build_dataflow_steps`` cannot even be imported
without Vivado (it imports the XSI simulator), so the steps that need no
vendor tool are written here from FINN's transformations, and the vendor
steps call FINN's builder only when Vivado / Vitis HLS are on PATH.

Artifacts (in ``cfg.output_dir``): ``intermediate_models/``,
``report/estimate_network_performance.json``,
``report/estimate_layer_resources.json``, ``report/estimate_layer_cycles.json``,
``report/folding_search.json``, ``folding_config.json``, the deployment
package and, written last, ``build.json`` (what was built, from which inputs;
its presence marks a complete build, see flow.rundir).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from qonnx.transformation.base import Transformation
from rich.table import Table

from flow.artifacts import step_write_hardware_artifacts
from flow.boards import Board
from flow.cycles import model_cycles
from flow.errors import FlowError
from flow.files import write_json
from flow.finn_env import init_finn
from flow.hls import hls_backend, step_generate_hls
from flow.inputs import check_input_contract, trained_dataset
from flow.rundir import BUILD_MARKER, DEPLOY_STEP, keep_inputs, start_build
from flow.terminal import make_console
from flow.vivado import build_bitfile

console = make_console()

# Ops that may stay outside the accelerator: pure data movement at the graph
# input, which the driver does for free by how it lays out the bytes.
SOFTWARE_INPUT_OPS = {"Reshape", "Flatten", "Transpose"}
# Part of each resource the accelerator may use; the rest is left for the
# shell (Zynq PS interconnect, AXI DMA, FIFOs).
MAX_UTILIZATION = 0.85
# Ops the build lowers (or absorbs into thresholds) when they stand where the
# recipe expects them; any other op left over is the cause of a failed lowering.
LOWERABLE_OPS = {
    "MatMul", "Gemm", "Conv", "Mul", "Add", "Sub", "Div", "BatchNormalization", "MultiThreshold",
    "Quant", "BipolarQuant", "MaxPool", "TopK", "Im2Col", "Reshape", "Flatten", "Transpose",
}
FOLDING_ATTRS = ["PE", "SIMD", "ram_style", "resType", "mem_mode"]


@dataclass
class BuildConfig:
    output_dir: Path
    board: Board
    target_fps: int | None = None
    max_utilization: float = MAX_UTILIZATION
    # the folding search's LUT/BRAM/DSP: FINN's estimates, or calibrated against Yosys (flow.cost_model)
    cost_model: str = "finn"
    # filled in by the steps, for the report
    folding_search: list[dict] = field(default_factory=list)

    @property
    def report_dir(self) -> Path:
        return self.output_dir / "report"

    @property
    def intermediate_dir(self) -> Path:
        return self.output_dir / "intermediate_models"

    def budget(self) -> dict[str, float]:
        return {k: self.board.resources[k] * self.max_utilization for k in ("LUT", "BRAM_18K", "DSP")}

    def cost_model_text(self) -> str:
        return {"finn": "FINN's estimates",
                "synth": "calibrated against Yosys (flow/cost_model_synth.json)"}[self.cost_model]


# --------------------------------------------------------------------------- steps


def step_qonnx_to_finn(model, cfg: BuildConfig):
    """qonnx cleanup, then QONNX -> FINN-ONNX (BipolarQuant/Quant -> MultiThreshold)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.util.cleanup import cleanup_model

    return cleanup_model(model).transform(ConvertQONNXtoFINN())


def step_tidy_up(model, cfg: BuildConfig):
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (
        GiveReadableTensorNames,
        GiveUniqueNodeNames,
        RemoveStaticGraphInputs,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for transformation in (
        InferShapes(),
        FoldConstants(),
        GiveUniqueNodeNames(),
        GiveReadableTensorNames(),
        InferDataTypes(),
        RemoveStaticGraphInputs(),
    ):
        model = model.transform(transformation)
    return model


def step_insert_label_select(model, cfg: BuildConfig):
    """Append TopK(k=1): the accelerator outputs the class index, as in FINN's BNN examples."""
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.insert_topk import InsertTopK

    return model.transform(InsertTopK(k=1)).transform(InferShapes()).transform(InferDataTypes())


def step_streamline(model, cfg: BuildConfig):
    """Batch-norm + sign -> integer thresholds; bipolar MatMul -> XNOR-popcount.

    Convolutional models (FINN's CNV recipe) are streamlined in NCHW, get
    their max-pools moved past the thresholds (flow.reorder), and then their
    convolutions lowered to im2col + MatMul (channel-innermost NHWC) before the
    XNOR conversion and a second streamlining pass.
    """
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC, MoveScalarLinearPastInvariants
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    from flow.reorder import MoveMaxPoolPastThresholds

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    if model.get_nodes_by_op_type("Conv"):
        # the input scaling (pixels * 2/255 - 1) moves past the first convolution into its thresholds
        model = model.transform(MoveScalarLinearPastInvariants())
        model = model.transform(Streamline())
        model = model.transform(MoveMaxPoolPastThresholds())
        model = model.transform(LowerConvsToMatMul())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(Streamline())
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(Streamline())
    # a positive scalar scale/shift of the logits does not change the arg-max
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    model = model.transform(InferDataLayouts())
    return model.transform(RemoveUnusedTensors())


def step_convert_to_hw(model, cfg: BuildConfig):
    """XNOR-popcount MatMul + thresholds -> MVAU (binaryXnorMode), TopK -> LabelSelect;
    im2col -> sliding-window generator, max-pool -> sliding window + Pool."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.binary_matrix_vector_activation import (
        InferBinaryMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from qonnx.transformation.general import GiveUniqueNodeNames

    for transformation in (
        InferBinaryMatrixVectorActivation(),
        InferQuantizedMatrixVectorActivation(),
        InferLabelSelectLayer(),
        InferThresholdingLayer(),
        InferPool(),
        InferConvInpGen(),
        RemoveCNVtoFCFlatten(),
        absorb.AbsorbConsecutiveTransposes(),  # the NHWC -> NCHW -> NHWC pairs between layers
        GiveUniqueNodeNames(),
    ):
        model = model.transform(transformation)
    check_all_lowered(model)
    return model


def check_all_lowered(model) -> None:
    """Every node is a hardware layer, except data movement at the graph input.

    Of the nodes left over, the first one of an op the flow never lowers is the
    cause (a Softmax leaves the batch-norm's Mul and Add before it unabsorbed);
    it is named as in the user's file (:class:`RecordOriginalNames`).
    """
    software_prefix = True
    left = []
    for node in model.graph.node:
        is_hw = node.domain.startswith("finn.custom_op.fpgadataflow")
        if is_hw:
            software_prefix = False
        elif not (software_prefix and node.op_type in SOFTWARE_INPUT_OPS):
            left.append(node)
    if left:
        node = next((n for n in left if n.op_type not in LOWERABLE_OPS), left[0])
        raise FlowError(
            f"{original_node(node)} cannot be lowered to a hardware layer: the flow maps "
            "binary/quantized MatMul and convolutions + batch-norm/thresholds, max-pools, TopK and thresholds only"
        )


def original_node(node) -> str:
    """'node NAME (OP)' as in the file given to build, or as the passes named a node they made."""
    if node.doc_string.startswith(ORIGIN_PREFIX):
        return "node " + node.doc_string.removeprefix(ORIGIN_PREFIX)
    return f"node '{node.name}' ({node.op_type}, made by the build's graph passes)"


def step_create_dataflow_partition(model, cfg: BuildConfig):
    """Move the hardware layers into their own model; the parent keeps the software prefix."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = model.transform(
        CreateDataflowPartition(partition_model_dir=str(cfg.intermediate_dir / "supported_op_partitions"))
    )
    save_model(parent, cfg.intermediate_dir / "dataflow_parent.onnx")
    (sdp,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    return ModelWrapper(getCustomOp(sdp).get_nodeattr("model"))


class SizeXnorPopcountAccumulators(Transformation):
    """Size the accumulator of XNOR-mode MVAUs for the popcount they accumulate.

    FINN's ``MinimizeAccumulatorWidth`` sizes a ``binaryXnorMode`` MVAU for
    0/1 inputs times +-1 weights (a signed range), but in XNOR mode the unit
    accumulates the number of matching bits, 0..MW: for MW = 64 it picks INT7,
    in which a popcount of 64 wraps to -64 in the hardware. The popcount needs
    UINT(ceil(log2(MW + 1))); a last layer without activation rounds up to
    whole bytes, as FINN does for the graph output.
    """

    def apply(self, model):
        from qonnx.custom_op.registry import getCustomOp
        from qonnx.transformation.infer_datatypes import InferDataTypes

        for node in model.graph.node:
            if not node.op_type.startswith("MVAU"):
                continue
            inst = getCustomOp(node)
            if inst.get_nodeattr("binaryXnorMode") != 1:
                continue
            bits = math.ceil(math.log2(inst.get_nodeattr("MW") + 1))
            if inst.get_nodeattr("noActivation"):
                if model.find_direct_successors(node) is None:
                    bits = 8 * math.ceil(bits / 8)
                inst.set_nodeattr("outputDataType", f"UINT{bits}")
            inst.set_nodeattr("accDataType", f"UINT{bits}")
        return model.transform(InferDataTypes()), False


def step_minimize_bit_width(model, cfg: BuildConfig):
    """FINN's bit-width minimization, with XNOR accumulators sized for their popcount."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    for transformation in (
        MinimizeWeightBitWidth(),
        MinimizeAccumulatorWidth(),
        SizeXnorPopcountAccumulators(),
        RoundAndClipThresholds(),
        InferDataTypes(),
        # thresholds were clipped to the accumulator range: their types shrink again
        MinimizeWeightBitWidth(),
        InferDataTypes(),
    ):
        model = model.transform(transformation)
    return model


def step_specialize_layers(model, cfg: BuildConfig):
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    model = model.transform(SpecializeLayers(cfg.board.part))
    return model.transform(GiveUniqueNodeNames()).transform(InferShapes()).transform(InferDataTypes())


def step_set_folding(model, cfg: BuildConfig):
    """Choose PE/SIMD: for ``cfg.target_fps``, or the fastest folding inside the budget.

    Never faster than the streams allow: the fully parallel design's input/output
    streams (and the board's DMA) set the floor of the interval (flow.cycles), and
    no layer is folded to fewer cycles than that floor.
    """
    from flow.cycles import floor_cycles, io_bound_text

    slowest = fold(model, 2**40, cfg)  # everything sequential: the smallest design
    if not slowest.fits(cfg.budget()):
        print_layer_table(slowest.model, cfg)
        raise FlowError(
            f"the design does not fit {cfg.board.name} at any folding: fully folded it needs "
            f"{slowest.usage_text(cfg.budget())}"
        )
    parallel = fold(model, 1, cfg)  # the widest streams: the fewest input/output stream cycles
    floor = floor_cycles(parallel.cycles)
    if cfg.target_fps is not None:
        clock_hz = cfg.board.clock_mhz * 1e6
        if cfg.target_fps > parallel.cycles["estimated_fps"]:
            bound = parallel.cycles["estimated_fps_bounded_by"]
            if bound in parallel.cycles["stream_cycles"] or bound == "DMA bandwidth":
                raise FlowError(
                    f"TARGET_FPS={cfg.target_fps} is impossible: {cfg.board.name}'s streams carry "
                    f"{io_bound_text(parallel.cycles)}"
                )
            raise FlowError(
                f"TARGET_FPS={cfg.target_fps} is impossible: at {cfg.board.clock_mhz:g} MHz the "
                f"fully parallel design needs {parallel.max_cycles} cycles per image ({bound}), "
                f"at most {parallel.cycles['estimated_fps']:,.0f} FPS"
            )
        chosen = fold(model, max(floor, math.floor(clock_hz / cfg.target_fps)), cfg)
        cfg.folding_search = [chosen.summary(cfg.budget())]
        if not chosen.fits(cfg.budget()):
            print_layer_table(chosen.model, cfg)
            raise FlowError(
                f"TARGET_FPS={cfg.target_fps} does not fit {cfg.board.name}: it needs "
                f"{chosen.usage_text(cfg.budget())}"
            )
    else:
        chosen, cfg.folding_search = fastest_fitting_folding(model, slowest, floor, cfg)
        plot_folding_search(cfg.folding_search, cfg, cfg.report_dir / "folding_search.png")
    write_json(cfg.report_dir / "folding_search.json", cfg.folding_search)
    return chosen.model


def plot_folding_search(search: list[dict], cfg: BuildConfig, path: Path) -> None:
    """Estimated throughput against LUT and BRAM for every folding the search tried."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = cfg.budget()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, resource in zip(axes, ("LUT", "BRAM_18K")):
        fps = [p["estimated_fps"] for p in search]
        used = [p[resource] for p in search]
        ax.plot(fps, used, "o-", color="tab:blue", label="foldings tried")
        for point in search:
            if point.get("chosen"):
                ax.plot(point["estimated_fps"], point[resource], "*", color="tab:green", markersize=16,
                        label=f"chosen: {point['estimated_fps']:,.0f} FPS")
        ax.axhline(budget[resource], color="tab:red", linestyle="--", label=f"budget ({cfg.max_utilization:.0%})")
        ax.axhline(cfg.board.resources[resource], color="gray", linestyle=":", label="board")
        ax.set_xscale("log")
        ax.set_ylim(0, max(cfg.board.resources[resource] * 1.1, min(max(used), 3 * cfg.board.resources[resource])))
        ax.set_xlabel(f"estimated throughput at {cfg.board.clock_mhz:g} MHz (FPS)")
        ax.set_ylabel(f"{resource} (cost model {cfg.cost_model})")
        ax.legend(fontsize=8)
    fig.suptitle(f"Folding search on {cfg.board.name}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def step_generate_estimate_reports(model, cfg: BuildConfig):
    """FINN's estimate reports, under FINN's file names."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys, op_and_param_counts
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles
    from finn.util.config import extract_model_config_to_json

    write_json(cfg.report_dir / "op_and_param_counts.json", model.analysis(op_and_param_counts))
    write_json(cfg.report_dir / "estimate_layer_cycles.json", model.analysis(exp_cycles_per_layer))
    resources = model.analysis(lambda m: res_estimation(m, cfg.board.part))
    resources["total"] = aggregate_dict_keys(resources)
    write_json(cfg.report_dir / "estimate_layer_resources.json", resources)
    if cfg.cost_model == "synth":
        from flow.cost_model import design_costs

        write_json(cfg.report_dir / "estimate_layer_resources_synth.json",
                   design_costs(model, cfg.board.part, cfg.board.dma_width_bits))
    model = model.transform(AnnotateCycles())
    # FINN's keys (its layer-only critical path and slowest layer), then the estimate of
    # flow.cycles: the streams and the DMA included, what bounds it, each bound's FPS
    performance = dict(model.analysis(dataflow_performance))
    cycles = model_cycles(model, cfg.board)
    performance["estimated_throughput_fps"] = cycles["estimated_fps"]
    performance["estimated_latency_ns"] = cycles["estimated_latency_ns"]
    performance.update({k: v for k, v in cycles.items() if k not in ("layer_cycles", "estimated_fps", "estimated_latency_ns")})
    write_json(cfg.report_dir / "estimate_network_performance.json", performance)
    extract_model_config_to_json(model, cfg.output_dir / "folding_config.json", FOLDING_ATTRS)
    print_layer_table(model, cfg)
    return model


def step_vendor_synthesis(model, cfg: BuildConfig):
    """The bitfile: Vivado on the generated RTL or on our HLS top (flow.vivado, VIVADO_ROUTE), or
    with HLS_BACKEND=finn FINN's own steps (HLS IP, stitched IP, bitfile; Vivado + Vitis HLS)."""
    if hls_backend() != "finn":
        build_bitfile(cfg.output_dir, cfg.board)
        return model
    missing = [tool for tool in ("vitis_hls", "vivado") if shutil.which(tool) is None]
    if missing:
        console.print(
            f"[yellow]skipped[/] step_vendor_synthesis: {' and '.join(missing)} not on PATH "
            "(HLS IP, stitched IP and bitfile need the AMD/Xilinx tools)"
        )
        return model
    # Importable only when Vivado is installed (it pulls in the XSI simulator).
    import finn.builder.build_dataflow_config as finn_cfg
    from finn.builder.build_dataflow_steps import (
        step_create_stitched_ip,
        step_hw_codegen,
        step_hw_ipgen,
        step_synthesize_bitfile,
    )

    dataflow_cfg = finn_cfg.DataflowBuildConfig(
        output_dir=str(cfg.output_dir),
        synth_clk_period_ns=cfg.board.clock_period_ns,
        fpga_part=cfg.board.part,
        board=cfg.board.finn_board,
        shell_flow_type=finn_cfg.ShellFlowType.VIVADO_ZYNQ,
        folding_config_file=str(cfg.output_dir / "folding_config.json"),
        generate_outputs=[finn_cfg.DataflowOutputType.BITFILE],
    )
    for step in (step_hw_codegen, step_hw_ipgen, step_create_stitched_ip, step_synthesize_bitfile):
        model = step(model, dataflow_cfg)
    return model


BUILD_STEPS: list[Callable] = [
    step_qonnx_to_finn,
    step_tidy_up,
    step_insert_label_select,
    step_streamline,
    step_convert_to_hw,
    step_create_dataflow_partition,
    step_specialize_layers,
    step_minimize_bit_width,
    step_set_folding,
    step_generate_estimate_reports,
    step_generate_hls,
    step_write_hardware_artifacts,
    step_vendor_synthesis,
]


# --------------------------------------------------------------------------- folding


@dataclass
class Folding:
    model: object  # ModelWrapper with PE/SIMD set
    cycles: dict  # flow.cycles.cycle_model of the folded design
    resources: dict[str, float]  # totals: LUT, BRAM_18K, DSP

    @property
    def max_cycles(self) -> int:
        """The initiation interval: the slowest layer or stream."""
        return self.cycles["initiation_interval_cycles"]

    def fits(self, budget: dict[str, float]) -> bool:
        return all(self.resources.get(k, 0) <= budget[k] for k in budget)

    def usage_text(self, budget: dict[str, float]) -> str:
        return ", ".join(
            f"{k} {self.resources.get(k, 0):,.0f} of {budget[k]:,.0f}"
            + (" (over)" if self.resources.get(k, 0) > budget[k] else "")
            for k in budget
        )

    def summary(self, budget: dict[str, float]) -> dict:
        return {
            "max_cycles": self.max_cycles,
            "bounded_by": self.cycles["bounded_by"],
            "estimated_fps": self.cycles["estimated_fps"],
            **{k: self.resources.get(k, 0) for k in ("LUT", "BRAM_18K", "DSP")},
            "fits": self.fits(budget),
        }


class MinimumCostFolding(Transformation):
    """Per layer, the cheapest folding that meets a cycle target (FINN's estimates).

    FINN's ``SetFolding`` raises SIMD, then PE, until a layer meets the target;
    the first pair that does is not the cheapest one (for CNV's 576 x 64 layer
    it may pick SIMD 36 x PE 64 where 576 x 8 or 48 x 64 cost less per cycle
    saved), and its 36-bit weight-stream cap holds binary layers back. Here
    every (SIMD, PE, multiplier resource) of an MVAU, every SIMD of a sliding
    window and every PE of a pool / threshold / label-select unit is costed
    with the layer's own cycle and resource estimates; the choice is the
    lowest cost ``LUT / LUT budget + BRAM / BRAM budget`` among those meeting
    the target, or the fastest one when none does. DSPs are a pool instead:
    a layer may use them (an integer-input MVAU's multipliers, saving their
    LUTs) as long as the budget has DSPs left, in dataflow order. A pool and
    the depthwise sliding window that feeds it share one parallelism (FINN
    requires SIMD == PE there).
    """

    def __init__(self, target_cycles: int, part: str, budget: dict[str, float], cost_model: str = "finn",
                 dma_width_bits: int = 64):
        super().__init__()
        self.target_cycles = target_cycles
        self.part = part
        self.budget = budget
        self.cost_model = cost_model
        self.dma_width_bits = dma_width_bits

    def estimate(self, inst) -> dict[str, float]:
        """A unit's resources under the cost model: FINN's estimate, or the calibrated cost of its RTL
        unit plus its input converter and FIFO (with the upstream layer's folding as set so far)."""
        if self.cost_model == "finn":
            return inst.node_res_estimation(self.part)
        from qonnx.custom_op.registry import getCustomOp

        from flow.cost_model import layer_cost

        node = inst.onnx_node
        producer = self.model.find_producer(node.input[0])
        upstream = getCustomOp(producer).get_outstream_width(0) if producer is not None else None
        return layer_cost(self.model, node, inst, self.part, upstream, self.dma_width_bits)["total"]

    def choose(self, units: list, choices: list[list[dict]]) -> None:
        """Apply to ``units`` (insts folded together) the best of ``choices`` (one attr dict per unit)."""
        best = None
        for choice in choices:
            for inst, attrs in zip(units, choice):
                for name, value in attrs.items():
                    inst.set_nodeattr(name, value)
            estimates = [self.estimate(inst) for inst in units]
            dsp = sum(e.get("DSP", 0) for e in estimates)
            if dsp > self.dsp_left:
                continue
            cost = sum(e.get(k, 0) / self.budget[k] for e in estimates for k in ("LUT", "BRAM_18K"))
            cycles = max(int(inst.get_exp_cycles()) for inst in units)
            key = (0, cost, cycles) if cycles <= self.target_cycles else (1, cycles, cost)
            if best is None or key < best[0]:
                best = (key, choice, dsp)
        _, choice, dsp = best
        for inst, attrs in zip(units, choice):
            for name, value in attrs.items():
                inst.set_nodeattr(name, value)
        self.dsp_left -= dsp

    def apply(self, model):
        self.model = model
        self.dsp_left = self.budget.get("DSP", 0)
        from qonnx.core.datatype import DataType
        from qonnx.custom_op.registry import getCustomOp

        for node in model.graph.node:
            inst = getCustomOp(node)
            op = node.op_type
            if op.startswith("MVAU"):
                binary = inst.get_input_datatype(0) in (DataType["BINARY"], DataType["BIPOLAR"])
                res_types = ["lut"] if binary else ["lut", "dsp"]
                self.choose([inst], [
                    [{"SIMD": simd, "PE": pe, "resType": res}]
                    for simd in divisors(inst.get_nodeattr("MW"))
                    for pe in divisors(inst.get_nodeattr("MH"))
                    for res in res_types
                ])
            elif op.startswith("ConvolutionInputGenerator") and not inst.get_nodeattr("depthwise"):
                self.choose([inst], [[{"SIMD": simd}] for simd in divisors(inst.get_nodeattr("IFMChannels"))])
            elif op.startswith("Pool"):
                window = getCustomOp(model.find_producer(node.input[0]))
                self.choose([window, inst], [
                    [{"SIMD": pe}, {"PE": pe}] for pe in divisors(inst.get_nodeattr("Channels"))
                ])
            elif op.startswith("Thresholding"):
                self.choose([inst], [[{"PE": pe}] for pe in divisors(inst.get_nodeattr("NumChannels"))])
            elif op.startswith("LabelSelect"):
                self.choose([inst], [[{"PE": pe}] for pe in divisors(inst.get_nodeattr("Labels"))])
        return model, False


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def fold(model, target_cycles: int, cfg: BuildConfig) -> Folding:
    """The cheapest folding for a cycle target, with the build's cost model and flow.cycles."""
    import copy

    folded = copy.deepcopy(model).transform(
        MinimumCostFolding(target_cycles, cfg.board.part, cfg.budget(), cfg.cost_model, cfg.board.dma_width_bits)
    )
    return Folding(folded, model_cycles(folded, cfg.board), design_resources(folded, cfg))


def design_resources(model, cfg: BuildConfig) -> dict[str, float]:
    """Total LUT, BRAM_18K, DSP of a folded design under the build's cost model (synth: the
    converters and FIFOs of the generated top included)."""
    from finn.analysis.fpgadataflow.op_and_param_counts import aggregate_dict_keys
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    if cfg.cost_model == "synth":
        from flow.cost_model import design_costs

        return design_costs(model, cfg.board.part, cfg.board.dma_width_bits)["total"]
    return aggregate_dict_keys(model.analysis(lambda m: res_estimation(m, cfg.board.part)))


def fastest_fitting_folding(model, slowest: Folding, floor: int, cfg: BuildConfig) -> tuple[Folding, list[dict]]:
    """Bisect the cycle target between ``floor`` (what the streams allow) and fully folded;
    keep the fastest folding that fits, the cheapest one for its interval.

    Every folding tried is returned (the throughput-vs-resources curve of the search).
    """
    budget = cfg.budget()

    def tried_fold(target: int) -> Folding:
        candidate = fold(model, target, cfg)
        console.print(
            f"  folding search: layers <= {target:,} cycles -> interval {candidate.max_cycles:,} "
            f"({candidate.cycles['bounded_by']}), {candidate.usage_text(budget)}"
        )
        return candidate

    fastest = tried_fold(floor)
    tried = {slowest.max_cycles: slowest, fastest.max_cycles: fastest}
    best = fastest if fastest.fits(budget) else slowest
    low, high = floor, slowest.max_cycles  # low: does not fit (unless fastest fits), high: fits
    while not fastest.fits(budget) and high - low > max(1, low // 200):
        target = (low + high) // 2
        candidate = tried_fold(target)
        tried.setdefault(candidate.max_cycles, candidate)
        if candidate.fits(budget):
            high = target
            if candidate.max_cycles < best.max_cycles:
                best = candidate
        else:
            low = target
    # a few more points along the way for the curve
    for target in np.geomspace(floor, slowest.max_cycles, 8).astype(int):
        candidate = tried_fold(int(target))
        tried.setdefault(candidate.max_cycles, candidate)
        if candidate.fits(budget) and candidate.max_cycles < best.max_cycles:
            best = candidate
    search = [tried[c].summary(budget) | {"chosen": tried[c] is best} for c in sorted(tried, reverse=True)]
    return best, search


# --------------------------------------------------------------------------- reporting


def post_synthesis_ff(report_dir: Path | None) -> dict[str, float]:
    """FF per layer from FINN's post-synthesis report (only with the vendor tools): FINN's
    pre-synthesis estimates (``node_res_estimation``) give LUT, BRAM, URAM and DSP but no FF."""
    path = report_dir / "post_synth_resources.json" if report_dir is not None else None
    if path is None or not path.exists():
        return {}
    report = json.loads(path.read_text())
    return {name: entry["FF"] for name, entry in report.items() if isinstance(entry, dict) and "FF" in entry}


def layer_rows(model, part: str, report_dir: Path | None = None, synth_costs: dict | None = None) -> list[dict]:
    """Per hardware layer: shape, folding, cycles and resource estimates (FF: None before synthesis);
    with ``synth_costs`` (flow.cost_model.design_costs) the calibrated LUT/BRAM/DSP of the layer's
    unit, input converter and FIFO instead of FINN's."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    cycles = model.analysis(exp_cycles_per_layer)
    resources = model.analysis(lambda m: res_estimation(m, part))
    flip_flops = post_synthesis_ff(report_dir)
    rows = []
    if synth_costs is not None:
        resources = {name: cost["total"] for name, cost in synth_costs["layers"].items()}
    for node in model.graph.node:
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()

        def attr(name, default="-"):
            return inst.get_nodeattr(name) if name in attrs else default

        shape = f"{attr('MW')} x {attr('MH')}" if "MW" in attrs else f"{attr('NumChannels', attr('Labels'))}"
        rows.append(
            {
                "layer": node.name,
                "shape": shape,
                "SIMD": attr("SIMD"),
                "PE": attr("PE"),
                "cycles": cycles.get(node.name, 0),
                "LUT": resources.get(node.name, {}).get("LUT", 0),
                "BRAM_18K": resources.get(node.name, {}).get("BRAM_18K", 0),
                "DSP": resources.get(node.name, {}).get("DSP", 0),
                "FF": flip_flops.get(node.name),
            }
        )
    return rows


def stream_row_text(element: dict) -> str:
    """The width column of a stream row: an AXI stream's width and bytes, a converter's widths."""
    if element["kind"] in ("axis_in", "axis_out"):
        return f"{element['bits']}-bit, {element['bytes']:,} B"
    return f"{element['in_bits']} -> {element['out_bits']} bit"


def print_layer_table(model, cfg: BuildConfig) -> None:
    """The layers and the streams of the generated top, in dataflow order; ``<`` marks the bound."""
    synth_costs = None
    if cfg.cost_model == "synth":
        from flow.cost_model import design_costs

        synth_costs = design_costs(model, cfg.board.part, cfg.board.dma_width_bits)
    rows = {row["layer"]: row for row in layer_rows(model, cfg.board.part, cfg.report_dir, synth_costs)}
    cycles = model_cycles(model, cfg.board)
    synthesized = all(r["FF"] is not None for r in rows.values())

    def marked(name: str, value: int) -> str:
        return f"{value:,}" + (" <" if name == cycles["bounded_by"] else "")

    def ff(value) -> str:
        return f"{value:,.0f}" if value is not None else "-"

    captions = [] if synthesized else ["FF: post-synthesis only (FINN's estimates give none before synthesis)"]
    if synth_costs is not None:
        captions.append("LUT/BRAM18/DSP: each layer's unit + input width converter + FIFO; the total adds the output converter")
        if synth_costs["finn_estimated"]:
            captions.append(f"no calibration for {', '.join(synth_costs['finn_estimated'])}: FINN's estimate of the unit")
    table = Table(
        title=f"Folded dataflow design for {cfg.board.name} ({cfg.board.part}); cost model {cfg.cost_model}: "
        f"{cfg.cost_model_text()}",
        caption="; ".join(captions) or None,
    )
    for column in ("layer", "MW x MH", "SIMD", "PE", "cycles", "LUT", "BRAM18", "DSP", "FF"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for element in cycles["stream_plan"]:
        if element["kind"] != "layer":
            table.add_row(element["name"], stream_row_text(element), "", "", marked(element["name"], element["cycles"]))
            continue
        for row in (rows[name] for name in element["layers"]):
            table.add_row(
                row["layer"], row["shape"], str(row["SIMD"]), str(row["PE"]), marked(row["layer"], row["cycles"]),
                f"{row['LUT']:,.0f}", f"{row['BRAM_18K']:,.0f}", f"{row['DSP']:,.0f}", ff(row["FF"]),
            )
    lut, bram, dsp = (sum(r[k] for r in rows.values()) if synth_costs is None else synth_costs["total"][k]
                      for k in ("LUT", "BRAM_18K", "DSP"))
    max_cycles = cycles["initiation_interval_cycles"]
    board = cfg.board.resources
    table.add_section()
    table.add_row("total", "", "", "", f"max {max_cycles:,}", f"{lut:,.0f}", f"{bram:,.0f}", f"{dsp:,.0f}",
                  ff(sum(r["FF"] for r in rows.values()) if synthesized else None))
    table.add_row(
        f"budget ({cfg.max_utilization:.0%} of board)", "", "", "", "",
        *(f"{board[k] * cfg.max_utilization:,.0f}" for k in ("LUT", "BRAM_18K", "DSP", "FF")),
    )
    console.print(table)
    dma = "" if cycles["dma_bound_fps"] is None else f", DMA {cycles['dma_bound_fps']:,.0f}"
    console.print(
        f"estimated throughput {cycles['estimated_fps']:,.0f} FPS at {cfg.board.clock_mhz:g} MHz, bounded by "
        f"{cycles['estimated_fps_bounded_by']} (interval {max_cycles:,} cycles, {cycles['bounded_by']}); "
        f"bounds: layers {cycles['compute_bound_fps']:,.0f}, streams {cycles['io_bound_fps']:,.0f}{dma} FPS; "
        f"LUT {lut / board['LUT']:.1%}, BRAM {bram / board['BRAM_18K']:.1%} of the board (cost model {cfg.cost_model})"
    )


# --------------------------------------------------------------------------- driver


def save_model(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    model.save(str(tmp))
    os.replace(tmp, path)


def load_qonnx(path: Path):
    """Load and check a model given to ``build``: one clear error for anything unusable."""
    from qonnx.core.modelwrapper import ModelWrapper

    if not path.exists():
        raise FlowError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FlowError(f"{path}: not a valid ONNX model ({first_line})") from None
    return ModelWrapper(proto)


ORIGIN_PREFIX = "bnn-flow origin: "  # a node's doc_string: its name and op in the file given to build


class RecordOriginalNames(Transformation):
    """Note in each node's doc_string its name and op as in the user's file.

    qonnx/FINN passes rename the nodes they keep (GiveUniqueNodeNames: 'Mul_0'),
    so an error about a node that survives to a later step names it as the user
    knows it from this note.
    """

    def apply(self, model):
        for index, node in enumerate(model.graph.node):
            node.doc_string = f"{ORIGIN_PREFIX}'{node.name or f'#{index}'}' ({node.op_type})"
        return model, False


def prepare_input(model, input_scale: float | None, input_datatype: str | None = None):
    """The accelerator reads integer pixels: annotate them, or prepend FINN's ToTensor scaling.

    Returns the model and the ``InputTransform`` added (recorded in build.json).
    """
    import numpy as np
    from onnx import helper
    from qonnx.core.datatype import DataType

    from flow.inputs import InputTransform

    name = model.graph.input[0].name
    if input_scale is not None:
        if not (math.isfinite(input_scale) and input_scale > 0):
            raise FlowError(f"--input-scale {input_scale:g}: must be a positive number (255 for pixels / 255)")
        scaled = name + "_scaled"
        for consumer in model.find_consumers(name):
            for i, inp in enumerate(consumer.input):
                if inp == name:
                    consumer.input[i] = scaled
        model.set_initializer(name + "_scale", np.asarray(1.0 / input_scale, dtype=np.float32))
        model.graph.node.insert(0, helper.make_node("Mul", [name, name + "_scale"], [scaled]))
    if input_scale is not None or input_datatype is not None:
        try:
            dtype = DataType[input_datatype or "UINT8"]
        except KeyError:
            raise FlowError(f"--input-datatype {input_datatype}: not a FINN data type (e.g. UINT8, INT8, BINARY)") from None
        model.set_tensor_datatype(name, dtype)
    dtype = model.get_tensor_datatype(name)
    if not dtype.is_integer():
        raise FlowError(
            f"input '{name}' is {dtype.name}: the accelerator takes integer pixels; if the model expects "
            "pixels / 255 (as Brevitas' bnn_pynq models do), build with --input-scale 255; if it reads raw "
            "pixels 0..255 (scaling them itself), build with --input-datatype UINT8"
        )
    return model, InputTransform(dtype.name, input_scale)


def build(
    onnx_path: Path,
    out_dir: Path,
    board: Board,
    target_fps: int | None = None,
    input_scale: float | None = None,
    max_utilization: float = MAX_UTILIZATION,
    input_datatype: str | None = None,
    dataset: str | None = None,
    cost_model: str = "finn",
) -> dict:
    """Run every build step, then write the deployment package; return (and write
    as ``build.json``, last) what was built.

    The model and the board are kept in the run directory (``model.onnx``,
    ``board.toml``) and their sha256 recorded, so that every later stage can
    refuse a build that is not of the files beside it (flow.rundir).
    """
    from flow.cost_model import COST_MODELS

    if cost_model not in COST_MODELS:
        raise FlowError(f"--cost-model {cost_model}: unknown cost model (finn: FINN's estimates, synth: calibrated against Yosys)")
    init_finn(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_qonnx(onnx_path)
    start_build(out_dir)  # a failed rebuild must not look complete, nor leave the old package
    inputs = keep_inputs(out_dir, onnx_path, board)
    cfg = BuildConfig(out_dir, board, target_fps, max_utilization, cost_model)
    model, transform = prepare_input(model.transform(RecordOriginalNames()), input_scale, input_datatype)
    dataset = dataset or trained_dataset(out_dir)
    times = {}
    for step in BUILD_STEPS:
        console.print(f"[bold]{step.__name__}[/]")
        start = time.time()
        model = step(model, cfg)
        save_model(model, cfg.intermediate_dir / f"{step.__name__}.onnx")
        times[step.__name__] = round(time.time() - start, 2)
        console.print(f"  {step.__name__} took {times[step.__name__]:.1f} s")
    save_model(model, out_dir / "dataflow_model.onnx")
    if dataset is not None:
        check_input_contract(out_dir, transform, dataset)
    performance = json.loads((cfg.report_dir / "estimate_network_performance.json").read_text())
    summary = {
        "model": str(onnx_path),
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "target_fps": target_fps,
        "max_utilization": max_utilization,
        "cost_model": cost_model,
        "estimated_throughput_fps": performance["estimated_throughput_fps"],
        "estimated_fps_bounded_by": performance["estimated_fps_bounded_by"],
        "estimated_latency_ns": performance["estimated_latency_ns"],
        "step_seconds": times,
        "inputs": inputs,
        "steps_completed": list(times),
        "input_transform": transform.to_dict(),
        "dataset": dataset,
    }
    from flow.deploy import deploy_built_run  # the deployment package: RUN_DIR/deploy/ + deploy.tar.gz

    if deploy_built_run(out_dir, summary) is not None:
        summary["steps_completed"].append(DEPLOY_STEP)
    write_json(out_dir / BUILD_MARKER, summary)
    return summary
