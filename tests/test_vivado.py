"""Vivado's block design (flow.vivado): the RTL route's tcl and wrapper against the generated RTL,
the HLS route when selected, the route's fallback; nothing here runs Vivado."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flow.artifacts import write_hardware_artifacts
from flow.boards import load_board
from flow.errors import FlowError
from flow.hls import top_name
from flow.rundir import run_board
from flow.vivado import build_bitfile, hls_route_tcl
from tests.test_emulate import NetworkBuilder

PORT = re.compile(r"(input|output)\s+(?:wire|logic)\s*(?:\[(\d+):0\])?\s*(\w+)")


def module_ports(path: Path, module: str) -> dict[str, tuple[str, int]]:
    """name -> (direction, width) of one module's ANSI port list, one port per declaration."""
    header = re.search(rf"module {module} \((.*?)\n\);", path.read_text(), re.S).group(1)
    return {name: (direction, int(msb) + 1 if msb else 1) for direction, msb, name in PORT.findall(header)}


def added_files(tcl: str) -> list[str]:
    return re.search(r"add_files -norecurse \[list \\\n(.*?)\]\n", tcl, re.S).group(1).replace("\\", " ").split()


@pytest.fixture
def no_vivado(tmp_path, monkeypatch) -> str:
    """PATH without the vendor tools (and VIVADO_ROUTE unset): the tcl is written, nothing runs. Returns the old PATH."""
    path = os.environ["PATH"]
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("VIVADO_ROUTE", raising=False)
    return path


@pytest.fixture
def tfc_copy(tfc_run, tmp_path) -> Path:
    run = tmp_path / "tfc"
    shutil.copytree(tfc_run, run, symlinks=True, ignore=shutil.ignore_patterns("vivado", "rtl", "deploy*", "intermediate_models"))
    return run


def lint(files: list[Path], top: str) -> subprocess.CompletedProcess:
    from flow.rtlsim import verilator_command

    command, env = verilator_command()
    args = [*command, "--lint-only", "-Wall", "-Wno-DECLFILENAME", "-Wno-UNUSEDPARAM", "-Wno-UNUSEDSIGNAL", "--top-module", top, *map(str, files)]
    return subprocess.run(args, capture_output=True, text=True, env=env)


