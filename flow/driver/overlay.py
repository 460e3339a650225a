"""The accelerator on a PYNQ board: FINN's PYNQ driver conventions (imports ``pynq``).

Two DMA shells are driven; which one is read from the overlay's ``ip_dict``
(the bitstream's .hwh):

- FINN's own (``ShellFlowType.VIVADO_ZYNQ``, FINN platform ``zynq-iodma``,
  built by FINN's vendor steps): ``IODMA_hls`` engines ``idma0`` / ``odma0``
  in front of a free-running dataflow, started through their AXI-lite
  registers exactly as FINN's ``FINNDMAOverlay.execute_on_buffers`` does
  (0x10/0x14 buffer address, 0x1C number of images, 0x00 bit 0 ap_start;
  status 0x00 bit 1 ap_done, bit 2 ap_idle);
- the block design of ``flow.vivado`` (``vivado.tcl``): one Xilinx AXI DMA
  (``xilinx.com:ip:axi_dma``) whose MM2S/S2MM channels feed and drain the
  accelerator, driven through PYNQ's ``sendchannel`` / ``recvchannel``
  ``transfer`` + ``wait``. The accelerator is either the HLS top
  (``bnn-flow:hls:<top>``, Vitis HLS ``ap_ctrl_hs`` with the image count at
  0x10: started for each batch) or, on the RTL route, the generated RTL, which
  runs free and has no registers (so no IP in ``ip_dict``); it ends each
  output transfer where the input transfer ended.
"""

from __future__ import annotations

import time

import numpy as np
from pynq import Overlay, allocate
from pynq.ps import Clocks

from .packing import IOShapes, fold_input, pack_input, unpack_output

AXI_DMA_TYPE = "xilinx.com:ip:axi_dma"
FLOW_HLS_TYPE = "bnn-flow:hls:"  # the IP vendor:library flow.hls exports the top under
# AXI-lite registers of an HLS block (ap_ctrl_hs): FINN's IODMA_hls and the flow.hls top
CTRL, ADDR_LO, ADDR_HI, IODMA_NUM_IMAGES, TOP_NUM_IMAGES = 0x00, 0x10, 0x14, 0x1C, 0x10
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4


