"""TEST DOUBLE of ``pynq`` (see ../README.md): not a board, not a substitute for a board run.

An ``Overlay`` whose input and output DMA engines move the ``allocate``'d packed
buffers through ``flow.emulate.Emulator.execute_packed``, with the register /
transfer protocol of FINN's IODMA or of a Xilinx AXI DMA.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np

__all__ = ["Overlay", "allocate", "write_fake_bitfile"]

IODMA_TYPE = "xilinx.com:hls:IODMA_hls:1.0"
AXI_DMA_TYPE = "xilinx.com:ip:axi_dma:7.1"
# AXI DMA "Width of Buffer Length Register" at its maximum, 26 bits, as flow.hls' vivado.tcl sets it
AXI_DMA_MAX_BYTES = (1 << 26) - 1
FAKE_TOP = "bnn_top"  # the accelerator IP's name in the axidma shell
# iodma: FINN's shell; axidma: flow.vivado's HLS route (the top under AXI-lite control);
# axidma-rtl: flow.vivado's RTL route (the accelerator runs free, no IP of its own in ip_dict)
SHELLS = ("iodma", "axidma", "axidma-rtl")


def write_fake_bitfile(path: Path, hw_dir: Path, io_shape_dict: dict, dma: str = "iodma") -> Path:
    """The fake's stand-in for a bitstream + .hwh: which emulator artifacts, which DMA shell."""
    if dma not in SHELLS:
        raise ValueError(f"dma must be one of {', '.join(SHELLS)}, not {dma!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a relative hw_dir is resolved from the bitfile's folder (``../hw`` inside a package)
    path.write_text(json.dumps({"hw_dir": str(hw_dir), "io_shape_dict": io_shape_dict, "dma": dma}))
    return path


# --------------------------------------------------------------------- memory


class PynqBuffer(np.ndarray):
    """A physically contiguous buffer: an ndarray with a device address."""

    device_address: int

    @property
    def physical_address(self) -> int:
        return self.device_address

    def flush(self) -> None:
        self._require_live()

    def invalidate(self) -> None:
        self._require_live()

    def freebuffer(self) -> None:
        _MEMORY.pop(self.device_address, None)

    def _require_live(self) -> None:
        if _MEMORY.get(self.device_address) is None:
            raise RuntimeError("fake pynq: buffer used after freebuffer()")


_MEMORY: "weakref.WeakValueDictionary[int, PynqBuffer]" = weakref.WeakValueDictionary()
_next_address = [0x1000_0000]


def allocate(shape, dtype=np.uint8, cacheable: bool = True, target=None) -> PynqBuffer:
    buffer = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    buffer.device_address = _next_address[0]
    _next_address[0] += (buffer.nbytes + 0xFFF) & ~0xFFF  # page aligned, like the CMA allocator
    _MEMORY[buffer.device_address] = buffer
    return buffer


def _dram(address: int, nbytes: int) -> np.ndarray:
    """The bytes [address, address + nbytes) of one allocated buffer, as a writable view."""
    for base, buffer in list(_MEMORY.items()):
        if base <= address and address + nbytes <= base + buffer.nbytes:
            flat = buffer.reshape(-1).view(np.uint8)
            return flat[address - base : address - base + nbytes]
    raise RuntimeError(f"fake pynq: DMA to unallocated memory 0x{address:x} (+{nbytes} bytes)")


# --------------------------------------------------------------------- fabric

# Polls of a DMA that cannot finish before the fake reports the hang a board would show.
HANG_POLLS = 10_000


class _Dataflow:
    """The accelerator between the DMAs: packed images in on one stream, packed labels out.

    In FINN's shell the dataflow runs free; the flow.hls top must first be started
    (ap_start) for exactly the number of images the DMAs move.
    """

    def __init__(self, hw_dir: Path, io_shape_dict: dict, needs_start: bool):
        from flow.emulate import Emulator

        self.emulator = Emulator(Path(hw_dir))
        self.in_shape = tuple(io_shape_dict["ishape_packed"][0][1:])
        self.in_bytes = int(np.prod(self.in_shape))
        self.out_bytes = int(np.prod(io_shape_dict["oshape_packed"][0][1:]))
        self.needs_start = needs_start
        self.started = None  # (images, on_done) of the started top
        self.jobs = {"in": None, "out": None}  # direction -> (address, images, on_done)

    def start(self, images: int, on_done) -> None:
        self.started = (images, on_done)
        self._stream()

    def submit(self, direction: str, address: int, images: int, on_done) -> None:
        self.jobs[direction] = (address, images, on_done)
        self._stream()

    def _stream(self) -> None:
        if self.jobs["in"] is None or self.jobs["out"] is None or (self.needs_start and self.started is None):
            return  # a side has not started: the stream waits (backpressure)
        (src, n_in, in_done), (dst, n_out, out_done) = self.jobs["in"], self.jobs["out"]
        counts = {"input DMA": n_in, "output DMA": n_out}
        if self.needs_start:
            counts["accelerator"] = self.started[0]
        if len(set(counts.values())) != 1:
            raise RuntimeError(f"fake pynq: image counts differ ({counts}); a board hangs here")
        packed = np.array(_dram(src, n_in * self.in_bytes)).reshape(n_in, *self.in_shape)
        out = np.asarray(self.emulator.execute_packed(packed), dtype=np.uint8)
        _dram(dst, n_out * self.out_bytes)[:] = out.reshape(-1)
        done = [in_done, out_done] + ([self.started[1]] if self.needs_start else [])
        self.jobs, self.started = {"in": None, "out": None}, None
        for callback in done:
            callback()


class HLSBlock:
    """An HLS block behind AXI-lite (ap_ctrl_hs; ap_done clears on read): FINN's IODMA_hls
    (``direction`` in/out: 0x10/0x14 address, 0x1C images) or the flow.hls top (0x10 images)."""

    CTRL = 0x00

    def __init__(self, fabric: _Dataflow, direction: str | None):
        self.fabric, self.direction = fabric, direction
        self.registers = {0x10: 0, 0x14: 0, 0x1C: 0} if direction else {0x10: 0}
        self.running = self.done = False
        self.polls = 0

    def read(self, offset: int) -> int:
        if offset != self.CTRL:
            return self.registers[offset]
        if self.running:
            self.polls += 1
            if self.polls > HANG_POLLS:
                raise RuntimeError(f"fake pynq: {self.direction or 'accelerator'} block never finishes; a board hangs here")
        status = (0x2 if self.done else 0) | (0x1 if self.running else 0x4)
        self.done = False
        return status

    def write(self, offset: int, value: int) -> None:
        if offset != self.CTRL:
            if offset not in self.registers:
                raise RuntimeError(f"fake pynq: no register 0x{offset:x} in this HLS block")
            self.registers[offset] = value & 0xFFFFFFFF
        elif value & 0x1:
            if self.running:
                raise RuntimeError("fake pynq: ap_start while the block is running")
            self.running, self.done, self.polls = True, False, 0
            if self.direction is None:
                self.fabric.start(self.registers[0x10], self._finish)
            else:
                address = self.registers[0x10] | (self.registers[0x14] << 32)
                self.fabric.submit(self.direction, address, self.registers[0x1C], self._finish)

    def _finish(self) -> None:
        self.running, self.done = False, True


class DMAChannel:
    """One channel of a Xilinx AXI DMA as PYNQ drives it: ``transfer`` then ``wait``."""

    def __init__(self, fabric: _Dataflow, direction: str, image_bytes: int):
        self.fabric, self.direction, self.image_bytes = fabric, direction, image_bytes
        self.idle = True

    def transfer(self, array: np.ndarray, start: int = 0, nbytes: int = 0) -> None:
        if not isinstance(array, PynqBuffer):
            raise RuntimeError("fake pynq: DMA transfers need a buffer from pynq.allocate")
        array._require_live()
        if not self.idle:
            raise RuntimeError("fake pynq: DMA channel is not idle")
        nbytes = nbytes or array.nbytes - start
        if nbytes > AXI_DMA_MAX_BYTES:
            raise ValueError(f"Transfer size is {nbytes} bytes, which exceeds the maximum DMA buffer size {AXI_DMA_MAX_BYTES}.")
        if nbytes % self.image_bytes:
            raise RuntimeError(f"fake pynq: {nbytes} bytes is not a whole number of {self.image_bytes}-byte images")
        self.idle = False
        self.fabric.submit(self.direction, array.device_address + start, nbytes // self.image_bytes, self._finish)

    def wait(self) -> None:
        if not self.idle:
            raise RuntimeError(f"fake pynq: wait() on a {self.direction}put transfer that never completes; a board hangs here")

    def _finish(self) -> None:
        self.idle = True


class AxiDMA:
    def __init__(self, fabric: _Dataflow):
        self.sendchannel = DMAChannel(fabric, "in", fabric.in_bytes)
        self.recvchannel = DMAChannel(fabric, "out", fabric.out_bytes)


# --------------------------------------------------------------------- overlay


class Overlay:
    """Loads a fake bitfile (see :func:`write_fake_bitfile`); IPs are attributes, as in PYNQ."""

    def __init__(self, bitfile_name, download: bool = True, device=None, **kwargs):
        spec = json.loads(Path(bitfile_name).read_text())
        hw_dir = Path(bitfile_name).parent / spec["hw_dir"]
        if spec["dma"] == "iodma":  # FINN's shell: IODMAs around a free-running dataflow
            fabric = _Dataflow(hw_dir, spec["io_shape_dict"], needs_start=False)
            self._ips = {"idma0": HLSBlock(fabric, "in"), "odma0": HLSBlock(fabric, "out")}
            types = {"idma0": IODMA_TYPE, "odma0": IODMA_TYPE}
        elif spec["dma"] == "axidma":  # flow.vivado's HLS route: one AXI DMA, the top under AXI-lite control
            fabric = _Dataflow(hw_dir, spec["io_shape_dict"], needs_start=True)
            self._ips = {"axi_dma": AxiDMA(fabric), FAKE_TOP: HLSBlock(fabric, None)}
            types = {"axi_dma": AXI_DMA_TYPE, FAKE_TOP: f"bnn-flow:hls:{FAKE_TOP}:1.0"}
        else:  # flow.vivado's RTL route: one AXI DMA around a free-running accelerator without registers
            fabric = _Dataflow(hw_dir, spec["io_shape_dict"], needs_start=False)
            self._ips = {"axi_dma": AxiDMA(fabric)}
            types = {"axi_dma": AXI_DMA_TYPE}
        self.bitfile_name = str(bitfile_name)
        self.ip_dict = {name: {"type": vlnv, "fullpath": name} for name, vlnv in types.items()}

    def __getattr__(self, name: str):
        ips = self.__dict__.get("_ips", {})
        if name in ips:
            return ips[name]
        raise AttributeError(f"Could not find IP or hierarchy {name} in overlay")
