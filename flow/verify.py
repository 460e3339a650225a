"""The verification ladder: PyTorch -> QONNX -> streamlined -> HW-layer graph -> emulator.

Every level runs the same test images; at every layer boundary the levels'
integer activations are compared, each level with the one before it:

- binary activations: PyTorch's ``QuantIdentity`` outputs and QONNX's
  ``BipolarQuant`` outputs (+-1, read as bits: +1 -> 1), the streamlined
  graph's ``MultiThreshold`` outputs, the HW layers' outputs, the emulator's;
- scores (the last MVAU, no activation): the XNOR popcount. PyTorch and QONNX
  hold the +-1 dot product d of MW inputs; the popcount is ``(d + MW) / 2``
  (compared only when d is an integer, i.e. the weight scale is 1);
- the label (LabelSelect; arg-max of the logits at PyTorch and QONNX).

The layers are the accelerator's, by name (``RUN_DIR/hw``); the streamlined
and HW graphs keep the tensor names that the dataflow layers output. On a
mismatch the report names the first layer that diverges and its first
differing element. Written to ``report/verification.json``.

A model trained elsewhere (no ``checkpoint.pt``) skips the PyTorch level; its
QONNX model (``model.onnx``, run through the build's input transformation)
is compared by its label, the levels below it layer by layer
(``skipped_levels``; a new level goes into ``LEVELS`` and ``level_runners``).

Convolutional networks: PyTorch and QONNX hold NCHW maps, the accelerator
streams NHWC; they are compared in the accelerator's order. In a
conv -> max-pool -> batch-norm -> sign block the activation PyTorch sees is
the accelerator's pool output (the build moved the pool past the thresholds),
and channels whose batch-norm scale is negative arrive negated (the build
absorbed that sign into the next layer's weights, flow.reorder): the ladder
negates those channels of the PyTorch/QONNX values before comparing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from flow.emulate import Emulator, wrap
from flow.errors import FlowError
from flow.files import writable_dir
from flow.inputs import input_transform, run_dataset
from flow.terminal import make_console

console = make_console()

# the ladder, top down; a level that cannot run on a run directory says why (skipped_levels)
LEVELS = ["pytorch", "qonnx", "streamlined", "hw_graph", "emulator"]
LADDER_ELEMENTS = 40_000_000  # outputs of the largest layer per chunk of images (CNV: ~90 images)
# the RTL level simulates (with random stalls) the first images that fit this many cycles of the cycle
# model's interval: every test image of the MLPs (LFC: 1000 x 512), CNV's first 47 (12,544 each)
LADDER_RTL_CYCLES = 600_000
LEVEL_TITLES = {
    "pytorch": "PyTorch (Brevitas)",
    "qonnx": "QONNX",
    "streamlined": "streamlined FINN",
    "hw_graph": "HW layers (FINN Python)",
    "emulator": "emulator (hw/)",
    "rtl": "RTL (Verilator)",
    "netlist": "netlist (Yosys, Verilator)",
}


@dataclass
class Boundaries:
    """The accelerator's layers, grouped by what every level can observe of them."""

    names: list[str]  # all HW layers, dataflow order
    activations: list[str]  # layers with a binary/threshold output, in order
    score: str | None  # the MVAU without activation (its input width: MW)
    score_width: int
    label: str | None
    tensors: dict[str, str] = field(default_factory=dict)  # layer -> output tensor name
    # per activation quantizer of the model (PyTorch/QONNX order): the HW layer that outputs the
    # same values, and the channels it carries negated (None: none)
    taps: list[tuple[str, np.ndarray | None]] = field(default_factory=list)


def boundaries_of(emulator: Emulator) -> Boundaries:
    activations, score, width, label = [], None, 0, None
    for layer in emulator.layers:
        if layer.kind == "thresholding" or (layer.kind == "mvau" and not layer.spec["no_activation"]):
            activations.append(layer.name)
        elif layer.kind == "mvau":
            score, width = layer.name, layer.spec["MW"]
        elif layer.kind == "labelselect":
            label = layer.name
    return Boundaries(
        [layer.name for layer in emulator.layers],
        activations,
        score,
        width,
        label,
        {layer.name: layer.spec["output_tensor"] for layer in emulator.layers},
    )


