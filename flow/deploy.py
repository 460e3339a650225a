"""Deployment package: everything the board (or the emulator) needs, in one folder.

``deploy(run_dir)`` writes ``RUN_DIR/deploy/`` and ``RUN_DIR/deploy.tar.gz``::

    deploy/
      check.py            the one command: accuracy + throughput, --backend pynq|emulator
      driver/             the PYNQ driver (flow/driver), with FINN's and qonnx' packing
                          code in driver/vendor/ for boards without FINN
      hw/                 the emulator's hardware artifacts (RUN_DIR/hw, own manifest)
      bitfile/            the bitstream + .hwh, when the vendor tools built one
      data/               the test set: images packed as the input DMA reads them, labels,
                          and the output expected of the accelerator for every image
      manifest.json       board, part, clock, folding, data types, I/O shapes and packing,
                          the QONNX model's accuracy on data/, versions, sha256 of every file

The expected outputs come from executing ``RUN_DIR/model.onnx`` (the QONNX
model as given to the build, before any FINN transformation) on the packaged
images through the build's input transformation (``build.json``), so the
check on the board compares the hardware with the trained model itself,
image by image.
The package is built in a temporary folder and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tarfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from flow.artifacts import DESCRIPTION, sha256_file
from flow.errors import FlowError

DRIVER_SOURCE = Path(__file__).resolve().parent / "driver"
CHECK_SCRIPT = "check.py"  # flow/driver/check.py, placed at the package root
TEST_IMAGES = "data/test_images_packed.npy"
TEST_LABELS = "data/test_labels.npy"
# per image, what the accelerator must output: the QONNX model's label (N x 1, int64)
EXPECTED_OUTPUTS = "data/expected_outputs.npy"
# FINN's own packing code, copied into the driver as FINN's make_driver does
# (module path inside the installed packages -> path under driver/vendor/)
VENDORED_MODULES = [
    ("finn", "util/data_packing.py"),
    ("qonnx", "core/datatype.py"),
    ("qonnx", "util/basic.py"),
]
VERSIONED_PACKAGES = ["bnn-flow", "finn-plus", "qonnx", "brevitas", "onnx", "numpy", "torch", "bitstring"]


def layer_data_types(accelerator: dict) -> dict[str, dict[str, str]]:
    """Per hardware layer (hw/accelerator.json): its FINN data types (input, weight, accumulator, ...)."""
    return {
        layer["name"]: {k.removesuffix("_dtype"): v for k, v in layer.items() if k.endswith("_dtype")}
        for layer in accelerator["layers"]
    }


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def copy_driver(target: Path) -> None:
    """flow/driver (without check.py) + FINN's packing modules under driver/vendor/."""
    import importlib

    shutil.copytree(
        DRIVER_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", CHECK_SCRIPT)
    )
    for package, module in VENDORED_MODULES:
        source_root = Path(importlib.import_module(package).__file__).parent
        destination = target / "vendor" / package / module
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root / module, destination)
        # empty package markers, so ``import finn.util.data_packing`` resolves to the copy
        for folder in (destination.parent, destination.parent.parent):
            (folder / "__init__.py").touch()


