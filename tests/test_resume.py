"""A training run killed with SIGKILL resumes from its last checkpoint with `make train`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import torch

from tests.conftest import REPO

EPOCHS = 30


def make_train(out, **popen):
    return subprocess.Popen(
        ["make", "--no-print-directory", "train", f"OUT={out}", f"EPOCHS={EPOCHS}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # so the kill reaches make's python child too
        env={**os.environ, "CI": "true"},
        **popen,
    )


def history(out) -> list[dict]:
    """The per-epoch history in the checkpoint; loading it with weights_only=True
    also checks that every checkpoint a kill leaves behind is complete."""
    path = out / "checkpoint.pt"
    return torch.load(path, weights_only=True)["history"] if path.exists() else []


def wait_for_new_epoch(out, done: int, timeout: float = 300) -> None:
    """Block until the run in ``out`` has checkpointed more than ``done`` epochs."""
    deadline = time.time() + timeout
    while len(history(out)) <= done:
        assert time.time() < deadline, "training made no progress"
        time.sleep(0.05)


def test_sigkill_at_five_random_moments_then_resume(tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "killed"
    for _ in range(5):
        before = history(out)
        process = make_train(out)
        # a random moment while it trains: after its first new epoch, within the next ones
        wait_for_new_epoch(out, len(before))
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        after = history(out)
        assert len(before) < len(after) < EPOCHS  # killed mid-training
        # resumed, not restarted: the epochs done before are kept as they were
        assert after[: len(before)] == before
        assert [h["epoch"] for h in after] == list(range(1, len(after) + 1))
        assert not (out / "train_metrics.json").exists()
    before = history(out)
    finished = make_train(out)
    output = finished.communicate(timeout=600)[0]
    assert finished.returncode == 0, output
    assert f"resuming {out / 'checkpoint.pt'} after epoch {len(before)} of {EPOCHS}" in output
    final = history(out)
    assert len(final) == EPOCHS and final[: len(before)] == before

    # Resumed training computes exactly what an uninterrupted run computes.
    reference = tmp_path / "uninterrupted"
    uninterrupted = make_train(reference)
    assert uninterrupted.wait(timeout=600) == 0
    killed_state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    reference_state = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in reference_state.items():
        assert torch.equal(killed_state[name], tensor), name