def popcount_from_dot(dot: np.ndarray, width: int, weight_scale: np.ndarray) -> np.ndarray | None:
    """Dot products of ``width`` +-``weight_scale`` weights with +-1 inputs -> XNOR popcounts.

    ``weight_scale``: the weight quantizer's scale (scalar or one per output;
    1 for plain sign, a power of two for the clip quantizers). None when the
    unscaled dot products are not integers.
    """
    dot = dot / np.asarray(weight_scale, dtype=np.float64).reshape(-1)
    if not np.all(dot == np.round(dot)):
        return None
    return ((np.round(dot).astype(np.int64) + width) // 2)


def stream_bits(values: np.ndarray, negated: np.ndarray | None) -> np.ndarray:
    """+-1 activations (N x C [x H x W]) -> the accelerator's bits, N x elements in its stream order."""
    if negated is not None:
        values = values * np.where(negated, -1, 1).reshape(1, -1, *([1] * (values.ndim - 2)))
    if values.ndim == 4:
        values = values.transpose(0, 2, 3, 1)  # NCHW -> the NHWC pixel stream
    return (values.reshape(len(values), -1) > 0).astype(np.int64)


def activation_taps(model, emulator: Emulator) -> list[tuple[str, np.ndarray | None]]:
    """For each activation quantizer of ``model`` (PyTorch), the HW layer holding the same values.

    The i-th quantizer follows the i-th MVAU with thresholds; when a max-pool
    sits between its convolution and its batch-norm, the accelerator's values
    are that MVAU's pool output, with the channels of negative batch-norm
    scale negated (see the module docstring).
    """
    from brevitas.nn import QuantIdentity
    from torch import nn

    layers_in_order = list(model.features)  # flow.models: every network is one nn.Sequential
    blocks = []  # per activation quantizer: (pooled before batch-norm?, negated channels)
    for i, module in enumerate(layers_in_order):
        if not isinstance(module, QuantIdentity):
            continue
        norm = layers_in_order[i - 1] if i >= 1 and isinstance(layers_in_order[i - 1], nn.BatchNorm2d | nn.BatchNorm1d) else None
        pooled = norm is not None and i >= 2 and isinstance(layers_in_order[i - 2], nn.MaxPool2d)
        negated = norm.weight.detach().numpy() < 0 if pooled else None
        blocks.append((pooled, negated if negated is not None and negated.any() else None))
    layers = emulator.layers
    thresholded = [j for j, layer in enumerate(layers) if layer.kind == "mvau" and not layer.spec["no_activation"]]
    thresholded += [j for j, layer in enumerate(layers) if layer.kind == "thresholding"]
    thresholded.sort()
    if len(thresholded) != len(blocks):
        raise FlowError(
            f"the model has {len(blocks)} activation quantizers, but the accelerator has "
            f"{len(thresholded)} threshold layers; cannot align the ladder"
        )
    taps = []
    for (pooled, negated), j in zip(blocks, thresholded):
        name = layers[j].name
        if pooled:
            pool = next((layer for layer in layers[j + 1 :] if layer.kind == "maxpool"), None)
            if pool is None:
                raise FlowError(f"layer '{name}': the model pools before its batch-norm, but no max-pool follows in the accelerator")
            name = pool.name
        taps.append((name, negated))
    return taps


# --------------------------------------------------------------------------- levels
# Each level is made once (its model loaded) and then called on chunks of images:
# images -> {HW layer name: N x elements integer array}.


def pytorch_level(run_dir: Path, b: Boundaries):
    import torch
    from brevitas.nn import QuantIdentity, QuantLinear

    from flow.export import load_trained_model

    model, _ = load_trained_model(run_dir / "checkpoint.pt")
    acts = [m for m in model.modules() if isinstance(m, QuantIdentity)]
    last_linear = [m for m in model.modules() if isinstance(m, QuantLinear)][-1]
    with torch.no_grad():
        weight_scale = last_linear.quant_weight().scale.detach().numpy()

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        captured: dict[int, np.ndarray] = {}
        hooks = [m.register_forward_hook(lambda _m, _i, out, i=i: captured.__setitem__(i, out.detach().numpy())) for i, m in enumerate(acts)]
        hooks.append(last_linear.register_forward_hook(lambda _m, _i, out: captured.__setitem__(len(acts), out.detach().numpy())))
        try:
            with torch.no_grad():
                logits = model(torch.from_numpy(images).float()).numpy()
        finally:
            for hook in hooks:
                hook.remove()
        out = {name: stream_bits(captured[i], negated) for i, (name, negated) in enumerate(b.taps)}
        if b.score is not None:
            score = popcount_from_dot(captured[len(acts)], b.score_width, weight_scale)
            if score is not None:
                out[b.score] = score
        if b.label is not None:
            out[b.label] = logits.argmax(axis=1)[:, None]
        return out

    return run


def qonnx_level(run_dir: Path, b: Boundaries):
    """model.onnx on the images through the build's input transformation. Without our
    checkpoint (no taps: a model trained elsewhere) only its label is compared."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.graphs import execute_batched

    model = ModelWrapper(str(run_dir / "model.onnx"))
    transform = input_transform(run_dir)
    out_name = model.graph.output[0].name
    if not b.taps:
        def run_label(images: np.ndarray) -> dict[str, np.ndarray]:
            logits = execute_batched(model, transform.apply(images), batch=len(images))
            return {b.label: logits.reshape(len(images), -1).argmax(axis=1)[:, None]} if b.label else {}

        return run_label
    quant_acts = [
        n.output[0] for n in model.graph.node if n.op_type == "BipolarQuant" and model.get_initializer(n.input[0]) is None
    ]
    if len(quant_acts) != len(b.taps):
        raise FlowError(
            f"{run_dir / 'model.onnx'}: {len(quant_acts)} BipolarQuant activations, but the checkpoint has "
            f"{len(b.taps)} activation quantizers; cannot align the ladder"
        )
    matmuls = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    weight_scale = 1.0
    if matmuls:
        quantizer = model.find_producer(matmuls[-1].input[1])
        if quantizer is not None and quantizer.op_type == "BipolarQuant":
            weight_scale = model.get_initializer(quantizer.input[1])
    matmuls = [n.output[0] for n in matmuls]

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        tensors = execute_batched(model, transform.apply(images), batch=len(images), keep=quant_acts + matmuls[-1:] + [out_name])
        out = {name: stream_bits(tensors[t], negated) for (name, negated), t in zip(b.taps, quant_acts)}
        if b.score is not None and matmuls:
            score = popcount_from_dot(tensors[matmuls[-1]].reshape(len(images), -1), b.score_width, weight_scale)
            if score is not None:
                out[b.score] = score
        if b.label is not None:
            out[b.label] = tensors[out_name].reshape(len(images), -1).argmax(axis=1)[:, None]
        return out

    return run


def finn_graph_level(path: Path, b: Boundaries):
    """The streamlined or HW-layer graph: the accelerator layers' output tensors, by name."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.graphs import execute_batched

    if not path.exists():
        raise FlowError(f"{path}: missing; run `make build`")
    model = ModelWrapper(str(path))
    present = {t for n in model.graph.node for t in n.output}
    names = {layer: tensor for layer, tensor in b.tensors.items() if tensor in present}

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        tensors = execute_batched(model, images, batch=len(images), keep=list(names.values()))
        out = {}
        for layer, tensor in names.items():
            values = tensors[tensor].reshape(len(images), -1)
            if model.get_tensor_datatype(tensor).name == "BIPOLAR":
                values = (values + 1) / 2  # the accelerator streams bipolar values as bits
            out[layer] = np.round(values).astype(np.int64)
        return out

    return run


# --------------------------------------------------------------------------- comparison


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], layers: list[str]) -> dict:
    """Per layer: compared?, images that differ, the first differing element."""
    result = {}
    for layer in layers:
        if layer not in reference or layer not in candidate:
            result[layer] = {"compared": False}
            continue
        a, b = reference[layer], candidate[layer]
        if a.shape != b.shape:
            result[layer] = {"compared": True, "mismatched_images": len(a), "first_difference": f"shape {a.shape} vs {b.shape}"}
            continue
        differs = a != b
        images = np.flatnonzero(differs.any(axis=1))
        entry = {"compared": True, "mismatched_images": int(len(images))}
        if len(images):
            image = int(images[0])
            element = int(np.flatnonzero(differs[image])[0])
            entry["first_difference"] = {
                "image": image,
                "element": element,
                "reference": int(a[image, element]),
                "value": int(b[image, element]),
            }
        result[layer] = entry
    return result


