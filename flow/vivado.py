"""Vivado: the PYNQ block design around the accelerator -> ``bitfile/<top>.bit`` + ``.hwh``.

Both routes build the same block design: the board's Zynq processing system
(``processing_system7`` on Zynq-7000, ``zynq_ultra_ps_e`` on Zynq UltraScale+),
its fabric clock at the board's ``clock_mhz`` and a ``proc_sys_reset``, one AXI
DMA (MM2S feeds the accelerator's input stream, S2MM takes its output stream),
a SmartConnect from the PS master to the control ports and one from the DMA's
memory ports to the PS slave (DDR). They differ in the accelerator:

- ``rtl`` (the default): the generated RTL (``RUN_DIR/rtl``, flow.rtl; no
  Vitis HLS) as a module reference. Vivado takes only Verilog or VHDL as a
  module reference's top (UG994, "Limitations of the Module Reference
  Feature"), so ``RUN_DIR/vivado/finn_design_pynq.v`` wraps the SystemVerilog
  ``finn_design``, declares its AXI4-Stream interfaces, clock and reset to IP
  integrator (``X_INTERFACE_INFO``), and sets TLAST at the end of each DMA
  transfer (``hls_templates/rtl/bnn_batch_last.sv``). It runs free: no AXI-Lite.
  ``RUN_DIR/vivado/vivado.tcl``, run from ``RUN_DIR/vivado``.
- ``hls``: the HLS top (flow.hls) exported as IP by Vitis HLS, started through
  its AXI-Lite ``s_axi_control``. ``RUN_DIR/hls/vitis_hls.tcl`` then
  ``RUN_DIR/hls/vivado.tcl``, run from ``RUN_DIR/hls``.

``VIVADO_ROUTE`` (environment, ``make VIVADO_ROUTE=``) selects the route: unset,
``rtl`` where the RTL covers the design and else ``hls`` (one line says why);
``rtl`` or ``hls`` explicitly, that route or a one-line error. With
``HLS_BACKEND=finn`` FINN's own vendor steps make the bitfile instead. The
route's tcl is always written (``hls/`` by every build); Vivado runs only where
it is on PATH (else one line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from flow.boards import Board
from flow.errors import FlowError
from flow.files import staged_dir
from flow.terminal import make_console
from rich.markup import escape

console = make_console()

ROUTES = ("rtl", "hls")
VIVADO_DIR = "vivado"  # RUN_DIR/vivado: the RTL route's tcl and wrapper, and its Vivado project
TCL = "vivado.tcl"
SPEC = "vivado.json"
WRAPPER = "finn_design_pynq"  # the module reference: a Verilog wrapper of flow.rtl's SystemVerilog top
BATCH_LAST = "bnn_batch_last.sv"
# Images' worth of MM2S transfers the TLAST tracker holds (PYNQ's driver has one in flight).
TRANSFERS_IN_FLIGHT = 4
# The AXI DMA's "Width of Buffer Length Register" at its maximum: one transfer up to 2^26 - 1 bytes.
DMA_LENGTH_BITS = 26
IMPLEMENTATION_JOBS = 4


@dataclass(frozen=True)
class ProcessingSystem:
    """The PS block of a PYNQ platform: its IP, configuration and the pins the design uses."""

    ip: str
    cell: str
    automation: str  # apply_bd_automation's -config: DDR and fixed IO external, no board preset
    frequency_property: str  # the fabric clock's frequency (MHz)
    enable: tuple[str, ...]  # properties set to 1: the control master and the DMA's slave port
    master: str  # general-purpose master -> control ports
    slave: str  # high-performance slave <- the DMA's memory ports
    clock: str
    reset: str  # active low
    port_clocks: tuple[str, ...]  # the master's and slave's clock inputs


PROCESSING_SYSTEMS = {
    "zynq": ProcessingSystem(
        ip="xilinx.com:ip:processing_system7", cell="ps7",
        automation='make_external "FIXED_IO, DDR" apply_board_preset "0" Master "Disable" Slave "Disable"',
        frequency_property="PCW_FPGA0_PERIPHERAL_FREQMHZ", enable=("PCW_USE_M_AXI_GP0", "PCW_USE_S_AXI_HP0"),
        master="M_AXI_GP0", slave="S_AXI_HP0", clock="FCLK_CLK0", reset="FCLK_RESET0_N",
        port_clocks=("M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK"),
    ),
    "zynqmp": ProcessingSystem(
        ip="xilinx.com:ip:zynq_ultra_ps_e", cell="ps_e", automation='apply_board_preset "0"',
        frequency_property="PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
        # M_AXI_GP0 is M_AXI_HPM0_FPD, S_AXI_GP2 is S_AXI_HP0_FPD
        enable=("PSU__USE__M_AXI_GP0", "PSU__USE__S_AXI_GP2"),
        master="M_AXI_HPM0_FPD", slave="S_AXI_HP0_FPD", clock="pl_clk0", reset="pl_resetn0",
        port_clocks=("maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"),
    ),
}


@dataclass(frozen=True)
class Accelerator:
    """The accelerator's cell in the block design and the pins the shell connects."""

    cell: str  # instance name
    create: str  # tcl that creates it as cell ``cell``
    in_stream: str  # AXI4-Stream slave, fed by the DMA's MM2S
    out_stream: str  # AXI4-Stream master, drained by the DMA's S2MM
    in_bits: int
    out_bits: int
    clock: str = "ap_clk"
    reset: str = "ap_rst_n"
    control: str | None = None  # AXI-Lite slave, if it has one


