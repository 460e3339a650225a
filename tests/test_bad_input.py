"""Bad input: one clear line on stderr, a non-zero exit, nothing half-written left as complete."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
import torch

from flow import data as datasets
from flow.errors import FlowError
from flow.train import TrainConfig, train
from tests.conftest import run_flow


def error_line(result) -> str:
    """The CLI's error: exactly one line on stderr, starting with 'error:'."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--model", "xfc"], "unknown model 'xfc'; known models: tfc, sfc, lfc"),
        (["train", "--quant", "magic"], "unknown quantizer 'magic'; known quantizers: ste"),
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'; known datasets: mnist5k"),
    ],
)
def test_unknown_names_are_listed(args, expected, tmp_path):
    line = error_line(run_flow(*args, "--out", tmp_path / "run", check=False))
    assert expected in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unknown_board_lists_known_boards(tfc_run, tmp_path):
    line = error_line(run_flow("build", tfc_run / "model.onnx", "--board", "zedboard-x", "--out", tmp_path, check=False))
    assert "unknown board 'zedboard-x'; known boards:" in line and "pynq-z2" in line and "pynq-z1" in line


def test_corrupt_and_truncated_onnx_are_refused(tfc_run, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.onnx"
    data = (tfc_run / "model.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (garbage, truncated):
        line = error_line(run_flow("build", path, "--out", tmp_path / path.stem, check=False))
        assert f"{path}: not a valid ONNX model" in line
        assert not (tmp_path / path.stem / "build.json").exists()
    line = error_line(run_flow("build", tmp_path / "missing.onnx", "--out", tmp_path, check=False))
    assert "missing.onnx: no such file" in line


def export_tfc(model: torch.nn.Module, path):
    """Export a (modified) TFC to QONNX with UINT8 pixel input, as a user's model file."""
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model.eval()
    export_qonnx(model, input_t=torch.zeros(1, 1, 28, 28), export_path=str(path))
    qonnx_model = ModelWrapper(str(path))
    qonnx_model.set_tensor_datatype(qonnx_model.graph.input[0].name, DataType["UINT8"])
    qonnx_model.save(str(path))
    return qonnx_model


def test_unlowerable_node_is_named(tmp_path):
    """A layer left in floating point (a plain nn.Linear) cannot become hardware."""
    from flow.models import build_model

    model = build_model("tfc", "ste", (1, 28, 28))
    model.features[-2] = torch.nn.Linear(64, 10, bias=False)  # the last layer, unquantized
    path = tmp_path / "float_last_layer.onnx"
    export_tfc(model, path)
    line = error_line(run_flow("build", path, "--out", tmp_path / "out", check=False))
    assert "cannot be lowered to a hardware layer" in line
    # qonnx replaces the Gemm by a new MatMul node: no name of the user's file to give
    assert "node 'MatMul_" in line and "(MatMul, made by the build's graph passes)" in line
    assert not (tmp_path / "out" / "build.json").exists()


class Abs(torch.nn.Module):
    def forward(self, x):
        return torch.abs(x)


@pytest.mark.parametrize(
    ("op", "layer", "position"),
    [
        ("Softmax", torch.nn.Softmax(dim=1), 16),  # after the logits
        ("Tanh", torch.nn.Tanh(), 4),  # between the first batch-norm and its sign
        ("Abs", Abs(), 16),
    ],
)
def test_unlowerable_op_is_named_as_in_the_users_file(op, layer, position, tmp_path):
    """Streamlining renames every node and leaves the batch-norm's Mul/Add before the
    op unabsorbed; the error names the op's node as in the file, not 'Mul_0'."""
    from flow.models import build_model

    model = build_model("tfc", "ste", (1, 28, 28))
    model.features.insert(position, layer)
    path = tmp_path / f"with_{op}.onnx"
    (node,) = export_tfc(model, path).get_nodes_by_op_type(op)
    assert node.name  # Brevitas names its nodes, e.g. 'node_softmax'
    line = error_line(run_flow("build", path, "--out", tmp_path / "out", check=False))
    assert f"error: node '{node.name}' ({op}) cannot be lowered to a hardware layer" in line
    assert not (tmp_path / "out" / "build.json").exists()


def test_design_that_fits_at_no_folding_shows_the_table(tfc_run, tmp_path):
    tiny = tmp_path / "tiny-board.toml"
    tiny.write_text(
        'name = "tiny"\npart = "xc7z020clg400-1"\nclock_mhz = 100.0\npynq_platform = "zynq"\n'
        'finn_board = "Pynq-Z2"\ndma_width_bits = 64\n[resources]\nLUT = 1000\nFF = 2000\nBRAM_18K = 4\nDSP = 10\n'
    )
    result = run_flow("build", tfc_run / "model.onnx", "--board", tiny, "--out", tmp_path / "out", check=False)
    line = error_line(result)
    assert "the design does not fit tiny at any folding" in line and "LUT" in line and "(over)" in line
    assert "MVAU_hls_0" in result.stdout and "budget" in result.stdout  # the per-layer table
    assert re.search(r"step_streamline took \d+\.\d s", result.stdout)  # each finished step's time
    assert not (tmp_path / "out" / "build.json").exists()


def test_impossible_target_fps(tfc_run, tmp_path):
    line = error_line(run_flow("build", tfc_run / "model.onnx", "--target-fps", 10**9, "--out", tmp_path, check=False))
    assert "TARGET_FPS=1000000000 is impossible" in line and "cycles per image" in line


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_loss = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def loss_turning_nan(*args, **kwargs):
        calls["n"] += 1
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 40 else loss  # mnist5k: 40 batches per epoch

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", loss_turning_nan)
    with pytest.raises(FlowError, match=r"training diverged: loss is nan at epoch 2, batch 1; last good checkpoint \(epoch 1\)"):
        train(tmp_path, TrainConfig(epochs=5))
    kept = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert [h["epoch"] for h in kept["history"]] == [1]
    assert not (tmp_path / "train_metrics.json").exists()


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    train(tmp_path, TrainConfig(epochs=1))
    line = error_line(run_flow("train", "--out", tmp_path, "--model", "sfc", "--epochs", 1, check=False))
    assert "checkpoint.pt belongs to another run" in line


def test_missing_dataset_says_how_to_get_it(tmp_path):
    line = error_line(run_flow("train", "--dataset", "mnist", "--out", tmp_path / "run", env={"DATA_DIR": str(tmp_path)}, check=False))
    assert "dataset mnist: cannot download" in line and "set DATA_DIR" in line


def test_corrupt_dataset_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in datasets.MNIST_FILES:
        (folder / name).write_bytes(b"not the real file")
    with pytest.raises(FlowError, match="is corrupt \\(sha256 mismatch\\)"):
        datasets.load("mnist")


def test_truncated_idx_file_is_named(tmp_path):
    path = tmp_path / "images.gz"
    header = np.array([0x00000803, 10, 28, 28], dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(28 * 28 * 3))  # 3 of 10 images
    with pytest.raises(FlowError, match=r"images.gz is truncated \(2352 of 7840 bytes\)"):
        datasets.read_idx(path, "test")


def test_unreadable_checkpoint_is_one_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 broken")
    line = error_line(run_flow("export", tmp_path, check=False))
    assert "checkpoint.pt: unreadable checkpoint" in line
