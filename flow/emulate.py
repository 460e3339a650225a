"""Bit-accurate emulator of the built accelerator, from its hardware artifacts only.

:class:`Emulator` reads ``RUN_DIR/hw`` (see ``flow.artifacts``): it checks
every file against the manifest's sha256, decodes the packed weight and
threshold memories from their PE/SIMD layout, and computes what the
finn-hlslib / finn-rtllib layers compute:

- MVAU, ``binaryXnorMode``: per output row the XNOR popcount of the input
  bits with the weight bits (``XnorMul``: 1 where equal), summed over the
  SIMD lanes and the fold. Non-binary inputs times bipolar weights
  (``Recast<Binary>``: bit 1 = +x, 0 = -x) and integer weights are plain
  integer dot products.
- The accumulator has the hardware's type: the threshold type when
  thresholds follow (``ThresholdsActivation<.., TA>``), else the output type
  (``PassThroughActivation<odt>``); it wraps like ``ap_int`` when the
  values do not fit. Integer sums are exact in any order and wrapping is
  modular, so the fold order does not change the result.
- Thresholds: ``ActVal + #{i : acc >= T_i}`` (finn-hlslib's
  ``comp::less_equal(T, acc)``; finn-rtllib's binary search over sorted
  thresholds, ``y = sum(T_i <= x)``, finds the same count).
- LabelSelect: the ``K`` largest, ties to the lowest index (the HLS unit
  replaces a kept value only when strictly greater), ``0`` for slots no value
  above the input type's minimum reached.
- Input packing and output unpacking with FINN's own ``finn.util.data_packing``
  (the driver's convention: ``reverse_inner`` and ``reverse_endian``).

- Convolutions: the sliding-window generator's windows (FINN's (kh, kw, c)
  order, channels innermost) and a max-pool over each window.

Routes (both exact; the weight memories are decoded once, at load):

- ``packed`` (default): binary streams travel as 64-bit words, each pixel's
  channels (or an FC layer's vector) packed little-endian; an XNOR MVAU is
  XOR + popcount of the words against its packed weight rows (a numba kernel,
  SWAR popcount, over the CPU's cores), a window is a gather of pixel words,
  a max-pool an OR of words. Layers with integer inputs (the first CNV layer,
  thresholds on pixels) use the GEMM route's arithmetic.
- ``gemm``: the memories as +-1 (or integer) float32 matrices, each layer one
  BLAS GEMM plus a compare (float64 when a sum could reach 2**24).

Measured side by side (first 1000 test images, one process): CNV 1,429
images/s packed against 373 for GEMM (1,200 packed on one thread); TFC
482k against 422k. The ladder (``make verify``) runs the default route; a
test runs both routes layer by layer against each other.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow.artifacts import DESCRIPTION, FORMAT_VERSION, MANIFEST, accumulator_range, sha256_file
from flow.cycles import cycle_model
from flow.errors import FlowError

EXACT_FLOAT32 = 2**24  # integers below this are exact in float32 sums
BINARY_TYPES = ("BINARY", "BIPOLAR")  # streamed as bits
TIMED_IMAGES = 1000  # `emulate` times batches of (at most) this many test images
REFERENCE_IMAGES = 1000  # ... and checks this many against FINN's HW-layer graph


def verify_manifest(hw_dir: Path) -> dict:
    """Every file the manifest lists exists and has its sha256; return the manifest."""
    manifest_path = hw_dir / MANIFEST
    if not manifest_path.exists():
        raise FlowError(f"{manifest_path}: no hardware manifest; run `make build` (it writes RUN_DIR/hw)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise FlowError(f"{manifest_path}: not a hardware manifest") from None
    for name, expected in files.items():
        path = hw_dir / name
        if not path.exists():
            raise FlowError(f"{path}: listed in {MANIFEST} but missing")
        if sha256_file(path) != expected:
            raise FlowError(f"{path}: sha256 differs from {MANIFEST}: the file changed after the build; rebuild")
    if DESCRIPTION not in files:
        raise FlowError(f"{manifest_path}: does not list {DESCRIPTION}")
    if manifest.get("format") != FORMAT_VERSION:
        raise FlowError(f"{manifest_path}: format {manifest.get('format')}, this flow reads format {FORMAT_VERSION}; rebuild")
    return manifest


def wrap(values: np.ndarray, dtype) -> np.ndarray:
    """Two's-complement (or unsigned) wrap of integer values into ``dtype``, as ap_int/ap_uint do."""
    bits = dtype.bitwidth()
    low = dtype.min()
    return np.mod(values - low, float(2**bits)) + low


