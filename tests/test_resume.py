"""A training run killed with SIGKILL resumes from its last checkpoint with `make train`."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import torch

from tests.conftest import REPO

EPOCHS = 15


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


def completed_epochs(out) -> int:
    path = out / "checkpoint.pt"
    if not path.exists():
        return 0
    # loads with weights_only=True: every checkpoint left behind by a kill is complete
    return len(torch.load(path, weights_only=True)["history"])


def test_sigkill_at_five_random_moments_then_resume(tmp_path):
    rng = random.Random(1234)
    out = tmp_path / "killed"
    for _ in range(5):
        before = completed_epochs(out)
        process = make_train(out)
        time.sleep(rng.uniform(3.0, 9.0))
        os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
        if before:
            assert f"resuming {out / 'checkpoint.pt'} after epoch {before} of {EPOCHS}" in output
        assert completed_epochs(out) >= before
        assert not (out / "train_metrics.json").exists() or completed_epochs(out) == EPOCHS
    before = completed_epochs(out)
    finished = make_train(out)
    output = finished.communicate(timeout=600)[0]
    assert finished.returncode == 0, output
    if 0 < before < EPOCHS:
        assert f"after epoch {before} of {EPOCHS}" in output
    assert completed_epochs(out) == EPOCHS

    # Resumed training computes exactly what an uninterrupted run computes.
    reference = tmp_path / "uninterrupted"
    uninterrupted = make_train(reference)
    assert uninterrupted.wait(timeout=600) == 0
    killed_state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    reference_state = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in reference_state.items():
        assert torch.equal(killed_state[name], tensor), name
