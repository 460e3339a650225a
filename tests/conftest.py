"""Shared fixtures: real runs of the pipeline, made once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_flow(*args: str, check: bool = True, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m flow ARGS`` as a user would; return the completed process."""
    result = subprocess.run(
        [sys.executable, "-m", "flow", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CI": "true", **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"flow {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def make_run(root: Path, model: str, epochs: int, build_options: tuple[str, ...] = (), **train_options: str) -> Path:
    """train + export + build into ``root/model``: a complete run directory.

    Development shortcut: with ``FLOW_TEST_RUNS=DIR`` the run is copied from
    ``DIR/model`` (made earlier by the same commands) instead of made anew.
    CI never sets it.
    """
    out = root / model
    reuse = os.environ.get("FLOW_TEST_RUNS")
    if reuse and (Path(reuse) / model / "build.json").exists():
        shutil.copytree(Path(reuse) / model, out, symlinks=True)
        return out
    options = [f"--{k.replace('_', '-')}={v}" for k, v in train_options.items()]
    run_flow("train", "--out", out, "--model", model, "--epochs", epochs, *options)
    run_flow("export", out)
    run_flow("build", out / "model.onnx", "--board", "pynq-z2", "--out", out, *build_options)
    return out


@pytest.fixture(scope="session")
def tfc_run(tmp_path_factory) -> Path:
    """TFC-W1A1 (STE) trained on mnist5k with the default recipe, exported and built."""
    return make_run(tmp_path_factory.mktemp("runs"), "tfc", epochs=50, quant="ste")


@pytest.fixture(scope="session")
def sfc_run(tmp_path_factory) -> Path:
    """SFC-W1A1 (STE), a short training on mnist5k, exported and built."""
    return make_run(tmp_path_factory.mktemp("runs"), "sfc", epochs=5, quant="ste")


CNV_SUBSET = "fashion-mnist32:1000:100"  # 1000 training, 100 test images


@pytest.fixture(scope="session")
def cnv_run(tmp_path_factory) -> Path:
    """CNV (conv -> max-pool -> BN -> sign), STE, one epoch on a Fashion-MNIST-32 subset; built with the folding search."""
    return make_run(tmp_path_factory.mktemp("runs"), "cnv", epochs=1, quant="ste", dataset=CNV_SUBSET)
