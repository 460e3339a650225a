"""The accelerator's input contract, as ``build`` recorded it in ``RUN_DIR/build.json``.

The accelerator reads integer pixels. ``RUN_DIR/model.onnx`` is the user's
QONNX model exactly as given to ``build``; ``build.json`` records the input
transformation the build put in front of it (``--input-scale``: a Mul by
1/scale, FINN's ToTensor; ``--input-datatype``: only the annotation) and the
test set, when one is known. Every later stage that runs ``model.onnx`` as the
reference (verify, deploy, emulate's spot check) feeds it the images through
the same transformation, and every stage that needs a test set reads it here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flow.errors import FlowError

CONTRACT_IMAGES = 300  # test images the build checks the input convention on
# a convention is refused when the other one predicts this many more test images right
CONVENTION_MARGIN = 0.2


@dataclass(frozen=True)
class InputTransform:
    """What the build prepended to ``model.onnx``: the model sees ``pixels / scale``."""

    datatype: str  # the integer type the accelerator reads, e.g. UINT8
    scale: float | None = None  # None: the model reads the pixels themselves

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Pixels -> what ``model.onnx`` reads: the prepended Mul, in float32 as the graph computes it."""
        values = images.astype(np.float32)
        return values if self.scale is None else values * np.float32(1.0 / self.scale)

    def describe(self) -> str:
        return f"pixels / {self.scale:g}" if self.scale is not None else "raw pixels (0..255)"

    def to_dict(self) -> dict:
        return asdict(self)


def build_record(run_dir: Path) -> dict:
    path = Path(run_dir) / "build.json"
    if not path.exists():
        raise FlowError(f"{path}: missing; run `python -m flow build` on this run directory first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise FlowError(f"{path}: not a build record (invalid JSON); rebuild") from None


def recorded_transform(record: dict) -> InputTransform:
    """The transformation a build record (build.json) names (runs built before it was recorded: none, UINT8)."""
    return InputTransform(**(record.get("input_transform") or {"datatype": "UINT8"}))


def input_transform(run_dir: Path) -> InputTransform:
    """The transformation recorded by the build in RUN_DIR/build.json."""
    return recorded_transform(build_record(run_dir))


def trained_dataset(run_dir: Path) -> str | None:
    """The dataset the model was trained on here (train_metrics.json), None for a model trained elsewhere."""
    metrics = Path(run_dir) / "train_metrics.json"
    if not metrics.exists():
        return None
    return json.loads(metrics.read_text())["config"]["dataset"]


def packaged_dataset(run_dir: Path) -> str | None:
    """The test set ``deploy --dataset`` packaged (RUN_DIR/deploy/manifest.json)."""
    manifest = Path(run_dir) / "deploy" / "manifest.json"
    try:
        return json.loads(manifest.read_text())["test_set"]["dataset"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def run_dataset(run_dir: Path, dataset: str | None = None) -> str:
    """The test set of a run: ``dataset`` if given, else the build's record, the package's, the training's."""
    run_dir = Path(run_dir)
    recorded = None
    if (run_dir / "build.json").exists():
        recorded = build_record(run_dir).get("dataset")
    name = dataset or recorded or packaged_dataset(run_dir) or trained_dataset(run_dir)
    if name is None:
        raise FlowError(
            f"{run_dir}: no test set known (the model was not trained here and was built without --dataset); "
            "pass --dataset NAME (e.g. mnist5k)"
        )
    return name


def qonnx_predictions(model_path: Path, images: np.ndarray, transform: InputTransform) -> np.ndarray:
    """Class indices of ``model.onnx`` executed on ``images`` through the build's input transformation."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.graphs import execute_batched, predictions

    model = ModelWrapper(str(model_path))
    if transform.scale is not None:  # the model reads the scaled pixels, whatever its input's annotation
        model.set_tensor_datatype(model.graph.input[0].name, DataType["FLOAT32"])
    return predictions(execute_batched(model, transform.apply(images)))


def check_input_contract(run_dir: Path, transform: InputTransform, dataset: str) -> None:
    """The built accelerator computes what ``model.onnx`` computes on the images the user means.

    On ``CONTRACT_IMAGES`` test images: the emulator (the built accelerator)
    must predict exactly what ``model.onnx`` predicts through the build's
    transformation; and that convention must not be clearly worse than the
    other one (pixels / 255 instead of raw pixels, or the reverse): a model
    that predicts at chance on raw pixels and well on pixels / 255 expects
    the scaling.
    """
    from qonnx.core.modelwrapper import ModelWrapper

    from flow import data
    from flow.emulate import Emulator

    test = data.load(dataset)
    images, labels = test.test_images[:CONTRACT_IMAGES], test.test_labels[:CONTRACT_IMAGES]
    model_path = Path(run_dir) / "model.onnx"
    user_model = ModelWrapper(str(model_path))
    declared = user_model.get_tensor_datatype(user_model.graph.input[0].name).name  # as in the user's file
    expected = qonnx_predictions(model_path, images, transform)
    built = Emulator(Path(run_dir) / "hw").execute(images)[:, 0]
    other = InputTransform(transform.datatype, None if transform.scale is not None else 255.0)
    if transform.scale is not None:
        option = "--input-datatype UINT8 instead of --input-scale" if declared == "FLOAT32" else "without --input-scale"
    else:
        option = "--input-scale 255"
    other_accuracy = float((qonnx_predictions(model_path, images, other) == labels).mean())
    differing = int((built != expected).sum())
    if differing:
        raise FlowError(
            f"{model_path}: the built accelerator predicts differently from the model on {differing} of {len(images)} "
            f"{dataset} test images fed as {transform.describe()} (the model's input is annotated {declared}); "
            f"on {other.describe()} the model predicts {other_accuracy:.0%} right: if it expects that, build with {option}"
        )
    accuracy = float((expected == labels).mean())
    if other_accuracy >= accuracy + CONVENTION_MARGIN:
        raise FlowError(
            f"{model_path}: the model predicts {accuracy:.0%} of {len(images)} {dataset} test images right on "
            f"{transform.describe()} but {other_accuracy:.0%} on {other.describe()}: it expects {other.describe()}; "
            f"build with {option}"
        )
