"""``make bench``: the emulator's speed next to every other way of running the network.

Per run directory, on the whole test set of its dataset, in one process (the
fast contenders in interleaved rounds, so the ratios hold on a shared, noisy
machine whose load drifts):

- emulator: ``Emulator.execute`` (input packing, the layers, output
  unpacking), both exact routes (XOR + popcount on packed words, the
  default; BLAS GEMM on +-1 matrices);
- QONNX executor: ``qonnx.core.onnx_exec.execute_onnx`` on ``model.onnx``,
  one image per call as a user would run it, and batched (``flow.graphs``);
- FINN HW-layer graph: FINN's Python execution of ``step_convert_to_hw.onnx``,
  batched;
- Brevitas: the trained PyTorch model in eval mode, one batch;
- GEMM chain: float32 ``x @ W`` then ``sign`` for random +-1 matrices of the
  accelerator's layer shapes, arg-max at the end: the practical compute limit
  of this CPU for this network.

Every contender runs with one BLAS / torch / numba thread: on a machine
shared by several jobs, extra threads only spin (the emulator's packed route
uses every core by default).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from flow.emulate import Emulator, blas_controller
from flow.inputs import run_dataset
from flow.errors import FlowError
from flow.terminal import make_console

console = make_console()
PER_IMAGE_SAMPLE = 100  # images run one by one through the QONNX executor
BENCH_IMAGES = 1000  # test images per run (all of mnist5k's; the first 1000 of larger sets)
EXECUTOR_BATCH = 100  # the graph executors' batch (CNV's im2col tensors are ~0.5 GB per 100 images)
ROUNDS = 10  # interleaved rounds for the fast contenders (3 for convolutional networks)
GEMM_TARGET = ("float32 GEMM chain", 0.5)
TFC_TARGETS = [("QONNX executor (per image)", 1000), ("Brevitas eval (batched)", 5), GEMM_TARGET]
CNV_TARGET = ("QONNX executor (per image)", 50)


def interleaved_best(functions: dict, rounds: int) -> dict[str, float]:
    """Shortest time of each function over ``rounds`` rounds that run each once, in turn.

    Interleaving gives every contender the same share of the machine's
    changing load, so the ratios hold even when the absolute times drift.
    """
    for function in functions.values():
        function()  # warm-up: first BLAS call, lazy imports, caches
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def best_time(function, repeats: int) -> float:
    """Shortest of ``repeats`` wall-clock runs: the least disturbed by other jobs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_chain(emulator: Emulator, images: np.ndarray):
    """float32 GEMM + sign over random +-1 matrices of the accelerator's MVAU shapes."""
    rng = np.random.default_rng(0)
    shapes = [(layer.spec["MW"], layer.spec["MH"]) for layer in emulator.layers if layer.kind == "mvau"]
    weights = [rng.choice(np.float32([-1, 1]), size=shape) for shape in shapes]
    flat = images.reshape(len(images), -1)

    def run():
        x = flat.astype(np.float32) - 127.5
        for w in weights[:-1]:
            x = np.sign(x @ w)
        return (x @ weights[-1]).argmax(axis=1)

    return run


