"""C simulation of the generated HLS accelerator with g++, checked bit for bit.

The sources in ``RUN_DIR/hls/`` (see :mod:`flow.hls`) are compiled with g++
against the open ``ap_int.h`` / ``hls_stream.h`` that ship inside the
installed ``hls4ml`` package (found at run time, never copied), the whole
test set is streamed through the top as the packed bytes the input DMA would
read, and the packed output bytes must equal the reference's exactly.
"""

from __future__ import annotations

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

from flow.errors import FlowError
from flow.hls import HLS_TEMPLATES
from flow.terminal import make_console

console = make_console()

# -fno-exceptions: nothing here throws, and without unwinding cleanups g++ compiles the
# large static weight arrays of class type ap_uint several times faster
GXX_FLAGS = ["-std=c++14", "-fno-exceptions"]
# -O1: the whole-network C-sim compiles in seconds and runs ~1000 images/s
OPTIMIZE = "-O1"
STREAM_WARNING = "WARNING: Hls::stream"


def ap_types_dir() -> Path:
    """hls4ml's copy of the open Xilinx ap_types (ap_int.h, hls_stream.h)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or spec.origin is None:
        raise FlowError("the Python package hls4ml is not installed: it provides ap_int.h/hls_stream.h for the C simulation")
    path = Path(spec.origin).parent / "templates" / "vivado" / "ap_types"
    for header in ("ap_int.h", "hls_stream.h"):
        if not (path / header).exists():
            raise FlowError(f"{path / header} not found: this hls4ml version does not ship the ap_types headers")
    return path


def compile_testbench(sources: list[Path], include_dirs: list[Path], executable: Path, optimize: str = OPTIMIZE) -> float:
    """g++ ``sources`` into ``executable``; returns seconds. A compile error names file and line."""
    command = ["g++", *GXX_FLAGS, optimize, "-isystem", str(ap_types_dir()), "-I", str(HLS_TEMPLATES)]
    command += [arg for d in include_dirs for arg in ("-I", str(d))]
    command += [*map(str, sources), "-o", str(executable)]
    start = time.time()
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise FlowError("g++ is not installed: the C simulation needs a C++14 compiler") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if re.search(r":\d+:(\d+:)? (fatal )?error:", line)]
        first = errors[0] if errors else (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise FlowError(f"C-sim compile failed: {first}")
    return time.time() - start


def run_testbench(executable: Path, top: str, packed_input: np.ndarray, out_bytes: int, work_dir: Path) -> np.ndarray:
    """Stream N x in_bytes packed images through ``top``; return N x out_bytes packed outputs."""
    in_path, out_path = work_dir / f"{top}_input.bin", work_dir / f"{top}_output.bin"
    np.ascontiguousarray(packed_input, dtype=np.uint8).tofile(in_path)
    result = subprocess.run([str(executable), top, str(in_path), str(out_path)], capture_output=True, text=True)
    if result.returncode != 0 or STREAM_WARNING in result.stdout:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise FlowError(f"C simulation of {top} failed (exit {result.returncode}): {message[0] if message else ''}")
    return np.fromfile(out_path, dtype=np.uint8).reshape(len(packed_input), out_bytes)


def emulator_outputs(run_dir: Path, packed_input: np.ndarray) -> np.ndarray:
    """The emulator's packed output bytes for the same packed input (RUN_DIR/hw)."""
    from flow.emulate import Emulator

    return np.asarray(Emulator(run_dir / "hw").execute_packed(packed_input), dtype=np.uint8).reshape(len(packed_input), -1)


def checked_sources(hls_dir: Path) -> list[str]:
    """The files hls/manifest.json lists, each checked against its sha256 (flow.hls writes it)."""
    from flow.artifacts import MANIFEST
    from flow.driver.check import PackageError, read_manifest, verify_listed_files

    if not (hls_dir / MANIFEST).exists():
        raise FlowError(f"{hls_dir / MANIFEST}: missing; the generated HLS sources are unchecked; run make build")
    try:
        files = read_manifest(hls_dir)["files"]
        verify_listed_files(hls_dir, files)
    except PackageError as exc:
        raise FlowError(f"{exc}; run make build") from None
    if "hls.json" not in files:
        raise FlowError(f"{hls_dir / MANIFEST}: does not list hls.json")
    return sorted(files)


