"""Bad input of every kind through the CLI: a non-zero exit, exactly one `error:` line on
stderr, no traceback, and no build.json / deploy.tar.gz left that does not match the run.

Each case builds its bad input in a fresh directory (most fail before any work); the cases
that need a built run share the session's TFC run (`tfc_run`), copied when they damage it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from flow.files import sha256_file
from flow.cli import run
from tests.conftest import run_flow

BOARD = """name = "custom"
part = "xc7z020clg400-1"
clock_mhz = 100.0
pynq_platform = "zynq"
finn_board = "Pynq-Z2"
dma_width_bits = 64
[resources]
LUT = 53200
FF = 106400
BRAM_18K = 280
DSP = 220
"""


@dataclass
class Case:
    args: list
    expected: str  # part of the error line
    env: dict = field(default_factory=dict)
    script: Path | None = None  # a Python script to run instead of the flow CLI


@contextmanager
def read_only_mount(content: Path | None = None):
    """A small tmpfs, mounted read-only after ``content`` is copied in (needs root and mount)."""
    import tempfile

    mount_point = Path(tempfile.mkdtemp(prefix="flow-ro-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        mount_point.rmdir()
        pytest.skip("a read-only directory needs a tmpfs mount (root); permission bits do not stop root")
    try:
        if content is not None:
            shutil.copytree(content, mount_point / content.name)
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
        mount_point.rmdir()


def board(tmp: Path, text: str) -> str:
    path = tmp / "board.toml"
    path.write_text(text)
    return str(path)


def a_file(tmp: Path, name: str = "file", content: bytes = b"x") -> Path:
    (tmp / name).write_bytes(content)
    return tmp / name


def a_dir(tmp: Path) -> Path:
    (tmp / "out").mkdir()
    return tmp / "out"


def another_models_checkpoint(run: Path, tmp: Path) -> Path:
    """The run's TFC weights under a config that names SFC."""
    trained = torch.load(run / "checkpoint.pt", weights_only=True)
    return checkpoint(tmp / "out", {**trained, "config": {**trained["config"], "model": "sfc"}})


def checkpoint(tmp: Path, payload) -> Path:
    tmp.mkdir(exist_ok=True)
    torch.save(payload, tmp / "checkpoint.pt")
    return tmp


def copy_of(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "run", symlinks=True))


def disk_full_run(tmp: Path) -> Path:
    """The checkpoint's temporary file is /dev/full: every write fails with ENOSPC."""
    out = tmp / "out"
    out.mkdir()
    (out / "checkpoint.pt.tmp").symlink_to("/dev/full")
    return out


def garbage_manifest(run: Path, tmp: Path, name: str) -> Path:
    run = copy_of(run, tmp)
    (run / name).write_text("{ this is not json")
    return run


OUT = "{out}"  # replaced by the case's own fresh output directory
TRAIN = ["train", "--out", OUT, "--epochs", "1"]