def processing_system(board: Board) -> ProcessingSystem:
    if board.pynq_platform not in PROCESSING_SYSTEMS:
        raise FlowError(f"board {board.name}: pynq_platform {board.pynq_platform} has no processing system here "
                        f"(known: {', '.join(PROCESSING_SYSTEMS)})")
    return PROCESSING_SYSTEMS[board.pynq_platform]


def block_design_tcl(board: Board, top: str, accel: Accelerator, header: str, sources: str) -> str:
    """The Vivado script of one route: project, block design, implementation, ``../bitfile/<top>.bit`` + ``.hwh``."""
    ps = processing_system(board)
    enable = " ".join(f"CONFIG.{name} {{1}}" for name in ps.enable)
    controls = ["axi_dma/S_AXI_LITE"] + ([f"{accel.cell}/{accel.control}"] if accel.control else [])
    control_links = "\n".join(
        f"connect_bd_intf_net [get_bd_intf_pins axi_control/M{i:02d}_AXI] [get_bd_intf_pins {pin}]"
        for i, pin in enumerate(controls)
    )
    clocked = [f"{ps.cell}/{pin}" for pin in ps.port_clocks] + [
        "axi_dma/s_axi_lite_aclk", "axi_dma/m_axi_mm2s_aclk", "axi_dma/m_axi_s2mm_aclk",
        "axi_control/aclk", "axi_memory/aclk", f"{accel.cell}/{accel.clock}",
    ]
    return f"""{header}
set top {top}
create_project -force ${{top}}_bd vivado_prj -part {board.part}
{sources}
create_bd_design ${{top}}_bd

# {board.name} ({board.part}): {ps.ip.split(':')[2]}, fabric clock {ps.clock} = {board.clock_mhz:g} MHz
set ps [create_bd_cell -type ip -vlnv {ps.ip} {ps.cell}]
apply_bd_automation -rule xilinx.com:bd_rule:{ps.ip.split(':')[2]} -config {{{ps.automation}}} $ps
set_property -dict [list CONFIG.{ps.frequency_property} {{{board.clock_mhz:g}}} {enable}] $ps
create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset
connect_bd_net [get_bd_pins {ps.cell}/{ps.clock}] [get_bd_pins proc_sys_reset/slowest_sync_clk]
connect_bd_net [get_bd_pins {ps.cell}/{ps.reset}] [get_bd_pins proc_sys_reset/ext_reset_in]

# AXI DMA: MM2S feeds the accelerator's input stream, S2MM takes its output stream (ended by TLAST)
set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma axi_dma]
set_property -dict [list CONFIG.c_include_sg {{0}} CONFIG.c_sg_length_width {{{DMA_LENGTH_BITS}}} \\
    CONFIG.c_m_axi_mm2s_data_width {{{board.dma_width_bits}}} CONFIG.c_m_axis_mm2s_tdata_width {{{accel.in_bits}}} \\
    CONFIG.c_m_axi_s2mm_data_width {{{board.dma_width_bits}}} CONFIG.c_s_axis_s2mm_tdata_width {{{accel.out_bits}}} \\
    CONFIG.c_mm2s_burst_size {{16}} CONFIG.c_s2mm_burst_size {{16}}] $dma

# the accelerator
{accel.create}
connect_bd_intf_net [get_bd_intf_pins axi_dma/M_AXIS_MM2S] [get_bd_intf_pins {accel.cell}/{accel.in_stream}]
connect_bd_intf_net [get_bd_intf_pins {accel.cell}/{accel.out_stream}] [get_bd_intf_pins axi_dma/S_AXIS_S2MM]

# control: the PS master -> SmartConnect -> {', '.join(controls)}
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_control
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{{len(controls)}}}] [get_bd_cells axi_control]
connect_bd_intf_net [get_bd_intf_pins {ps.cell}/{ps.master}] [get_bd_intf_pins axi_control/S00_AXI]
{control_links}
# memory: the DMA's MM2S and S2MM -> SmartConnect -> the PS slave (DDR)
create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_memory
set_property -dict [list CONFIG.NUM_SI {{2}} CONFIG.NUM_MI {{1}}] [get_bd_cells axi_memory]
connect_bd_intf_net [get_bd_intf_pins axi_dma/M_AXI_MM2S] [get_bd_intf_pins axi_memory/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_dma/M_AXI_S2MM] [get_bd_intf_pins axi_memory/S01_AXI]
connect_bd_intf_net [get_bd_intf_pins axi_memory/M00_AXI] [get_bd_intf_pins {ps.cell}/{ps.slave}]

# one clock ({ps.clock}) for everything; resets from proc_sys_reset
foreach pin {{{' '.join(clocked)}}} {{
    connect_bd_net [get_bd_pins {ps.cell}/{ps.clock}] [get_bd_pins $pin]
}}
foreach pin {{axi_dma/axi_resetn {accel.cell}/{accel.reset}}} {{
    connect_bd_net [get_bd_pins proc_sys_reset/peripheral_aresetn] [get_bd_pins $pin]
}}
foreach pin {{axi_control/aresetn axi_memory/aresetn}} {{
    connect_bd_net [get_bd_pins proc_sys_reset/interconnect_aresetn] [get_bd_pins $pin]
}}
assign_bd_address
validate_bd_design
save_bd_design

add_files -norecurse [make_wrapper -files [get_files ${{top}}_bd.bd] -top]
set_property top ${{top}}_bd_wrapper [current_fileset]
launch_runs impl_1 -to_step write_bitstream -jobs {IMPLEMENTATION_JOBS}
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] != "100%"}} {{ error "implementation of $top failed" }}

# the PYNQ overlay: bitfile + hardware handoff, named after the top
file mkdir ../bitfile
file copy -force [glob vivado_prj/${{top}}_bd.runs/impl_1/*.bit] ../bitfile/$top.bit
# (the handoff file is under <project>.gen since Vivado 2020.2, under <project>.srcs before)
file copy -force [lindex [glob vivado_prj/*/sources_1/bd/${{top}}_bd/hw_handoff/*.hwh] 0] ../bitfile/$top.hwh
exit
"""


