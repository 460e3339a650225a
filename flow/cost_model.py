"""The folding search's resource cost, calibrated against Yosys: ``--cost-model synth``.

FINN's per-layer formulas (``node_res_estimation``) read 1.3-6.7x the LUTs Yosys
``synth_xilinx`` maps our RTL components to (docs/rtl.md), and they leave out the
width converters and FIFOs the generated top puts in front of every layer. This
module fits, per layer kind (an RTL module of ``hls_templates/rtl/``), a linear
model of the mapped LUT, FF and DSP counts over physically motivated terms
(``PE x SIMD`` XNOR-popcount lanes, ``PE x ACC_BITS`` accumulators, threshold
comparators, ROM and LUTRAM bits per 64-entry LUT, ...), and counts block RAM by
the memory's shape as Yosys maps it (the RAMB18/RAMB36 aspect ratios).

``python -m flow calibrate`` (``make calibrate``) synthesizes every kind's sweep
of parameter sets (random weights and thresholds, fixed seed) with the flow's own
Yosys script (:func:`flow.synth.run_yosys`), fits the coefficients by non-negative
least squares on relative residuals and writes them, the samples and the fit's
error to :data:`DATA_FILE`. A kind is added by listing its module, its sweep and
its terms in :data:`KINDS`.

The build (``flow.build``) asks :func:`layer_cost` for a FINN node's unit, input
width converter and input FIFO as ``flow.rtl`` generates them.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flow.errors import FlowError
from flow.files import write_json

COST_MODELS = ("finn", "synth")
DATA_FILE = Path(__file__).with_name("cost_model_synth.json")
FORMAT_VERSION = 1
FITTED = ("LUT", "FF", "DSP")  # linear in the kind's terms; BRAM_18K by memory shape
RESOURCES = ("LUT", "FF", "BRAM_18K", "DSP")
# relative residuals |model - Yosys| / max(Yosys, RELATIVE_FLOOR): a 2-LUT module is not
# fitted (or judged) to the LUT
RELATIVE_FLOOR = 10
# samples per Yosys run, by their size (kind.size): one run per few large MVAUs
RUN_SIZE = 4096
SEED = 1


def ceil_log2(value: int) -> int:
    return max(1, int(value - 1).bit_length())


def signed_bits(low: int, high: int) -> int:
    """Bits of the narrowest two's-complement type holding low..high (at least 2), as flow.rtl sizes memories."""
    return max(2, max(high.bit_length(), (-low - 1).bit_length() if low < 0 else 0) + 1)


# --------------------------------------------------------------------------- block RAM by shape

# (depth, width) of one RAMB18 / RAMB36 in simple-dual-port / ROM use (UG473)
RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
RAMB36_SHAPES = ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72))


def rom_bram18(depth: int, width: int) -> int:
    """BRAM_18K of a depth x width memory in block RAM: the cheapest tiling by one aspect ratio."""
    tilings = [math.ceil(depth / d) * math.ceil(width / w) for d, w in RAMB18_SHAPES]
    tilings += [2 * math.ceil(depth / d) * math.ceil(width / w) for d, w in RAMB36_SHAPES]
    return min(tilings)


def lutram_luts_per_bit(depth: int) -> float:
    """LUTs per bit of a 1-write 1-read LUT memory: RAM32M (32 x 6), RAM64M (64 x 3), deeper
    ones as RAM128X1D / RAM256X1D (a LUT per 32 entries)."""
    return 4 / 6 if depth <= 32 else 4 / 3 if depth <= 64 else depth / 32


# --------------------------------------------------------------------------- layer kinds


@dataclass(frozen=True)
class Kind:
    """A layer kind: its RTL module, the parameter sets it is calibrated on, its model."""

    module: str  # hls_templates/rtl/<module>.sv
    what: str
    sweep: Callable[[], list[dict]]  # the parameter sets synthesized for the fit
    terms: Callable[[dict], dict[str, float]]  # term -> value; LUT/FF/DSP = sum(coefficient x value)
    bram18: Callable[[dict], int]  # block RAM by memory shape
    ports: Callable[[dict], tuple[int, int]]  # (s_tdata, m_tdata) bits
    memories: Callable[[dict, random.Random], dict[str, str]]  # parameter naming a file -> its text
    size: Callable[[dict], int] = lambda params: 1  # Yosys work, to batch samples into runs


