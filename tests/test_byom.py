"""Bring your own model: Brevitas' bnn_pynq networks, trained elsewhere, from QONNX to a checked package.

The models come from ``brevitas_examples.bnn_pynq``'s model factory, briefly
trained on pixels / 255 and exported as bnn_pynq's trainer exports them
(examples/bnn_pynq.py, the README walkthrough's own script). TFC-1W1A runs in
``make test``; all eight configurations run behind ``make test-slow``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_flow

EXPORT_SCRIPT = REPO / "examples" / "bnn_pynq.py"
# fast builds: a throughput target folds once instead of searching for the fastest folding that fits
QUICK_FOLDING = ("--target-fps", "100000")


def export_bnn_pynq(network: str, out: Path, dataset: str, steps: int, batch: int = 100) -> Path:
    """The README's export command: a bnn_pynq model, briefly trained, exported with export_qonnx."""
    result = subprocess.run(
        [sys.executable, str(EXPORT_SCRIPT), network, "--dataset", dataset, "--steps", str(steps),
         "--batch", str(batch), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a refused command (and no traceback)."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def check_package(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "check.py", "--backend", "emulator"],
        cwd=run_dir / "deploy", capture_output=True, text=True, timeout=600,
    )


def with_input_division(source: Path, target: Path, annotation: str) -> Path:
    """The model with a Div by 255 at its input (it scales the pixels itself), input annotated ``annotation``."""
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(source))
    name = model.graph.input[0].name
    for consumer in model.find_consumers(name):
        consumer.input[list(consumer.input).index(name)] = name + "_divided"
    model.set_initializer("pixel_range", np.asarray(255.0, dtype=np.float32))
    model.graph.node.insert(0, helper.make_node("Div", [name, "pixel_range"], [name + "_divided"]))
    model.set_tensor_datatype(name, DataType[annotation])
    model.save(str(target))
    return target


@pytest.fixture(scope="module")
def tfc_1w1a(tmp_path_factory) -> Path:
    """bnn_pynq TFC-1W1A, 60 Adam steps on mnist5k (pixels / 255), exported with export_qonnx."""
    return export_bnn_pynq("tfc_1w1a", tmp_path_factory.mktemp("byom") / "tfc_1w1a.onnx", "mnist5k", steps=60)