# --------------------------------------------------------------------------- HLS route


def hls_route_tcl(top: str, in_bits: int, out_bits: int, board: Board) -> str:
    """``RUN_DIR/hls/vivado.tcl``: the block design around the Vitis HLS IP of flow.hls' top."""
    header = (f"# Vivado, HLS route: block design for {board.name} ({board.part}): Zynq PS, AXI DMA, {top} "
              "(Vitis HLS IP). Generated by flow.vivado.\n"
              "# Run from RUN_DIR/hls after vitis_hls.tcl:  vivado -mode batch -source vivado.tcl")
    sources = (f"set_property ip_repo_paths [file normalize {top}_prj/solution/impl/ip] [current_project]\n"
               "update_ip_catalog")
    accel = Accelerator(
        cell=top, create=f"create_bd_cell -type ip -vlnv bnn-flow:hls:{top}:1.0 {top}",
        in_stream="in_r", out_stream="out_r", in_bits=in_bits, out_bits=out_bits, control="s_axi_control",
    )
    return block_design_tcl(board, top, accel, header, sources)


# --------------------------------------------------------------------------- RTL route


def rtl_sources(rtl_dir: Path, spec: dict) -> list[str]:
    """The files of RUN_DIR/rtl the top needs, in compile order: components, the top, the memories."""
    from flow.rtl import MODULES

    memories = sorted(p.name for p in rtl_dir.glob("*.mem"))
    named = {value.strip('"') for layer in spec["layers"] for value in map(str, layer["params"].values())
             if value.endswith('.mem"')}
    missing = sorted(named - set(memories))
    if missing:
        raise FlowError(f"{rtl_dir}: {', '.join(missing)} missing (named by rtl.json); run python -m flow rtl")
    return [*MODULES, f"{spec['top']}.sv", *memories]


