"""Board descriptions: the files in ``boards/*.toml`` (part, clock, resource budget)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from flow.errors import FlowError

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    clock_mhz: float
    pynq_platform: str
    finn_board: str  # the board's name in FINN's tables (finn.util.basic.pynq_part_map)
    dma_width_bits: int
    resources: dict[str, int]  # LUT, FF, BRAM_18K, DSP: FINN's resource names
    # sustainable AXI DMA bandwidth into / out of the fabric (MB/s); flow.cycles bounds the FPS by it
    dma_mm2s_mb_per_s: float | None = None
    dma_s2mm_mb_per_s: float | None = None

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


def known_boards() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def load_board(name: str) -> Board:
    """A board by name (``boards/<name>.toml``) or by the path of a board file."""
    path = Path(name) if name.endswith(".toml") else BOARDS_DIR / f"{name}.toml"
    if not path.exists():
        raise FlowError(f"unknown board '{name}'; known boards: {', '.join(known_boards())}")
    with path.open("rb") as f:
        spec = tomllib.load(f)
    try:
        return Board(**spec)
    except TypeError as exc:
        raise FlowError(f"{path}: not a board description ({exc})") from None