def unpack_memory(packed: np.ndarray, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Packed memory words (..., bytes) -> values (..., lanes), FINN's packing read back."""
    from finn.util.data_packing import packed_bytearray_to_finnpy

    return packed_bytearray_to_finnpy(packed, dtype, shape)


@dataclass
class Thresholds:
    """``ActVal + #{i : acc >= T[c, i]}`` per channel c.

    finn-rtllib's thresholding unit finds this count by binary search over the
    sorted thresholds (``y = sum(T_i <= x)``; the artifact writer checks the
    order), finn-hlslib's by comparing with each threshold.
    """

    table: np.ndarray  # channels x steps, natural channel order
    act_val: int

    def apply(self, acc: np.ndarray) -> np.ndarray:
        if self.table.shape[1] == 1:
            count = acc >= self.table[:, 0]
        else:
            count = (acc[..., None] >= self.table).sum(axis=-1)
        return count.astype(acc.dtype) + self.act_val if self.act_val else count.astype(acc.dtype)


@dataclass
class Layer:
    name: str
    kind: str
    output_dtype: object  # qonnx DataType
    spec: dict  # the layer's entry in accelerator.json

    def finn_values(self, stream: np.ndarray) -> np.ndarray:
        """Stream values -> the integers FINN's Python execution holds (bipolar: bit b -> 2b-1)."""
        values = stream.astype(np.int64)
        return 2 * values - 1 if self.output_dtype.name == "BIPOLAR" else values


@dataclass
class ThresholdingLayer(Layer):
    thresholds: Thresholds = None

    def run(self, x: np.ndarray, route: str) -> np.ndarray:
        return self.thresholds.apply(x)


@dataclass
class MvauLayer(Layer):
    weights: np.ndarray = None  # MW x MH: +-1 for bipolar weights, else the integer weights
    offset: np.ndarray | None = None  # added to x @ weights: XNOR popcount = x.w + #(-1 weights)
    thresholds: Thresholds | None = None
    accumulator_dtype: object = None
    needs_wrap: bool = False
    bipolar_input: bool = False  # non-XNOR layer reading bipolar bits: the hardware uses +-1
    fast_thresholds: np.ndarray | None = None  # one step, no wrap: compare x @ W with T - offset
    packed_weights: dict = field(default_factory=dict, repr=False)  # group -> MH x words (packed route)
    # packed route, one threshold step, no wrap: bit = 1 where mismatches <= floor(MW - T)
    mismatch_limit: np.ndarray | None = None

    def run(self, x, route: str) -> np.ndarray:
        # a convolution's MVAU: one input vector per output pixel (N x OH x OW x K*K*C)
        if isinstance(x, PackedBits):
            pixels = x.words.shape[:-1]
            return self._run_vectors(PackedBits(x.words.reshape(-1, x.words.shape[-1]), x.group), route).reshape(*pixels, -1)
        pixels = x.shape[:-1]
        return self._run_vectors(x.reshape(-1, x.shape[-1]), route).reshape(*pixels, -1)

    def _run_vectors(self, x, route: str) -> np.ndarray:
        if isinstance(x, PackedBits) and self.offset is None:
            x = x.unpack()  # bits into a non-XNOR layer: the GEMM below
        if isinstance(x, PackedBits):
            words, weights = self._packed_operands(x)
            if self.mismatch_limit is not None:  # the output bits, compared in integers
                return mismatch_kernel()[1](words, weights, self.mismatch_limit)
            acc = (self.spec["MW"] - mismatch_kernel()[0](words, weights)).astype(self.weights.dtype)
        else:
            if self.bipolar_input:
                x = 2 * x - 1
            if x.dtype != self.weights.dtype:
                x = x.astype(self.weights.dtype)
            if self.fast_thresholds is not None:
                out = (x @ self.weights >= self.fast_thresholds).astype(np.float32)
                return out + self.thresholds.act_val if self.thresholds.act_val else out
            acc = x @ self.weights
            if self.offset is not None:
                acc += self.offset
        # the hardware's accumulator can overflow: wrap, as ap_int does (checking first is cheaper)
        if self.needs_wrap and (acc.min() < self.accumulator_dtype.min() or acc.max() > self.accumulator_dtype.max()):
            acc = wrap(acc, self.accumulator_dtype)
        return acc if self.thresholds is None else self.thresholds.apply(acc)

    def _packed_operands(self, x: PackedBits) -> tuple[np.ndarray, np.ndarray]:
        """The input words and the weight rows packed the same way (groups of x.group columns)."""
        if x.group not in self.packed_weights:
            self.packed_weights[x.group] = PackedBits.pack(self.weights.T > 0, x.group).words
        weights = self.packed_weights[x.group]
        if weights.shape[1] != x.words.shape[1]:
            raise FlowError(f"layer '{self.name}': {x.words.shape[1]} input words, its packed weights have {weights.shape[1]}")
        return np.ascontiguousarray(x.words), weights


@dataclass
class SlidingWindowLayer(Layer):
    """ConvolutionInputGenerator: N x H x W x C -> N x OH x OW x (K*K*C), FINN's (kh, kw, c) order."""

    def run(self, x, route: str):
        if isinstance(x, PackedBits):  # the same windows over each pixel's words
            return PackedBits(self.run(x.words, route), x.group)
        k, stride = self.spec["kernel"], self.spec["stride"]
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
        n, oh, ow = windows.shape[:3]
        # N x OH x OW x C x KH x KW -> N x OH x OW x KH x KW x C
        return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n, oh, ow, -1)