def bench_run(run_dir: Path) -> dict:
    import numba
    import torch
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    from flow import data as datasets
    from flow.export import load_trained_model
    from flow.graphs import execute_batched
    from flow.rundir import require_complete_build

    require_complete_build(run_dir)
    images = datasets.load(run_dataset(run_dir)).test_images[:BENCH_IMAGES]
    n = len(images)
    rates = {}

    emulator = Emulator(run_dir / "hw", batch_size=n)
    convolutional = any(layer.kind == "sliding_window" for layer in emulator.layers)
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    model, _ = load_trained_model(run_dir / "checkpoint.pt")
    pixels = torch.from_numpy(images).float()

    def brevitas_eval():
        with torch.no_grad():
            model(pixels)

    gemm = Emulator(run_dir / "hw", batch_size=n, route="gemm")
    fast = {
        "emulator": lambda: emulator.execute(images),
        "emulator (GEMM route)": lambda: gemm.execute(images),
        "Brevitas eval (batched)": brevitas_eval,
    }
    if not convolutional:
        # the GEMM chain models MLP layers (one vector per image)
        chain = gemm_chain(emulator, images)

        def single_thread_chain():
            with blas_controller().limit(limits=1, user_api="blas"):
                chain()

        fast["float32 GEMM chain"] = single_thread_chain
    rates.update({name: n / seconds for name, seconds in interleaved_best(fast, 3 if convolutional else ROUNDS).items()})

    with blas_controller().limit(limits=1, user_api="blas"):
        qonnx_model = ModelWrapper(str(run_dir / "model.onnx"))
        in_name = qonnx_model.graph.input[0].name
        sample = images[:PER_IMAGE_SAMPLE].astype(np.float32)
        per_image = best_time(lambda: [execute_onnx(qonnx_model, {in_name: image[None]}) for image in sample], 1)
        rates["QONNX executor (per image)"] = len(sample) / per_image
        rates["QONNX executor (batched)"] = n / best_time(lambda: execute_batched(qonnx_model, images, batch=EXECUTOR_BATCH), 2)
        hw_graph = ModelWrapper(str(run_dir / "intermediate_models" / "step_convert_to_hw.onnx"))
        rates["FINN HW-layer graph (batched)"] = n / best_time(lambda: execute_batched(hw_graph, images, batch=EXECUTOR_BATCH), 1 if convolutional else 2)
    return {
        "run": str(run_dir),
        "network": " -> ".join(f"{layer.spec['MW']}x{layer.spec['MH']}" for layer in emulator.layers if layer.kind == "mvau"),
        "convolutional": convolutional,
        "images": n,
        "images_per_s": rates,
        "estimated_fps": emulator.cycles["estimated_fps"],
    }


def bench(run_dirs: list[Path], doc: Path) -> list[dict]:
    results = []
    for run_dir in run_dirs:
        console.print(f"[bold]benchmarking {run_dir}[/]")
        results.append(bench_run(Path(run_dir)))
    text = render(results, run_dirs)
    console.print(text)
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, doc)
    return results


def render(results: list[dict], run_dirs: list[Path]) -> str:
    contenders = list(dict.fromkeys(name for r in results for name in r["images_per_s"]))
    runs = " ".join(f"--runs {d}" for d in run_dirs)
    lines = [
        "# Emulator benchmark",
        "",
        f"Images per second on (at most) the first {BENCH_IMAGES} test images of each run's dataset, all in one process: the "
        f"emulator, its GEMM route, the GEMM chain and Brevitas timed in {ROUNDS} interleaved rounds "
        "(3 for CNV; best round each), the graph executors right after (best of 1-2 runs, batches of "
        f"{EXECUTOR_BATCH}); one BLAS/torch/numba thread each. The emulator's figure includes input packing and output unpacking "
        "(FINN's `finn.util.data_packing`, as the board driver does). The GEMM chain models MLP "
        "layers only (n/a for CNV).",
        "",
        f"Produced by `make bench` (`python -m flow bench {runs}`) on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs "
        f"(load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| contender | " + " | ".join(Path(r["run"]).name + f" ({r['network']})" for r in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for name in contenders:
        lines.append(f"| {name} | " + " | ".join(f"{r['images_per_s'][name]:,.0f}" if name in r["images_per_s"] else "n/a" for r in results) + " |")
    lines.append("| hardware estimate (FPS at the board clock) | " + " | ".join(f"{r['estimated_fps']:,.0f}" for r in results) + " |")
    lines += ["", "Emulator speed-up (emulator images/s divided by the contender's):", ""]
    lines.append("| ratio | " + " | ".join(Path(r["run"]).name for r in results) + " |")
    lines.append("|---" * (len(results) + 1) + "|")
    for name in contenders[1:]:
        lines.append(
            f"| emulator / {name} | "
            + " | ".join(f"{r['images_per_s']['emulator'] / r['images_per_s'][name]:,.2f}x" if name in r["images_per_s"] else "n/a" for r in results)
            + " |"
        )
    lines += ["", "Targets: TFC (the first run, as `make bench` orders them) against all three, every other MLP against the GEMM chain, CNV against the per-image QONNX executor:", ""]
    checks = [(results[0], t) for t in TFC_TARGETS] + [(r, CNV_TARGET if r["convolutional"] else GEMM_TARGET) for r in results[1:]]
    for result, (contender, target) in checks:
        ratio = result["images_per_s"]["emulator"] / result["images_per_s"][contender]
        verdict = "met" if ratio >= target else "**NOT met**"
        lines.append(f"- {Path(result['run']).name}: emulator / {contender} = {ratio:,.2f}x, target >= {target:g}x: {verdict}")
    return "\n".join(lines) + "\n"