def expected_top_ports(spec: dict) -> dict[str, tuple[str, int]]:
    """The ports the wrapper connects: flow.rtl's top with FINN's stitched-IP names."""
    return {
        "ap_clk": ("input", 1), "ap_rst_n": ("input", 1),
        "s_axis_0_tvalid": ("input", 1), "s_axis_0_tready": ("output", 1), "s_axis_0_tdata": ("input", spec["in_axis_bits"]),
        "m_axis_0_tvalid": ("output", 1), "m_axis_0_tready": ("input", 1), "m_axis_0_tdata": ("output", spec["out_axis_bits"]),
        "m_axis_0_tlast": ("output", 1),
    }


def check_top_ports(source: Path, spec: dict) -> None:
    """The top's port list must be the one the wrapper connects (a changed generator, a hand-edited top)."""
    ports = top_ports(source, spec["top"])
    expected = expected_top_ports(spec)
    if ports != expected:
        name = next(n for n in [*expected, *ports] if ports.get(n) != expected.get(n))
        raise FlowError(f"{source}: port {name} is {ports.get(name, 'missing')}, the Vivado wrapper connects "
                        f"{expected.get(name, 'no such port')}")


def wrapper_source(spec: dict, board: Board) -> str:
    """``finn_design_pynq.v``: flow.rtl's top in Verilog ports, with IP integrator's interface attributes."""
    top, in_bits, out_bits = spec["top"], spec["in_axis_bits"], spec["out_axis_bits"]

    def axis(name: str, signal: str) -> str:
        return f'    (* X_INTERFACE_INFO = "xilinx.com:interface:axis:1.0 {name} {signal.upper()}" *)\n'

    return f"""// {WRAPPER}: {top} (RUN_DIR/rtl, flow.rtl) for the PYNQ block design; generated by flow.vivado.
// Verilog: Vivado takes only Verilog or VHDL as the top of a module reference (UG994).
// The attributes declare to IP integrator: s_axis_0 / m_axis_0 AXI4-Stream, both clocked by
// ap_clk, ap_rst_n its active-low reset. {top}'s m_axis_0_tlast ends every image; the AXI DMA
// ends an S2MM transfer at TLAST, so m_axis_0_tlast here ends the image that ended the MM2S
// transfer (bnn_batch_last): one transfer of n images in, one of n images out.
// s_axis_0: {in_bits}-bit words, {spec['in_axis_words']} per image; m_axis_0: {out_bits}-bit words, {spec['out_axis_words']} per image.
module {WRAPPER} (
    (* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 ap_clk CLK" *)
    (* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axis_0:m_axis_0, ASSOCIATED_RESET ap_rst_n, FREQ_HZ {round(board.clock_mhz * 1e6)}" *)
    input wire ap_clk,
    (* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 ap_rst_n RST" *)
    (* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)
    input wire ap_rst_n,
{axis("s_axis_0", "tdata")}    input wire [{in_bits - 1}:0] s_axis_0_tdata,
{axis("s_axis_0", "tvalid")}    input wire s_axis_0_tvalid,
{axis("s_axis_0", "tready")}    output wire s_axis_0_tready,
{axis("s_axis_0", "tlast")}    input wire s_axis_0_tlast,
{axis("m_axis_0", "tdata")}    output wire [{out_bits - 1}:0] m_axis_0_tdata,
{axis("m_axis_0", "tkeep")}    output wire [{out_bits // 8 - 1}:0] m_axis_0_tkeep,
{axis("m_axis_0", "tvalid")}    output wire m_axis_0_tvalid,
{axis("m_axis_0", "tready")}    input wire m_axis_0_tready,
{axis("m_axis_0", "tlast")}    output wire m_axis_0_tlast
);
    wire image_last;
    assign m_axis_0_tkeep = {{{out_bits // 8}{{1'b1}}}};
    {top} accelerator (
        .ap_clk(ap_clk), .ap_rst_n(ap_rst_n),
        .s_axis_0_tvalid(s_axis_0_tvalid), .s_axis_0_tready(s_axis_0_tready), .s_axis_0_tdata(s_axis_0_tdata),
        .m_axis_0_tvalid(m_axis_0_tvalid), .m_axis_0_tready(m_axis_0_tready), .m_axis_0_tdata(m_axis_0_tdata),
        .m_axis_0_tlast(image_last)
    );
    bnn_batch_last #(.IN_WORDS({spec['in_axis_words']}), .DEPTH({TRANSFERS_IN_FLIGHT})) batch_last (
        .clk(ap_clk), .rst_n(ap_rst_n),
        .in_tvalid(s_axis_0_tvalid), .in_tready(s_axis_0_tready), .in_tlast(s_axis_0_tlast),
        .out_tvalid(m_axis_0_tvalid), .out_tready(m_axis_0_tready), .image_last(image_last),
        .out_tlast(m_axis_0_tlast)
    );
endmodule
"""


