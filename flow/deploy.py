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
The package is part of the build: the old one is removed first, the new one
is built in a temporary folder and renamed into place, and ``build.json`` is
written after it (flow.rundir).
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


def write_package(run_dir: Path, target: Path, summary: dict, dataset: str, test) -> dict:
    """Fill ``target`` with the package of the build ``summary`` (build.json) in ``run_dir``,
    with the test set of ``test`` (flow.data.load(dataset)); return its manifest."""
    from flow.artifacts import images_in_stream_order
    from flow.driver.packing import IOShapes, pack_images
    from flow.inputs import qonnx_predictions, recorded_transform
    from flow.rundir import run_board

    board = run_board(run_dir)  # the build's own board description, not a stock board of that name
    # what the emulator was built from: layers, data types, I/O packing (FINN's io_shape_dict)
    accelerator = json.loads((run_dir / "hw" / DESCRIPTION).read_text())
    io = accelerator["io_shape_dict"]

    (target / "data").mkdir(parents=True)
    try:
        packed = pack_images(images_in_stream_order(test.test_images, run_dir / "hw"), IOShapes.from_dict(io))
    except ValueError as exc:
        raise FlowError(f"{dataset} test images: {exc}") from None
    np.save(target / TEST_IMAGES, packed)
    np.save(target / TEST_LABELS, test.test_labels.astype(np.int64))
    # the reference: the user's QONNX model on the images the accelerator's input transformation gives it
    transform = recorded_transform(summary)
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
        "build_inputs": summary["inputs"],
        "board": board.name,
        "part": board.part,
        "clock_mhz": board.clock_mhz,
        "pynq_platform": board.pynq_platform,
        "finn_board": board.finn_board,
        "dma_width_bits": board.dma_width_bits,
        "folding": json.loads((run_dir / "folding_config.json").read_text()),
        "data_types": layer_data_types(accelerator),
        "io_shape_dict": io,
        "estimated_throughput_fps": summary.get("estimated_throughput_fps"),
        "estimated_latency_ns": summary.get("estimated_latency_ns"),
        "bitfile": bitfile,
        "test_set": {"dataset": dataset, "images": TEST_IMAGES, "labels": TEST_LABELS, "count": len(test.test_labels)},
        "expected_outputs": EXPECTED_OUTPUTS,
        "input_transform": transform.to_dict(),
        "accuracy": accuracy,
        "correct": correct,
        "accuracy_source": f"model.onnx (QONNX) executed on the packaged test set as {transform.describe()}",
        "versions": package_versions(),
        "files": {
            p.relative_to(target).as_posix(): sha256_file(p) for p in sorted(target.rglob("*")) if p.is_file()
        },
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, default=list))
    return manifest


def write_deployment(run_dir: Path, summary: dict, dataset: str, test) -> dict:
    """RUN_DIR/deploy/ + deploy.tar.gz of the build ``summary``; the old package is removed first.

    The package is staged in ``.deploy.tmp-*`` and renamed into place; an
    interrupted write leaves no package (and, since build.json is written after
    it, no complete build); its leftovers go on the next build or deploy.
    """
    from flow.rundir import PACKAGE_ARCHIVE, PACKAGE_DIR, remove_leftovers, remove_package

    remove_package(run_dir)
    remove_leftovers(run_dir)
    staging = run_dir / f".deploy.tmp-{os.getpid()}"
    archive = run_dir / f".deploy.tar.gz.tmp-{os.getpid()}"
    try:
        manifest = write_package(run_dir, staging / PACKAGE_DIR, summary, dataset, test)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(staging / PACKAGE_DIR, arcname=PACKAGE_DIR)
        (staging / PACKAGE_DIR).rename(run_dir / PACKAGE_DIR)
        os.replace(archive, run_dir / PACKAGE_ARCHIVE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
    return manifest


def deploy(run_dir: Path, dataset: str | None = None) -> dict:
    """``flow deploy``: package a complete build again (e.g. with another test set).

    The package is part of the build: build.json is removed while it is
    rewritten and written again after it, so an interrupted deploy leaves an
    incomplete build, never a package of one design beside build.json of another.
    """
    from flow import data
    from flow.emulate import Emulator
    from flow.files import write_json
    from flow.inputs import check_input_contract, recorded_transform, run_dataset
    from flow.rundir import BUILD_MARKER, DEPLOY_STEP, require_complete_build

    run_dir = Path(run_dir)
    summary = require_complete_build(run_dir)
    dataset = run_dataset(run_dir, dataset)
    test = data.load(dataset)
    Emulator(run_dir / "hw")  # refuses hardware artifacts changed since the build
    if dataset != summary.get("dataset"):  # the build did not check the input convention on it
        check_input_contract(run_dir, recorded_transform(summary), dataset)
    (run_dir / BUILD_MARKER).unlink()
    manifest = write_deployment(run_dir, summary, dataset, test)
    summary["steps_completed"] = [s for s in summary["steps_completed"] if s != DEPLOY_STEP] + [DEPLOY_STEP]
    write_json(run_dir / BUILD_MARKER, summary)
    return manifest


def deploy_built_run(run_dir: Path, summary: dict) -> dict | None:
    """The build's last step before build.json: package the run, unless its test set
    is unknown (a model trained elsewhere, built without ``--dataset``)."""
    from flow import data
    from flow.terminal import make_console

    console = make_console()
    dataset = summary.get("dataset")
    if dataset is None:
        console.print(
            "[yellow]skipped[/] deploy: the test set is unknown (no train_metrics.json, no --dataset); "
            "package with `python -m flow deploy RUN_DIR --dataset NAME`"
        )
        return None
    console.print("[bold]deploy[/]")
    start = time.time()
    manifest = write_deployment(Path(run_dir), summary, dataset, data.load(dataset))
    console.print(f"wrote {Path(run_dir) / 'deploy'} and deploy.tar.gz (QONNX accuracy {manifest['accuracy']:.2%})")
    console.print(f"  deploy took {time.time() - start:.1f} s")
    return manifest