def hex_memory(values: list[int], bits: int) -> str:
    digits = max(1, -(-bits // 4))
    return "".join(f"{v & ((1 << bits) - 1):0{digits}x}\n" for v in values)


def random_thresholds(rng: random.Random, rows: int, steps: int, low: int, high: int) -> list[int]:
    """rows x steps ascending thresholds in low..high (a trained layer's are spread like this)."""
    return [t for _ in range(rows) for t in sorted(rng.randint(low, high) for _ in range(steps))]


# ---- bnn_mvau: XNOR-popcount (binary layers) and integer dot product (the first conv layer)


def mvau_shape(p: dict) -> tuple[int, int, int]:
    sf, nf = p["MW"] // p["SIMD"], p["MH"] // p["PE"]
    return sf, nf, sf * nf


def xnor_params(mw, mh, simd, pe, steps=1) -> dict:
    acc = ceil_log2(mw + 1)
    return dict(MW=mw, MH=mh, SIMD=simd, PE=pe, XNOR=1, IBITS=1, ISIGNED=0, IBIPOLAR=0, WBITS=1, WSIGNED=0,
                WBIPOLAR=0, RES_TYPE="lut", ACC_BITS=acc, ACC_SIGNED=0, STEPS=steps,
                TBITS=signed_bits(0, mw + 1) if steps else 2, OBITS=ceil_log2(steps + 1) if steps else acc,
                ACT_VAL=0, RAM_STYLE="block")


def integer_params(mw, mh, simd, pe, res="lut", wbits=1, steps=1) -> dict:
    """8-bit unsigned pixels x bipolar (wbits 1) or signed weights."""
    largest = 255 * mw * (1 if wbits == 1 else 1 << (wbits - 1))
    acc = signed_bits(-largest, largest)
    return dict(MW=mw, MH=mh, SIMD=simd, PE=pe, XNOR=0, IBITS=8, ISIGNED=0, IBIPOLAR=0, WBITS=wbits,
                WSIGNED=int(wbits > 1), WBIPOLAR=int(wbits == 1), RES_TYPE=res, ACC_BITS=acc, ACC_SIGNED=1,
                STEPS=steps, TBITS=acc + 1 if steps else 2, OBITS=ceil_log2(steps + 1) if steps else acc,
                ACT_VAL=0, RAM_STYLE="block")


# Weight ROMs in block RAM only: the folding search keeps FINN's default (internal_decoupled,
# ram_style auto: block RAM), and Yosys finds no mapping for a distributed ROM of
# bnn_mvau's shape ("no valid mapping found for memory ... lut_rom.weights"); a layer with a
# distributed ROM is costed by FINN's estimate (unit_of).


def xnor_sweep() -> list[dict]:
    # the MLP layers as built (TFC, SFC, LFC on the PYNQ-Z2), CNV's XNOR layers' shapes,
    # and foldings around them: lanes 1..2048, SF and NF 1..256, with and without thresholds
    return [
        xnor_params(784, 64, 16, 32), xnor_params(64, 64, 64, 1), xnor_params(64, 10, 8, 1, 0),
        xnor_params(784, 256, 16, 128), xnor_params(256, 256, 256, 4), xnor_params(256, 10, 32, 1, 0),
        xnor_params(784, 1024, 784, 2), xnor_params(1024, 10, 4, 5, 0),
        xnor_params(576, 64, 32, 16), xnor_params(1152, 128, 64, 8), xnor_params(2304, 256, 32, 32),
        xnor_params(576, 128, 576, 1), xnor_params(256, 256, 8, 8), xnor_params(1024, 64, 4, 4),
        xnor_params(64, 64, 1, 1), xnor_params(256, 64, 32, 4, 3), xnor_params(64, 64, 16, 16, 3),
        xnor_params(64, 10, 64, 10, 0), xnor_params(128, 256, 128, 8), xnor_params(64, 10, 1, 1, 0),
        xnor_params(1152, 256, 16, 64), xnor_params(2304, 512, 8, 16),
    ]


def integer_sweep() -> list[dict]:
    # CNV's first layer: 3 x 3 x 1 (fashion-mnist32) or 3 x 3 x 3 (RGB) pixels into 64 channels
    return [
        integer_params(9, 64, 9, 16), integer_params(9, 64, 9, 16, "dsp"), integer_params(9, 64, 3, 64),
        integer_params(9, 64, 9, 64, "dsp"), integer_params(9, 64, 1, 8), integer_params(27, 64, 27, 4),
        integer_params(27, 64, 27, 4, "dsp"), integer_params(27, 64, 3, 16, "dsp"), integer_params(27, 64, 9, 32),
        integer_params(9, 16, 9, 1), integer_params(9, 64, 9, 32, "lut", 2), integer_params(75, 32, 25, 8, "dsp"),
        integer_params(9, 64, 9, 64), integer_params(9, 16, 9, 16),
    ]


def mvau_common_terms(p: dict, bits_per_lane: int) -> dict[str, float]:
    sf, nf, wmem = mvau_shape(p)
    thresholds = p["PE"] * p["STEPS"] * p["TBITS"]
    word = p["SIMD"] * p["IBITS"]
    return {
        # XNOR + popcount tree, or the products' adder tree; with one weight word (SF = NF = 1) the
        # weights are constants that fold into the logic
        "lanes": p["PE"] * p["SIMD"] * bits_per_lane if wmem > 1 else 0,
        "lanes_constant_weights": p["PE"] * p["SIMD"] * bits_per_lane if wmem == 1 else 0,
        "accumulators": p["PE"] * p["ACC_BITS"],
        "threshold_compare": thresholds,  # against a constant (NF = 1) or the threshold ROM's word
        "threshold_rom": thresholds * math.ceil(nf / 64) if nf > 1 else 0,  # NF-deep ROM per bit
        "input_buffer": word * lutram_luts_per_bit(sf) if sf > 1 else word,  # the replay buffer
        "output": p["PE"] * p["OBITS"],
        "counters": ceil_log2(wmem) + ceil_log2(sf) + ceil_log2(nf),
        "constant": 1,
    }


def xnor_terms(p: dict) -> dict[str, float]:
    return mvau_common_terms(p, 1)


def integer_terms(p: dict) -> dict[str, float]:
    dsp = p["RES_TYPE"] == "dsp"
    lut_product_bits = p["IBITS"] + (p["WBITS"] if p["WBITS"] > 1 else 1)
    return mvau_common_terms(p, 0 if dsp else lut_product_bits) | {
        "dsp_products": p["PE"] * p["SIMD"] if dsp else 0,  # a DSP48 per product, its sum in LUTs
        "dsp_sum": p["PE"] * p["SIMD"] * p["ACC_BITS"] if dsp else 0,
    }


def mvau_bram18(p: dict) -> int:
    _, _, wmem = mvau_shape(p)
    return rom_bram18(wmem, p["PE"] * p["SIMD"] * p["WBITS"]) if wmem > 1 else 0  # one word: a constant


def mvau_memories(p: dict, rng: random.Random) -> dict[str, str]:
    _, nf, wmem = mvau_shape(p)
    bits = p["PE"] * p["SIMD"] * p["WBITS"]
    files = {"WEIGHT_FILE": hex_memory([rng.getrandbits(bits) for _ in range(wmem)], bits)}
    if p["STEPS"]:
        low, high = (0, p["MW"] + 1) if p["XNOR"] else (-(1 << (p["TBITS"] - 2)), (1 << (p["TBITS"] - 2)))
        files["THRESH_FILE"] = hex_memory(random_thresholds(rng, p["PE"] * nf, p["STEPS"], low, high), p["TBITS"])
    return files


def mvau_size(p: dict) -> int:
    lanes = p["PE"] * p["SIMD"] * max(p["WBITS"], p["IBITS"])
    return lanes + p["MW"]


# ---- bnn_swg, bnn_maxpool


def swg_params(size, channels, simd, ebits, k, stride) -> dict:
    from flow.rtl import swg_buffer

    out = (size - k) // stride + 1
    spec = {"name": "sample", "input_dim": [size, size], "output_dim": [out, out], "kernel": k, "stride": stride,
            "channels": channels, "SIMD": simd}
    return dict(IH=size, IW=size, CHANNELS=channels, SIMD=simd, EBITS=ebits, K=k, STRIDE=stride, BUFFER=swg_buffer(spec))


def swg_terms(p: dict) -> dict[str, float]:
    word = p["SIMD"] * p["EBITS"]
    chunks = math.ceil(p["BUFFER"] / 64)
    return {
        "ring": word * lutram_luts_per_bit(p["BUFFER"]),  # the window buffer in LUTRAM
        "read_mux": word * chunks * ceil_log2(chunks) if chunks > 1 else 0,  # over its 64-entry pieces
        "word": word,  # the output register and the read port's last mux level
        "address": ceil_log2(p["BUFFER"]),  # ring pointers, modular adds, the held count
        "counters": ceil_log2(p["IH"] * p["IW"] * p["CHANNELS"] // p["SIMD"]) + ceil_log2(p["K"] * p["CHANNELS"] // p["SIMD"]),
        "constant": 1,
    }


def maxpool_terms(p: dict) -> dict[str, float]:
    return {
        "compare": p["PE"] * (p["IBITS"] + 1),
        "running": p["CHANNELS"] * p["IBITS"],  # the running maxima of every channel fold
        "counters": ceil_log2(p["CHANNELS"] // p["PE"]) + ceil_log2(p["WINDOW"]),
        "constant": 1,
    }


# ---- bnn_thresholding


def thresholding_params(channels, pe, ibits, signed, steps) -> dict:
    low, high = (-(1 << (ibits - 1)), (1 << (ibits - 1)) - 1) if signed else (0, (1 << ibits) - 1)
    return dict(CHANNELS=channels, PE=pe, IBITS=ibits, ISIGNED=int(signed), STEPS=steps,
                TBITS=signed_bits(low, high + 1), OBITS=ceil_log2(steps + 1), ACT_VAL=0)


def thresholding_sweep() -> list[dict]:
    # one step (binary activations, as every build here has): with more, bnn_thresholding's
    # `int` count synthesizes to 32-bit adder chains (256 channels, PE 16, 7 steps: 59,115 LUTs
    # and 15 DSPs in Yosys), no linear model of the unit's parameters; such a layer is costed by
    # FINN's estimate (unit_of)
    return [
        thresholding_params(784, 14, 8, 0, 1), thresholding_params(784, 16, 8, 0, 1),
        thresholding_params(784, 1, 8, 0, 1), thresholding_params(784, 56, 8, 0, 1),
        thresholding_params(784, 112, 8, 0, 1), thresholding_params(3072, 3, 8, 0, 1),
        thresholding_params(128, 32, 16, 1, 1), thresholding_params(1024, 8, 8, 0, 1),
    ]


def thresholding_terms(p: dict) -> dict[str, float]:
    tmem = p["CHANNELS"] // p["PE"]
    thresholds = p["PE"] * p["STEPS"] * p["TBITS"]
    return {
        "threshold_compare": thresholds,
        "threshold_rom": thresholds * math.ceil(tmem / 64) if tmem > 1 else 0,
        "output": p["PE"] * p["OBITS"],
        "counter": ceil_log2(tmem),
        "constant": 1,
    }


def thresholding_memories(p: dict, rng: random.Random) -> dict[str, str]:
    low = -(1 << (p["IBITS"] - 1)) if p["ISIGNED"] else 0
    high = low + (1 << p["IBITS"])
    return {"THRESH_FILE": hex_memory(random_thresholds(rng, p["CHANNELS"], p["STEPS"], low, high), p["TBITS"])}


# ---- bnn_label_select


def label_select_params(labels, pe, ibits, signed=0) -> dict:
    return dict(LABELS=labels, PE=pe, IBITS=ibits, ISIGNED=signed, OBITS=8 * math.ceil(ceil_log2(labels + 1) / 8))


def label_select_terms(p: dict) -> dict[str, float]:
    label_bits = ceil_log2(p["LABELS"] + 1)
    return {
        "compare": p["PE"] * (p["IBITS"] + 1),  # a chain of PE comparisons per word
        "label_mux": p["PE"] * label_bits,
        "registers": p["IBITS"] + label_bits + p["OBITS"],
        "counter": ceil_log2(p["LABELS"] // p["PE"]),
        "constant": 1,
    }


# ---- bnn_fifo, bnn_dwc (in front of every layer)


def fifo_terms(p: dict) -> dict[str, float]:
    return {
        "storage": p["WIDTH"] * lutram_luts_per_bit(p["DEPTH"]),
        "width": p["WIDTH"],
        "pointers": ceil_log2(p["DEPTH"]),
        "constant": 1,
    }


def dwc_terms(p: dict) -> dict[str, float]:
    held = p["IW"] + p["OW"]
    return {
        "buffer": held,  # each held bit: keep, shift out by OW, or take an input bit
        "input_word": p["IW"],  # placed at the held count
        "counter": ceil_log2(held + 1),
        "constant": 1,
    }


def no_memories(p: dict, rng: random.Random) -> dict[str, str]:
    return {}


def no_bram(p: dict) -> int:
    return 0


KINDS: dict[str, Kind] = {
    "bnn_mvau_xnor": Kind(
        "bnn_mvau", "MVAU, XNOR-popcount (weight ROM, thresholds)", xnor_sweep, xnor_terms, mvau_bram18,
        lambda p: (p["SIMD"] * p["IBITS"], p["PE"] * p["OBITS"]), mvau_memories, mvau_size,
    ),
    "bnn_mvau_integer": Kind(
        "bnn_mvau", "MVAU, integer inputs x bipolar/integer weights (resType lut or dsp)", integer_sweep,
        integer_terms, mvau_bram18, lambda p: (p["SIMD"] * p["IBITS"], p["PE"] * p["OBITS"]), mvau_memories, mvau_size,
    ),
    "bnn_swg": Kind(
        "bnn_swg", "sliding-window generator (LUTRAM ring)",
        lambda: [swg_params(*a) for a in ((32, 1, 1, 8, 3, 1), (32, 3, 3, 8, 3, 1), (30, 64, 1, 1, 3, 1),
                                          (30, 64, 16, 1, 3, 1), (30, 64, 64, 1, 3, 1), (14, 64, 8, 1, 3, 1),
                                          (12, 128, 32, 1, 3, 1), (5, 256, 4, 1, 3, 1), (28, 64, 64, 1, 2, 2),
                                          (10, 128, 128, 1, 2, 2))],
        swg_terms, no_bram, lambda p: (p["SIMD"] * p["EBITS"], p["SIMD"] * p["EBITS"]), no_memories,
        size=lambda p: p["SIMD"] * p["EBITS"] * max(1, p["BUFFER"] // 64),
    ),
    "bnn_maxpool": Kind(
        "bnn_maxpool", "max-pool over a window",
        lambda: [dict(CHANNELS=c, PE=pe, WINDOW=w, IBITS=b, ISIGNED=sg) for c, pe, w, b, sg in (
            (64, 1, 4, 1, 0), (64, 8, 4, 1, 0), (64, 64, 4, 1, 0), (128, 16, 4, 1, 0), (256, 1, 4, 1, 0),
            (256, 32, 4, 1, 0), (64, 4, 4, 8, 1), (128, 128, 9, 1, 0))],
        maxpool_terms, no_bram, lambda p: (p["PE"] * p["IBITS"], p["PE"] * p["IBITS"]), no_memories,
    ),
    "bnn_thresholding": Kind(
        "bnn_thresholding", "standalone thresholds", thresholding_sweep, thresholding_terms, no_bram,
        lambda p: (p["PE"] * p["IBITS"], p["PE"] * p["OBITS"]), thresholding_memories,
        # PE x STEPS read ports on one threshold memory: a few of them fill WebAssembly Yosys' 4 GB
        # (64 PE x 15 steps alone did), so one sample per run
        size=lambda p: RUN_SIZE,
    ),
    "bnn_label_select": Kind(
        "bnn_label_select", "label select (K = 1)",
        lambda: [label_select_params(*a) for a in ((10, 1, 8), (10, 10, 8), (10, 5, 8), (10, 2, 16, 1), (100, 10, 8),
                                                     (100, 1, 8), (10, 10, 11), (1000, 8, 8), (64, 16, 8, 1))],
        label_select_terms, no_bram, lambda p: (p["PE"] * p["IBITS"], p["OBITS"]), no_memories,
    ),
    "bnn_fifo": Kind(
        "bnn_fifo", "input FIFO of a layer (LUTRAM)",
        lambda: [dict(WIDTH=w, DEPTH=d, ID=0) for w, d in ((112, 56), (16, 49), (64, 2), (8, 8), (70, 2), (1024, 2),
                                                           (4, 256), (32, 64), (256, 4), (1, 512), (784, 2), (16, 128))],
        fifo_terms, no_bram, lambda p: (p["WIDTH"], p["WIDTH"]), no_memories,
    ),
    "bnn_dwc": Kind(
        "bnn_dwc", "input width converter of a layer",
        lambda: [dict(IW=i, OW=o) for i, o in ((64, 112), (14, 16), (32, 64), (1, 64), (1, 8), (7, 70), (64, 784),
                                               (2, 1024), (1024, 8), (64, 8), (16, 256), (4, 2))],
        dwc_terms, no_bram, lambda p: (p["IW"], p["OW"]), no_memories,
    ),
}


# --------------------------------------------------------------------------- calibration


def sv_value(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def calibration_top(kind: Kind, samples: list[dict], rng: random.Random) -> tuple[str, dict[str, str]]:
    """A top with one instance ``u<i>`` per sample, every port on the top; (source, memory files)."""
    ports, body, files = [], "", {}
    for i, params in enumerate(samples):
        in_bits, out_bits = kind.ports(params)
        values = dict(params)
        for parameter, text in kind.memories(params, rng).items():
            files[f"u{i}_{parameter.lower()}.mem"] = text
            values[parameter] = f"u{i}_{parameter.lower()}.mem"
        ports += [f"input logic s{i}_tvalid", f"output logic s{i}_tready", f"input logic [{in_bits - 1}:0] s{i}_tdata",
                  f"output logic m{i}_tvalid", f"input logic m{i}_tready", f"output logic [{out_bits - 1}:0] m{i}_tdata"]
        connections = ", ".join(f".{p}_{s}({p[0]}{i}_{s})" for p in ("s", "m") for s in ("tvalid", "tready", "tdata"))
        body += (f"    {kind.module} #({', '.join(f'.{k}({sv_value(v)})' for k, v in values.items())}) u{i} "
                 f"(.clk(clk), .rst_n(rst_n), {connections});\n")
    source = "module calibration (\n    input logic clk, rst_n,\n" + ",\n".join(f"    {p}" for p in ports) + "\n);\n" + body + "endmodule\n"
    return source, files


def synthesize_samples(kind: Kind, samples: list[dict], family_name: str, rng: random.Random) -> tuple[list[dict], float]:
    """Yosys counts (flow.synth.count) of each sample's module, and the run's seconds."""
    from flow.rtl import MODULES, RTL_TEMPLATES
    from flow.synth import count, flattened_cells, run_yosys

    source, files = calibration_top(kind, samples, rng)
    with tempfile.TemporaryDirectory(prefix="calibrate-") as tmp:
        work = Path(tmp)
        for module in MODULES:
            shutil.copy(RTL_TEMPLATES / module, work / module)
        (work / "calibration.sv").write_text(source)
        for name, text in files.items():
            (work / name).write_text(text)
        stat, seconds, _ = run_yosys(work, "calibration", family_name)
    modules = stat["modules"]
    counts = []
    for i in range(len(samples)):
        found = [m for m in modules if m.lstrip("\\").split("$", 1)[-1] == f"calibration.u{i}"]
        if len(found) != 1:
            raise FlowError(f"Yosys' netlist has {len(found)} modules for calibration sample u{i} of {kind.module}")
        counts.append(count(flattened_cells(modules, found[0])))
    return counts, seconds


def runs_of(kind: Kind, samples: list[dict]) -> list[list[dict]]:
    """The samples in Yosys runs of at most RUN_SIZE (a larger sample runs alone)."""
    runs, current, size = [], [], 0
    for params in samples:
        if current and size + kind.size(params) > RUN_SIZE:
            runs.append(current)
            current, size = [], 0
        current.append(params)
        size += kind.size(params)
    return runs + ([current] if current else [])


def design_matrix(kind: Kind, samples: list[dict]) -> tuple[list[str], np.ndarray]:
    rows = [kind.terms(s["params"]) for s in samples]
    names = list(rows[0])
    return names, np.array([[row[n] for n in names] for row in rows], dtype=float)


def fit_resource(kind: Kind, samples: list[dict], resource: str) -> dict[str, float]:
    """Non-negative least squares on relative residuals: no term may cost less than nothing
    (a negative coefficient would make a folding outside the sweep cheaper than it is)."""
    from scipy.optimize import nnls

    names, matrix = design_matrix(kind, samples)
    measured = np.array([s["yosys"][resource] for s in samples], dtype=float)
    weights = 1.0 / np.maximum(measured, RELATIVE_FLOOR)
    coefficients, _ = nnls(matrix * weights[:, None], measured * weights)
    return {name: float(round(c, 6)) for name, c in zip(names, coefficients)}


def fit_errors(predicted: list[float], measured: list[float]) -> dict:
    """mean/max relative error (to max(Yosys, RELATIVE_FLOOR)), max absolute error, n."""
    errors = [abs(p - m) / max(m, RELATIVE_FLOOR) for p, m in zip(predicted, measured)]
    return {
        "mean_relative_error": round(float(np.mean(errors)), 4),
        "max_relative_error": round(float(np.max(errors)), 4),
        "max_absolute_error": round(float(max(abs(p - m) for p, m in zip(predicted, measured))), 1),
        "n": len(measured),
    }


def fit_kind(kind: Kind, samples: list[dict]) -> dict:
    names, _ = design_matrix(kind, samples)
    entry = {"module": kind.module, "what": kind.what, "terms": names, "coefficients": {}, "errors": {}}
    for resource in FITTED:
        entry["coefficients"][resource] = fit_resource(kind, samples, resource)
    for resource in RESOURCES:
        predicted = [predict_with(kind, entry, s["params"])[resource] for s in samples]
        entry["errors"][resource] = fit_errors(predicted, [s["yosys"][resource] for s in samples])
    entry["samples"] = samples
    return entry


def calibrate(kind_names: list[str] | None = None, family_name: str = "xc7", data_file: Path = DATA_FILE,
              refit: bool = False) -> dict:
    """Synthesize the sweeps of ``kind_names`` (default: all), fit them, and write ``data_file``
    (the other kinds and families already there are kept). ``refit``: fit the stored samples
    again (after a change of a kind's terms), no synthesis."""
    from flow.synth import yosys_command
    from flow.terminal import make_console

    console = make_console()
    unknown = [k for k in kind_names or [] if k not in KINDS]
    if unknown:
        raise FlowError(f"calibrate: unknown layer kind {unknown[0]!r} (known: {', '.join(KINDS)})")
    def stored_family() -> tuple[dict, dict]:
        data = json.loads(data_file.read_text()) if data_file.exists() else {}
        if data.get("format") != FORMAT_VERSION:
            data = {"format": FORMAT_VERSION, "families": {}}
        return data, data["families"].setdefault(family_name, {"kinds": {}})

    tool = (f"{Path(yosys_command()[0]).name}: read_slang -j 1 --keep-hierarchy; "
            f"synth_xilinx -family {family_name} -noiopad -noclkbuf (flow.synth.run_yosys)")
    for name in kind_names or list(KINDS):
        kind = KINDS[name]
        rng = random.Random(SEED)
        sweep = kind.sweep()
        samples, seconds = [], 0.0
        if refit:
            stored = stored_family()[1]["kinds"].get(name, {})
            if [s["params"] for s in stored.get("samples", [])] != sweep:
                raise FlowError(f"{data_file}: the stored samples of {name} are not its sweep; calibrate it without --refit")
            samples, seconds = stored["samples"], stored["yosys_seconds"]
        for index, run in enumerate([] if refit else runs_of(kind, sweep)):
            counts, run_seconds = synthesize_samples(kind, run, family_name, rng)
            seconds += run_seconds
            samples += [{"params": params, "yosys": c} for params, c in zip(run, counts)]
            console.print(f"  calibrate {name}: Yosys run {index + 1} ({len(run)} samples) {run_seconds:.0f} s")
        entry = fit_kind(kind, samples)
        entry["yosys_seconds"] = round(seconds, 1)
        data, family = stored_family()  # as it is now: only this kind's entry changes
        family["tool"] = tool
        family["kinds"][name] = entry
        lut = entry["errors"]["LUT"]
        console.print(f"[bold]{name}[/]: {len(samples)} samples, LUT mean {lut['mean_relative_error']:.1%} "
                      f"max {lut['max_relative_error']:.1%}, BRAM_18K max |error| {entry['errors']['BRAM_18K']['max_absolute_error']:g}")
        write_json(data_file, data)  # after each kind: a long calibration keeps what it has
    return stored_family()[0]


# --------------------------------------------------------------------------- prediction


def predict_with(kind: Kind, entry: dict, params: dict) -> dict[str, float]:
    terms = kind.terms(params)
    result = {r: float(sum(entry["coefficients"][r][t] * v for t, v in terms.items())) for r in FITTED}
    result["BRAM_18K"] = float(kind.bram18(params))
    return result


_loaded: dict[Path, dict] = {}


def calibration(family_name: str, data_file: Path = DATA_FILE) -> dict:
    """The fitted kinds of a Yosys family; one error line when there are none."""
    if data_file not in _loaded:
        if not data_file.exists():
            raise FlowError(f"{data_file}: no calibration; run `python -m flow calibrate` (make calibrate)")
        _loaded[data_file] = json.loads(data_file.read_text())
    data = _loaded[data_file]
    if data.get("format") != FORMAT_VERSION:
        raise FlowError(f"{data_file}: format {data.get('format')}, this flow reads {FORMAT_VERSION}; run `python -m flow calibrate`")
    if family_name not in data["families"]:
        raise FlowError(f"{data_file}: no calibration for Yosys family {family_name}; "
                        f"run `python -m flow calibrate --family {family_name}`")
    kinds = data["families"][family_name]["kinds"]
    for name, entry in kinds.items():
        if name in KINDS and entry["terms"] != list(KINDS[name].terms(entry["samples"][0]["params"])):
            raise FlowError(f"{data_file}: kind {name} was fitted with other terms than flow/cost_model.py has; "
                            f"run `python -m flow calibrate --kind {name}`")
    return kinds


def predict(kind_name: str, params: dict, family_name: str, data_file: Path = DATA_FILE) -> dict[str, float] | None:
    """LUT, FF, BRAM_18K, DSP of one module instance; None for a kind without calibration."""
    kinds = calibration(family_name, data_file)
    if kind_name not in kinds or kind_name not in KINDS:
        return None
    return predict_with(KINDS[kind_name], kinds[kind_name], params)


# --------------------------------------------------------------------------- FINN nodes -> RTL modules


def unit_of(model, node, inst) -> tuple[str, dict] | None:
    """(kind, parameters) of the RTL unit flow.rtl generates for a FINN node (the same parameters
    as ``flow.rtl.layer_unit`` gives it); None when no calibrated kind covers it."""
    from qonnx.core.datatype import DataType

    from flow.artifacts import mvau_datatypes
    from flow.rtl import signed_bits as memory_bits
    from flow.rtl import swg_buffer, weight_ram_style

    op = node.op_type
    idt = inst.get_input_datatype(0)
    if not idt.is_integer():
        return None
    odt = inst.get_output_datatype()
    if op.startswith("MVAU"):
        xnor, stored_wdt, acc, _ = mvau_datatypes(model, node, inst)
        mw, mh, simd, pe = (inst.get_nodeattr(a) for a in ("MW", "MH", "SIMD", "PE"))
        if xnor and acc.min() <= 0 and acc.max() >= mw:
            acc_bits, acc_signed = ceil_log2(mw + 1), 0
        else:
            acc_bits, acc_signed = acc.bitwidth(), int(acc.signed())
        bipolar_weights = xnor or inst.get_input_datatype(1) == DataType["BIPOLAR"]
        params = dict(
            MW=mw, MH=mh, SIMD=simd, PE=pe, XNOR=int(xnor), IBITS=idt.bitwidth(), ISIGNED=int(idt.signed()),
            IBIPOLAR=int(idt == DataType["BIPOLAR"] and not xnor), WBITS=stored_wdt.bitwidth(),
            WSIGNED=int(stored_wdt.signed()), WBIPOLAR=int(bipolar_weights and not xnor),
            RES_TYPE="dsp" if inst.get_nodeattr("resType") == "dsp" and not xnor else "lut",
            ACC_BITS=acc_bits, ACC_SIGNED=acc_signed, STEPS=0, TBITS=2, OBITS=odt.bitwidth(), ACT_VAL=0,
            RAM_STYLE=weight_ram_style({"mem_mode": inst.get_nodeattr("mem_mode"),
                                        "ram_style": inst.get_nodeattr("ram_style"), "WMEM": inst.calc_wmem()}),
        )
        if params["RAM_STYLE"] != "block":
            return None  # not calibrated (the sweeps' note)
        if not inst.get_nodeattr("noActivation"):
            thresholds = model.get_initializer(node.input[2])
            params.update(STEPS=int(thresholds.shape[1]), TBITS=memory_bits(thresholds))
        return ("bnn_mvau_xnor" if xnor else "bnn_mvau_integer"), params
    if op.startswith("Thresholding"):
        if inst.get_nodeattr("numSteps") != 1:
            return None  # not calibrated (thresholding_sweep's note)
        thresholds = model.get_initializer(node.input[1])
        return "bnn_thresholding", dict(
            CHANNELS=inst.get_nodeattr("NumChannels"), PE=inst.get_nodeattr("PE"), IBITS=idt.bitwidth(),
            ISIGNED=int(idt.signed()), STEPS=inst.get_nodeattr("numSteps"), TBITS=memory_bits(thresholds),
            OBITS=odt.bitwidth(), ACT_VAL=inst.get_nodeattr("ActVal"))
    if op.startswith("ConvolutionInputGenerator"):
        kernel, stride = list(inst.get_nodeattr("ConvKernelDim")), list(inst.get_nodeattr("Stride"))
        spec = {"name": node.name, "input_dim": list(inst.get_nodeattr("IFMDim")), "output_dim": list(inst.get_nodeattr("OFMDim")),
                "kernel": kernel[0], "stride": stride[0], "channels": inst.get_nodeattr("IFMChannels"),
                "SIMD": inst.get_nodeattr("SIMD")}
        if len(set(kernel)) != 1 or len(set(stride)) != 1 or set(inst.get_nodeattr("Dilation")) != {1}:
            return None
        try:
            buffer = swg_buffer(spec)
        except FlowError:  # a window the RTL generator does not make (padding)
            return None
        (ih, iw) = spec["input_dim"]
        return "bnn_swg", dict(IH=ih, IW=iw, CHANNELS=spec["channels"], SIMD=spec["SIMD"], EBITS=idt.bitwidth(),
                               K=spec["kernel"], STRIDE=spec["stride"], BUFFER=buffer)
    if op.startswith("Pool"):
        return "bnn_maxpool", dict(CHANNELS=inst.get_nodeattr("Channels"), PE=inst.get_nodeattr("PE"),
                                   WINDOW=int(np.prod(inst.get_nodeattr("KernelSize"))), IBITS=idt.bitwidth(),
                                   ISIGNED=int(idt.signed()))
    if op.startswith("LabelSelect"):
        return "bnn_label_select", dict(LABELS=inst.get_nodeattr("Labels"), PE=inst.get_nodeattr("PE"),
                                        IBITS=idt.bitwidth(), ISIGNED=int(idt.signed()), OBITS=odt.bitwidth())
    return None


def calibrated(kind_name: str, params: dict, family_name: str, data_file: Path = DATA_FILE) -> dict[str, float]:
    """:func:`predict` for a kind the generated top always has (converters, FIFOs)."""
    found = predict(kind_name, params, family_name, data_file)
    if found is None:
        raise FlowError(f"{data_file}: no calibration of {kind_name} for {family_name}; "
                        f"run `python -m flow calibrate --kind {kind_name}`")
    return found


def converter_cost(from_bits: int, to_bits: int, family_name: str) -> dict[str, float]:
    """A width converter of flow.rtl's top (none when the widths are equal)."""
    if from_bits == to_bits:
        return {r: 0.0 for r in RESOURCES}
    return calibrated("bnn_dwc", dict(IW=from_bits, OW=to_bits), family_name)


def stream_costs(dwc_from: int, dwc_to: int, fifo_bits: int, fifo_words: int, family_name: str) -> dict[str, float]:
    """A layer's input width converter (``dwc_from`` -> ``dwc_to`` bits) and input FIFO
    (``fifo_bits`` wide, one image's words deep), as flow.rtl generates them."""
    from flow.rtl import fifo_depth

    fifo = calibrated("bnn_fifo", dict(WIDTH=fifo_bits, DEPTH=fifo_depth(fifo_words, fifo_bits), ID=0), family_name)
    dwc = converter_cost(dwc_from, dwc_to, family_name)
    return {r: fifo[r] + dwc[r] for r in RESOURCES}


def input_converter(inst, upstream_bits: int | None, dma_width_bits: int) -> tuple[int, int]:
    """(from, to) bits of a layer's input width converter in flow.rtl's top: from the previous
    layer's words, or for the first layer (``upstream_bits`` None) from the DMA's words to bytes."""
    from flow.hls import axis_bytes, pad8

    in_bits = inst.get_instream_width(0)
    if upstream_bits is not None:
        return upstream_bits, in_bits
    in_bytes = pad8(in_bits) // 8 * int(np.prod(inst.get_folded_input_shape()[1:-1]))
    return 8 * axis_bytes(in_bytes, dma_width_bits // 8), pad8(in_bits)


def layer_cost(model, node, inst, part: str, upstream_bits: int | None, dma_width_bits: int) -> dict:
    """A layer as ``--cost-model synth`` counts it: its unit (calibrated, or FINN's estimate for a
    kind without calibration) plus its input converter and FIFO. ``upstream_bits``: the previous
    layer's output width (None for the first layer, fed by the DMA)."""
    from flow.synth import family

    family_name = family(part)
    unit = unit_of(model, node, inst)
    predicted = predict(*unit, family_name) if unit is not None else None
    if predicted is None:
        finn = inst.node_res_estimation(part)
        predicted, source = {r: float(finn.get(r, 0)) for r in ("LUT", "BRAM_18K", "DSP")} | {"FF": 0.0}, "finn"
    else:
        source = "synth"
    in_words = int(np.prod(inst.get_folded_input_shape()[1:-1]))
    streams = stream_costs(*input_converter(inst, upstream_bits, dma_width_bits), inst.get_instream_width(0),
                           in_words, family_name)
    return {"unit": predicted, "streams": streams, "source": source,
            "total": {r: predicted[r] + streams[r] for r in RESOURCES}}


def design_costs(model, part: str, dma_width_bits: int) -> dict:
    """Every layer's :func:`layer_cost` in dataflow order, the output converter, and the totals."""
    from qonnx.custom_op.registry import getCustomOp

    from flow.hls import axis_bytes, pad8
    from flow.synth import family

    layers = {}
    upstream = None
    for node in model.graph.node:
        inst = getCustomOp(node)
        layers[node.name] = layer_cost(model, node, inst, part, upstream, dma_width_bits)
        upstream = inst.get_outstream_width(0)
        out_words = int(np.prod(inst.get_folded_output_shape()[1:-1]))
    # the last layer's byte-padded words re-cut into DMA words
    out_bytes = pad8(upstream) // 8 * out_words
    out_axis = 8 * axis_bytes(out_bytes, dma_width_bits // 8)
    output = converter_cost(pad8(upstream), out_axis, family(part))
    total = {r: sum(c["total"][r] for c in layers.values()) + output[r] for r in RESOURCES}
    return {"layers": layers, "output_dwc": output, "total": total,
            "finn_estimated": [name for name, c in layers.items() if c["source"] == "finn"]}


def run_design_costs(run_dir: Path, part: str, dma_width_bits: int) -> dict | None:
    """:func:`design_costs` of a built run's folded model (``dataflow_model.onnx``); None where
    the part's family has no calibration (the synthesis report then has no calibrated column)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from flow.synth import family

    path = Path(run_dir) / "dataflow_model.onnx"
    data = json.loads(DATA_FILE.read_text()) if DATA_FILE.exists() else {}
    if not path.exists() or family(part) not in data.get("families", {}):
        return None
    return design_costs(ModelWrapper(str(path)), part, dma_width_bits)


# --------------------------------------------------------------------------- the folding curve under both models


def plot_folding_curves(runs: list[tuple[str, Path]], path: Path, board_lut: int, max_utilization: float) -> None:
    """Estimated FPS against predicted LUT of every folding the searches tried (one curve per
    run, i.e. per cost model), one panel per title; a run with ``report/synth_resources.json``
    adds its chosen design's Yosys LUT count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = list(dict.fromkeys(title for title, _ in runs))
    fig, axes = plt.subplots(1, len(titles), figsize=(5.5 * len(titles), 4.2), squeeze=False)
    styles = {"finn": ("tab:blue", "o-"), "synth": ("tab:orange", "s-")}
    for ax, title in zip(axes[0], titles):
        for run_title, run_dir in runs:
            if run_title != title:
                continue
            build = json.loads((run_dir / "build.json").read_text())
            model = build.get("cost_model", "finn")
            color, style = styles[model]
            search = sorted(json.loads((run_dir / "report" / "folding_search.json").read_text()), key=lambda p: p["LUT"])
            ax.plot([p["LUT"] for p in search], [p["estimated_fps"] for p in search], style, color=color,
                    markersize=4, label=f"search, cost model {model}")
            for point in search:
                if point.get("chosen"):
                    ax.plot(point["LUT"], point["estimated_fps"], "*", color=color, markersize=15,
                            label=f"chosen ({model}): {point['estimated_fps']:,.0f} FPS")
            synth_report = run_dir / "report" / "synth_resources.json"
            if synth_report.exists():
                lut = json.loads(synth_report.read_text())["total"]["LUT"]
                ax.plot(lut, build["estimated_throughput_fps"], "X", color=color, markeredgecolor="black",
                        markersize=11, label=f"chosen ({model}), Yosys: {lut:,} LUT")
        ax.axvline(board_lut * max_utilization, color="tab:red", linestyle="--", label=f"budget ({max_utilization:.0%})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("LUT (predicted by the cost model; X: Yosys)")
        ax.set_ylabel("estimated throughput (FPS)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
