"""Deployment package: manifest, refusal of changed files, check.py on the emulator, and the
driver's board path end to end against the simulated PYNQ layer (tests/fake_pynq, a test double)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import numpy as np
import pytest

from flow import data as datasets
from flow.boards import BOARDS_DIR, load_board
from flow.errors import FlowError

FAKE_PYNQ = Path(__file__).resolve().parent / "fake_pynq"
# what deploy() needs from a run directory (the rest is training and build history)
RUN_FILES = ["build.json", "model.onnx", "board.toml", "folding_config.json", "train_metrics.json", "hw"]


def run_check(package: Path, *args: str, on_fake_pynq: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python check.py ARGS`` in the package, as a user runs it (outside the repository)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(FAKE_PYNQ) if on_fake_pynq else "", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, str(package / "check.py"), *args],
        cwd=cwd or package, capture_output=True, text=True, timeout=300, env=env,
    )


def copy_run(run: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for name in RUN_FILES:
        source = run / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name)
    return target


def is_pynq_module(name: str) -> bool:
    return name == "pynq" or name.startswith("pynq.") or name == "flow.driver.overlay"


@pytest.fixture
def fake_pynq(monkeypatch):
    """The test double imported as ``pynq`` (the driver bound to it) for one test only."""
    monkeypatch.syspath_prepend(str(FAKE_PYNQ))
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if is_pynq_module(name)}
    import pynq

    assert Path(pynq.__file__).is_relative_to(FAKE_PYNQ)
    yield pynq
    for name in [name for name in sys.modules if is_pynq_module(name)]:
        del sys.modules[name]
    sys.modules.update(saved)


# --------------------------------------------------------------------------- the package


def test_manifest_lists_every_file_and_the_qonnx_accuracy(tfc_run):
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.driver.packing import IOShapes, packed_bytearray_to_finnpy
    from flow.graphs import execute_batched, predictions

    package = tfc_run / "deploy"
    manifest = json.loads((package / "manifest.json").read_text())
    on_disk = {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    for required in ("check.py", "driver/overlay.py", "driver/packing.py", "hw/manifest.json",
                     "driver/vendor/finn/util/data_packing.py", "driver/vendor/qonnx/core/datatype.py"):
        assert required in manifest["files"]
    import finn.util.data_packing

    assert (package / "driver/vendor/finn/util/data_packing.py").read_bytes() == Path(finn.util.data_packing.__file__).read_bytes()

    test = datasets.load("mnist5k")
    predicted = predictions(execute_batched(ModelWrapper(str(tfc_run / "model.onnx")), test.test_images))
    assert manifest["correct"] == int((predicted == test.test_labels).sum())
    assert manifest["accuracy"] == manifest["correct"] / len(test.test_labels)
    assert np.array_equal(np.load(package / manifest["expected_outputs"])[:, 0], predicted)
    assert manifest["board"] == "pynq-z2" and manifest["part"] == "xc7z020clg400-1"
    assert manifest["folding"] == json.loads((tfc_run / "folding_config.json").read_text())
    # the packed test set unpacks to exactly the dataset's pixels
    io = IOShapes.from_dict(manifest["io_shape_dict"])
    packed = np.load(package / manifest["test_set"]["images"])
    unpacked = packed_bytearray_to_finnpy(packed, io.input.dtype, (len(packed), *io.input.folded[1:]),
                                          reverse_endian=True, reverse_inner=True)
    assert np.array_equal(unpacked.reshape(len(packed), -1), test.test_images.reshape(len(packed), -1))
    assert np.array_equal(np.load(package / manifest["test_set"]["labels"]), test.test_labels)
    with tarfile.open(tfc_run / "deploy.tar.gz") as tar:
        assert {m.name for m in tar.getmembers() if m.isfile()} == {f"deploy/{f}" for f in on_disk}


def test_unpacked_tarball_checks_on_the_emulator_with_the_manifest_accuracy(tfc_run, tmp_path):
    with tarfile.open(tfc_run / "deploy.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    package = tmp_path / "deploy"
    result = run_check(package, "--backend", "emulator", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    manifest = json.loads((package / "manifest.json").read_text())
    assert report["correct"] == manifest["correct"] and report["accuracy"] == manifest["accuracy"]
    assert report["images"] == manifest["test_set"]["count"] and report["images_per_s"] > 0


def test_check_refuses_a_changed_or_missing_file_before_running(tfc_run, tmp_path):
    package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy")
    weights = sorted((package / "hw").glob("*_weights.npy"))[0]
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    result = run_check(package, "--backend", "emulator")
    assert result.returncode == 2
    assert f"{weights}: sha256 differs from manifest.json" in result.stderr
    assert "accuracy" not in result.stdout

    shutil.copytree(tfc_run / "deploy", tmp_path / "second")
    (tmp_path / "second" / "driver" / "packing.py").unlink()
    result = run_check(tmp_path / "second", "--backend", "emulator")
    assert result.returncode == 2
    assert "driver/packing.py: missing from the package" in result.stderr


def test_check_compares_every_image_not_the_accuracy(tfc_run, tmp_path):
    """7 changed predictions with the same number of correct images: MISMATCH (the manifest re-hashed)."""
    from flow.artifacts import sha256_file

    package = shutil.copytree(tfc_run / "deploy", tmp_path / "deploy")
    manifest = json.loads((package / "manifest.json").read_text())
    expected = np.load(package / manifest["expected_outputs"])
    labels = np.load(package / manifest["test_set"]["labels"])
    wrong = np.flatnonzero(expected[:, 0] != labels)[:7]
    assert len(wrong) == 7
    for i in wrong:  # another wrong label: the count of correct images stays the same
        expected[i, 0] = next(c for c in range(10) if c not in (expected[i, 0], labels[i]))
    np.save(package / manifest["expected_outputs"], expected)
    manifest["files"][manifest["expected_outputs"]] = sha256_file(package / manifest["expected_outputs"])
    (package / "manifest.json").write_text(json.dumps(manifest))
    result = run_check(package, "--backend", "emulator", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["correct"] == manifest["correct"]
    assert report["differing_images"] == 7 and report["first_differing"]["image"] == int(wrong[0])
    result = run_check(package, "--backend", "emulator")
    assert result.returncode == 1
    assert "MISMATCH: 7 of 1000 images' outputs differ" in result.stdout and "flow verify" in result.stdout


def test_pynq_backend_without_a_bitfile_says_so(tfc_run):
    result = run_check(tfc_run / "deploy", "--backend", "pynq")
    assert result.returncode == 2
    assert "no bitfile" in result.stderr


def test_deploy_refuses_a_run_without_hardware_artifacts(tfc_run, tmp_path):
    from flow.deploy import deploy

    run = copy_run(tfc_run, tmp_path / "run")
    shutil.rmtree(run / "hw")
    with pytest.raises(FlowError, match=r"hw/manifest.json: no hardware manifest"):
        deploy(run)
    assert not (run / "deploy").exists() and not (run / "deploy.tar.gz").exists()


# --------------------------------------------------------------------------- board path (test double)


@pytest.mark.parametrize("run_name", ["tfc_run", "sfc_run"])
@pytest.mark.parametrize("shell", ["iodma", "axidma", "axidma-rtl"])
def test_driver_board_path_equals_the_emulator_on_the_whole_test_set(run_name, shell, request, fake_pynq, tmp_path):
    from flow.driver.overlay import FINNDMAOverlay
    from flow.emulate import Emulator

    run = request.getfixturevalue(run_name)

    package = run / "deploy"
    manifest = json.loads((package / "manifest.json").read_text())
    images = datasets.load("mnist5k").test_images
    expected = Emulator(package / "hw").execute(images)
    bitfile = fake_pynq.write_fake_bitfile(tmp_path / "accel.bit", package / "hw", manifest["io_shape_dict"], shell)
    for batch in (1, 7, 1000):
        accel = FINNDMAOverlay(str(bitfile), manifest["io_shape_dict"], batch_size=batch)
        outputs = np.concatenate([accel.execute(images[i : i + batch]) for i in range(0, len(images), batch)])
        assert outputs.shape == expected.shape
        assert np.array_equal(outputs.astype(np.int64), expected), f"batch {batch}"
    with pytest.raises(ValueError, match="783 values per image, the accelerator takes 784"):
        accel.execute(images.reshape(len(images), -1)[:5, :783])


def test_check_on_the_board_path_with_a_bitfile_in_the_package(sfc_run, fake_pynq, tmp_path):
    """deploy() of a run that has a bitfile, then check.py --backend pynq on the fake overlay."""
    from flow.deploy import deploy

    run = copy_run(sfc_run, tmp_path / "run")
    io = json.loads((run / "hw" / "accelerator.json").read_text())["io_shape_dict"]
    fake_pynq.write_fake_bitfile(run / "bitfile" / "bnn_top.bit", Path("../hw"), io, "axidma")
    (run / "bitfile" / "bnn_top.hwh").write_text("<fake/>")
    manifest = deploy(run)
    assert manifest["bitfile"] == "bitfile/bnn_top.bit" and "bitfile/bnn_top.hwh" in manifest["files"]
    result = run_check(run / "deploy", "--backend", "pynq", "--batch", "7", "--json", on_fake_pynq=True)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["correct"] == manifest["correct"] and report["batch_size"] == 7
    assert report["dma_bandwidth_mb_per_s"] > 0 and report["throughput_test"]["batch_size"] == 7


def test_vendored_packing_works_without_finn_installed(tfc_run, tmp_path):
    """On a board without FINN the driver packs with the copies of FINN's files in driver/vendor."""
    package = tfc_run / "deploy"
    images = tmp_path / "images.npy"
    np.save(images, datasets.load("mnist5k").test_images)
    program = f"""
import importlib.machinery, json, sys
import numpy as np
vendor = {str(package / "driver" / "vendor")!r}
class OnlyVendored:  # FINN and qonnx exist only as the package's copies
    def find_spec(self, name, path=None, target=None):
        if name in ("finn", "qonnx"):
            if vendor not in sys.path:
                raise ModuleNotFoundError(f"No module named {{name!r}}")
            return importlib.machinery.PathFinder.find_spec(name, [vendor])
sys.meta_path.insert(0, OnlyVendored())
sys.path.insert(0, {str(package)!r})
from driver.packing import IOShapes, pack_images
import finn.util.data_packing, qonnx.core.datatype
assert finn.util.data_packing.__file__.startswith(vendor) and qonnx.core.datatype.__file__.startswith(vendor)
manifest = json.load(open({str(package / "manifest.json")!r}))
packed = pack_images(np.load({str(images)!r}), IOShapes.from_dict(manifest["io_shape_dict"]))
assert np.array_equal(packed, np.load({str(package / "data" / "test_images_packed.npy")!r}))
print("vendored packing ok")
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "vendored packing ok" in result.stdout


# --------------------------------------------------------------------------- boards


@pytest.mark.parametrize("name", sorted(p.stem for p in BOARDS_DIR.glob("*.toml")))
def test_board_files_agree_with_finns_tables(name):
    from finn.util.basic import pynq_native_port_width, pynq_part_map

    board = load_board(name)
    assert board.part == pynq_part_map[board.finn_board]
    assert board.dma_width_bits == pynq_native_port_width[board.finn_board]
    assert {"LUT", "FF", "BRAM_18K", "DSP"} <= set(board.resources)
    assert all(isinstance(v, int) and v > 0 for v in board.resources.values())
    assert tomllib.loads((BOARDS_DIR / f"{name}.toml").read_text())["name"] == name


def test_the_five_boards_exist():
    assert {"pynq-z1", "pynq-z2", "ultra96-v2", "zcu104", "kv260"} <= {p.stem for p in BOARDS_DIR.glob("*.toml")}