class FINNDMAOverlay(Overlay):
    """A FINN dataflow accelerator behind one input and one output DMA."""

    def __init__(
        self,
        bitfile_name: str,
        io_shape_dict: dict,
        batch_size: int = 1,
        fclk_mhz: float | None = 100.0,
        download: bool = True,
        device=None,
    ):
        super().__init__(bitfile_name, download=download, device=device)
        self.io = IOShapes.from_dict(io_shape_dict)
        if "idma0" in self.ip_dict and "odma0" in self.ip_dict:
            self.shell = "finn-iodma"
            self.idma, self.odma = self.idma0, self.odma0
        else:
            self.shell = "axi-dma"
            self.dma = getattr(self, self._only_ip(AXI_DMA_TYPE, "AXI DMA", allow_none=False))
            # the HLS top, started per batch; none on the RTL route (it runs free)
            kernel = self._only_ip(FLOW_HLS_TYPE, "flow.hls accelerator", allow_none=True)
            self.kernel = getattr(self, kernel) if kernel else None
        if fclk_mhz:
            # the fabric clock the design was built for (FINN's driver sets it the same way)
            Clocks.fclk0_mhz = fclk_mhz
        self.ibuf_packed_device = None
        self.obuf_packed_device = None
        self.batch_size = batch_size

    def _only_ip(self, type_prefix: str, what: str, allow_none: bool) -> str | None:
        names = [name for name, ip in self.ip_dict.items() if ip["type"].startswith(type_prefix)]
        if len(names) > 1 or not (names or allow_none):
            raise RuntimeError(
                f"the overlay has {len(names)} {what} IPs ({type_prefix}*), expected {'at most ' if allow_none else ''}one; "
                f"IPs: {', '.join(sorted(self.ip_dict))}"
            )
        return names[0] if names else None

    # ----------------------------------------------------------------- buffers

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        """(Re)allocate the physically contiguous packed buffers for ``value`` images."""
        if value < 1:
            raise ValueError(f"batch_size must be at least 1, not {value}")
        self._batch_size = value
        for buffer in (self.ibuf_packed_device, self.obuf_packed_device):
            if buffer is not None:
                buffer.freebuffer()
        self.ibuf_packed_device = allocate(shape=(value, *self.io.input.packed[1:]), dtype=np.uint8)
        self.obuf_packed_device = allocate(shape=(value, *self.io.output.packed[1:]), dtype=np.uint8)
        self.obuf_packed = np.empty_like(self.obuf_packed_device)

    def copy_input_data_to_device(self, packed: np.ndarray) -> None:
        """Packed input of n <= batch_size images into the input buffer, flushed from the cache."""
        self.ibuf_packed_device[: len(packed)] = packed
        self.ibuf_packed_device.flush()

    def copy_output_data_from_device(self, out: np.ndarray) -> None:
        self.obuf_packed_device.invalidate()
        np.copyto(out, self.obuf_packed_device[: len(out)])

    # ----------------------------------------------------------------- DMA

    def execute_on_buffers(self, asynch: bool = False, batch_size: int | None = None) -> None:
        """Start the DMAs on the first ``batch_size`` images of the allocated buffers."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if not 1 <= batch_size <= self.batch_size:
            raise ValueError(f"batch_size {batch_size} outside 1..{self.batch_size} (the allocated buffers)")
        if self.shell == "axi-dma":
            if self.kernel is not None:
                self.kernel.write(TOP_NUM_IMAGES, batch_size)
                self.kernel.write(CTRL, AP_START)
            # receive first, so the output stream has somewhere to go
            self.dma.recvchannel.transfer(self.obuf_packed_device, nbytes=batch_size * self.io.output.packed_bytes)
            self.dma.sendchannel.transfer(self.ibuf_packed_device, nbytes=batch_size * self.io.input.packed_bytes)
        else:
            if not self.odma.read(CTRL) & AP_IDLE:
                raise RuntimeError("output DMA is not idle")
            for dma, buffer in ((self.odma, self.obuf_packed_device), (self.idma, self.ibuf_packed_device)):
                dma.write(ADDR_LO, buffer.device_address & 0xFFFFFFFF)
                dma.write(ADDR_HI, (buffer.device_address >> 32) & 0xFFFFFFFF)
                dma.write(IODMA_NUM_IMAGES, batch_size)
                dma.write(CTRL, AP_START)
        if not asynch:
            self.wait_until_finished()

    def wait_until_finished(self) -> None:
        """Block until the output DMA has written every result."""
        if self.shell == "axi-dma":
            self.dma.sendchannel.wait()
            self.dma.recvchannel.wait()
        else:
            while not self.odma.read(CTRL) & AP_DONE:
                pass

    # ----------------------------------------------------------------- inference

    def execute(self, input_npy: np.ndarray) -> np.ndarray:
        """n <= batch_size images -> n outputs: fold, pack, DMA, unpack, unfold."""
        n = len(input_npy)
        if not 1 <= n <= self.batch_size:
            raise ValueError(f"{n} images for a driver with batch_size {self.batch_size}")
        self.copy_input_data_to_device(pack_input(fold_input(input_npy, self.io), self.io))
        self.execute_on_buffers(batch_size=n)
        self.copy_output_data_from_device(self.obuf_packed[:n])
        return unpack_output(self.obuf_packed[:n], self.io)

    def throughput_test(self) -> dict:
        """Time one full batch on the buffers as they are: FINN's driver report."""
        start = time.perf_counter()
        self.execute_on_buffers()
        runtime = time.perf_counter() - start
        in_bytes = self.batch_size * self.io.input.packed_bytes
        out_bytes = self.batch_size * self.io.output.packed_bytes
        return {
            "runtime[ms]": runtime * 1000,
            "throughput[images/s]": self.batch_size / runtime,
            "DRAM_in_bandwidth[MB/s]": in_bytes * 1e-6 / runtime,
            "DRAM_out_bandwidth[MB/s]": out_bytes * 1e-6 / runtime,
            "fclk[mhz]": Clocks.fclk0_mhz,
            "batch_size": self.batch_size,
        }