def write_package(run_dir: Path, target: Path, dataset: str) -> dict:
    """Fill ``target`` with the package for ``run_dir``; return its manifest."""
    from flow import data
    from flow.artifacts import images_in_stream_order
    from flow.boards import load_board
    from flow.driver.packing import IOShapes, pack_images
    from flow.inputs import input_transform, qonnx_predictions

    build = json.loads((run_dir / "build.json").read_text())
    board = load_board(build["board"])
    # what the emulator was built from: layers, data types, I/O packing (FINN's io_shape_dict)
    accelerator = json.loads((run_dir / "hw" / DESCRIPTION).read_text())
    io = accelerator["io_shape_dict"]

    test = data.load(dataset)
    (target / "data").mkdir(parents=True)
    try:
        packed = pack_images(images_in_stream_order(test.test_images, run_dir / "hw"), IOShapes.from_dict(io))
    except ValueError as exc:
        raise FlowError(f"{dataset} test images: {exc}") from None
    np.save(target / TEST_IMAGES, packed)
    np.save(target / TEST_LABELS, test.test_labels.astype(np.int64))
    # the reference: the user's QONNX model on the images the accelerator's input transformation gives it
    transform = input_transform(run_dir)
    expected = qonnx_predictions(run_dir / "model.onnx", test.test_images, transform)
    np.save(target / EXPECTED_OUTPUTS, expected.reshape(len(expected), 1))
    correct = int((expected == test.test_labels).sum())
    accuracy = correct / len(expected)

    shutil.copytree(run_dir / "hw", target / "hw")
    bitfile = None
    if (run_dir / "bitfile").is_dir():
        shutil.copytree(run_dir / "bitfile", target / "bitfile")
        bitfile = next((str(p.relative_to(target)) for p in sorted((target / "bitfile").glob("*.bit"))), None)
    copy_driver(target / "driver")
    shutil.copyfile(DRIVER_SOURCE / CHECK_SCRIPT, target / CHECK_SCRIPT)

    train_config = {}
    if (run_dir / "train_metrics.json").exists():
        train_config = json.loads((run_dir / "train_metrics.json").read_text())["config"]
    manifest = {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_dir": run_dir.name,
        "model": {k: train_config.get(k) for k in ("model", "dataset", "quant")},
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "pynq_platform": board.pynq_platform,
        "finn_board": board.finn_board,
        "dma_width_bits": board.dma_width_bits,
        "folding": json.loads((run_dir / "folding_config.json").read_text()),
        "data_types": layer_data_types(accelerator),
        "io_shape_dict": io,
        "estimated_throughput_fps": build.get("estimated_throughput_fps"),
        "estimated_latency_ns": build.get("estimated_latency_ns"),
        "bitfile": bitfile,
        "test_set": {"dataset": dataset, "images": TEST_IMAGES, "labels": TEST_LABELS, "count": len(test.test_labels)},
        "expected_outputs": EXPECTED_OUTPUTS,
        "input_transform": transform.to_dict(),
        "accuracy": accuracy,
        "correct": correct,
        "accuracy_source": f"model.onnx (QONNX) executed on the packaged test set as {transform.describe()}",
        "versions": package_versions(),
        "files": {
            str(p.relative_to(target)): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()
        },
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, default=list))
    return manifest


def deploy(run_dir: Path, dataset: str | None = None) -> dict:
    """Write ``RUN_DIR/deploy/`` and ``RUN_DIR/deploy.tar.gz``; return the manifest."""
    run_dir = Path(run_dir)
    for required in ("build.json", "model.onnx", "folding_config.json", "hw/manifest.json"):
        if not (run_dir / required).exists():
            raise FlowError(f"{run_dir / required}: missing; run `python -m flow build` on this run directory first")
    from flow.emulate import Emulator
    from flow.inputs import build_record, check_input_contract, input_transform, run_dataset

    Emulator(run_dir / "hw")  # refuses hardware artifacts changed since the build
    dataset = run_dataset(run_dir, dataset)
    if dataset != build_record(run_dir).get("dataset"):  # the build did not check the input convention on it
        check_input_contract(run_dir, input_transform(run_dir), dataset)

    staging = run_dir / f".deploy.tmp-{os.getpid()}"
    archive = run_dir / f".deploy.tar.gz.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        manifest = write_package(run_dir, staging / "deploy", dataset)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging / "deploy", arcname="deploy")
        final, previous = run_dir / "deploy", staging / "previous"
        if final.exists():
            final.rename(previous)
        (staging / "deploy").rename(final)
        os.replace(archive, run_dir / "deploy.tar.gz")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return manifest


def deploy_built_run(run_dir: Path) -> dict | None:
    """The build's last act: package the run, unless its test set is unknown
    (a model trained elsewhere, built without ``--dataset``)."""
    from rich.console import Console

    from flow.inputs import build_record

    console = Console()
    if build_record(run_dir).get("dataset") is None:
        console.print(
            "[yellow]skipped[/] deploy: the test set is unknown (no train_metrics.json, no --dataset); "
            "package with `python -m flow deploy RUN_DIR --dataset NAME`"
        )
        return None
    console.print("[bold]deploy[/]")
    manifest = deploy(run_dir)
    console.print(f"wrote {Path(run_dir) / 'deploy'} and deploy.tar.gz (QONNX accuracy {manifest['accuracy']:.2%})")
    return manifest
