"""The verification ladder and the emulate command on a built TFC run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flow.artifacts import sha256_file
from tests.conftest import run_flow

RUN_FILES = ["checkpoint.pt", "train_metrics.json", "model.onnx", "board.toml", "build.json", "hw", "report"]
LADDER_GRAPHS = ["step_streamline.onnx", "step_convert_to_hw.onnx"]


def copy_run(run_dir: Path, target: Path) -> Path:
    """What verify reads of a run, copied so a test can damage it."""
    (target / "intermediate_models").mkdir(parents=True)
    for name in RUN_FILES:
        source = run_dir / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target / name)
    for name in LADDER_GRAPHS:
        shutil.copy(run_dir / "intermediate_models" / name, target / "intermediate_models" / name)
    (target / "report" / "verification.json").unlink(missing_ok=True)
    return target


def flip_weight_bit(hw: Path, layer: str, resign: bool) -> None:
    """Flip one bit of ``layer``'s weight memory; optionally re-sign the manifest as if the build wrote it."""
    path = hw / f"{layer}_weights.npy"
    memory = np.load(path)
    memory[0, 0, -1] ^= 1  # lane 0 of PE 0's first word
    np.save(path, memory)
    if resign:
        manifest = json.loads((hw / "manifest.json").read_text())
        manifest["files"][path.name] = sha256_file(path)
        (hw / "manifest.json").write_text(json.dumps(manifest))


def scores_layer(hw: Path) -> str:
    layers = json.loads((hw / "accelerator.json").read_text())["layers"]
    return next(layer["name"] for layer in layers if layer["kind"] == "mvau" and layer["no_activation"])


def test_ladder_agrees_on_every_test_image(tfc_run):
    result = run_flow("verify", tfc_run, check=False)
    report = json.loads((tfc_run / "report" / "verification.json").read_text())
    assert result.returncode == 0, result.stdout[-3000:]
    assert report["agree"] and report["images"] == 1000
    assert [level["level"] for level in report["levels"]] == ["pytorch", "qonnx", "streamlined", "hw_graph", "emulator", "rtl"]
    emulator, rtl = report["levels"][-2:]
    assert all(emulator["layers"][name]["compared"] and rtl["layers"][name]["compared"] for name in report["layers"])
    # every level classifies like PyTorch, and PyTorch like training measured
    trained = json.loads((tfc_run / "train_metrics.json").read_text())["test_accuracy"]
    assert {level["accuracy"] for level in report["levels"] if "accuracy" in level} == {trained}


def test_flipped_weight_bit_fails_verify_naming_the_layer(tfc_run, tmp_path):
    run = copy_run(tfc_run, tmp_path / "run")
    layer = scores_layer(run / "hw")  # no thresholds after it: every image's score changes
    flip_weight_bit(run / "hw", layer, resign=True)
    result = run_flow("verify", run, "--images", "100", check=False)
    assert result.returncode == 1
    report = json.loads((run / "report" / "verification.json").read_text())
    emulator, rtl = report["levels"][-2:]
    assert emulator["first_diverging_layer"] == layer
    assert emulator["layers"][layer]["mismatched_images"] == 100
    assert all(level["agrees"] for level in report["levels"][1:-2])
    assert rtl["agrees"]  # the RTL is made from the same (flipped) memories
    assert f"first at layer {layer}" in " ".join(result.stdout.split())


def test_file_changed_after_build_is_refused_before_anything_runs(tfc_run, tmp_path):
    run = copy_run(tfc_run, tmp_path / "run")
    layer = scores_layer(run / "hw")
    flip_weight_bit(run / "hw", layer, resign=False)
    for command in ("verify", "emulate"):
        result = run_flow(command, run, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: {run / 'hw' / (layer + '_weights.npy')}: sha256 differs from manifest.json "
            "(the file was changed after the build); rebuild"
        )
    assert not (run / "report" / "verification.json").exists()


def test_emulate_json_reports_accuracy_speed_and_bit_exactness(tfc_run):
    result = json.loads(run_flow("emulate", tfc_run, "--json").stdout)
    trained = json.loads((tfc_run / "train_metrics.json").read_text())["test_accuracy"]
    assert result["bit_exact"] is True
    assert result["accuracy"] == trained
    assert result["images_per_s"] > 10_000
    performance = json.loads((tfc_run / "report" / "estimate_network_performance.json").read_text())
    assert result["estimated_fps"] == performance["estimated_throughput_fps"]


def test_netlist_level_without_the_rtl_level_is_one_line(tmp_path):
    result = run_flow("verify", tmp_path, "--netlist", "--no-rtl", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --netlist compares the netlist with the RTL level: leave out --no-rtl"
