"""Multi-process training: torchrun + DistributedDataParallel (gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flow.train import load_checkpoint
from tests.conftest import REPO, run_flow

EPOCHS = 3


def torchrun_train(out, nproc: int, *options: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
         "-m", "flow", "train", "--out", str(out), *options],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "CI": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_processes_train_to_the_accuracy_class_of_one(tmp_path):
    options = ["--model", "tfc", "--quant", "fourier+clip", "--epochs", str(EPOCHS)]
    run_flow("train", "--out", tmp_path / "one", *options)
    torchrun_train(tmp_path / "two", 2, *options)
    one = json.loads((tmp_path / "one" / "train_metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "train_metrics.json").read_text())
    assert [h["epoch"] for h in two["history"]] == list(range(1, EPOCHS + 1))
    assert two["test_accuracy"] >= 0.75 and one["test_accuracy"] >= 0.75
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 0.05
    # the clip thresholds and the stored binarized weights come from the trained model
    checkpoint = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert len(checkpoint["binarized_weights"]) == 4
    assert all({"t1", "t2", "clipped_fraction"} <= set(stats) for stats in two["history"][-1]["clip"].values())

    # a finished run started again is not trained again, with or without torchrun
    before = (tmp_path / "two" / "checkpoint.pt").read_bytes()
    torchrun_train(tmp_path / "two", 2, *options)
    assert (tmp_path / "two" / "checkpoint.pt").read_bytes() == before