def rtl_route_tcl(top: str, rtl_files: list[str], board: Board, spec: dict) -> str:
    """``RUN_DIR/vivado/vivado.tcl``: the block design around the generated RTL as a module reference."""
    header = (f"# Vivado, RTL route: block design for {board.name} ({board.part}): Zynq PS, AXI DMA, {spec['top']} "
              "(RUN_DIR/rtl, no Vitis HLS). Generated by flow.vivado.\n"
              "# Run from RUN_DIR/vivado:  vivado -mode batch -source vivado.tcl")
    listed = " \\\n    ".join(f"../rtl/{name}" for name in rtl_files)
    sources = (
        "# the generated RTL (SystemVerilog components and top, $readmemh memories) and its Verilog wrapper\n"
        f"add_files -norecurse [list \\\n    {listed} \\\n    {BATCH_LAST} \\\n    {WRAPPER}.v]\n"
        "update_compile_order -fileset sources_1"
    )
    ps = processing_system(board)
    create = (
        f"create_bd_cell -type module -reference {WRAPPER} {spec['top']}\n"
        "# the clock pin's frequency as the PS makes it (it may round the board's clock_mhz)\n"
        f"set_property CONFIG.FREQ_HZ [get_property CONFIG.FREQ_HZ [get_bd_pins {ps.cell}/{ps.clock}]] "
        f"[get_bd_pins {spec['top']}/ap_clk]"
    )
    accel = Accelerator(cell=spec["top"], create=create, in_stream="s_axis_0", out_stream="m_axis_0",
                        in_bits=spec["in_axis_bits"], out_bits=spec["out_axis_bits"])
    return block_design_tcl(board, top, accel, header, sources)


def generate(run_dir: Path, board: Board, top: str) -> Path:
    """RUN_DIR/rtl (made when missing or stale) -> RUN_DIR/vivado/: vivado.tcl, the wrapper, vivado.json."""
    from flow.rtl import RTL_TEMPLATES, ensure_rtl

    run_dir = Path(run_dir)
    spec = ensure_rtl(run_dir)
    if (spec["part"], float(spec["clock_mhz"])) != (board.part, float(board.clock_mhz)):
        raise FlowError(f"{run_dir / 'rtl' / 'rtl.json'}: built for {spec['part']} at {spec['clock_mhz']} MHz, "
                        f"the board is {board.part} at {board.clock_mhz:g} MHz; run make build")
    rtl_files = rtl_sources(run_dir / "rtl", spec)
    check_top_ports(run_dir / "rtl" / f"{spec['top']}.sv", spec)
    out_dir = run_dir / VIVADO_DIR
    with staged_dir(out_dir) as staging:
        shutil.copy(RTL_TEMPLATES / BATCH_LAST, staging / BATCH_LAST)
        (staging / f"{WRAPPER}.v").write_text(wrapper_source(spec, board))
        (staging / TCL).write_text(rtl_route_tcl(top, rtl_files, board, spec))
        (staging / SPEC).write_text(json.dumps({
            "route": "rtl", "top": top, "module_reference": WRAPPER, "board": board.name, "part": board.part,
            "clock_mhz": board.clock_mhz, "rtl_files": rtl_files, "hw_manifest_sha256": spec["hw_manifest_sha256"],
            "bitfile": f"bitfile/{top}.bit",
        }, indent=2))
    return out_dir