def copy_sources(hls_dir: Path, listed: list[str], target: Path) -> Path:
    """Only the checked files, into ``target``: an unlisted header in hls/ (the vendor tools'
    folders live there too) can never be picked up by an #include."""
    for name in listed:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(hls_dir / name, target / name)
    return target


def first_difference(actual: np.ndarray, expected: np.ndarray) -> str | None:
    if actual.shape != expected.shape:
        return f"output shape {actual.shape} differs from the reference's {expected.shape}"
    rows = np.flatnonzero((actual != expected).any(axis=1))
    if len(rows) == 0:
        return None
    i = rows[0]
    return (
        f"{len(rows)} of {len(actual)} images differ; first: image {i}, "
        f"C-sim bytes {actual[i].tolist()} vs reference {expected[i].tolist()}"
    )


def csim(run_dir: Path, images: int | None = None, dataset: str | None = None) -> dict:
    """Compile RUN_DIR/hls with g++, run the test set, compare with the emulator bit for bit.

    ``images``: only the first that many test images (a convolutional network's C-sim
    runs tens of millions of binary MACs per image); None = the whole test set.
    Writes RUN_DIR/report/csim.json; raises FlowError on any difference.
    """
    from flow.artifacts import images_in_stream_order
    from flow.data import load
    from flow.driver.packing import IOShapes, pack_images
    from flow.inputs import run_dataset
    from flow.rundir import require_complete_build

    run_dir = Path(run_dir)
    require_complete_build(run_dir)
    hls_dir = run_dir / "hls"
    listed = checked_sources(hls_dir)
    spec = json.loads((hls_dir / "hls.json").read_text())
    top = spec["top"]
    if images is not None and images < 1:
        raise FlowError(f"images must be at least 1, not {images}")
    dataset = run_dataset(run_dir, dataset)
    test_set = load(dataset).test_images
    images = test_set[:images]
    packed = pack_images(images_in_stream_order(images, run_dir / "hw"), IOShapes.from_dict(spec["io_shape_dict"]))
    packed = packed.reshape(len(images), spec["in_bytes_per_image"])

    with tempfile.TemporaryDirectory(prefix="csim-") as tmp:
        work = Path(tmp)
        sources = copy_sources(hls_dir, listed, work / "hls")
        executable = work / "tb"
        compile_s = compile_testbench([sources / "tb.cpp", sources / f"{top}.cpp"], [sources], executable)
        start = time.time()
        outputs = run_testbench(executable, top, packed, spec["out_bytes_per_image"], work)
        run_s = time.time() - start
    expected = emulator_outputs(run_dir, packed)
    difference = first_difference(outputs, expected)
    report = {
        "top": top,
        "dataset": dataset,
        "images": len(images),
        "test_set_images": len(test_set),
        "reference": "emulator (RUN_DIR/hw)",
        "bit_exact": difference is None,
        "compile_seconds": round(compile_s, 2),
        "run_seconds": round(run_s, 2),
        "images_per_second": round(len(images) / run_s, 1),
        "compiler": " ".join(["g++", *GXX_FLAGS, OPTIMIZE]),
    }
    (run_dir / "report").mkdir(exist_ok=True)
    tmp_report = run_dir / "report" / "csim.json.tmp"
    tmp_report.write_text(json.dumps(report, indent=2))
    os.replace(tmp_report, run_dir / "report" / "csim.json")
    console.print(
        f"C-sim {top}: compile {compile_s:.1f} s, run {run_s:.1f} s for {len(images)} of {len(test_set)} {dataset} "
        f"test images ({len(images) / run_s:,.1f} img/s)"
    )
    if difference is not None:
        raise FlowError(f"C-sim of {hls_dir} differs from the emulator: {difference}")
    console.print(f"[green]bit-exact[/]: C-sim output bytes == emulator output bytes on all {len(images)} images")
    return report