def ladder_worker_init() -> None:
    """Worker initializer: one BLAS / torch / numba thread per process (the processes share
    the cores), and the CLI's quiet library warnings (a spawned process starts without them)."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from flow.cli import quiet_library_warnings

    quiet_library_warnings()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    threadpool_limits(1)


def merge(total: dict, chunk: dict, first_image: int) -> None:
    """Add one chunk's per-layer comparison (images ``first_image``...) to the running one."""
    for layer, entry in chunk.items():
        if layer not in total:
            total[layer] = {"compared": entry["compared"]}
            if entry["compared"]:
                total[layer]["mismatched_images"] = 0
        if not entry["compared"]:
            continue
        total[layer]["mismatched_images"] += entry["mismatched_images"]
        difference = entry.get("first_difference")
        if difference is not None and "first_difference" not in total[layer]:
            total[layer]["first_difference"] = (
                {**difference, "image": difference["image"] + first_image} if isinstance(difference, dict) else difference
            )


def diagnose(emulator: Emulator, layer_name: str, difference: dict) -> str | None:
    """Name an accumulator overflow when the emulator's value is the reference wrapped into the hardware type."""
    layer = next(layer for layer in emulator.layers if layer.name == layer_name)
    accumulator = getattr(layer, "accumulator_dtype", None)
    if accumulator is None or not isinstance(difference, dict):
        return None
    if wrap(np.float64(difference["reference"]), accumulator) == difference["value"] != difference["reference"]:
        return (
            f"{difference['reference']} does not fit the {layer_name} accumulator ({accumulator.name}): "
            f"the hardware wraps it to {difference['value']}; the build must give that layer a wider accumulator"
        )
    return None