@dataclass
class MaxPoolLayer(Layer):
    """Pool (MaxPool) after a depthwise window: the channel-wise maximum of each K*K window."""

    def run(self, x, route: str):
        if isinstance(x, PackedBits):  # the maximum of bits is their OR
            words = x.words.reshape(*x.words.shape[:-1], self.spec["kernel"][0] * self.spec["kernel"][1], -1)
            return PackedBits(np.bitwise_or.reduce(words, axis=-2), x.group)
        return x.reshape(*x.shape[:-1], -1, self.spec["channels"]).max(axis=-2)


@dataclass
class LabelSelectLayer(Layer):
    k: int = 1
    input_min: float = 0

    def run(self, x: np.ndarray, route: str) -> np.ndarray:
        x = x.reshape(len(x), -1)
        if self.k == 1:
            # argmax returns the first maximum; when every value is the input
            # type's minimum the HLS unit keeps its initial label 0 = argmax too
            return x.argmax(axis=1)[:, None].astype(np.float32)
        order = np.argsort(-x, axis=1, kind="stable")[:, : self.k]
        top = np.take_along_axis(x, order, axis=1)
        return np.where(top > self.input_min, order, 0).astype(np.float32)


@dataclass
class PackedBits:
    """A binary stream in 64-bit words: each group of ``group`` channels (a pixel's channels,
    or an FC layer's whole vector) packed little-endian, zero-padded to whole words."""

    words: np.ndarray  # uint64, N x ... x (groups * words_per_group)
    group: int

    @staticmethod
    def pack(bits: np.ndarray, group: int) -> "PackedBits":
        lead = bits.shape[:-1]
        grouped = (bits > 0).reshape(*lead, -1, group)
        pad = (-group) % 64
        if pad:
            grouped = np.concatenate([grouped, np.zeros((*grouped.shape[:-1], pad), dtype=bool)], axis=-1)
        packed = np.packbits(grouped, axis=-1, bitorder="little")
        return PackedBits(np.ascontiguousarray(packed).view(np.uint64).reshape(*lead, -1), group)

    def unpack(self) -> np.ndarray:
        """0/1 values (float32), N x ... x channels."""
        lead = self.words.shape[:-1]
        words_per_group = -(-self.group // 64)
        groups = self.words.reshape(*lead, -1, words_per_group)
        bits = np.unpackbits(np.ascontiguousarray(groups).view(np.uint8), axis=-1, bitorder="little")
        return bits[..., : self.group].reshape(*lead, -1).astype(np.float32)


@functools.cache
def mismatch_kernel():
    """numba kernels: mismatching bits of every input vector against every weight row (XOR +
    popcount), and the same compared with a per-row limit (a threshold, as output bits).

    Compiled once per machine (cached next to this file's bytecode); the popcount
    is the SWAR sequence, which LLVM turns into the CPU's popcount instruction.
    """
    import numba

    @numba.njit(inline="always")
    def popcount64(v):
        v = v - ((v >> np.uint64(1)) & np.uint64(0x5555555555555555))
        v = (v & np.uint64(0x3333333333333333)) + ((v >> np.uint64(2)) & np.uint64(0x3333333333333333))
        v = (v + (v >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        return (v * np.uint64(0x0101010101010101)) >> np.uint64(56)

    @numba.njit(inline="always")
    def row_mismatches(x, w, v, m):
        total = np.int64(0)
        for k in range(x.shape[1]):
            total += popcount64(x[v, k] ^ w[m, k])
        return total

    @numba.njit(parallel=True, cache=True)
    def mismatches(x, w):
        out = np.empty((x.shape[0], w.shape[0]), np.int32)
        for v in numba.prange(x.shape[0]):
            for m in range(w.shape[0]):
                out[v, m] = row_mismatches(x, w, v, m)
        return out

    @numba.njit(parallel=True, cache=True)
    def within_limit(x, w, limit):
        """mismatches(x, w) <= limit (per row), without the integer matrix in between."""
        out = np.empty((x.shape[0], w.shape[0]), np.bool_)
        for v in numba.prange(x.shape[0]):
            for m in range(w.shape[0]):
                out[v, m] = row_mismatches(x, w, v, m) <= limit[m]
        return out

    return mismatches, within_limit


@functools.cache
def blas_controller():
    """threadpoolctl's view of the loaded BLAS; made once (discovery costs ~0.5 ms, a limit ~10 us)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class Emulator:
    """The built accelerator, run in numpy; names as FINN's PYNQ driver (``execute``, ``batch_size``)."""

    def __init__(self, hw_dir: Path, batch_size: int = 1000, route: str = "packed", blas_threads: int | None = 1):
        from qonnx.core.datatype import DataType

        self.hw_dir = Path(hw_dir)
        self.manifest = verify_manifest(self.hw_dir)
        description = json.loads((self.hw_dir / DESCRIPTION).read_text())
        if route not in ("gemm", "packed"):
            raise FlowError(f"unknown emulator route '{route}'; known: gemm, packed")
        self.route = route
        self.batch_size = batch_size
        # The GEMMs are small (at most batch x 1024 x 1024): one BLAS thread is
        # fastest, and on a shared machine OpenBLAS' spinning threads cost far
        # more (measured: 1000 x 784 x 64 in 1.5 ms on one thread, 11.7 ms on
        # two while the other core was busy). None: the library's default.
        self.blas_threads = blas_threads
        io = description["io_shape_dict"]
        self.idt, self.odt = DataType[io["idt"][0]], DataType[io["odt"][0]]
        self.ishape_normal, self.oshape_normal = tuple(io["ishape_normal"][0]), tuple(io["oshape_normal"][0])
        self.ishape_folded, self.oshape_folded = tuple(io["ishape_folded"][0]), tuple(io["oshape_folded"][0])
        self.ishape_packed, self.oshape_packed = tuple(io["ishape_packed"][0]), tuple(io["oshape_packed"][0])
        self.image_shape = tuple(description["software_prefix"]["input_shape"])
        self.input_permutation = description["software_prefix"].get("input_permutation")
        self.layers = [self._load_layer(spec) for spec in description["layers"]]
        # the build's cycle model, from hw/ alone: the layers' cycles, the stream plan, the board's DMA
        layer_cycles = {layer.name: layer.spec["cycles"] for layer in self.layers}
        self.cycles = cycle_model(layer_cycles, description["streams"], self.manifest["clock_mhz"], self.manifest["dma"])

    # ------------------------------------------------------------------ loading

    def _load_array(self, name: str) -> np.ndarray:
        if name not in self.manifest["files"]:
            raise FlowError(f"{self.hw_dir / name}: not listed in {MANIFEST}")
        return np.load(self.hw_dir / name, allow_pickle=False)

    def _load_layer(self, spec: dict) -> Layer:
        from qonnx.core.datatype import DataType

        common = dict(
            name=spec["name"], kind=spec["kind"], output_dtype=DataType[spec["output_dtype"]], spec=spec
        )
        if spec["kind"] == "thresholding":
            table = self._threshold_table(spec, spec["channels"])
            return ThresholdingLayer(**common, thresholds=Thresholds(table, spec["act_val"]))
        if spec["kind"] == "labelselect":
            return LabelSelectLayer(**common, k=spec["K"], input_min=DataType[spec["input_dtype"]].min())
        if spec["kind"] == "sliding_window":
            return SlidingWindowLayer(**common)
        if spec["kind"] == "maxpool":
            return MaxPoolLayer(**common)
        return self._load_mvau(spec, common)

    def _threshold_table(self, spec: dict, channels: int) -> np.ndarray:
        memory = self._load_array(spec["files"]["thresholds"])  # PE x TMEM x steps
        expected = (spec["PE"], spec["TMEM"], spec["steps"])
        if memory.shape != expected:
            raise FlowError(f"{self.hw_dir / spec['files']['thresholds']}: shape {memory.shape}, expected PE x TMEM x steps {expected}")
        # row r of the layer sits in PE r % PE at address r // PE
        table = memory.transpose(1, 0, 2).reshape(channels, spec["steps"])
        # compared with float32 accumulators: keep them float32 where that is exact
        return table.astype(np.float32 if np.abs(table).max(initial=0) < EXACT_FLOAT32 else np.float64)

    def _load_mvau(self, spec: dict, common: dict) -> MvauLayer:
        from qonnx.core.datatype import DataType

        mw, mh, pe, simd, wmem = spec["MW"], spec["MH"], spec["PE"], spec["SIMD"], spec["WMEM"]
        path = self.hw_dir / spec["files"]["weights"]
        packed = self._load_array(spec["files"]["weights"])
        memory_dt = DataType[spec["weight_memory_dtype"]]
        word_bytes = -(-simd * memory_dt.bitwidth() // 8)
        if packed.shape != (pe, wmem, word_bytes) or packed.dtype != np.uint8:
            raise FlowError(f"{path}: {packed.dtype} {packed.shape}, expected uint8 PE x WMEM x bytes {(pe, wmem, word_bytes)}")
        lanes = unpack_memory(packed, memory_dt, (pe, wmem, simd))
        # memory word (pe, nf * SF + sf) holds, lane s at bit s, weight of row nf * PE + pe, column sf * SIMD + s
        lanes = np.flip(lanes, axis=-1)
        weights = lanes.reshape(pe, mh // pe, mw).transpose(1, 0, 2).reshape(mh, mw).T  # MW x MH
        if spec["bipolar_weights"]:
            weights = 2 * weights - 1
        idt = DataType[spec["input_dtype"]]
        xnor = spec["binary_xnor"]
        bipolar_input = idt.name == "BIPOLAR" and not xnor
        # worst-case |x @ W| decides float32 (exact below 2**24) or float64
        x_max = 1 if (xnor or bipolar_input) else max(abs(idt.min()), abs(idt.max()))
        bound = np.abs(weights).sum(axis=0).max() * x_max
        dtype = np.float32 if bound < EXACT_FLOAT32 else np.float64
        weights = np.ascontiguousarray(weights, dtype=dtype)
        offset = (weights < 0).sum(axis=0).astype(dtype) if xnor else None
        acc_dt = DataType[spec["accumulator_dtype"]]
        acc_low, acc_high = accumulator_range(weights, idt, xnor)
        needs_wrap = bool(acc_low < acc_dt.min() or acc_high > acc_dt.max())
        thresholds = None
        if not spec["no_activation"]:
            thresholds = Thresholds(self._threshold_table(spec, mh), spec["act_val"])
        fast = limit = None
        if thresholds is not None and thresholds.table.shape[1] == 1 and not needs_wrap:
            fast = (thresholds.table[:, 0] - (offset if offset is not None else 0)).astype(dtype)
            if xnor and thresholds.act_val == 0:
                limit = np.floor(mw - thresholds.table[:, 0].astype(np.float64)).clip(-1, mw).astype(np.int32)
        return MvauLayer(
            **common,
            weights=weights,
            offset=offset,
            thresholds=thresholds,
            accumulator_dtype=acc_dt,
            needs_wrap=needs_wrap,
            bipolar_input=bipolar_input,
            fast_thresholds=fast,
            mismatch_limit=limit,
        )

    # ------------------------------------------------------------------ running

    def _run(self, stream: np.ndarray, record: dict | None = None) -> np.ndarray:
        x = stream
        with blas_controller().limit(limits=self.blas_threads, user_api="blas"):
            for layer in self.layers:
                if not isinstance(x, PackedBits):
                    x = x.reshape(len(x), *layer.spec["input_shape"])
                x = layer.run(x, self.route)
                if self.route == "packed" and layer.output_dtype.name in BINARY_TYPES and not isinstance(x, PackedBits):
                    x = PackedBits.pack(x, layer.spec["output_shape"][-1])
                if record is not None:
                    values = x.unpack() if isinstance(x, PackedBits) else x
                    record[layer.name] = layer.finn_values(values).reshape(len(values), -1)
        if isinstance(x, PackedBits):
            x = x.unpack()
        return x

    def _check_images(self, images) -> np.ndarray:
        """Images -> N x features in the input type's numpy container; one clear error otherwise."""
        if not isinstance(images, np.ndarray):
            raise FlowError(f"execute: expected a numpy array of {self.idt.name} values, got {type(images).__name__}")
        if not np.issubdtype(images.dtype, np.integer):
            raise FlowError(f"execute: expected integer {self.idt.name} values (e.g. uint8 pixels), got dtype {images.dtype}")
        features = int(np.prod(self.ishape_normal[1:]))
        accepted = {tuple(self.image_shape[1:]), tuple(self.ishape_normal[1:])}
        if images.ndim < 2 or tuple(images.shape[1:]) not in accepted or len(images) == 0:
            shapes = " or ".join("N x " + " x ".join(map(str, s)) for s in sorted(accepted))
            raise FlowError(f"execute: input shape {images.shape}, expected {shapes} with N >= 1")
        container = self.idt.to_numpy_dt()
        if not (images.dtype == container and self.idt.min() <= np.iinfo(container).min and np.iinfo(container).max <= self.idt.max()):
            low, high = images.min(), images.max()
            if low < self.idt.min() or high > self.idt.max():
                raise FlowError(
                    f"execute: input values span {low}..{high}, outside {self.idt.name} "
                    f"({self.idt.min()}..{self.idt.max()})"
                )
        if self.input_permutation is not None and tuple(images.shape[1:]) == tuple(self.image_shape[1:]):
            images = images.transpose(self.input_permutation)  # e.g. NCHW images -> the NHWC pixel stream
        return images.reshape(len(images), features).astype(container, copy=False)

    def pack_input(self, images: np.ndarray) -> np.ndarray:
        """N x features -> the bytes the input DMA carries (FINN driver convention)."""
        from finn.util.data_packing import finnpy_to_packed_bytearray

        folded = images.reshape(len(images), *self.ishape_folded[1:])
        return finnpy_to_packed_bytearray(folded, self.idt, reverse_inner=True, reverse_endian=True)

    def unpack_output(self, packed: np.ndarray) -> np.ndarray:
        """Output DMA bytes -> N x K int64."""
        from finn.util.data_packing import packed_bytearray_to_finnpy

        values = packed_bytearray_to_finnpy(
            packed, self.odt, (len(packed), *self.oshape_folded[1:]), reverse_inner=True, reverse_endian=True
        )
        return values.reshape(len(packed), *self.oshape_normal[1:]).astype(np.int64)

    def execute_packed(self, packed: np.ndarray) -> np.ndarray:
        """Input DMA bytes (uint8, N x ishape_packed) -> output DMA bytes (uint8, N x oshape_packed)."""
        from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy

        expected = tuple(self.ishape_packed[1:])
        if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
            raise FlowError(f"execute_packed: expected uint8 bytes, got {getattr(packed, 'dtype', type(packed).__name__)}")
        if packed.ndim < 2 or (tuple(packed.shape[1:]) != expected and packed.shape[1:] != (int(np.prod(expected)),)):
            raise FlowError(f"execute_packed: input shape {packed.shape}, expected N x {' x '.join(map(str, expected))}")
        packed = packed.reshape(len(packed), *expected)
        outputs = []
        for start in range(0, len(packed), self.batch_size):
            chunk = packed[start : start + self.batch_size]
            values = packed_bytearray_to_finnpy(
                chunk, self.idt, (len(chunk), *self.ishape_folded[1:]), reverse_inner=True, reverse_endian=True
            )
            stream = self._input_stream(values.reshape(len(chunk), -1))
            out = self._run(stream).reshape(len(chunk), *self.oshape_folded[1:])
            out = out.astype(self.odt.to_numpy_dt()) if self.odt.is_integer() and self.odt.bitwidth() % 8 == 0 else out
            outputs.append(finnpy_to_packed_bytearray(out, self.odt, reverse_inner=True, reverse_endian=True))
        return np.concatenate(outputs)

    def _input_stream(self, values: np.ndarray) -> np.ndarray:
        stream = values.astype(np.float32, copy=False)
        return (stream + 1) / 2 if self.idt.name == "BIPOLAR" else stream

    def execute(self, images: np.ndarray) -> np.ndarray:
        """Images (N x C x H x W or N x features, integer pixels) -> labels, int64 N x K."""
        x = self._check_images(images)
        return self.unpack_output(self.execute_packed(self.pack_input(x)))

    def execute_layers(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's integer output (N x channels, FINN's value convention), by HW layer name."""
        x = self._check_images(images)
        record: dict[str, np.ndarray] = {}
        self._run(self._input_stream(x), record)
        return record

    def throughput_test(self) -> dict:
        """Like the FINN driver's: a batch of random inputs through execute, timed; plus the cycle model."""
        from qonnx.util.basic import gen_finn_dt_tensor

        images = gen_finn_dt_tensor(self.idt, (self.batch_size, *self.ishape_normal[1:])).astype(self.idt.to_numpy_dt())
        start = time.perf_counter()
        packed = self.pack_input(images)
        packed_at = time.perf_counter()
        out = self.execute_packed(packed)
        executed_at = time.perf_counter()
        self.unpack_output(out)
        end = time.perf_counter()
        runtime = end - start
        return {
            "runtime[ms]": runtime * 1e3,
            "throughput[images/s]": self.batch_size / runtime,
            "DRAM_in_bandwidth[MB/s]": packed.nbytes / runtime * 1e-6,
            "DRAM_out_bandwidth[MB/s]": out.nbytes / runtime * 1e-6,
            "pack_input[ms]": (packed_at - start) * 1e3,
            "execute[ms]": (executed_at - packed_at) * 1e3,
            "unpack_output[ms]": (end - executed_at) * 1e3,
            "fclk[mhz]": self.cycles["clock_mhz"],
            "batch_size": self.batch_size,
            "estimated_throughput_fps": self.cycles["estimated_fps"],
            "estimated_latency_ns": self.cycles["estimated_latency_ns"],
        }


def emulate(run_dir: Path) -> dict:
    """``python -m flow emulate``: accuracy, speed and bit-exactness against FINN's HW-layer graph."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow import data as datasets
    from flow.graphs import execute_batched, predictions

    emulator = Emulator(run_dir / "hw")
    dataset = datasets.load(run_dataset(run_dir))
    images, labels = dataset.test_images, dataset.test_labels
    emulator.batch_size = min(len(images), TIMED_IMAGES)
    emulated = emulator.execute(images)[:, 0]
    timed = images[:TIMED_IMAGES]
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        emulator.execute(timed)
        timings.append(time.perf_counter() - start)
    reference_path = run_dir / "intermediate_models" / "step_convert_to_hw.onnx"
    if not reference_path.exists():
        raise FlowError(f"{reference_path}: missing; run `make build`")
    # FINN's Python execution of a CNV runs ~40 images/s: here a spot check, `make verify` covers every image
    checked = images[:REFERENCE_IMAGES]
    reference = predictions(execute_batched(ModelWrapper(str(reference_path)), checked))
    mismatches = np.flatnonzero(reference != emulated[: len(checked)])
    return {
        "dataset": dataset.name,
        "images": len(images),
        "accuracy": float((emulated == labels).mean()),
        "images_per_s": len(timed) / min(timings),
        "timed_images": len(timed),
        "reference_images": len(checked),
        **emulator.cycles,
        "bit_exact": len(mismatches) == 0,
        "mismatched_images": mismatches[:20].tolist(),
        "reference": "FINN Python execution of intermediate_models/step_convert_to_hw.onnx",
    }


def run_dataset(run_dir: Path) -> str:
    """The dataset a run was trained on (from train_metrics.json)."""
    metrics = run_dir / "train_metrics.json"
    if not metrics.exists():
        raise FlowError(f"{metrics}: missing; run `make train` first")
    return json.loads(metrics.read_text())["config"]["dataset"]
