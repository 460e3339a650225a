"""The notebooks run top to bottom on small budgets, and are committed without outputs.

Each notebook reads its parameters from ``NB_*`` environment variables (the
kernel inherits this process's environment). The kernel is this interpreter
(the venv's python, which has ipykernel), through a kernelspec written to a
temporary ``JUPYTER_PATH`` entry, whatever kernels the machine has installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = REPO / "notebooks"
NOTEBOOK_NAMES = ["01_quantizers.ipynb", "02_train_to_accelerator.ipynb", "03_emulate_and_verify.ipynb"]
KERNEL = "bnn-flow-tests"


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


def execute(name: str, jupyter_path: Path, monkeypatch, cwd: Path, **params: str):
    """Run every cell of notebooks/NAME with ``cwd`` as its working directory; a cell error fails the test."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("CI", "true")  # no progress bars in the cell outputs
    for key, value in params.items():
        monkeypatch.setenv(key, str(value))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def assert_every_figure_displayed(notebook) -> None:
    for cell in notebook.cells:
        if cell.cell_type == "code" and "show(fig)" in cell.source.splitlines():
            assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source[:200]


def test_quantizers_notebook_runs(jupyter_path, monkeypatch, tmp_path):
    notebook = execute("01_quantizers.ipynb", jupyter_path, monkeypatch, NOTEBOOKS, NB_EPOCHS=1, NB_RUN_ROOT=tmp_path)
    assert_every_figure_displayed(notebook)
    for quant in ("fourier+fit", "clip"):
        assert (tmp_path / f"tfc-{quant}-mnist5k-1ep" / "train_metrics.json").exists()


def test_train_to_accelerator_notebook_runs(jupyter_path, monkeypatch, tmp_path):
    run_dir = tmp_path / "tfc"
    notebook = execute("02_train_to_accelerator.ipynb", jupyter_path, monkeypatch, NOTEBOOKS, NB_EPOCHS=1, NB_RUN_DIR=run_dir)
    assert_every_figure_displayed(notebook)
    assert json.loads((run_dir / "build.json").read_text())["board"] == "pynq-z2"
    assert (run_dir / "deploy" / "manifest.json").exists()


def test_emulate_and_verify_notebook_runs_from_the_repo_root(jupyter_path, monkeypatch, tfc_run):
    notebook = execute("03_emulate_and_verify.ipynb", jupyter_path, monkeypatch, REPO, NB_RUN_DIR=tfc_run, NB_IMAGES=200)
    text = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)
    assert "OK: every image's output equals the QONNX model's" in text
    assert "sha256 differs from manifest.json" in text
    assert "verify localizes it: first diverging layer MVAU_hls_" in text


def test_notebooks_are_committed_without_outputs():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == NOTEBOOK_NAMES
    for name in NOTEBOOK_NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"
