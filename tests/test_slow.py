"""Long runs (`make test-slow`): the default recipe on the bigger MLPs, through every level."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_run, run_flow

ACCURACY_FLOOR = {"sfc": 0.91, "lfc": 0.92}  # measured: 93.3 % and 94.5 % on mnist5k


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sfc", "lfc"])
def test_default_recipe_ladder_and_csim_are_exact(model, tmp_path):
    out = make_run(tmp_path, model, epochs=50, quant="ste")
    assert json.loads((out / "train_metrics.json").read_text())["test_accuracy"] >= ACCURACY_FLOOR[model]
    run_flow("verify", out)  # exits non-zero when any level or layer disagrees on any test image
    assert json.loads((out / "report" / "verification.json").read_text())["agree"] is True
    run_flow("csim", out)  # exits non-zero on any byte differing from the emulator
