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

Every file listed in manifest.json is checked against its sha256 before
anything of the package is imported or run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class PackageError(Exception):
    """The package is incomplete, changed, or cannot run on this backend."""


def verify_package(package: Path) -> dict:
    """The manifest, after checking every file it lists (stdlib only: nothing else runs first)."""
    manifest_path = package / "manifest.json"
    if not manifest_path.exists():
        raise PackageError(f"{manifest_path}: missing; this is not a complete deployment package")
    manifest = json.loads(manifest_path.read_text())
    for name, expected in manifest["files"].items():
        path = package / name
        if not path.is_file():
            raise PackageError(f"{path}: missing from the package (listed in manifest.json)")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise PackageError(f"{path}: sha256 differs from manifest.json (the file was changed after the build)")
    return manifest


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
            str(package / manifest["bitfile"]),
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
    sys.path.insert(0, str(package))  # the package's own driver/
    import numpy as np

    from driver.packing import IOShapes, unpack_output

    io = IOShapes.from_dict(manifest["io_shape_dict"])
    images = np.load(package / manifest["test_set"]["images"])
    labels = np.load(package / manifest["test_set"]["labels"])
    expected = np.load(package / manifest["expected_outputs"])
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
