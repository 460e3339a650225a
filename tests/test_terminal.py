"""Output in a log: tables keep their width (rich would wrap them at 80 columns), the build times its steps."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO

WIDE_TABLE = """
from rich.table import Table
from flow.terminal import make_console
table = Table()
for i in range(12):
    table.add_column(f"column {i}")
table.add_row(*[f"value {i:03d}" for i in range(12)])
make_console().print(table)
"""


def test_tables_do_not_wrap_when_piped():
    result = subprocess.run([sys.executable, "-c", WIDE_TABLE], cwd=REPO, capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})  # no COLUMNS, stdout a pipe
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and all(len(line) > 120 for line in lines), result.stdout  # 12 columns on one row
    assert re.search(r"value 000 .* value 011", lines[3])