# --------------------------------------------------------------------------- route and tools


def vivado_route() -> tuple[str, bool]:
    """(route, chosen explicitly) from VIVADO_ROUTE: unset or empty is ``rtl``, not explicit."""
    route = os.environ.get("VIVADO_ROUTE", "")
    if route and route not in ROUTES:
        raise FlowError(f"VIVADO_ROUTE={route} is unknown: use rtl (the generated RTL, no Vitis HLS) "
                        "or hls (our HLS top through Vitis HLS)")
    return route or "rtl", bool(route)


def run_vivado(script_dir: Path) -> None:
    """vivado on ``script_dir/vivado.tcl`` when it is on PATH; else one line saying so."""
    script = Path(script_dir) / TCL
    if shutil.which("vivado") is None:
        console.print(f"[yellow]skipped[/] vivado {escape(str(script))}: vivado is not on PATH", soft_wrap=True)
        return
    result = subprocess.run(["vivado", "-mode", "batch", "-source", TCL], cwd=script_dir)
    if result.returncode != 0:
        raise FlowError(f"vivado failed on {script} (exit {result.returncode}); see {script_dir}/vivado.log")


def build_bitfile(run_dir: Path, board: Board) -> str:
    """The build's Vivado part (flow.build's step_vendor_synthesis, after hw/): RUN_DIR/vivado
    unless VIVADO_ROUTE=hls, then the route's vendor tools where they are on PATH. Returns the route."""
    from flow.hls import run_vendor_tools, top_name
    from flow.rtl import UnsupportedLayer

    run_dir = Path(run_dir)
    route, explicit = vivado_route()
    if route == "rtl":
        try:
            generate(run_dir, board, top_name(run_dir))
        except UnsupportedLayer as exc:  # a layer the RTL components do not implement (CNV's, today)
            if explicit:
                raise FlowError(f"VIVADO_ROUTE=rtl: {exc}") from None
            console.print(f"[yellow]vivado route hls[/]: the RTL route does not cover this design: {escape(str(exc))}",
                          soft_wrap=True)
            route = "hls"
    if route == "rtl":
        run_vivado(run_dir / VIVADO_DIR)
    else:
        run_vendor_tools(run_dir / "hls")
    return route


def vivado(run_dir: Path) -> str:
    """The Vivado part of the build again on a complete build (VIVADO_ROUTE as there); returns the route."""
    from flow.rundir import require_complete_build, run_board

    require_complete_build(run_dir)
    return build_bitfile(run_dir, run_board(run_dir))


def top_ports(path: Path, module: str) -> dict[str, tuple[str, int]]:
    """The ports of ``module`` in a (System)Verilog file: name -> (direction, width)."""
    match = re.search(rf"\bmodule\s+{re.escape(module)}\s*(?:#\s*\(.*?\)\s*)?\((.*?)\);", Path(path).read_text(), re.S)
    if not match:
        raise FlowError(f"{path}: module {module} not found")
    ports: dict[str, tuple[str, int]] = {}
    for declaration in re.sub(r"\(\*.*?\*\)", "", match.group(1)).split(","):
        declaration = declaration.strip()
        found = re.match(r"(input|output)\s+(?:wire|logic)?\s*(?:\[(\d+):0\])?\s*(\w+)$", declaration)
        if found:
            direction, msb, name = found.groups()
            ports[name] = (direction, int(msb) + 1 if msb else 1)
        elif ports and re.fullmatch(r"\w+", declaration):  # `input logic a, b`: b as a
            ports[declaration] = ports[list(ports)[-1]]
    return ports