def test_rtl_route_is_the_default_and_matches_the_generated_rtl(tfc_copy, no_vivado, monkeypatch, capsys):
    run = tfc_copy
    assert build_bitfile(run, run_board(run)) == "rtl"
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"skipped vivado {run / 'vivado' / 'vivado.tcl'}: vivado is not on PATH"]
    board, spec = run_board(run), json.loads((run / "rtl" / "rtl.json").read_text())
    tcl = (run / "vivado" / "vivado.tcl").read_text()

    # every file of rtl/ the top needs (all of them: the components, the top, every memory), then the wrapper
    rtl_files = sorted(p.name for p in (run / "rtl").iterdir() if p.suffix in (".sv", ".mem"))
    assert any(name.endswith(".mem") for name in rtl_files)
    listed = added_files(tcl)
    assert sorted(listed) == sorted([f"../rtl/{name}" for name in rtl_files] + ["bnn_batch_last.sv", "finn_design_pynq.v"])
    assert all((run / "vivado" / name).is_file() for name in listed)

    # the board's part and clock, the run's top, the bitfile PYNQ loads
    top = top_name(run)
    assert f"create_project -force ${{top}}_bd vivado_prj -part {board.part}\n" in tcl and f"\nset top {top}\n" in tcl
    assert f"CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{board.clock_mhz:g}}}" in tcl
    assert "-vlnv xilinx.com:ip:processing_system7 ps7" in tcl and "zynq_ultra_ps_e" not in tcl
    assert "file copy -force [glob vivado_prj/${top}_bd.runs/impl_1/*.bit] ../bitfile/$top.bit" in tcl
    assert "../bitfile/$top.hwh" in tcl and "ip_repo" not in tcl and "-type ip -vlnv bnn-flow" not in tcl

    # the module reference and its interfaces, against the generated top's own port list
    ports = module_ports(run / "rtl" / "finn_design.sv", "finn_design")
    assert set(ports) == {"ap_clk", "ap_rst_n", *(f"s_axis_0_{s}" for s in ("tvalid", "tready", "tdata")),
                          *(f"m_axis_0_{s}" for s in ("tvalid", "tready", "tdata", "tlast"))}
    in_bits, out_bits = ports["s_axis_0_tdata"][1], ports["m_axis_0_tdata"][1]
    assert (in_bits, out_bits) == (spec["in_axis_bits"], spec["out_axis_bits"])
    assert "create_bd_cell -type module -reference finn_design_pynq finn_design\n" in tcl
    assert "[get_bd_intf_pins axi_dma/M_AXIS_MM2S] [get_bd_intf_pins finn_design/s_axis_0]" in tcl
    assert "[get_bd_intf_pins finn_design/m_axis_0] [get_bd_intf_pins axi_dma/S_AXIS_S2MM]" in tcl
    assert f"CONFIG.c_m_axis_mm2s_tdata_width {{{in_bits}}}" in tcl and f"CONFIG.c_s_axis_s2mm_tdata_width {{{out_bits}}}" in tcl
    assert f"CONFIG.c_m_axi_mm2s_data_width {{{board.dma_width_bits}}}" in tcl
    assert re.search(r"foreach pin \{[^}]*finn_design/ap_clk\} \{\n    connect_bd_net \[get_bd_pins ps7/FCLK_CLK0\]", tcl)
    assert re.search(r"foreach pin \{[^}]*finn_design/ap_rst_n\} \{\n    connect_bd_net \[get_bd_pins proc_sys_reset/peripheral_aresetn\]", tcl)

    wrapper = run / "vivado" / "finn_design_pynq.v"
    wrapped = module_ports(wrapper, "finn_design_pynq")
    assert {n: p for n, p in wrapped.items() if n != "m_axis_0_tlast"} == {
        **{n: p for n, p in ports.items() if n != "m_axis_0_tlast"},
        "s_axis_0_tlast": ("input", 1), "m_axis_0_tkeep": ("output", out_bits // 8)}
    text = wrapper.read_text()
    for name in wrapped:
        interface = re.match(r"([sm]_axis_0)_(\w+)", name)
        if interface:  # the attribute right above the port declares it to IP integrator
            assert re.search(rf'"xilinx.com:interface:axis:1.0 {interface[1]} {interface[2].upper()}" \*\)\n'
                             rf"    {wrapped[name][0]} wire (\[\d+:0\] )?{name}\b", text), name
    assert "ASSOCIATED_BUSIF s_axis_0:m_axis_0, ASSOCIATED_RESET ap_rst_n" in text
    assert '"xilinx.com:signal:reset:1.0 ap_rst_n RST"' in text and "POLARITY ACTIVE_LOW" in text
    # Verilator: every port of finn_design connected, at its width; the SystemVerilog parses
    monkeypatch.setenv("PATH", no_vivado)
    result = lint([*(run / "rtl" / n for n in rtl_files if n.endswith(".sv")), run / "vivado" / "bnn_batch_last.sv", wrapper],
                  "finn_design_pynq")
    assert result.returncode == 0, result.stderr


def test_a_changed_top_is_refused_in_one_line(tfc_copy, no_vivado):
    run = tfc_copy
    build_bitfile(run, run_board(run))
    top = run / "rtl" / "finn_design.sv"
    width = json.loads((run / "rtl" / "rtl.json").read_text())["in_axis_bits"]
    top.write_text(top.read_text().replace(f"input logic [{width - 1}:0] s_axis_0_tdata", "input logic [31:0] s_axis_0_tdata"))
    with pytest.raises(FlowError, match=rf"finn_design.sv: port s_axis_0_tdata is \('input', 32\), the Vivado "
                                        rf"wrapper connects \('input', {width}\)$"):
        build_bitfile(run, run_board(run))


def test_hls_route_when_selected(tfc_copy, no_vivado, monkeypatch, capsys):
    run = tfc_copy
    monkeypatch.setenv("VIVADO_ROUTE", "hls")
    assert build_bitfile(run, run_board(run)) == "hls"
    printed = capsys.readouterr().out
    assert "skipped vitis_hls" in printed and f"skipped vivado {run / 'hls' / 'vivado.tcl'}" in printed
    assert not (run / "vivado").exists()
    tcl, top = (run / "hls" / "vivado.tcl").read_text(), top_name(run)
    hls = json.loads((run / "hls" / "hls.json").read_text())
    assert f"create_bd_cell -type ip -vlnv bnn-flow:hls:{top}:1.0 {top}\n" in tcl and f"\nset top {top}\n" in tcl
    assert f"[get_bd_intf_pins axi_dma/M_AXIS_MM2S] [get_bd_intf_pins {top}/in_r]" in tcl
    assert f"CONFIG.c_m_axis_mm2s_tdata_width {{{hls['in_axis_bits']}}}" in tcl
    assert f"[get_bd_intf_pins axi_control/M01_AXI] [get_bd_intf_pins {top}/s_axi_control]" in tcl
    assert f"-part {hls['part']}" in tcl and "-reference" not in tcl
    monkeypatch.setenv("VIVADO_ROUTE", "verilog")
    with pytest.raises(FlowError, match=r"^VIVADO_ROUTE=verilog is unknown: use rtl .* or hls"):
        build_bitfile(run, run_board(run))


def chain_run(root: Path, board_name: str, xnor: bool) -> Path:
    """hw/ of a small chain built for ``board_name``; with xnor False its first MVAU reads 8-bit pixels (no RTL)."""
    board = load_board(board_name)
    net = NetworkBuilder(np.random.default_rng(1), "UINT8", 16)
    if xnor:
        net.thresholding(pe=4, steps=1)
    net.mvau(8, simd=8, pe=2, steps=1)
    net.mvau(4, simd=8, pe=2, steps=None)
    net.label_select(pe=1, k=1)
    write_hardware_artifacts(net.model(), root / "hw", {"board": board.name, "part": board.part,
                                                        "clock_mhz": board.clock_mhz, "dma_width_bits": board.dma_width_bits})
    return root


def test_zynq_ultrascale_board_gets_its_processing_system(tmp_path, no_vivado):
    board = load_board("zcu104")
    run = chain_run(tmp_path / "zcu", "zcu104", xnor=True)
    build_bitfile(run, board)
    for tcl in ((run / "vivado" / "vivado.tcl").read_text(), hls_route_tcl("zcu", 128, 8, board)):
        assert f"-part {board.part}" in tcl and "-vlnv xilinx.com:ip:zynq_ultra_ps_e ps_e" in tcl and "processing_system7" not in tcl
        assert f"CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{board.clock_mhz:g}}}" in tcl
        assert "[get_bd_intf_pins ps_e/M_AXI_HPM0_FPD] [get_bd_intf_pins axi_control/S00_AXI]" in tcl
        assert "[get_bd_intf_pins axi_memory/M00_AXI] [get_bd_intf_pins ps_e/S_AXI_HP0_FPD]" in tcl
        assert f"CONFIG.c_m_axi_s2mm_data_width {{{board.dma_width_bits}}}" in tcl
    # the rtl/ of another board's build is refused, not wrapped for this one
    with pytest.raises(FlowError, match=r"rtl.json: built for xczu7ev-ffvc1156-2-e at 100.0 MHz, the board is xc7z020clg400-1"):
        build_bitfile(run, load_board("pynq-z2"))


def test_design_the_rtl_does_not_cover_falls_back_unless_rtl_was_chosen(tmp_path, no_vivado, monkeypatch, capsys):
    run = chain_run(tmp_path / "pixels", "pynq-z2", xnor=False)
    assert build_bitfile(run, load_board("pynq-z2")) == "hls"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ("vivado route hls: the RTL route does not cover this design: layer 'MVAU_0': binary_xnor is "
                          "false (input UINT8, weights BIPOLAR): the RTL MVAU is XNOR-popcount only")
    assert printed[1:] == [f"skipped {tool} {run / 'hls' / script}: {tool} is not on PATH"
                           for tool, script in (("vitis_hls", "vitis_hls.tcl"), ("vivado", "vivado.tcl"))]
    assert not (run / "vivado").exists()
    monkeypatch.setenv("VIVADO_ROUTE", "rtl")
    with pytest.raises(FlowError, match=r"^VIVADO_ROUTE=rtl: layer 'MVAU_0': binary_xnor is false"):
        build_bitfile(run, load_board("pynq-z2"))


@pytest.mark.slow  # Verilator builds its runtime for this testbench: ~1 min on 2 shared cores
def test_batch_last_ends_each_output_transfer_on_its_last_image(tmp_path):
    from flow.rtl import RTL_TEMPLATES
    from flow.rtlsim import verilator_command

    command, env = verilator_command()
    testbench = Path(__file__).parent / "rtl" / "batch_last_tb.cpp"
    build = subprocess.run([*command, "--cc", "--exe", "--build", "-Wall", "-GIN_WORDS=3", "--Mdir", str(tmp_path / "obj"),
                            str(RTL_TEMPLATES / "bnn_batch_last.sv"), str(testbench), "-o", "tb"],
                           env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([str(tmp_path / "obj" / "tb")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "transfers 200 tlasts 200 errors 0" in run.stdout, run.stdout
