"""The Makefile: `make help` lists every target and variable; OUT may contain a space."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import REPO


def make(*args: str) -> subprocess.CompletedProcess:
    # -o: never (re)install .venv from a test; PY: the interpreter running the tests
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", f"PY={sys.executable}", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "CI": "true"})


def test_help_lists_every_target_and_variable():
    makefile = (REPO / "Makefile").read_text()
    variables = set(re.findall(r"^([A-Z_]+)\s*\?=", makefile, re.M))
    targets = {target for line in re.findall(r"^\.PHONY:(.*)$", makefile, re.M) for target in line.split()}
    assert {"MAX_UTILIZATION", "HLS_BACKEND", "IMAGES", "OUT"} <= variables and {"csim", "clean"} <= targets
    text = make("help").stdout
    for variable in variables | {"DATA_DIR", "FLOW_DEBUG"}:
        assert re.search(rf"\b{variable}=", text), variable
    for target in targets:
        assert re.search(rf"make [\w| -]*\b{target}\b", text), target
    for value in ("cnv", "cnv-bnn-pynq", "fashion-mnist32", "fashion-mnist32-rgb", "NAME:TRAIN:TEST"):
        assert value in text, value


def test_out_with_a_space(tfc_run, tmp_path):
    out = tmp_path / "my runs" / "tfc run"
    shutil.copytree(tfc_run, out, symlinks=True)
    result = make("verify", f"OUT={out}", "IMAGES=50")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "report" / "verification.json").exists()
    assert not (tmp_path / "my").exists()  # nothing written at the path's first word