@dataclass
class LadderResult:
    """The ladder's comparisons over a range of images, for the levels that run (``levels``, top down)."""

    levels: list[str]
    layers: dict[str, dict] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)  # levels that output the label

    def __post_init__(self):
        self.layers = {level: {} for level in self.levels[1:]}
        self.correct = dict.fromkeys(self.levels, 0)

    def add(self, other: "LadderResult", first_image: int) -> None:
        for level in self.levels[1:]:
            merge(self.layers[level], other.layers[level], first_image)
        for level in self.levels:
            self.correct[level] += other.correct[level]
        self.labelled |= other.labelled


def skipped_levels(run_dir: Path) -> dict[str, str]:
    """The levels that cannot run on this run directory, and why."""
    skipped = {}
    if not (run_dir / "checkpoint.pt").exists():
        skipped["pytorch"] = "no checkpoint.pt (a model trained elsewhere): the ladder starts at its QONNX, model.onnx"
    return skipped


def ladder_setup(run_dir: Path, dataset: str | None = None):
    """(emulator, boundaries, dataset, test images, labels) of a built run."""
    from flow import data as datasets
    from flow.export import load_trained_model

    emulator = Emulator(run_dir / "hw")  # checks every sha256 before anything runs
    b = boundaries_of(emulator)
    if "pytorch" not in skipped_levels(run_dir):
        b.taps = activation_taps(load_trained_model(run_dir / "checkpoint.pt")[0], emulator)
    dataset = datasets.load(run_dataset(run_dir, dataset))
    return emulator, b, dataset, dataset.test_images, dataset.test_labels


