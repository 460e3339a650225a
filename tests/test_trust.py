"""Trustworthy runs: a stale or half-finished build is refused by every stage that reads it,
the deployment package is part of the build, custom boards travel with the run, board files
are validated, and the package (and hw/, hls/) runs nothing its manifest does not cover."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import flow.build
import flow.deploy
from flow.boards import BOARDS_DIR, load_board
from flow.errors import FlowError
from flow.rundir import require_complete_build
from tests.conftest import REPO, run_flow
from tests.test_bad_input import error_line
from tests.test_deploy import run_check

STALE = "stale/incomplete build"
FAST_BUILD = ("--target-fps", "100000")  # a fixed folding: no folding search


def copy_run(run: Path, target: Path) -> Path:
    """The whole run directory, to damage or rebuild."""
    return Path(shutil.copytree(run, target, symlinks=True, ignore=shutil.ignore_patterns("finn_tmp")))


def retrained_model(path: Path) -> None:
    """What retrain + export does to model.onnx: other weights (here the first layer's, negated)."""
    model = onnx.load(str(path))
    weights = next(i for i in model.graph.initializer if len(i.dims) == 2)
    weights.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weights), weights.name))
    onnx.save(model, str(path))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relist(folder: Path, *names: str) -> None:
    """Add ``names`` (with their current sha256) to ``folder/manifest.json``, as if the build listed them."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        path = folder / name
        manifest["files"][name] = sha256_of(path) if path.is_file() else "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))


# --------------------------------------------------------------------------- 1. stale or half-finished builds


def test_a_build_records_its_inputs_and_steps(tfc_run):
    summary = require_complete_build(tfc_run)
    assert summary["inputs"] == {"model.onnx": sha256_of(tfc_run / "model.onnx"), "board.toml": sha256_of(tfc_run / "board.toml")}
    assert summary["steps_completed"] == [s.__name__ for s in flow.build.BUILD_STEPS] + ["deploy"]
    assert load_board(str(tfc_run / "board.toml")) == load_board("pynq-z2")


def test_retrained_model_without_rebuild_is_refused_by_every_stage(tfc_run, tmp_path):
    from flow.csim import csim
    from flow.deploy import deploy
    from flow.hls import hls
    from flow.verify import verify

    run = copy_run(tfc_run, tmp_path / "run")
    retrained_model(run / "model.onnx")
    line = error_line(run_flow("emulate", run, check=False))
    assert f"{STALE}: {run / 'model.onnx'} changed since the build" in line and "run make build" in line
    for stage in (lambda: verify(run, 10), lambda: csim(run, 10), lambda: deploy(run), lambda: hls(run)):
        with pytest.raises(FlowError, match=f"{STALE}: .*model.onnx changed since the build"):
            stage()
    assert (run / "build.json").exists()  # refused, not damaged: a rebuild is all it takes

    shutil.copy(tfc_run / "model.onnx", run / "model.onnx")
    (run / "board.toml").write_text((run / "board.toml").read_text().replace("clock_mhz = 100.0", "clock_mhz = 125.0"))
    with pytest.raises(FlowError, match=f"{STALE}: .*board.toml changed since the build"):
        verify(run, 10)


class Killed(BaseException):
    """A SIGKILL at a step boundary: nothing of the build runs after it."""


def test_build_killed_after_convert_to_hw_is_incomplete_not_a_mismatch(tfc_run, tmp_path, monkeypatch):
    from flow.verify import verify

    run = copy_run(tfc_run, tmp_path / "run")
    retrained_model(run / "model.onnx")  # the old hw/ no longer matches the graphs the new build writes
    steps = flow.build.BUILD_STEPS
    upto = [s.__name__ for s in steps].index("step_convert_to_hw") + 1

    def killed(model, cfg):
        raise Killed

    monkeypatch.setattr(flow.build, "BUILD_STEPS", steps[:upto] + [killed])
    with pytest.raises(Killed):
        flow.build.build(run / "model.onnx", run, load_board("pynq-z2"))
    assert (run / "intermediate_models" / "step_convert_to_hw.onnx").stat().st_mtime > (run / "hw" / "manifest.json").stat().st_mtime
    assert not (run / "deploy").exists() and not (run / "deploy.tar.gz").exists()  # the old package went first
    result = run_flow("emulate", run, check=False)
    line = error_line(result)
    assert f"{STALE}: {run / 'build.json'} missing" in line
    assert "bit-exact" not in result.stdout
    with pytest.raises(FlowError, match=STALE):
        verify(run, 10)


def test_build_json_of_an_older_flow_or_unfinished_steps_is_refused(tfc_run, tmp_path):
    run = copy_run(tfc_run, tmp_path / "run")
    summary = json.loads((run / "build.json").read_text())
    (run / "build.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "inputs"}))
    with pytest.raises(FlowError, match=f"{STALE}: .*no record of its inputs"):
        require_complete_build(run)
    summary["steps_completed"].remove("step_generate_hls")
    (run / "build.json").write_text(json.dumps(summary))
    with pytest.raises(FlowError, match=f"{STALE}: .*did not complete step_generate_hls"):
        require_complete_build(run)


# --------------------------------------------------------------------------- 2. deploy is part of the build


def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_build_killed_while_packaging_leaves_no_build_json(tfc_run, tmp_path):
    """SIGKILL while the package is written: no build.json (of the new build) beside any package."""
    run = copy_run(tfc_run, tmp_path / "run")
    build = subprocess.Popen(
        [sys.executable, "-m", "flow", "build", run / "model.onnx", "--out", run, *FAST_BUILD],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "CI": "true"},
    )
    deadline = time.time() + 600
    while not list(run.glob(".deploy.tmp-*")) and build.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    build.kill()
    build.wait()
    assert list(run.glob(".deploy.tmp-*")), "the build was not caught while packaging"
    assert not (run / "build.json").exists()
    assert not (run / "deploy").exists() and not (run / "deploy.tar.gz").exists()  # the old package went first
    line = error_line(run_flow("emulate", run, check=False))
    assert f"{STALE}: {run / 'build.json'} missing" in line


def test_a_deploy_failure_on_its_own_leaves_an_incomplete_build_and_leftovers_go(tfc_run, tmp_path, monkeypatch):
    from flow.deploy import deploy

    run = copy_run(tfc_run, tmp_path / "run")
    # what a SIGKILL during an earlier deploy or write leaves behind
    (run / ".deploy.tmp-99999" / "deploy").mkdir(parents=True)
    (run / ".deploy.tar.gz.tmp-99999").write_bytes(b"half an archive")
    (run / "report" / "estimate_layer_cycles.json.tmp").write_text("{")
    monkeypatch.setattr(flow.deploy, "write_package", disk_full)
    with pytest.raises(OSError):
        deploy(run)
    assert not (run / "build.json").exists() and not (run / "deploy").exists() and not (run / "deploy.tar.gz").exists()
    assert not list(run.glob(".deploy*")) and not list((run / "report").glob("*.tmp"))
    with pytest.raises(FlowError, match=STALE):
        require_complete_build(run)

    monkeypatch.undo()
    shutil.copy(tfc_run / "build.json", run / "build.json")  # as the rebuild would write it
    deploy(run)
    assert require_complete_build(run)["steps_completed"][-1] == "deploy"
    assert (run / "deploy" / "manifest.json").exists() and (run / "deploy.tar.gz").exists()


# --------------------------------------------------------------------------- 4. custom boards


def custom_board(path: Path, name: str, clock_mhz: float) -> Path:
    text = (BOARDS_DIR / "pynq-z2.toml").read_text()
    path.write_text(text.replace('name = "pynq-z2"', f'name = "{name}"').replace("clock_mhz = 100.0", f"clock_mhz = {clock_mhz}"))
    return path


@pytest.mark.parametrize("name", ["pynq-z2", "my-z2-board"])
def test_custom_board_travels_with_the_run(name, tfc_run, tmp_path):
    """A stock name must not bring the stock board's clock back; an unknown name must not fail in deploy."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tfc_run / "train_metrics.json", out)
    board_file = custom_board(tmp_path / "custom.toml", name, 50.0)
    run_flow("build", tfc_run / "model.onnx", "--board", board_file, "--out", out, *FAST_BUILD)
    assert load_board(str(out / "board.toml")) == load_board(str(board_file))
    assert json.loads((out / "build.json").read_text())["clock_mhz"] == 50.0
    manifest = json.loads((out / "deploy" / "manifest.json").read_text())
    assert manifest["board"] == name and manifest["clock_mhz"] == 50.0
    assert json.loads((out / "hw" / "manifest.json").read_text())["clock_mhz"] == 50.0
    assert require_complete_build(out)["inputs"]["board.toml"] == sha256_of(out / "board.toml")


