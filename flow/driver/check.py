"""On-board check of a deployment package: accuracy and throughput, on the board or the emulator.

    python3 check.py --backend pynq        # on the PYNQ board (sudo, in PYNQ's Python)
    python3 check.py --backend emulator    # anywhere the bnn-flow package is installed

(This file is flow/driver/check.py; ``flow.deploy`` puts it at the root of the
package, next to manifest.json.) Both backends receive the same packed test
images, exactly as the input DMA reads them, and return packed labels that the
same FINN unpacking turns into predictions; every image's output must equal
the QONNX model's output the package carries (``data/expected_outputs.npy``),
or the command exits 1: the same accuracy with different predictions is a
mismatch.

Nothing of the package runs before it is checked: this script never imports
from its own folder (it drops that folder from ``sys.path`` before its first
import, as ``python -I`` would, and loads ``driver/`` by path afterwards),
every file listed in manifest.json must match its sha256 and lie inside the
package, and a file the manifest does not list is refused. (The sha256s catch
an accidental or partial change of the package; the manifest is not signed.)
"""

import os
import sys

if __name__ == "__main__":
    # Python puts the script's folder first on sys.path: a json.py dropped beside
    # this file would be imported (as root, on the board) before anything is checked.
    _PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _PACKAGE_DIR]
    sys.dont_write_bytecode = True  # no __pycache__ in the package: it would be an unlisted file

import argparse  # noqa: E402  (after the sys.path cleaning above)
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path, PurePosixPath  # noqa: E402

PACKAGE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


class PackageError(Exception):
    """The package is incomplete, changed, or cannot run on this backend."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict:
    """``folder/manifest.json`` with its ``files`` table (relative path -> sha256)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise PackageError(f"{path}: missing; this is not a complete package")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise PackageError(f"{path}: not a manifest (JSON with a 'files' table of sha256s)") from None
    return manifest


def verify_listed_files(folder: Path, files: dict) -> None:
    """Every file the manifest lists lies inside ``folder`` and has its sha256."""
    root = folder.resolve()
    for name, expected in files.items():
        relative = PurePosixPath(name)
        path = folder / relative
        if not name or relative.is_absolute() or ".." in relative.parts or not path.resolve().is_relative_to(root):
            raise PackageError(f"{folder / MANIFEST}: path {name!r} leaves {folder.name}/ (refused)")
        if not path.is_file():
            raise PackageError(f"{path}: missing from the package (listed in {MANIFEST})")
        if sha256_of(path) != expected:
            raise PackageError(f"{path}: sha256 differs from {MANIFEST} (the file was changed after the build)")


def refuse_unlisted_files(folder: Path, files: dict) -> None:
    """Nothing in ``folder`` but the manifest and what it lists (a link to a folder counts as a file)."""
    listed = set(files) | {MANIFEST}
    for parent, folders, names in os.walk(folder):
        for name in sorted(names) + sorted(f for f in folders if os.path.islink(os.path.join(parent, f))):
            path = Path(parent, name)
            if path.relative_to(folder).as_posix() not in listed:
                raise PackageError(f"{path}: not listed in {MANIFEST}; the package runs only what it lists (remove the file)")


def verify_package(package: Path) -> dict:
    """The manifest, after checking the whole package (stdlib only: nothing of it runs first)."""
    manifest = read_manifest(package)
    verify_listed_files(package, manifest["files"])
    refuse_unlisted_files(package, manifest["files"])
    return manifest


def listed_file(package: Path, manifest: dict, name: str) -> Path:
    """A file the manifest names elsewhere (test set, bitfile): one of its checked files."""
    if name not in manifest["files"]:
        raise PackageError(f"{package / MANIFEST}: {name!r} is not one of the files it lists")
    return package / name