def ladder_chunk_size(emulator: Emulator) -> int:
    """Images per chunk: the ladder holds every layer's output of a chunk at five levels."""
    largest = max(int(np.prod(layer.spec["output_shape"])) for layer in emulator.layers)
    return max(1, min(1000, LADDER_ELEMENTS // largest))


def level_runners(run_dir: Path, emulator: Emulator, b: Boundaries) -> dict:
    """Each level that runs on this run directory: images -> {HW layer name: values}, top down."""
    makers = {
        "pytorch": lambda: pytorch_level(run_dir, b),
        "qonnx": lambda: qonnx_level(run_dir, b),
        "streamlined": lambda: finn_graph_level(run_dir / "intermediate_models" / "step_streamline.onnx", b),
        "hw_graph": lambda: finn_graph_level(run_dir / "intermediate_models" / "step_convert_to_hw.onnx", b),
        "emulator": lambda: emulator.execute_layers,
    }
    skipped = skipped_levels(run_dir)
    return {level: makers[level]() for level in LEVELS if level not in skipped}


def run_ladder(run_dir: Path, start: int, stop: int, show_progress: bool = False, setup=None,
               dataset: str | None = None) -> LadderResult:
    """The levels on test images ``start`` .. ``stop`` - 1, compared chunk by chunk.

    Image indices in the result count from ``start``. In a worker process
    (``verify`` splits the test set over CPU cores) it loads everything itself;
    in-process, ``setup`` is what ``ladder_setup`` returned.
    """
    emulator, b, _, images, labels = setup or ladder_setup(run_dir, dataset)
    images, labels = images[start:stop], labels[start:stop]
    run_level = level_runners(run_dir, emulator, b)
    levels = list(run_level)
    chunk = ladder_chunk_size(emulator)
    result = LadderResult(levels)
    with Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not show_progress or os.environ.get("CI") == "true") as progress:
        task = progress.add_task("images", total=len(images))
        for first in range(0, len(images), chunk):
            part = images[first : first + chunk]
            outputs = {level: run_level[level](part) for level in levels}
            part_result = LadderResult(levels)
            for i, level in enumerate(levels):
                if b.label in outputs[level]:
                    part_result.labelled.add(level)
                    part_result.correct[level] = int((outputs[level][b.label][:, 0] == labels[first : first + chunk]).sum())
                if i > 0:
                    part_result.layers[level] = compare(outputs[levels[i - 1]], outputs[level], b.names)
            result.add(part_result, first)
            progress.advance(task, len(part))
    return result


def verify(run_dir: Path, num_images: int | None = None, jobs: int | None = None, dataset: str | None = None,
           netlist: bool = False, rtl: bool = True) -> dict:
    """Run the ladder on ``num_images`` test images (default: all); write and return the report.

    Test sets of several chunks are split over ``jobs`` worker processes
    (default: the CPU count, at most 4; each with one BLAS thread).
    ``netlist``: one more level after the RTL, its Yosys netlist (flow.netlist).
    ``rtl`` False: the RTL level is skipped (it compiles a Verilator model of the design first).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from flow.build import write_json
    from flow.rundir import require_complete_build

    if netlist and not rtl:
        raise FlowError("--netlist compares the netlist with the RTL level: leave out --no-rtl")
    require_complete_build(run_dir)
    writable_dir(run_dir / "report")  # before the ladder: its result must not be lost at the end
    setup = ladder_setup(run_dir, dataset)
    emulator, b, dataset, images, labels = setup
    skipped = skipped_levels(run_dir)
    for level, reason in skipped.items():
        console.print(f"[yellow]skipped[/] level {LEVEL_TITLES[level]}: {reason}")
    if num_images is not None:
        images, labels = images[:num_images], labels[:num_images]
    chunk = ladder_chunk_size(emulator)
    chunks = -(-len(images) // chunk)
    jobs = max(1, min(jobs or min(os.cpu_count() or 1, 4), chunks))
    if jobs == 1:
        result = run_ladder(run_dir, 0, len(images), show_progress=True, setup=setup)
    else:
        per_job = -(-chunks // jobs) * chunk
        bounds = [(start, min(start + per_job, len(images))) for start in range(0, len(images), per_job)]
        console.print(f"verify: {len(images)} images in {len(bounds)} worker processes")
        # spawn, not fork: the parent has started torch's and BLAS' thread pools
        with ProcessPoolExecutor(len(bounds), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=ladder_worker_init) as pool:
            futures = [pool.submit(run_ladder, run_dir, start, stop, dataset=dataset.name) for start, stop in bounds]
            result = LadderResult([level for level in LEVELS if level not in skipped])
            for (start, _), future in zip(bounds, futures):
                result.add(future.result(), start)
    layer_results, correct, labelled = result.layers, result.correct, result.labelled
    levels = []
    for i, level in enumerate(result.levels):
        entry = {"level": level, "title": LEVEL_TITLES[level]}
        if level in labelled:
            entry["accuracy"] = correct[level] / len(images)
        if i > 0:
            layers = layer_results[level]
            diverging = [name for name in b.names if layers[name].get("mismatched_images")]
            entry.update(
                compared_with=result.levels[i - 1],
                agrees=not diverging,
                layers=layers,
                first_diverging_layer=diverging[0] if diverging else None,
                first_difference=layers[diverging[0]]["first_difference"] if diverging else None,
            )
        if level == "emulator" and entry["first_diverging_layer"]:
            entry["diagnosis"] = diagnose(emulator, entry["first_diverging_layer"], entry["first_difference"])
        levels.append(entry)
    if rtl:
        levels.append(rtl_level(run_dir, images, b.names, emulator_accuracy=levels[-1]["accuracy"]))
    else:
        levels.append({"level": "rtl", "title": LEVEL_TITLES["rtl"], "skipped": "left out (--no-rtl)",
                       "layers": {name: {"compared": False} for name in b.names}})
    if netlist:
        levels.append(netlist_level(run_dir, images, b.names, levels[-1]))
    report = {
        "run_dir": str(run_dir),
        "dataset": dataset.name,
        "images": len(images),
        "layers": b.names,
        "levels": levels,
        "skipped_levels": skipped,
        "agree": all(level.get("agrees", True) for level in levels),
    }
    write_json(run_dir / "report" / "verification.json", report)
    print_report(report)
    return report


def rtl_level(run_dir: Path, images: np.ndarray, names: list[str], emulator_accuracy: float) -> dict:
    """The generated RTL in Verilator (flow.rtlsim) on the first images (as many as LADDER_RTL_CYCLES
    allows: a cycle-by-cycle simulation is far slower than the emulator), per layer against the emulator.

    A layer the RTL does not implement gets the level without comparisons and the reason."""
    from flow.emulate import Emulator
    from flow.rtl import UnsupportedLayer
    from flow.rtlsim import simulate

    entry = {"level": "rtl", "title": LEVEL_TITLES["rtl"], "compared_with": "emulator"}
    interval = Emulator(run_dir / "hw").cycles["initiation_interval_cycles"]
    simulated = images[: max(1, min(len(images), LADDER_RTL_CYCLES // interval))]
    try:
        report = simulate(run_dir, inputs=simulated, free_run=False)  # the comparison; `make rtlsim` times it
    except UnsupportedLayer as exc:
        return {**entry, "skipped": str(exc), "layers": {name: {"compared": False} for name in names}}
    layers = {name: report["layers"].get(name, {"compared": False}) for name in names}
    diverging = [name for name in names if layers[name].get("mismatched_images")]
    if report["bit_exact"] and len(simulated) == len(images):  # every output byte equals the emulator's: so do its predictions
        entry["accuracy"] = emulator_accuracy
    return {
        **entry,
        "images": len(simulated),
        "agrees": report["bit_exact"],
        "layers": layers,
        "first_diverging_layer": diverging[0] if diverging else None,
        "first_difference": layers[diverging[0]]["first_difference"] if diverging else None,
        "interval_cycles": report["interval_cycles"],
    }


def netlist_level(run_dir: Path, images: np.ndarray, names: list[str], rtl: dict) -> dict:
    """The RTL's Yosys netlist in Verilator (flow.netlist) on the images the RTL level ran, against the RTL at
    the top's ports: every transfer's cycle and the output bytes; the last layer's row counts the images that differ."""
    from flow.netlist import compare, describe

    entry = {"level": "netlist", "title": LEVEL_TITLES["netlist"], "compared_with": "rtl"}
    layers = {name: {"compared": False} for name in names}
    if "skipped" in rtl:
        return {**entry, "skipped": f"no RTL to synthesize ({rtl['skipped']})", "layers": layers}
    report = compare(run_dir, images=None, inputs=images[: rtl["images"]])
    difference = report["first_difference"]
    layers[names[-1]] = {"compared": True, "mismatched_images": report["mismatched_images"],
                         "first_difference": describe(difference) if difference else None}
    if report["equal"] and "accuracy" in rtl:
        entry["accuracy"] = rtl["accuracy"]
    return {
        **entry,
        "images": report["images"],
        "agrees": report["equal"],
        "layers": layers,
        "first_diverging_layer": names[-1] if not report["equal"] else None,
        "first_difference": describe(difference) if difference else None,
        "cycles_compared": report["cycles_compared"],
    }


def print_report(report: dict) -> None:
    table = Table(
        title=f"Verification ladder on {report['images']} {report['dataset']} test images",
        caption="each level compared with the one to its left",
    )
    table.add_column("layer", no_wrap=True)
    for level in report["levels"]:
        table.add_column(level["level"], justify="center", no_wrap=True)
    for name in report["layers"]:
        row = [name]
        for level in report["levels"]:
            if "layers" not in level:
                row.append("ref")
                continue
            entry = level["layers"][name]
            if not entry["compared"]:
                row.append("[dim]-[/]")
            elif entry["mismatched_images"]:
                row.append(f"[red]{entry['mismatched_images']} img differ[/]")
            else:
                row.append("[green]equal[/]")
        table.add_row(*row)
    table.add_section()
    table.add_row("accuracy", *[f"{100 * level['accuracy']:.2f}%" if "accuracy" in level else "-" for level in report["levels"]])
    console.print(table)
    for level in report["levels"]:
        if level.get("first_diverging_layer"):
            diff = level["first_difference"]
            console.print(
                f"[red]{level['title']} disagrees with {LEVEL_TITLES[level['compared_with']]}[/]: first at layer "
                f"{level['first_diverging_layer']}, image {diff['image']}, element {diff['element']}: "
                f"{diff['value']} instead of {diff['reference']}"
                if isinstance(diff, dict)
                else f"[red]{level['title']}[/]: layer {level['first_diverging_layer']}: {diff}"
            )
        if level.get("diagnosis"):
            console.print(f"  {level['diagnosis']}")
        if level.get("skipped"):
            console.print(f"[dim]{level['title']} skipped: {level['skipped']}[/]")
        elif level.get("images", report["images"]) < report["images"]:
            console.print(f"[dim]{level['title']}: the first {level['images']} of {report['images']} images "
                          f"({LADDER_RTL_CYCLES:,} cycles of the interval)[/]")
    console.print("[green]all levels agree[/]" if report["agree"] else "[red]the ladder disagrees[/]")