PYNQ_Z2 = (BOARDS_DIR / "pynq-z2.toml").read_text()


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (PYNQ_Z2.replace("clock_mhz = 100.0", "clock_mhz = 0"), "clock_mhz", "must be positive"),
        (PYNQ_Z2.replace("clock_mhz = 100.0", "clock_mhz = -100.0"), "clock_mhz", "must be positive"),
        (PYNQ_Z2.replace("clock_mhz = 100.0", "clock_mhz = nan"), "clock_mhz", "must be positive"),
        (PYNQ_Z2.replace("clock_mhz = 100.0", 'clock_mhz = "100"'), "clock_mhz", "must be a number"),
        (PYNQ_Z2.replace("clock_mhz = 100.0", "clock_mhz = true"), "clock_mhz", "must be a number"),
        (PYNQ_Z2.replace("clock_mhz = 100.0\n", ""), "clock_mhz", "is missing"),
        (PYNQ_Z2.replace("dma_width_bits = 64", "dma_width_bits = 0"), "dma_width_bits", "must be positive"),
        (PYNQ_Z2.replace("dma_width_bits = 64", "dma_width_bits = 48"), "dma_width_bits", "power of two >= 8"),
        (PYNQ_Z2.replace("dma_width_bits = 64", "dma_width_bits = 4"), "dma_width_bits", "power of two >= 8"),
        (PYNQ_Z2.replace("dma_width_bits = 64", "dma_width_bits = 64.5"), "dma_width_bits", "whole number"),
        (PYNQ_Z2.replace('pynq_platform = "zynq"', 'pynq_platform = "virtex"'), "pynq_platform", "unknown"),
        (PYNQ_Z2.replace('part = "xc7z020clg400-1"', 'part = "xc7z999xyz-1"'), "part", "not a part FINN knows"),
        (PYNQ_Z2.replace('part = "xc7z020clg400-1"', 'part = "xczu7ev-ffvc1156-2-e"'), "part", "not a zynq device"),
        (PYNQ_Z2.replace('finn_board = "Pynq-Z2"', 'finn_board = "Zedboard-X"'), "finn_board", "not a board FINN knows"),
        (PYNQ_Z2.replace('name = "pynq-z2"', "name = 7"), "name", "non-empty string"),
        (PYNQ_Z2.replace("DSP = 220", ""), "resources.DSP", "is missing"),
        (PYNQ_Z2.replace("LUT = 53200", "LUT = -5"), "resources.LUT", "must be positive"),
        (PYNQ_Z2.replace("LUT = 53200", 'LUT = "many"'), "resources.LUT", "must be a number"),
        ("colour = 3\n" + PYNQ_Z2, "colour", "is not a board field"),
    ],
)
def test_bad_board_file_names_the_field(text, field, problem, tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(FlowError, match=rf"^{re.escape(str(path))}: field '{re.escape(field)}' .*{problem}"):
        load_board(str(path))


def test_malformed_board_toml_is_one_line(tfc_run, tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(PYNQ_Z2.replace("clock_mhz = 100.0", "clock_mhz = = 100"))
    line = error_line(run_flow("build", tfc_run / "model.onnx", "--board", path, "--out", tmp_path / "out", check=False))
    assert f"{path}: malformed TOML" in line
    assert not (tmp_path / "out" / "build.json").exists()


# --------------------------------------------------------------------------- 7. the package runs nothing unverified


SHADOW = "from pathlib import Path\nPath({marker!r}).write_text('imported')\nraise SystemExit('shadowing module ran')\n"


@pytest.mark.parametrize("module", ["json.py", "numpy.py", "hashlib.py"])
def test_check_never_imports_from_its_own_folder(module, tfc_run, tmp_path):
    package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy")
    marker = tmp_path / "imported"
    (package / module).write_text(SHADOW.format(marker=str(marker)))
    unlisted = run_check(package, "--backend", "emulator")
    assert error_line(unlisted) == f"error: {package / module}: not listed in manifest.json; the package runs only what it lists (remove the file)"
    assert not marker.exists()

    relist(package, module)  # even listed (a manifest re-hashed by hand), it is never imported
    listed = run_check(package, "--backend", "emulator")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "OK" in listed.stdout and not marker.exists()


@pytest.mark.parametrize("name", ["driver/extra.py", "driver/__pycache__/packing.cpython-311.pyc", "hw/notes.txt"])
def test_check_refuses_files_the_manifest_does_not_list(name, tfc_run, tmp_path):
    package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy")
    (package / name).parent.mkdir(parents=True, exist_ok=True)
    (package / name).write_bytes(b"print('unchecked code')\n")
    result = run_check(package, "--backend", "emulator")
    assert f"{package / name}: not listed in manifest.json" in error_line(result)
    assert result.returncode == 2 and "accuracy" not in result.stdout


def test_check_refuses_manifest_paths_that_leave_the_package(tfc_run, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the package")
    for name in ("../outside.txt", str(outside), "driver/../../outside.txt", "link.txt"):
        package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy", dirs_exist_ok=True)
        if name == "link.txt":
            (package / name).symlink_to(outside)
        manifest = json.loads((package / "manifest.json").read_text())
        manifest["files"][name] = sha256_of(outside)  # the right sha256: only the path is wrong
        (package / "manifest.json").write_text(json.dumps(manifest))
        result = run_check(package, "--backend", "emulator")
        assert f"path {name!r} leaves deploy/ (refused)" in error_line(result), name
        shutil.rmtree(package)


def test_emulator_refuses_hw_manifest_paths_outside_hw_and_unlisted_files(tfc_run, tmp_path):
    from flow.emulate import Emulator

    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(3))
    hw = shutil.copytree(tfc_run / "hw", tmp_path / "hw")
    manifest = json.loads((hw / "manifest.json").read_text())
    manifest["files"]["../outside.npy"] = sha256_of(outside)
    (hw / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FlowError, match=r"path '../outside.npy' leaves hw/ \(refused\)"):
        Emulator(hw)
    shutil.rmtree(hw)
    hw = shutil.copytree(tfc_run / "hw", tmp_path / "hw")
    np.save(hw / "extra_weights.npy", np.zeros(3))
    with pytest.raises(FlowError, match=r"extra_weights.npy: not listed in manifest.json"):
        Emulator(hw)


def test_garbage_npy_is_one_line_without_numpys_pickle_hint(tfc_run, tmp_path):
    from flow.emulate import Emulator

    package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy")
    (package / "data" / "test_labels.npy").write_bytes(b"\x80\x04garbage" * 50)
    relist(package, "data/test_labels.npy")
    line = error_line(run_check(package, "--backend", "emulator"))
    assert "test_labels.npy: not a plain NumPy .npy array" in line and "pickle" not in line

    hw = shutil.copytree(tfc_run / "hw", tmp_path / "hw")
    weights = sorted(hw.glob("*_weights.npy"))[0]
    weights.write_bytes(b"garbage" * 50)
    relist(hw, weights.name)
    with pytest.raises(FlowError, match="not a plain NumPy .npy array") as refused:
        Emulator(hw)
    assert "pickle" not in str(refused.value)


def test_csim_compiles_only_the_checked_hls_sources(tfc_run, tmp_path):
    from flow.csim import csim

    run = copy_run(tfc_run, tmp_path / "run")
    # an unlisted header that an #include "activation.h" in hls/ would pick up before hls_templates/
    (run / "hls" / "activation.h").write_text('#error "unchecked header compiled"\n')
    assert csim(run, 10)["bit_exact"]

    header = sorted((run / "hls" / "params").glob("*.h"))[0]
    header.write_text(header.read_text() + "// changed after the build\n")
    with pytest.raises(FlowError, match=rf"{header.name}: sha256 differs from manifest.json"):
        csim(run, 10)
    (run / "hls" / "manifest.json").unlink()
    with pytest.raises(FlowError, match=r"hls/manifest.json: missing"):
        csim(run, 10)
