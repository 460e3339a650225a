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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from flow.emulate import Emulator, run_dataset, wrap
from flow.errors import FlowError

console = Console()

LEVELS = ["pytorch", "qonnx", "streamlined", "hw_graph", "emulator"]
LEVEL_TITLES = {
    "pytorch": "PyTorch (Brevitas)",
    "qonnx": "QONNX",
    "streamlined": "streamlined FINN",
    "hw_graph": "HW layers (FINN Python)",
    "emulator": "emulator (hw/)",
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


def popcount_from_dot(dot: np.ndarray, width: int) -> np.ndarray | None:
    """+-1 dot products of ``width`` terms -> XNOR popcounts, if they are integers."""
    if not np.all(dot == np.round(dot)):
        return None
    return ((np.round(dot).astype(np.int64) + width) // 2)


def stack_contexts(contexts: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([c[name] for c in contexts]).reshape(sum(len(c[name]) for c in contexts), -1) for name in names}


# --------------------------------------------------------------------------- levels


def pytorch_level(run_dir: Path, images: np.ndarray, b: Boundaries) -> dict[str, np.ndarray]:
    import torch
    from brevitas.nn import QuantIdentity, QuantLinear

    from flow.export import load_trained_model

    model, _ = load_trained_model(run_dir / "checkpoint.pt")
    acts = [m for m in model.modules() if isinstance(m, QuantIdentity)]
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if len(acts) != len(b.activations):
        raise FlowError(
            f"{run_dir / 'checkpoint.pt'}: {len(acts)} activation quantizers, but the accelerator has "
            f"{len(b.activations)} threshold layers; cannot align the ladder"
        )
    captured: dict[int, list] = {i: [] for i in range(len(acts) + 1)}
    hooks = [m.register_forward_hook(lambda _m, _i, out, i=i: captured[i].append(out.detach().numpy())) for i, m in enumerate(acts)]
    hooks.append(linears[-1].register_forward_hook(lambda _m, _i, out: captured[len(acts)].append(out.detach().numpy())))
    logits = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), 1000):
                logits.append(model(torch.from_numpy(images[start : start + 1000]).float()).numpy())
    finally:
        for hook in hooks:
            hook.remove()
    out = {name: (np.concatenate(captured[i]) > 0).astype(np.int64) for i, name in enumerate(b.activations)}
    if b.score is not None:
        score = popcount_from_dot(np.concatenate(captured[len(acts)]), b.score_width)
        if score is not None:
            out[b.score] = score
    if b.label is not None:
        out[b.label] = np.concatenate(logits).argmax(axis=1)[:, None]
    return out


def qonnx_level(run_dir: Path, images: np.ndarray, b: Boundaries) -> dict[str, np.ndarray]:
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.graphs import execute_batched

    model = ModelWrapper(str(run_dir / "model.onnx"))
    quant_acts = [
        n.output[0] for n in model.graph.node if n.op_type == "BipolarQuant" and model.get_initializer(n.input[0]) is None
    ]
    if len(quant_acts) != len(b.activations):
        raise FlowError(
            f"{run_dir / 'model.onnx'}: {len(quant_acts)} BipolarQuant activations, but the accelerator has "
            f"{len(b.activations)} threshold layers; cannot align the ladder"
        )
    matmuls = [n.output[0] for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
    out_name = model.graph.output[0].name
    contexts = execute_batched(model, images, return_context=True)
    tensors = stack_contexts(contexts, quant_acts + matmuls[-1:] + [out_name])
    out = {name: (tensors[t] > 0).astype(np.int64) for name, t in zip(b.activations, quant_acts)}
    if b.score is not None and matmuls:
        score = popcount_from_dot(tensors[matmuls[-1]], b.score_width)
        if score is not None:
            out[b.score] = score
    if b.label is not None:
        out[b.label] = tensors[out_name].argmax(axis=1)[:, None]
    return out


def finn_graph_level(path: Path, images: np.ndarray, b: Boundaries) -> dict[str, np.ndarray]:
    """The streamlined or HW-layer graph: the accelerator layers' output tensors, by name."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.graphs import execute_batched

    if not path.exists():
        raise FlowError(f"{path}: missing; run `make build`")
    model = ModelWrapper(str(path))
    present = {t for n in model.graph.node for t in n.output}
    names = {layer: tensor for layer, tensor in b.tensors.items() if tensor in present}
    contexts = execute_batched(model, images, return_context=True)
    tensors = stack_contexts(contexts, list(names.values()))
    out = {}
    for layer, tensor in names.items():
        values = tensors[tensor]
        if model.get_tensor_datatype(tensor).name == "BIPOLAR":
            values = (values + 1) / 2  # the accelerator streams bipolar values as bits
        out[layer] = np.round(values).astype(np.int64)
    return out


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


def verify(run_dir: Path, num_images: int | None = None) -> dict:
    """Run the ladder on ``num_images`` test images (default: all); write and return the report."""
    from flow import data as datasets
    from flow.build import write_json

    emulator = Emulator(run_dir / "hw")  # checks every sha256 before anything runs
    b = boundaries_of(emulator)
    dataset = datasets.load(run_dataset(run_dir))
    images, labels = dataset.test_images, dataset.test_labels
    if num_images is not None:
        images, labels = images[:num_images], labels[:num_images]
    outputs = {
        "pytorch": pytorch_level(run_dir, images, b),
        "qonnx": qonnx_level(run_dir, images, b),
        "streamlined": finn_graph_level(run_dir / "intermediate_models" / "step_streamline.onnx", images, b),
        "hw_graph": finn_graph_level(run_dir / "intermediate_models" / "step_convert_to_hw.onnx", images, b),
        "emulator": emulator.execute_layers(images),
    }
    levels = []
    for i, level in enumerate(LEVELS):
        entry = {"level": level, "title": LEVEL_TITLES[level]}
        if b.label in outputs[level]:
            entry["accuracy"] = float((outputs[level][b.label][:, 0] == labels).mean())
        if i > 0:
            layers = compare(outputs[LEVELS[i - 1]], outputs[level], b.names)
            diverging = [name for name in b.names if layers[name].get("mismatched_images")]
            entry.update(
                compared_with=LEVELS[i - 1],
                agrees=not diverging,
                layers=layers,
                first_diverging_layer=diverging[0] if diverging else None,
                first_difference=layers[diverging[0]]["first_difference"] if diverging else None,
            )
        if level == "emulator" and entry["first_diverging_layer"]:
            entry["diagnosis"] = diagnose(emulator, entry["first_diverging_layer"], entry["first_difference"])
        levels.append(entry)
    report = {
        "run_dir": str(run_dir),
        "dataset": dataset.name,
        "images": len(images),
        "layers": b.names,
        "levels": levels,
        "agree": all(level.get("agrees", True) for level in levels),
    }
    write_json(run_dir / "report" / "verification.json", report)
    print_report(report)
    return report


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
    console.print("[green]all levels agree[/]" if report["agree"] else "[red]the ladder disagrees[/]")