def load_array(path: Path):
    """A plain .npy array; anything else (object arrays included) is refused in one line."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise PackageError(f"{path}: not a plain NumPy .npy array (damaged, or not written by the build)") from None


def import_driver(package: Path) -> None:
    """The package's driver/ as the module ``driver``, from its path (the package root is never on sys.path)."""
    folder = package / "driver"
    spec = importlib.util.spec_from_file_location("driver", folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["driver"] = module
    spec.loader.exec_module(module)


class EmulatorBackend:
    """flow.emulate.Emulator on the package's hardware artifacts (hw/)."""

    name = "emulator"

    def __init__(self, package: Path, manifest: dict, batch_size: int):
        try:
            from flow.emulate import Emulator
            from flow.errors import FlowError
        except ImportError as exc:
            raise PackageError(f"the emulator backend needs the bnn-flow package installed ({exc})") from None
        try:
            self.emulator = Emulator(package / "hw")
        except FlowError as exc:
            raise PackageError(str(exc)) from None
        self.emulator.batch_size = batch_size

    def run(self, packed):
        return self.emulator.execute_packed(packed)

    def report(self) -> dict:
        return {}


class PynqBackend:
    """The driver on the bitstream, through the DMAs (imports pynq)."""

    name = "pynq"

    def __init__(self, package: Path, manifest: dict, batch_size: int):
        if not manifest.get("bitfile"):
            raise PackageError(
                "this package has no bitfile (the build ran without Vivado/Vitis HLS); "
                "rebuild with the vendor tools for the board, or use --backend emulator"
            )
        from driver.overlay import FINNDMAOverlay

        self.accel = FINNDMAOverlay(
            str(listed_file(package, manifest, manifest["bitfile"])),
            manifest["io_shape_dict"],
            batch_size=batch_size,
            fclk_mhz=manifest["clock_mhz"],
        )
        self.dma_seconds = 0.0
        self.dma_bytes = 0

    def run(self, packed):
        import numpy as np

        n = len(packed)
        self.accel.copy_input_data_to_device(packed)
        start = time.perf_counter()
        self.accel.execute_on_buffers(batch_size=n)
        self.dma_seconds += time.perf_counter() - start
        self.dma_bytes += packed.nbytes + n * self.accel.io.output.packed_bytes
        out = np.empty((n, *self.accel.io.output.packed[1:]), dtype=np.uint8)
        self.accel.copy_output_data_from_device(out)
        return out

    def report(self) -> dict:
        return {
            "dma_bandwidth_mb_per_s": self.dma_bytes * 1e-6 / self.dma_seconds,
            "throughput_test": self.accel.throughput_test(),
        }


BACKENDS = {"emulator": EmulatorBackend, "pynq": PynqBackend}


def run_check(package: Path, backend_name: str, batch_size: int) -> dict:
    manifest = verify_package(package)
    import numpy as np

    import_driver(package)
    from driver.packing import IOShapes, unpack_output

    io = IOShapes.from_dict(manifest["io_shape_dict"])
    images = load_array(listed_file(package, manifest, manifest["test_set"]["images"]))
    labels = load_array(listed_file(package, manifest, manifest["test_set"]["labels"]))
    expected = load_array(listed_file(package, manifest, manifest["expected_outputs"]))
    backend = BACKENDS[backend_name](package, manifest, batch_size)
    backend.run(images[:batch_size])  # warm-up (first DMA buffers touched, first BLAS call), not timed
    outputs = []
    start = time.perf_counter()
    for first in range(0, len(images), batch_size):
        packed_out = backend.run(images[first : first + batch_size])
        labels_out = unpack_output(packed_out, io)  # N x K, best label first
        outputs.append(labels_out.reshape(len(labels_out), -1))
    seconds = time.perf_counter() - start
    outputs = np.concatenate(outputs).astype(np.int64)
    predicted = outputs[:, 0]
    correct = int((predicted == labels).sum())
    differing = np.flatnonzero((outputs != expected.reshape(len(expected), -1)).any(axis=1))
    return {
        "backend": backend.name,
        "board": manifest["board"],
        "images": len(labels),
        "batch_size": batch_size,
        "correct": correct,
        "accuracy": correct / len(labels),
        "expected_accuracy": manifest["accuracy"],
        "expected_correct": manifest["correct"],
        "outputs_match": len(differing) == 0,
        "differing_images": len(differing),
        "first_differing": None if len(differing) == 0 else {
            "image": int(differing[0]),
            "output": outputs[differing[0]].tolist(),
            "expected": expected.reshape(len(expected), -1)[differing[0]].tolist(),
        },
        "images_per_s": len(labels) / seconds,
        "estimated_hardware_fps": manifest["estimated_throughput_fps"],
        **backend.report(),
    }


def print_result(result: dict) -> None:
    print(f"backend        {result['backend']} ({result['board']} design), batch size {result['batch_size']}")
    print(
        f"accuracy       {result['accuracy']:.2%} ({result['correct']}/{result['images']}); "
        f"QONNX model in manifest: {result['expected_accuracy']:.2%} ({result['expected_correct']}/{result['images']})"
    )
    print(f"images/s       {result['images_per_s']:,.0f} (estimated hardware: {result['estimated_hardware_fps']:,.0f} FPS)")
    if "dma_bandwidth_mb_per_s" in result:
        print(f"DMA bandwidth  {result['dma_bandwidth_mb_per_s']:,.1f} MB/s (in + out, during the check)")
    if result["outputs_match"]:
        print(f"OK: every image's output equals the QONNX model's ({result['images']}/{result['images']})")
    else:
        first = result["first_differing"]
        print(
            f"MISMATCH: {result['differing_images']} of {result['images']} images' outputs differ from the QONNX "
            f"model's (first: image {first['image']}, {first['output']} instead of {first['expected']}); run "
            "`python -m flow verify RUN_DIR` on the build host and compare per layer (docs/board.md)"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--batch", type=int, default=1000, help="images per DMA transfer (driver batch_size)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    try:
        result = run_check(PACKAGE, args.backend, args.batch)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_result(result)
    return 0 if result["outputs_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