@pytest.fixture(scope="module")
def tfc_run(tfc_1w1a, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README walkthrough's build: --input-scale 255 --dataset mnist5k."""
    run_dir = tmp_path_factory.mktemp("byom") / "tfc"
    build = run_flow("build", tfc_1w1a, "--out", run_dir, "--input-scale", "255", "--dataset", "mnist5k", *QUICK_FOLDING)
    return run_dir, build


def test_build_keeps_the_model_and_records_its_input_transformation(tfc_1w1a, tfc_run):
    run_dir, build = tfc_run
    assert (run_dir / "model.onnx").read_bytes() == tfc_1w1a.read_bytes()
    record = json.loads((run_dir / "build.json").read_text())
    assert record["input_transform"] == {"datatype": "UINT8", "scale": 255.0}
    assert record["dataset"] == "mnist5k"
    # the build table's resource columns, budget row included (85 % of the PYNQ-Z2's 220 DSPs, 106,400 FF)
    header = next(line for line in build.stdout.splitlines() if "layer" in line and "LUT" in line)
    assert "DSP" in header and "FF" in header
    budget = next(line for line in build.stdout.splitlines() if line.lstrip("│┃ ").startswith("budget"))
    assert "187" in budget and "90,440" in budget


def test_verify_runs_the_ladder_from_qonnx_without_a_checkpoint(tfc_run):
    run_dir, _ = tfc_run
    result = run_flow("verify", run_dir)
    assert "skipped level PyTorch (Brevitas): no checkpoint.pt" in result.stdout
    report = json.loads((run_dir / "report" / "verification.json").read_text())
    assert [level["level"] for level in report["levels"]] == ["qonnx", "streamlined", "hw_graph", "emulator", "rtl"]
    assert report["agree"] and report["images"] == 1000
    # the RTL level simulates the first images that fit flow.verify.LADDER_RTL_CYCLES: its accuracy
    # only when that is all of them
    rtl = report["levels"][-1]
    assert rtl["agrees"] and rtl["images"] >= 100 and ("accuracy" in rtl) == (rtl["images"] == 1000)
    accuracies = {level["accuracy"] for level in report["levels"] if "accuracy" in level}
    assert len(accuracies) == 1 and accuracies.pop() > 0.5  # trained, and every level the same


def test_emulate_and_the_package_check_use_the_recorded_dataset_and_scaling(tfc_run):
    run_dir, _ = tfc_run
    result = run_flow("emulate", run_dir)
    assert "1000 mnist5k test images" in result.stdout and "bit-exact" in result.stdout
    result = check_package(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every image's output equals the QONNX model's (1000/1000)" in result.stdout


def test_flipped_weight_bit_with_the_manifest_rehashed_is_not_bit_exact(tfc_run, tmp_path):
    from flow.artifacts import sha256_file

    run_dir = shutil.copytree(tfc_run[0], tmp_path / "run")
    hw = run_dir / "hw"
    manifest = json.loads((hw / "manifest.json").read_text())
    weights = hw / json.loads((hw / "accelerator.json").read_text())["layers"][2]["files"]["weights"]  # MVAU_hls_1
    memory = np.load(weights)
    memory[0, 0, 0] ^= 1
    np.save(weights, memory)
    manifest["files"][weights.name] = sha256_file(weights)
    (hw / "manifest.json").write_text(json.dumps(manifest))
    result = run_flow("emulate", run_dir, check=False)
    assert result.returncode == 1
    assert "NOT bit-exact with FINN's HW-layer graph: MVAU_hls_1 differs on" in result.stdout


def test_readme_sequence_build_then_deploy_with_a_dataset(tfc_1w1a, tmp_path):
    """`flow build X.onnx --out DIR`, then `flow deploy DIR --dataset NAME`; later stages reuse that dataset."""
    run_dir = tmp_path / "run"
    build = run_flow("build", tfc_1w1a, "--out", run_dir, "--input-scale", "255", *QUICK_FOLDING)
    assert "skipped deploy: the test set is unknown" in build.stdout
    assert "no test set known" in error_line(run_flow("emulate", run_dir, check=False))
    assert "pass --dataset NAME" in error_line(run_flow("verify", run_dir, check=False))
    run_flow("deploy", run_dir, "--dataset", "mnist5k")
    assert "1000 mnist5k test images" in run_flow("emulate", run_dir).stdout
    assert check_package(run_dir).returncode == 0


def test_float_input_without_an_input_option_names_both_conventions(tfc_1w1a, tmp_path):
    line = error_line(run_flow("build", tfc_1w1a, "--out", tmp_path / "run", check=False))
    assert "is FLOAT32" in line and "--input-scale 255" in line and "--input-datatype UINT8" in line


def test_model_that_scales_itself_refuses_a_second_scaling(tfc_1w1a, tmp_path):
    """Divides by 255 inside, FLOAT input, built with --input-scale 255: refused with the option that fits."""
    model = with_input_division(tfc_1w1a, tmp_path / "divides.onnx", "FLOAT32")
    run_dir = tmp_path / "run"
    line = error_line(run_flow("build", model, "--out", run_dir, "--input-scale", "255", "--dataset", "mnist5k",
                               *QUICK_FOLDING, check=False))
    assert "it expects raw pixels (0..255); build with --input-datatype UINT8 instead of --input-scale" in line
    assert not (run_dir / "build.json").exists()


@pytest.mark.slow
def test_model_that_scales_itself_builds_with_the_advised_option(tfc_1w1a, tmp_path):
    model = with_input_division(tfc_1w1a, tmp_path / "divides.onnx", "FLOAT32")
    run_dir = tmp_path / "run"
    build = run_flow("build", model, "--out", run_dir, "--input-datatype", "UINT8", "--dataset", "mnist5k", *QUICK_FOLDING)
    assert json.loads((run_dir / "build.json").read_text())["input_transform"] == {"datatype": "UINT8", "scale": None}
    assert "deploy" in build.stdout and check_package(run_dir).returncode == 0


@pytest.mark.slow
def test_uint8_input_that_divides_inside_builds_exactly(tfc_1w1a, tmp_path):
    model = with_input_division(tfc_1w1a, tmp_path / "divides.onnx", "UINT8")
    run_dir = tmp_path / "run"
    run_flow("build", model, "--out", run_dir, "--dataset", "mnist5k", *QUICK_FOLDING)
    run_flow("verify", run_dir, "--images", "300")
    assert json.loads((run_dir / "report" / "verification.json").read_text())["agree"]


def test_binary_input_refuses_pixels_in_the_driver_and_the_emulator(tfc_run):
    from flow.driver.packing import IOShapes, pack_images
    from flow.emulate import Emulator
    from flow.errors import FlowError

    run_dir, _ = tfc_run
    io = json.loads((run_dir / "hw" / "accelerator.json").read_text())["io_shape_dict"]
    binary = IOShapes.from_dict({**io, "idt": ["BINARY"]})
    pixels = np.full((2, 784), 200, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"input values span 200..200, the accelerator's input is BINARY"):
        pack_images(pixels, binary)
    emulator = Emulator(run_dir / "hw")
    with pytest.raises(FlowError, match="outside UINT8"):
        emulator.execute(np.full((2, 784), 256, dtype=np.int16))
    emulator.idt = binary.input.dtype  # the same check, for a BINARY-input accelerator
    with pytest.raises(FlowError, match="outside BINARY"):
        emulator.execute(pixels)


BNN_PYNQ = [
    # network, dataset, Adam steps, batch
    ("tfc_1w1a", "mnist5k", 150, 100),
    ("tfc_1w2a", "mnist5k", 150, 100),
    ("tfc_2w2a", "mnist5k", 150, 100),
    ("sfc_1w1a", "mnist5k", 150, 100),
    ("lfc_1w1a", "mnist5k", 100, 100),
    ("cnv_1w1a", "fashion-mnist32-rgb:1000:100", 20, 20),
    ("cnv_1w2a", "fashion-mnist32-rgb:1000:100", 20, 20),
    ("cnv_2w2a", "fashion-mnist32-rgb:1000:100", 20, 20),
]


@pytest.mark.slow
@pytest.mark.parametrize("network,dataset,steps,batch", BNN_PYNQ, ids=[c[0] for c in BNN_PYNQ])
def test_bnn_pynq_end_to_end(network, dataset, steps, batch, tmp_path):
    """build -> verify (every level exact) -> emulate -> the package's check, and C-sim on a few images."""
    model = export_bnn_pynq(network, tmp_path / f"{network}.onnx", dataset, steps, batch)
    run_dir = tmp_path / "run"
    run_flow("build", model, "--out", run_dir, "--input-scale", "255", "--dataset", dataset, timeout=3600)
    run_flow("verify", run_dir, timeout=3600)
    assert json.loads((run_dir / "report" / "verification.json").read_text())["agree"]
    assert "bit-exact" in run_flow("emulate", run_dir, timeout=3600).stdout
    result = check_package(run_dir)
    assert result.returncode == 0 and "OK: every image's output equals" in result.stdout, result.stdout
    run_flow("csim", run_dir, "--images", "5", timeout=3600)