# name -> (tmp, tfc_run) -> Case
CASES = {
    "unknown model": lambda tmp, run: Case([*TRAIN, "--model", "xfc"], "unknown model 'xfc'"),
    "unknown quantizer": lambda tmp, run: Case([*TRAIN, "--quant", "magic"], "unknown quantizer 'magic'"),
    "unknown dataset": lambda tmp, run: Case([*TRAIN, "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "subset without test count": lambda tmp, run: Case([*TRAIN, "--dataset", "mnist5k:10"], "a subset is NAME:TRAIN:TEST"),
    "subset of zero images": lambda tmp, run: Case([*TRAIN, "--dataset", "mnist5k:0:10"], "two positive image counts"),
    "subset larger than the set": lambda tmp, run: Case([*TRAIN, "--dataset", "mnist5k:4001:100"], "4001 training images asked for, mnist5k has 4000"),
    "lr nan": lambda tmp, run: Case([*TRAIN, "--lr", "nan"], "--lr': nan is not a positive finite number"),
    "lr inf": lambda tmp, run: Case([*TRAIN, "--lr", "inf"], "inf is not a positive finite number"),
    "lr negative": lambda tmp, run: Case([*TRAIN, "--lr", "-0.1"], "-0.1 is not a positive finite number"),
    "epochs zero": lambda tmp, run: Case([*TRAIN, "--epochs", "0"], "--epochs"),
    "batch size not a number": lambda tmp, run: Case([*TRAIN, "--batch-size", "ten"], "'ten' is not a valid integer"),
    "unknown device": lambda tmp, run: Case([*TRAIN, "--device", "tpu", "--dataset", "mnist5k:100:10"], "unknown device 'tpu'"),
    "unknown option": lambda tmp, run: Case([*TRAIN, "--colour"], "No such option '--colour'"),
    "unknown command": lambda tmp, run: Case(["frobnicate"], "No such command 'frobnicate'"),
    "OUT is a file": lambda tmp, run: Case(
        ["train", "--out", a_file(tmp)], "file: is a file, not a directory"),
    "OUT inside a file": lambda tmp, run: Case(
        ["train", "--out", a_file(tmp) / "run"], "file: is a file, not a directory"),
    "DATA_DIR is a file": lambda tmp, run: Case(
        [*TRAIN, "--dataset", "mnist"], "DATA_DIR", env={"DATA_DIR": str(a_file(tmp, "data"))}),
    "disk full while saving the checkpoint": lambda tmp, run: Case(
        ["train", "--out", disk_full_run(tmp), "--epochs", "1", "--dataset", "mnist5k:200:50", "--quant", "ste"],
        "cannot write the checkpoint: no space left on device (disk full)"),
    "garbage checkpoint to resume": lambda tmp, run: Case(
        ["train", "--out", a_file(a_dir(tmp), "checkpoint.pt", b"PK\x03\x04 junk").parent],
        "unreadable checkpoint"),
    "checkpoint without config (train)": lambda tmp, run: Case(
        ["train", "--out", checkpoint(tmp / "out", {"model": {}})], "not a bnn-flow checkpoint (missing config"),
    "checkpoint without config (export)": lambda tmp, run: Case(
        ["export", checkpoint(tmp / "out", {"weights": torch.zeros(3)})], "not a bnn-flow checkpoint"),
    "checkpoint of another model": lambda tmp, run: Case(
        ["export", another_models_checkpoint(run, tmp)], "its weights do not fit the sfc network"),
    "export without checkpoint": lambda tmp, run: Case(["export", tmp / "out"], "no checkpoint; run `make train` first"),
    "build a missing model": lambda tmp, run: Case(["build", tmp / "missing.onnx", "--out", OUT], "missing.onnx: no such file"),
    "build a text file": lambda tmp, run: Case(
        ["build", a_file(tmp, "m.onnx", b"hello"), "--out", OUT], "not a valid ONNX model"),
    "input scale zero": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--input-scale", "0"], "0.0 is not a positive finite number"),
    "input scale nan": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--input-scale", "nan"], "nan is not a positive finite number"),
    "max utilization above 1": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--max-utilization", "2"], "--max-utilization"),
    "target fps zero": lambda tmp, run: Case(["build", run / "model.onnx", "--out", OUT, "--target-fps", "0"], "--target-fps"),
    "build into a file": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", a_file(tmp)], "is a file, not a directory"),
    "unknown board": lambda tmp, run: Case(["build", run / "model.onnx", "--out", OUT, "--board", "zedboard-x"], "unknown board"),
    "board with zero clock": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--board", board(tmp, BOARD.replace("100.0", "0"))], "clock_mhz"),
    "board without a resource": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--board", board(tmp, BOARD.replace("DSP = 220\n", ""))], "DSP"),
    "board with strings for numbers": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--board", board(tmp, BOARD.replace("53200", '"many"'))], "LUT"),
    "malformed board TOML": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--board", board(tmp, BOARD.replace("[resources]", "[resources"))], "board.toml"),
    "board with dma_width_bits 0": lambda tmp, run: Case(
        ["build", run / "model.onnx", "--out", OUT, "--board", board(tmp, BOARD.replace("= 64", "= 0"))], "dma_width_bits"),
    "emulate an empty directory": lambda tmp, run: Case(["emulate", a_dir(tmp)], "build.json missing (no build finished"),
    "verify zero images": lambda tmp, run: Case(["verify", run, "--images", "0"], "--images"),
    "csim without hls": lambda tmp, run: Case(["csim", a_dir(tmp)], "build.json missing (no build finished"),
    "hls without a dataflow model": lambda tmp, run: Case(["hls", tmp / "out"], "build.json missing (no build finished"),
    "garbage hardware manifest": lambda tmp, run: Case(
        ["deploy", garbage_manifest(run, tmp, "hw/manifest.json")], "hw/manifest.json: not a manifest"),
    "garbage deploy manifest": lambda tmp, run: Case(
        ["--backend", "emulator"], "manifest.json: not a manifest",
        script=garbage_manifest(run, tmp, "deploy/manifest.json") / "deploy" / "check.py"),
}


def run_cli(case: Case, args: list, monkeypatch, capfd) -> tuple[int, str, str]:
    """``python -m flow ARGS`` in this process (flow.cli.run, the console entry point): the
    libraries are imported once for all cases. An exception that escaped would fail the test."""
    if case.script is not None:  # the deployment package's own command, a script of its own
        result = subprocess.run([sys.executable, case.script, *map(str, args)], cwd=case.script.parent,
                                capture_output=True, text=True, timeout=600)
        return result.returncode, result.stdout, result.stderr
    monkeypatch.setattr(sys, "argv", ["flow", *map(str, args)])
    monkeypatch.setenv("CI", "true")
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run()
    out, err = capfd.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_error_line(name, tfc_run, tmp_path, monkeypatch, capfd):
    before = {name: sha256_file(tfc_run / name) for name in ("build.json", "deploy.tar.gz")}
    case = CASES[name](tmp_path, tfc_run)
    out = tmp_path / "out"
    out_existed = out.exists()
    code, stdout, stderr = run_cli(case, [out if a == OUT else a for a in case.args], monkeypatch, capfd)
    assert code != 0, stdout
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert case.expected in lines[0]
    # no build or package where the case wrote; a damaged copy of the run keeps the run's own
    for path in (*tmp_path.rglob("build.json"), *tmp_path.rglob("deploy.tar.gz")):
        assert path.parent == tmp_path / "run", path
        assert sha256_file(path) == before[path.name], path
    assert {name: sha256_file(tfc_run / name) for name in before} == before
    # a failed command leaves no empty run directory behind
    assert out_existed or not (out.is_dir() and not any(out.iterdir()))


def test_read_only_run_directory_is_refused_before_any_work(tfc_run, tmp_path):
    with read_only_mount() as read_only:
        line = error_line_of(run_flow("train", "--out", read_only / "run", "--epochs", "1", check=False))
        assert f"{read_only / 'run'}: cannot write here (Read-only file system)" in line
    with read_only_mount(tfc_run) as read_only:
        for args in (["verify", read_only / tfc_run.name], ["build", tfc_run / "model.onnx", "--out", read_only / tfc_run.name]):
            result = run_flow(*args, check=False)
            assert "cannot write here (Read-only file system)" in error_line_of(result)
            assert "step_" not in result.stdout and "verify:" not in result.stdout  # refused before any work


def test_a_run_directory_named_main_gets_a_top_that_compiles(tfc_run, tmp_path):
    """The HLS top is named after the run directory; `main` would clash with the testbench's main()."""
    run = Path(shutil.copytree(tfc_run, tmp_path / "main", symlinks=True))
    run_flow("hls", run)
    run_flow("csim", run, "--images", 10)
    assert (run / "hls" / "main_top.cpp").exists()


def test_debug_shows_the_traceback(tmp_path):
    for args, env in ((["--debug", "deploy", tmp_path], {}), (["deploy", tmp_path], {"FLOW_DEBUG": "1"})):
        result = run_flow(*args, env=env, check=False)
        assert result.returncode != 0 and "Traceback" in result.stderr and "FlowError" in result.stderr


def error_line_of(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
