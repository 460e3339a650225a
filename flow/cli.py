"""``python -m flow``: one subcommand per pipeline stage (the Makefile calls these)."""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import click

from flow.errors import FlowError
from flow.files import run_directory

DEFAULT_OUT = "build/tfc-fourier+clip-mnist5k"  # the Makefile's default OUT
DEBUG_VARIABLE = "FLOW_DEBUG"  # =1: failures end in their Python traceback, for debugging bnn-flow


def positive_finite(ctx, param, value):
    """A click callback: a float option that must be a positive, finite number (NaN passes FloatRange)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive finite number", ctx, param)
    return value
DATASET_HELP = "Test set [default: the one recorded by build (--dataset or the training's)]."
dataset_option = click.option("--dataset", default=None, help=DATASET_HELP)


def quiet_library_warnings() -> None:
    # qonnx/brevitas/torch warn about opset versions and optional packages on
    # every run; none of it is actionable for a user of this tool.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help=f"Show the Python traceback of a failure (or set {DEBUG_VARIABLE}=1).")
def main(debug) -> None:
    """Binarized neural networks from Brevitas training to a bit-exact FINN
    dataflow accelerator on a PYNQ board.

    \b
    Pipeline (each stage reads and writes files in one run directory OUT):
      train   -> OUT/checkpoint.pt, OUT/train_metrics.json, OUT/training_curve.png
      export  -> OUT/model.onnx (QONNX, checked against PyTorch)
      build   -> OUT/intermediate_models/, OUT/report/, OUT/folding_config.json,
                 OUT/hw/ (the accelerator's memories + manifest), OUT/build.json
      emulate -> the built accelerator (OUT/hw) in Python: accuracy, images/s, estimated FPS
      verify  -> OUT/report/verification.json (PyTorch = QONNX = FINN = emulator, per layer)
      rtlsim  -> OUT/rtl/ (SystemVerilog), OUT/report/rtlsim.json (Verilator == emulator, cycles)
      synth   -> OUT/report/synth_resources.json (Yosys synth_xilinx per layer vs FINN's estimate)
      netlist -> OUT/netlist/, OUT/report/netlist.json (Yosys netlist in Verilator == RTL, cycle by cycle)
      deploy  -> OUT/deploy/, OUT/deploy.tar.gz (the board package; also written by build)
    """
    if debug:
        os.environ[DEBUG_VARIABLE] = "1"
    quiet_library_warnings()


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True, help="Run directory.")
@click.option("--model", default="tfc", show_default=True, help="tfc, sfc, lfc, cnv (conv -> max-pool -> BN -> sign) or cnv-bnn-pynq (conv -> BN -> sign -> max-pool).")
@click.option("--dataset", default="mnist5k", show_default=True, help="mnist5k, fashion-mnist, fashion-mnist32, fashion-mnist32-rgb, mnist or cifar10; NAME:TRAIN:TEST for a subset.")
@click.option("--quant", default="fourier+clip", show_default=True, help="Binary quantizer: fourier+clip, fourier+clip-channel, fourier, fourier+fit, wavelet, dft, clip, clip-channel, ste, approxsign or dsq.")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=float, default=0.02, show_default=True, callback=positive_finite,
              help="Adam learning rate (cosine-annealed).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when available), cpu, cuda or cuda:N (under torchrun: each process its local GPU).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="Dtype of the network and its master weights in training (export casts to float32).")
@click.option("--master-weights", type=click.Choice(["float", "int8"]), default="float", show_default=True,
              help="int8: latent weights on a per-tensor int8 grid, stochastic rounding after every step.")
def train(out_dir, model, dataset, quant, epochs, batch_size, lr, seed, device, dtype, master_weights):
    """Quantization-aware training; resumes from OUT/checkpoint.pt if a run was interrupted."""
    from flow.models import build_model  # noqa: F401  (validates names before loading data)
    from flow.quant import get_quantizers
    from flow.train import TrainConfig, train as run_train

    get_quantizers(quant)
    from flow.models import known_models

    if model not in known_models():
        raise FlowError(f"unknown model '{model}'; known models: {', '.join(known_models())}")
    config = TrainConfig(model=model, dataset=dataset, quant=quant, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         dtype=dtype, master_weights=master_weights)
    with run_directory(out_dir):
        run_train(out_dir, config, device)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--check-images", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test images on which QONNX must predict exactly as PyTorch.")
def export(run_dir, check_images):
    """RUN_DIR/checkpoint.pt -> RUN_DIR/model.onnx (QONNX)."""
    from flow.export import export as run_export

    with run_directory(run_dir):
        run_export(run_dir / "checkpoint.pt", run_dir / "model.onnx", check_images)


@main.command()
@click.argument("onnx_model", type=click.Path(path_type=Path))
@click.option("--board", default="pynq-z2", show_default=True, help="Board name (boards/*.toml) or path to a board .toml.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Run directory [default: the model's directory].")
@click.option("--target-fps", type=click.IntRange(min=1), default=None,
              help="Throughput target; default: the fastest folding inside the board's budget.")
@click.option("--input-scale", type=float, default=None, callback=positive_finite,
              help="The model expects pixels/SCALE (e.g. 255 for Brevitas bnn_pynq models): prepend that scaling.")
@click.option("--input-datatype", default=None,
              help="Annotate the model's input as this integer type (e.g. UINT8 for a FLOAT input that reads raw pixels 0..255).")
@click.option("--max-utilization", type=click.FloatRange(min=0.05, max=1.0), default=0.85, show_default=True,
              help="Part of the board's LUT/BRAM/DSP the accelerator may use (the rest: PS interconnect, DMA, FIFOs).")
@click.option("--dataset", default=None, help=DATASET_HELP + " With one known, the build checks the input convention on it.")
@click.option("--cost-model", type=click.Choice(["finn", "synth"]), default="finn", show_default=True,
              help="The folding search's LUT/BRAM/DSP: finn (FINN's estimates) or synth (calibrated against Yosys, `flow calibrate`).")
def build(onnx_model, board, out_dir, target_fps, input_scale, input_datatype, max_utilization, dataset, cost_model):
    """Build a QONNX BNN into a folded FINN dataflow design for BOARD (kept as OUT/model.onnx)."""
    from flow.boards import load_board
    from flow.build import build as run_build

    board = load_board(board)
    out_dir = out_dir or onnx_model.parent
    with run_directory(out_dir):
        run_build(onnx_model, out_dir, board, target_fps, input_scale, max_utilization, input_datatype, dataset, cost_model)


@main.command()
@click.option("--out", "out_root", type=click.Path(path_type=Path), default="build/compare", show_default=True,
              help="Root of the comparison's run directories.")
@click.option("--doc", type=click.Path(path_type=Path), default="docs/quantizers.md", show_default=True,
              help="Markdown report whose results block is rewritten (plots go next to it).")
@click.option("--quant", "quantizers", multiple=True, help="Quantizers to compare (repeatable) [default: all].")
@click.option("--model", default="sfc", show_default=True)
@click.option("--dataset", default="fashion-mnist", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Runs trained in parallel processes.")
@click.option("--timing", is_flag=True, help="Instead: measure the backward overhead (fourier vs ste, n=50 vs n=9).")
@click.option("--report-only", is_flag=True, help="Instead: write DOC and plots from OUT/compare.json.")
@click.option("--name", default="compare", show_default=True, help="The results block of DOC (and plot prefix).")
@click.option("--master-weights", type=click.Choice(["float", "int8"]), default="float", show_default=True)
@click.option("--reference", default="ste", show_default=True, help="The quantizer the others are paired with.")
def compare(out_root, doc, quantizers, model, dataset, epochs, seeds, device, jobs, timing, report_only, name,
            master_weights, reference):
    """Train every quantizer with several seeds on an equal budget; report to DOC."""
    import json

    from flow import compare as comparison

    if timing:
        comparison.timing(doc, device=device)
    elif report_only:
        if not (out_root / "compare.json").exists():
            raise FlowError(f"{out_root / 'compare.json'}: no comparison there; run `flow compare` first")
        comparison.write_report(json.loads((out_root / "compare.json").read_text()), doc)
    else:
        options = {"master_weights": master_weights} if master_weights != "float" else {}
        comparison.compare(out_root, doc, tuple(quantizers) or comparison.QUANTIZERS, model, dataset, epochs, seeds,
                           device, jobs, name, reference, **options)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@dataset_option
def emulate(run_dir, as_json, dataset):
    """Run the built accelerator (RUN_DIR/hw) bit-exactly on the test set."""
    import json

    from flow.emulate import emulate as run_emulate

    result = run_emulate(run_dir, dataset)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{result['images']} {result['dataset']} test images: accuracy {100 * result['accuracy']:.2f}%, "
        f"emulator {result['images_per_s']:,.0f} images/s; hardware estimate {result['estimated_fps']:,.0f} FPS "
        f"at {result['clock_mhz']:g} MHz (bounded by {result['estimated_fps_bounded_by']}, "
        f"latency {result['estimated_latency_ns']:,.0f} ns); "
        + (f"bit-exact with FINN's HW-layer graph on the first {result['reference_images']} images, every layer"
           if result["bit_exact"] else
           "NOT bit-exact with FINN's HW-layer graph: " + "; ".join(
               f"{name} differs on {entry['images']} of {result['reference_images']} images (first: image {entry['first_image']})"
               for name, entry in result["mismatched_layers"].items()))
    )
    if not result["bit_exact"]:
        sys.exit(1)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--images", "num_images", type=click.IntRange(min=1), default=None,
              help="Test images to run [default: the whole test set].")
@dataset_option
@click.option("--netlist", is_flag=True, help="One more level after the RTL: its Yosys netlist (python -m flow netlist).")
@click.option("--no-rtl", "no_rtl", is_flag=True, help="Leave out the RTL level (it compiles a Verilator model first).")
def verify(run_dir, num_images, dataset, netlist, no_rtl):
    """The ladder PyTorch -> QONNX -> streamlined -> HW layers -> emulator; exit 1 on any disagreement.

    A model trained elsewhere (no RUN_DIR/checkpoint.pt) starts at its QONNX."""
    from flow.verify import verify as run_verify

    with run_directory(run_dir):
        agree = run_verify(run_dir, num_images, dataset=dataset, netlist=netlist, rtl=not no_rtl)["agree"]
    if not agree:
        sys.exit(1)


@main.command()
@click.option("--runs", "run_dirs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Built run directory to benchmark (repeatable; TFC first: its targets are checked).")
@click.option("--doc", type=click.Path(path_type=Path), default="docs/benchmarks.md", show_default=True)
def bench(run_dirs, doc):
    """Emulator vs QONNX executor, FINN HW-graph execution, Brevitas and a float32 GEMM chain."""
    from flow.bench import bench as run_bench

    run_bench(list(run_dirs), doc)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
def hls(run_dir):
    """RUN_DIR/dataflow_model.onnx -> RUN_DIR/hls/ (HLS C++ on hls_templates/, testbench, vendor tcl)."""
    from flow.hls import hls as run_hls

    with run_directory(run_dir):
        click.echo(f"wrote {run_hls(run_dir)}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--images", type=click.IntRange(min=1), default=None,
              help="Simulate only the first N test images (CNV: tens of millions of MACs per image) [default: all].")
@dataset_option
def csim(run_dir, images, dataset):
    """C-simulate RUN_DIR/hls with g++ on the test set; exit 1 unless it equals the emulator bit for bit."""
    from flow.csim import csim as run_csim

    with run_directory(run_dir):
        run_csim(run_dir, images, dataset)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
def rtl(run_dir):
    """RUN_DIR/hw -> RUN_DIR/rtl/ (SystemVerilog top, components, memories); rtlsim and synth make it when needed."""
    from flow.rtl import rtl as run_rtl

    click.echo(f"wrote {run_rtl(run_dir)}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
def vivado(run_dir):
    """The bitfile again: RUN_DIR/vivado/vivado.tcl (the RTL route; VIVADO_ROUTE=hls: hls/), run where vivado is on PATH."""
    from flow.vivado import vivado as run_vivado

    with run_directory(run_dir):
        route = run_vivado(run_dir)
    click.echo(f"route {route}: {run_dir / ('vivado' if route == 'rtl' else 'hls') / 'vivado.tcl'}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--images", type=click.IntRange(min=1), default=None, help="Simulate only the first N test images [default: all].")
@dataset_option
def rtlsim(run_dir, images, dataset):
    """Verilator simulation of RUN_DIR/rtl under random stalls; exit 1 unless it equals the emulator byte for byte."""
    from flow.rtlsim import rtlsim as run_rtlsim

    run_rtlsim(run_dir, images, dataset=dataset)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
def synth(run_dir):
    """Yosys synth_xilinx of RUN_DIR/rtl: LUT, FF, LUTRAM/SRL, BRAM, DSP per layer against FINN's estimate and the board."""
    from flow.synth import synth as run_synth

    run_synth(run_dir)


@main.command()
@click.option("--kind", "kinds", multiple=True, help="Calibrate only this layer kind (repeatable) [default: all]; the others are kept.")
@click.option("--family", "family_name", default="xc7", show_default=True, help="synth_xilinx family: xc7 (Zynq-7000) or xcup (Zynq UltraScale+).")
@click.option("--data", "data_file", type=click.Path(path_type=Path), default=None, help="The calibration file [default: flow/cost_model_synth.json].")
@click.option("--refit", is_flag=True, help="Fit the stored Yosys samples again (after changing a kind's terms), no synthesis.")
def calibrate(kinds, family_name, data_file, refit):
    """Synthesize each layer kind's sweep with Yosys and fit the --cost-model synth coefficients (many minutes)."""
    from flow.cost_model import DATA_FILE
    from flow.cost_model import calibrate as run_calibrate

    run_calibrate(list(kinds) or None, family_name, data_file or DATA_FILE, refit)
    click.echo(f"wrote {data_file or DATA_FILE}")


@main.command("cost-curve")
@click.option("--run", "runs", multiple=True, required=True, metavar="TITLE:RUN_DIR",
              help="A built run (repeatable); runs with one TITLE share a panel (e.g. TFC built with each cost model).")
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True, help="The plot (.png).")
@click.option("--board", default="pynq-z2", show_default=True, help="The board whose LUT budget is drawn.")
@click.option("--max-utilization", type=click.FloatRange(min=0.05, max=1.0), default=0.85, show_default=True)
def cost_curve(runs, out_path, board, max_utilization):
    """Plot FPS against predicted LUT of the folding searches of built runs (both cost models), with Yosys' counts."""
    from flow.boards import load_board
    from flow.cost_model import plot_folding_curves

    pairs = []
    for run in runs:
        title, _, run_dir = run.rpartition(":")
        if not title or not (Path(run_dir) / "report" / "folding_search.json").exists():
            raise FlowError(f"--run {run}: expected TITLE:RUN_DIR of a run built with the folding search")
        pairs.append((title, Path(run_dir)))
    plot_folding_curves(pairs, out_path, load_board(board).resources["LUT"], max_utilization)
    click.echo(f"wrote {out_path}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--images", type=click.IntRange(min=1), default=3, show_default=True, help="Test images to run through both.")
@dataset_option
def netlist(run_dir, images, dataset):
    """Yosys netlist of RUN_DIR/rtl in Verilator vs the RTL, cycle by cycle at the top's ports; exit 1 unless equal."""
    from flow.netlist import netlist as run_netlist

    run_netlist(run_dir, images, dataset=dataset)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@dataset_option
def deploy(run_dir, dataset):
    """RUN_DIR -> RUN_DIR/deploy/ + deploy.tar.gz: driver, check.py, emulator data, test set, manifest."""
    from flow.deploy import deploy as run_deploy

    with run_directory(run_dir):
        manifest = run_deploy(run_dir, dataset)
    click.echo(
        f"wrote {run_dir / 'deploy'} and {run_dir / 'deploy.tar.gz'} ({len(manifest['files'])} files; "
        f"QONNX accuracy {manifest['accuracy']:.2%} on {manifest['test_set']['count']} {manifest['test_set']['dataset']} "
        f"test images); on the board: python3 check.py --backend pynq"
    )


def describe(exc: BaseException) -> str:
    """One line for a failure: the FlowError's own message, or what the system said about which file."""
    if isinstance(exc, FlowError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        if exc.errno == errno.ENOSPC:
            return f"{where}cannot write: no space left on device (disk full)"
        return f"{where}{exc.strerror or exc}"
    first_line = next((line for line in str(exc).splitlines() if line.strip()), "")
    return (f"unexpected {type(exc).__name__}: {first_line} "
            f"(a bug in bnn-flow; run again with --debug or FLOW_DEBUG=1 for the traceback)")


def run() -> None:
    """The console entry point: every failure ends as one ``error:`` line and a non-zero exit."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `python -m flow` alone: the help, as click prints it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "flow"
        message = " ".join(exc.format_message().split())
        click.echo(f"error: {command}: {message} (--help lists the options)", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001  (the CLI's one place that turns failures into a line)
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        click.echo(f"error: {describe(exc)}", err=True)
        sys.exit(1)
