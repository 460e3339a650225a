"""``python -m flow``: one subcommand per pipeline stage (the Makefile calls these)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from flow.errors import FlowError

DEFAULT_OUT = "build/tfc-ste-mnist5k"


def _quiet_library_warnings() -> None:
    # qonnx/brevitas/torch warn about opset versions and optional packages on
    # every run; none of it is actionable for a user of this tool.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Binarized neural networks from Brevitas training to a bit-exact FINN
    dataflow accelerator on a PYNQ board.

    \b
    Pipeline (each stage reads and writes files in one run directory OUT):
      train   -> OUT/checkpoint.pt, OUT/train_metrics.json, OUT/training_curve.png
      export  -> OUT/model.onnx (QONNX, checked against PyTorch)
      build   -> OUT/intermediate_models/, OUT/report/, OUT/folding_config.json, OUT/build.json
    """
    _quiet_library_warnings()


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True, help="Run directory.")
@click.option("--model", default="tfc", show_default=True, help="tfc, sfc or lfc.")
@click.option("--dataset", default="mnist5k", show_default=True, help="mnist5k, fashion-mnist, fashion-mnist32, mnist or cifar10.")
@click.option("--quant", default="ste", show_default=True, help="Binary quantizer (see flow.quant).")
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=float, default=0.02, show_default=True, help="Adam learning rate (cosine-annealed).")
@click.option("--seed", type=int, default=0, show_default=True)
def train(out_dir, model, dataset, quant, epochs, batch_size, lr, seed):
    """Quantization-aware training; resumes from OUT/checkpoint.pt if a run was interrupted."""
    from flow.models import build_model  # noqa: F401  (validates names before loading data)
    from flow.quant import get_quantizers
    from flow.train import TrainConfig, train as run_train

    get_quantizers(quant)
    from flow.models import known_models

    if model not in known_models():
        raise FlowError(f"unknown model '{model}'; known models: {', '.join(known_models())}")
    config = TrainConfig(model=model, dataset=dataset, quant=quant, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    run_train(out_dir, config)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path), default=DEFAULT_OUT)
@click.option("--check-images", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test images on which QONNX must predict exactly as PyTorch.")
def export(run_dir, check_images):
    """RUN_DIR/checkpoint.pt -> RUN_DIR/model.onnx (QONNX)."""
    from flow.export import export as run_export

    run_export(run_dir / "checkpoint.pt", run_dir / "model.onnx", check_images)


@main.command()
@click.argument("onnx_model", type=click.Path(path_type=Path))
@click.option("--board", default="pynq-z2", show_default=True, help="Board name (boards/*.toml) or path to a board .toml.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None, help="Run directory [default: the model's directory].")
@click.option("--target-fps", type=click.IntRange(min=1), default=None,
              help="Throughput target; default: the fastest folding inside the board's budget.")
@click.option("--input-scale", type=float, default=None,
              help="The model expects pixels/SCALE (e.g. 255 for Brevitas bnn_pynq models): prepend that scaling.")
def build(onnx_model, board, out_dir, target_fps, input_scale):
    """Build a QONNX BNN into a folded FINN dataflow design for BOARD."""
    from flow.boards import load_board
    from flow.build import build as run_build

    run_build(onnx_model, out_dir or onnx_model.parent, load_board(board), target_fps, input_scale)


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FlowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
