"""FINN outside its own CLI: settings, a build directory for generated code, logging."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def init_finn(run_dir: Path) -> None:
    """Point FINN_BUILD_DIR into the run directory, load FINN's settings, and send
    FINN's log (folding decisions, warnings) to ``run_dir/build.log`` instead of the console."""
    build_dir = (run_dir / "finn_tmp").resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    from finn.util.settings import initialize_dummy_settings

    initialize_dummy_settings()
    finn_log = logging.getLogger("finn_logger")
    for handler in list(finn_log.handlers):
        finn_log.removeHandler(handler)
    handler = logging.FileHandler(run_dir / "build.log", mode="w")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    finn_log.addHandler(handler)
    finn_log.setLevel(logging.INFO)
    finn_log.propagate = False
