"""The cycle model of the generated accelerator: the one throughput estimate of the flow.

The build's report and table, the folding search, the emulator's ``estimated_fps`` and the
deployment manifest all call :func:`cycle_model`. The top (``flow.hls``) is a dataflow
pipeline whose stages each take a whole number of cycles per image: the input AXI stream
(the DMA's words into the top), the data-width converters, the layers (FINN's
``get_exp_cycles``, which our kernels meet), the output AXI stream. In steady state the
pipeline accepts one image per the slowest stage's cycles: the initiation interval. The
input stream alone needs ``bytes per image / stream width`` cycles, so no folding makes
the design faster than that (TFC: 784 B over 64 bits is 98 cycles, 1,020,408 FPS at
100 MHz). Beyond the fabric, the board's AXI DMA moves the bytes between DDR and the
streams at its sustainable bandwidth (``boards/*.toml``): the FPS it implies is reported
next to the stream bound, and the estimate is the lower of the two.
"""

from __future__ import annotations

INPUT_STREAM = "input stream"
OUTPUT_STREAM = "output stream"


def cycle_model(layer_cycles: dict[str, int], streams: list[dict], clock_mhz: float, dma: dict | None = None) -> dict:
    """Per-image cycles of every layer and stream element; the interval, FPS and what bounds them.

    ``streams``: the top's stream plan (``flow.hls.stream_plan``): the ``axis_in`` /
    ``axis_out`` elements (``bits``, ``bytes``, ``cycles``), converters (``cycles``) and
    ``layer`` elements (their cycles come from ``layer_cycles``). ``dma``: the board's
    sustainable DMA bandwidth, ``mm2s_mb_per_s`` (DDR -> input stream) and
    ``s2mm_mb_per_s`` (output stream -> DDR), or None when unknown.
    """
    stream_cycles = {s["name"]: int(s["cycles"]) for s in streams if s["kind"] != "layer"}
    elements = {**layer_cycles, **stream_cycles}
    interval = max(elements.values())
    # on a tie a stream names the bound: no folding can lower it
    bounded_by = max(elements, key=lambda name: (elements[name], name in stream_cycles))
    axis_in = next(s for s in streams if s["kind"] == "axis_in")
    axis_out = next(s for s in streams if s["kind"] == "axis_out")
    clock_hz = clock_mhz * 1e6
    io_cycles = max(axis_in["cycles"], axis_out["cycles"])
    fabric_fps = clock_hz / interval
    result = {
        "layer_cycles": dict(layer_cycles),
        "stream_cycles": stream_cycles,
        "initiation_interval_cycles": interval,
        "bounded_by": bounded_by,
        "latency_cycles": sum(elements.values()),
        "clock_mhz": clock_mhz,
        "compute_bound_fps": clock_hz / max(layer_cycles.values()),
        "io_bound_fps": clock_hz / io_cycles,
        "input_stream": {k: axis_in[k] for k in ("bits", "bytes", "cycles")},
        "stream_plan": list(streams),
        "output_stream": {k: axis_out[k] for k in ("bits", "bytes", "cycles")},
        "dma_bound_fps": None,
        "estimated_fps": fabric_fps,
        "estimated_fps_bounded_by": bounded_by,
        "estimated_latency_ns": sum(elements.values()) * 1e3 / clock_mhz,
    }
    if dma is not None:
        dma_fps = min(dma["mm2s_mb_per_s"] * 1e6 / axis_in["bytes"], dma["s2mm_mb_per_s"] * 1e6 / axis_out["bytes"])
        result["dma_mb_per_s"] = dict(dma)
        result["dma_bound_fps"] = dma_fps
        if dma_fps < fabric_fps:
            result["estimated_fps"] = dma_fps
            result["estimated_fps_bounded_by"] = "DMA bandwidth"
    return result


def board_dma(board) -> dict | None:
    """The board's sustainable DMA bandwidth as :func:`cycle_model` takes it (None when the board file has none)."""
    if board.dma_mm2s_mb_per_s is None or board.dma_s2mm_mb_per_s is None:
        return None
    return {"mm2s_mb_per_s": board.dma_mm2s_mb_per_s, "s2mm_mb_per_s": board.dma_s2mm_mb_per_s}


def model_cycles(model, board) -> dict:
    """:func:`cycle_model` of a folded dataflow model as ``flow.hls`` generates it for ``board``."""
    from qonnx.custom_op.registry import getCustomOp

    from flow.hls import stream_plan

    layer_cycles = {node.name: int(getCustomOp(node).get_exp_cycles()) for node in model.graph.node}
    return cycle_model(layer_cycles, stream_plan(model, board.dma_width_bits), board.clock_mhz, board_dma(board))


def floor_cycles(cycles: dict) -> int:
    """The fewest cycles per image any layer usefully reaches: below the streams' cycles (and the
    DMA's rate) faster layers add no throughput."""
    clock_hz = cycles["clock_mhz"] * 1e6
    floor = max(cycles["input_stream"]["cycles"], cycles["output_stream"]["cycles"])
    if cycles["dma_bound_fps"] is not None:
        floor = max(floor, int(clock_hz // cycles["dma_bound_fps"]))
    return floor


def io_bound_text(cycles: dict) -> str:
    """Why the streams bound the FPS: bytes per image, stream width, clock (and the DMA's rate)."""
    axis_in = cycles["input_stream"]
    text = (
        f"{cycles['io_bound_fps']:,.0f} FPS: each image is {axis_in['bytes']:,} B on the {axis_in['bits']}-bit input "
        f"stream, {axis_in['cycles']:,} cycles at {cycles['clock_mhz']:g} MHz"
    )
    if cycles["dma_bound_fps"] is not None and cycles["dma_bound_fps"] < cycles["io_bound_fps"]:
        dma = cycles["dma_mb_per_s"]
        text += (
            f"; the DMA (MM2S {dma['mm2s_mb_per_s']:g} MB/s, S2MM {dma['s2mm_mb_per_s']:g} MB/s) allows "
            f"{cycles['dma_bound_fps']:,.0f} FPS"
        )
    return text

