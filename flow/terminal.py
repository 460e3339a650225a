"""What the stages print on: rich consoles and progress bars that behave the same in a terminal and in a log."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Piped or logged output has no terminal width, and rich would then wrap tables at
# 80 columns; tables are only as wide as their content, so a wide limit costs nothing.
LOG_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A console at the terminal's width, or ``LOG_WIDTH`` columns when the output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else LOG_WIDTH
    return Console(width=width, stderr=stderr)


def progress_bar(enabled: bool = True) -> Progress:
    """A bar for a long loop, on stderr (stdout may be a JSON result): description, done/total,
    elapsed; in a log one final line; off under CI."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=make_console(stderr=True), disable=not enabled or os.environ.get("CI") == "true",
    )
