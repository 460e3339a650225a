"""The run directory as one build: what it was built from, and whether that build finished.

A build keeps its inputs beside its outputs: ``RUN_DIR/model.onnx`` (the QONNX
model it built) and ``RUN_DIR/board.toml`` (the board description itself, so a
custom board never has to be found again by name). ``build.json``, written
last, records their sha256 under ``inputs`` and the steps that ran under
``steps_completed``. Every stage that reads a build calls
:func:`require_complete_build` first: a build that did not finish, or whose
model or board changed since, is refused instead of reported as a result.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flow.errors import FlowError
from flow.files import sha256_file

BUILD_MARKER = "build.json"
KEPT_MODEL = "model.onnx"
KEPT_BOARD = "board.toml"
PACKAGE_DIR = "deploy"
PACKAGE_ARCHIVE = "deploy.tar.gz"
DEPLOY_STEP = "deploy"  # in steps_completed when the build wrote the package
# temporary files of interrupted writes (flow.files, flow.deploy): never part of a build
LEFTOVER_PATTERNS = (".*.tmp-*", "*.tmp", "*.tmp.*")
LEFTOVER_DIRS = (".", "report", "intermediate_models")


def input_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of the build's inputs as they are in the run directory now."""
    return {name: sha256_file(Path(run_dir) / name) for name in (KEPT_MODEL, KEPT_BOARD) if (Path(run_dir) / name).is_file()}


def required_steps() -> list[str]:
    from flow.build import BUILD_STEPS

    return [step.__name__ for step in BUILD_STEPS]


def require_complete_build(run_dir: Path) -> dict:
    """``build.json`` of a build that finished and was built from the model and board beside it.

    Raises FlowError("stale/incomplete build: ...") otherwise; returns build.json.
    """
    run_dir = Path(run_dir)
    marker = run_dir / BUILD_MARKER

    def refuse(reason: str) -> FlowError:
        return FlowError(f"stale/incomplete build: {reason}; run make build")

    if not marker.is_file():
        raise refuse(f"{marker} missing (no build finished in {run_dir})")
    try:
        summary = json.loads(marker.read_text())
        recorded = summary["inputs"]
        completed = summary["steps_completed"]
        if not isinstance(recorded, dict) or not isinstance(completed, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise refuse(f"{marker} has no record of its inputs and steps (unreadable, or written by an older flow)") from None
    missing = [step for step in required_steps() if step not in completed]
    if missing:
        raise refuse(f"{marker}: the build did not complete {', '.join(missing)}")
    current = input_digests(run_dir)
    for name in (KEPT_MODEL, KEPT_BOARD):
        if name not in current:
            raise refuse(f"{run_dir / name} missing (the build's input)")
        if recorded.get(name) != current[name]:
            raise refuse(f"{run_dir / name} changed since the build (sha256 differs from {BUILD_MARKER})")
    return summary


def run_board(run_dir: Path):
    """The board a run was built for: its own ``RUN_DIR/board.toml``, never a stock board by name."""
    from flow.boards import load_board

    path = Path(run_dir) / KEPT_BOARD
    if not path.is_file():
        raise FlowError(f"stale/incomplete build: {path} missing (the build's board); run make build")
    return load_board(str(path))


def keep_inputs(run_dir: Path, onnx_path: Path, board) -> dict[str, str]:
    """Copy the model to ``RUN_DIR/model.onnx`` (unless it is that file) and write ``RUN_DIR/board.toml``.

    Returns their sha256, for ``build.json``.
    """
    from flow.boards import board_toml
    from flow.files import atomic_write_bytes, atomic_write_text

    run_dir = Path(run_dir)
    kept = run_dir / KEPT_MODEL
    if not (kept.exists() and kept.samefile(onnx_path)):
        atomic_write_bytes(kept, Path(onnx_path).read_bytes())
    atomic_write_text(run_dir / KEPT_BOARD, board_toml(board))
    return input_digests(run_dir)


def remove_leftovers(run_dir: Path) -> None:
    """Temporary files and folders of an interrupted build or deploy (``.deploy.tmp-*``, ``*.tmp``)."""
    for folder in LEFTOVER_DIRS:
        for pattern in LEFTOVER_PATTERNS:
            for path in (Path(run_dir) / folder).glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def remove_package(run_dir: Path) -> None:
    """The deployment package of an earlier build: removed before anything of a new one is written."""
    shutil.rmtree(Path(run_dir) / PACKAGE_DIR, ignore_errors=True)
    (Path(run_dir) / PACKAGE_ARCHIVE).unlink(missing_ok=True)


def start_build(run_dir: Path) -> None:
    """From here until build.json is written again, the run directory holds no complete build."""
    (Path(run_dir) / BUILD_MARKER).unlink(missing_ok=True)
    remove_package(run_dir)
    remove_leftovers(run_dir)
