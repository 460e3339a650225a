"""--cost-model synth: the Yosys-calibrated cost model (flow.cost_model) and the folding search with it."""

from __future__ import annotations

import json

import pytest

from flow.cost_model import DATA_FILE, KINDS, RESOURCES, fit_errors, fit_kind, predict, rom_bram18
from flow.errors import FlowError
from tests.conftest import run_flow


def stored_kinds() -> dict:
    return json.loads(DATA_FILE.read_text())["families"]["xc7"]["kinds"]


def test_every_kind_is_calibrated_for_the_pynq_family():
    assert set(stored_kinds()) == set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_stored_fit_reproduces_its_samples_within_its_documented_error(name):
    entry = stored_kinds()[name]
    kind = KINDS[name]
    samples = entry["samples"]
    assert len(samples) == len(kind.sweep()) and [s["params"] for s in samples] == kind.sweep()
    # the same coefficients again from the stored Yosys counts (the fit is deterministic)
    assert fit_kind(kind, samples)["coefficients"] == entry["coefficients"]
    for resource in RESOURCES:
        predicted = [predict(name, s["params"], "xc7")[resource] for s in samples]
        measured = [s["yosys"][resource] for s in samples]
        assert fit_errors(predicted, measured) == entry["errors"][resource]
        limit = entry["errors"][resource]["max_relative_error"] + 0.00005  # stored to 4 decimals
        assert all(abs(p - m) / max(m, 10) <= limit for p, m in zip(predicted, measured))


def test_block_ram_by_shape_tiles_like_yosys():
    """Yosys' mappings in the calibration: 98 x 512 bits in 15 RAMB18 (512 x 36), 64 x 64 in one
    RAMB36 (512 x 72), 512 x 1568 in 22 RAMB36; a one-word ROM is a constant (no block RAM)."""
    assert rom_bram18(98, 512) == 15 and rom_bram18(64, 64) == 2 and rom_bram18(512, 1568) == 44
    samples = {(s["params"]["MW"], s["params"]["MH"], s["params"]["SIMD"], s["params"]["PE"]): s
               for s in stored_kinds()["bnn_mvau_xnor"]["samples"]}
    for key, bram in (((784, 64, 16, 32), 15), ((64, 64, 64, 1), 2), ((784, 1024, 784, 2), 44), ((64, 10, 64, 10), 0)):
        assert samples[key]["yosys"]["BRAM_18K"] == bram == predict("bnn_mvau_xnor", samples[key]["params"], "xc7")["BRAM_18K"]


def test_an_unknown_cost_model_is_one_error_line(tmp_path):
    from flow.boards import load_board
    from flow.build import build

    with pytest.raises(FlowError, match=r"^--cost-model fastest: unknown cost model \(finn: FINN's estimates, synth: calibrated against Yosys\)$"):
        build(tmp_path / "model.onnx", tmp_path, load_board("pynq-z2"), cost_model="fastest")
    result = run_flow("build", tmp_path / "model.onnx", "--cost-model", "fastest", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: python -m flow build: Invalid value for '--cost-model': 'fastest' is not one of 'finn', 'synth'. (--help lists the options)"
    ]


def test_synth_cost_model_labels_the_table_and_judges_the_budget_by_the_calibration(tfc_run, tmp_path, capsys):
    """At 10 % of the PYNQ-Z2 (5,320 LUTs) FINN's estimate of TFC's stream-bound folding (98 cycles)
    is over the budget, the calibrated one is not: the synth search reaches the stream bound."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.boards import load_board
    from flow.build import BuildConfig, design_resources, print_layer_table, step_set_folding

    model = ModelWrapper(str(tfc_run / "intermediate_models" / "step_minimize_bit_width.onnx"))
    chosen = {}
    for cost_model in ("finn", "synth"):
        cfg = BuildConfig(tmp_path / cost_model, load_board("pynq-z2"), max_utilization=0.10, cost_model=cost_model)
        folded = step_set_folding(model, cfg)
        chosen[cost_model] = next(p for p in cfg.folding_search if p["chosen"])
        total = design_resources(folded, cfg)
        assert chosen[cost_model]["LUT"] == total["LUT"] <= cfg.budget()["LUT"]
        capsys.readouterr()
        print_layer_table(folded, cfg)
        table = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
        label = {"finn": "cost model finn: FINN's estimates",
                 "synth": "cost model synth: calibrated against Yosys (flow/cost_model_synth.json)"}[cost_model]
        assert label in table and f"(cost model {cost_model})" in table
    assert chosen["synth"]["max_cycles"] == 98 < chosen["finn"]["max_cycles"]
