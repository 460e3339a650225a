"""The accelerator's I/O conventions: FINN's ``io_shape_dict`` and FINN's packing.

``io_shape_dict`` is what FINN's ``MakePYNQDriver`` writes into the driver's
settings (``finn.util.basic.get_driver_shapes``): per input/output the FINN
data type and the normal, folded and packed shapes, batch dimension first.
The packing functions are FINN's own ``finn.util.data_packing``: from the
installed finn-plus on a build host, else from the copies of FINN's and
qonnx' files that the deployment package carries in ``driver/vendor/`` (as
FINN's make_driver ships them), so the board packs exactly the same bytes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy
    from qonnx.core.datatype import DataType
except ModuleNotFoundError:  # a board without FINN: use the copies shipped in the package
    sys.path.append(str(Path(__file__).resolve().parent / "vendor"))
    from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy
    from qonnx.core.datatype import DataType


def with_batch(shape: tuple[int, ...], batch: int) -> tuple[int, ...]:
    """A FINN driver shape (batch 1 first) for ``batch`` images."""
    return (batch, *shape[1:])


@dataclass(frozen=True)
class StreamShape:
    """One DMA stream: FINN data type and per-image normal/folded/packed shapes (batch 1)."""

    dtype: object  # qonnx DataType
    normal: tuple[int, ...]
    folded: tuple[int, ...]
    packed: tuple[int, ...]

    @property
    def packed_bytes(self) -> int:
        """Bytes one image occupies in the DMA buffer."""
        return int(np.prod(self.packed[1:]))


@dataclass(frozen=True)
class IOShapes:
    input: StreamShape
    output: StreamShape

    @classmethod
    def from_dict(cls, io_shape_dict: dict) -> "IOShapes":
        """From FINN's ``io_shape_dict`` (lists with one entry per DMA; one input, one output here)."""
        d = io_shape_dict

        def dtype(name) -> object:
            # FINN writes "DataType['UINT8']" into settings.json; accept the plain name as well
            name = str(name)
            if "[" in name:
                name = name[name.index("[") + 1 : name.index("]")].strip("'\"")
            return DataType[name]

        def stream(prefix: str, dt_key: str) -> StreamShape:
            return StreamShape(
                dtype(d[dt_key][0]),
                tuple(d[f"{prefix}shape_normal"][0]),
                tuple(d[f"{prefix}shape_folded"][0]),
                tuple(d[f"{prefix}shape_packed"][0]),
            )

        return cls(stream("i", "idt"), stream("o", "odt"))


def fold_input(images: np.ndarray, io: IOShapes) -> np.ndarray:
    """N images (any layout with the right number of elements per image) -> N x folded shape.

    Data movement the graph does before the accelerator (the input Reshape of an
    MLP) is free here: the pixels are already in stream order.
    """
    n = len(images)
    per_image = int(np.prod(io.input.normal[1:]))
    if images.size != n * per_image:
        raise ValueError(
            f"input has {images.size // max(n, 1)} values per image, the accelerator takes "
            f"{per_image} (shape {tuple(io.input.normal[1:])})"
        )
    return images.reshape(with_batch(io.input.folded, n))


def pack_input(folded: np.ndarray, io: IOShapes) -> np.ndarray:
    """FINN's packing for the input DMA: SIMD dimension and endianness reversed, as FINN's driver."""
    return finnpy_to_packed_bytearray(folded, io.input.dtype, reverse_endian=True, reverse_inner=True)


def check_input_range(images: np.ndarray, io: IOShapes) -> None:
    """Every value is an integer of the accelerator's input type: packing would silently keep
    only the low bits (a BINARY input packs bit 0 of each 8-bit pixel)."""
    dtype = io.input.dtype
    if images.size == 0:
        return
    low, high = images.min(), images.max()
    if low < dtype.min() or high > dtype.max() or not np.array_equal(images, np.round(images)):
        raise ValueError(
            f"input values span {low}..{high}, the accelerator's input is {dtype.name} "
            f"(integers {dtype.min()}..{dtype.max()})"
        )


def pack_images(images: np.ndarray, io: IOShapes) -> np.ndarray:
    """N images -> N x packed input bytes, exactly as the input DMA reads them."""
    check_input_range(images, io)
    return pack_input(fold_input(images, io), io)


def unpack_output(packed: np.ndarray, io: IOShapes) -> np.ndarray:
    """N x packed output bytes -> N x normal output shape (the label indices here)."""
    n = len(packed)
    folded = packed_bytearray_to_finnpy(
        packed,
        io.output.dtype,
        with_batch(io.output.folded, n),
        reverse_endian=True,
        reverse_inner=True,
    )
    return folded.reshape(with_batch(io.output.normal, n))
