"""Board descriptions: the files in ``boards/*.toml`` (part, clock, resource budget).

Every board file is validated field by field when loaded (a stock board or
the user's own): a bad one is refused with one line naming the file and the
field. A build keeps the board it used as ``RUN_DIR/board.toml``
(:func:`board_toml`), so later stages read that description, never a stock
board of the same name.
"""

from __future__ import annotations

import json
import math
import tomllib
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from flow.errors import FlowError

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"
# PYNQ platform -> the device families (part-name prefixes) of its boards
PLATFORM_FAMILIES = {"zynq": ("xc7z",), "zynqmp": ("xczu", "xck26", "xck24")}
REQUIRED_RESOURCES = ("LUT", "FF", "BRAM_18K", "DSP")


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
    """A board by name (``boards/<name>.toml``) or by the path of a board file, validated."""
    path = Path(name) if name.endswith(".toml") else BOARDS_DIR / f"{name}.toml"
    if not path.is_file():
        raise FlowError(f"unknown board '{name}'; known boards: {', '.join(known_boards())}")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FlowError(f"{path}: malformed TOML ({exc})") from None
    return validated_board(spec, path)


def validated_board(spec: dict, path: Path) -> Board:
    """``spec`` as a Board, or FlowError naming ``path`` and the first bad field."""
    from finn.util.basic import pynq_part_map

    def bad(field: str, problem: str) -> FlowError:
        return FlowError(f"{path}: field '{field}' {problem}")

    types = typing.get_type_hints(Board)
    declared = {f.name for f in fields(Board)}
    for key in spec:
        if key not in declared:
            raise bad(key, f"is not a board field (fields: {', '.join(sorted(declared))})")
    for f in fields(Board):
        if f.name not in spec:
            if f.default is MISSING:
                raise bad(f.name, "is missing")
            continue
        value, expected = spec[f.name], optional_of(types[f.name])
        if expected is str:
            if not isinstance(value, str) or not value.strip():
                raise bad(f.name, f"must be a non-empty string, not {value!r}")
        elif expected in (int, float):
            check_positive_number(value, expected, lambda problem, n=f.name: bad(n, problem))
    resources = spec["resources"]
    if not isinstance(resources, dict):
        raise bad("resources", f"must be a table of {', '.join(REQUIRED_RESOURCES)}, not {resources!r}")
    for resource in REQUIRED_RESOURCES:
        if resource not in resources:
            raise bad(f"resources.{resource}", "is missing")
    for resource, count in resources.items():
        check_positive_number(count, int, lambda problem, r=resource: bad(f"resources.{r}", problem))
    width = spec["dma_width_bits"]
    if width < 8 or width & (width - 1):
        raise bad("dma_width_bits", f"must be a power of two >= 8, not {width}")
    if spec["pynq_platform"] not in PLATFORM_FAMILIES:
        raise bad("pynq_platform", f"'{spec['pynq_platform']}' is unknown; known: {', '.join(PLATFORM_FAMILIES)}")
    if spec["part"] not in set(pynq_part_map.values()):
        raise bad("part", f"'{spec['part']}' is not a part FINN knows ({', '.join(sorted(set(pynq_part_map.values())))})")
    if not spec["part"].startswith(PLATFORM_FAMILIES[spec["pynq_platform"]]):
        raise bad("part", f"'{spec['part']}' is not a {spec['pynq_platform']} device")
    if spec["finn_board"] not in pynq_part_map:
        raise bad("finn_board", f"'{spec['finn_board']}' is not a board FINN knows ({', '.join(pynq_part_map)})")
    return Board(**spec)


def optional_of(annotation):
    """``X | None`` -> X (a field that may be left out); anything else as it is."""
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    return arguments[0] if len(arguments) == 1 else annotation


def check_positive_number(value, expected: type, bad) -> None:
    """A finite number > 0 of type ``expected`` (an int field takes no fraction; a bool is no number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad(f"must be a number, not {value!r}")
    if expected is int and not isinstance(value, int):
        raise bad(f"must be a whole number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise bad(f"must be positive, not {value!r}")


def board_toml(board: Board) -> str:
    """The board as a TOML file that :func:`load_board` reads back equal."""

    def toml_value(value) -> str:
        return json.dumps(value)  # strings, ints and floats are written the same in TOML and JSON

    lines, tables = [f"# board description kept by the build: {board.name}"], []
    for key, value in asdict(board).items():
        if value is None:  # an optional field left out (TOML has no null)
            continue
        if isinstance(value, dict):
            tables += [f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in value.items())]
        else:
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines + tables) + "\n"
