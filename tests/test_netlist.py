"""The post-synthesis netlist (flow.netlist): our block RAM models against the 7-series memory layout; the TFC
netlist against its RTL, cycle by cycle; the same netlist with Yosys's empty RAMB shells fails."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flow.errors import FlowError

PROBE_WORD_BYTES = 20  # the probe's m_axis_0: 160 bits, every RAM's output pins side by side
STALL = 0.3


def init_params(rng: np.random.Generator, data: int, parity: int) -> tuple[dict, str]:
    """Random INIT_xx / INITP_xx (256 bits each): the values and the instance's parameter list."""
    values = {f"INIT_{i:02X}": int.from_bytes(rng.bytes(32), "little") for i in range(data)}
    values |= {f"INITP_{i:02X}": int.from_bytes(rng.bytes(32), "little") for i in range(parity)}
    return values, ", ".join(f".{name}(256'h{value:064x})" for name, value in values.items())


def bits(values: dict, prefix: str) -> np.ndarray:
    """The memory's data (INIT_) or parity (INITP_) bits, bit 0 first: INIT_00 holds the lowest 256 (UG473)."""
    names = sorted(n for n in values if n.startswith(prefix + "_"))
    return np.concatenate([np.array([(values[n] >> i) & 1 for i in range(256)], np.uint8) for n in names])


def number(bit_array: np.ndarray) -> int:
    return int(sum(int(b) << i for i, b in enumerate(bit_array)))


def probe_design(rng: np.random.Generator) -> tuple[str, dict]:
    """A top with the accelerator's ports: each s_axis_0 word is an address (bit 15: also a write);
    m_axis_0 returns what five block RAMs read there, in the modes synth_xilinx uses for our ROMs and
    a TDP port that writes (READ_FIRST)."""
    contents = {}
    contents["sdp18"], p18 = init_params(rng, 64, 8)
    contents["sdp36"], p36 = init_params(rng, 128, 16)
    contents["tdp9"], p9 = init_params(rng, 64, 8)
    contents["tdp1"], p1 = init_params(rng, 128, 16)
    contents["tdp18"], p18w = init_params(rng, 64, 8)
    source = f"""
module bram_probe (
    input ap_clk, input ap_rst_n,
    input s_axis_0_tvalid, output s_axis_0_tready, input [15:0] s_axis_0_tdata,
    output logic m_axis_0_tvalid, input m_axis_0_tready, output [159:0] m_axis_0_tdata, output m_axis_0_tlast
);
    wire take = s_axis_0_tvalid && s_axis_0_tready;
    wire [15:0] a = s_axis_0_tdata;
    assign s_axis_0_tready = !m_axis_0_tvalid;
    assign m_axis_0_tlast = 1'b1;
    always @(posedge ap_clk)
        if (!ap_rst_n) m_axis_0_tvalid <= 1'b0;
        else if (take) m_axis_0_tvalid <= 1'b1;
        else if (m_axis_0_tready) m_axis_0_tvalid <= 1'b0;
    wire [15:0] a18, b18, a9, a18w, unused16;
    wire [31:0] a36, b36, a1, unused32;
    wire [1:0] pa18, pb18, pa9, pa18w, unused2;
    wire [3:0] pa36, pb36, pa1, unused4;
    RAMB18E1 #(.RAM_MODE("SDP"), .READ_WIDTH_A(36), .WRITE_WIDTH_B(0), .WRITE_MODE_A("READ_FIRST"), {p18}) sdp18 (
        .CLKARDCLK(ap_clk), .CLKBWRCLK(1'b0), .ENARDEN(take), .ENBWREN(1'b0), .REGCEAREGCE(1'b0), .REGCEB(1'b0),
        .RSTRAMARSTRAM(1'b0), .RSTRAMB(1'b0), .RSTREGARSTREG(1'b0), .RSTREGB(1'b0),
        .ADDRARDADDR({{a[8:0], 5'h0}}), .ADDRBWRADDR(14'h0), .DIADI(16'h0), .DIBDI(16'h0), .DIPADIP(2'h0), .DIPBDIP(2'h0),
        .WEA(2'h0), .WEBWE(4'h0), .DOADO(a18), .DOBDO(b18), .DOPADOP(pa18), .DOPBDOP(pb18));
    RAMB36E1 #(.RAM_MODE("SDP"), .READ_WIDTH_A(72), .WRITE_WIDTH_B(0), .WRITE_MODE_A("READ_FIRST"), {p36}) sdp36 (
        .CLKARDCLK(ap_clk), .CLKBWRCLK(1'b0), .ENARDEN(take), .ENBWREN(1'b0), .REGCEAREGCE(1'b0), .REGCEB(1'b0),
        .RSTRAMARSTRAM(1'b0), .RSTRAMB(1'b0), .RSTREGARSTREG(1'b0), .RSTREGB(1'b0),
        .ADDRARDADDR({{1'b0, a[8:0], 6'h0}}), .ADDRBWRADDR(16'h0), .DIADI(32'h0), .DIBDI(32'h0), .DIPADIP(4'h0),
        .DIPBDIP(4'h0), .WEA(4'h0), .WEBWE(8'h0), .DOADO(a36), .DOBDO(b36), .DOPADOP(pa36), .DOPBDOP(pb36));
    RAMB18E1 #(.RAM_MODE("TDP"), .READ_WIDTH_A(9), .WRITE_MODE_A("READ_FIRST"), {p9}) tdp9 (
        .CLKARDCLK(ap_clk), .CLKBWRCLK(1'b0), .ENARDEN(take), .ENBWREN(1'b0), .REGCEAREGCE(1'b0), .REGCEB(1'b0),
        .RSTRAMARSTRAM(1'b0), .RSTRAMB(1'b0), .RSTREGARSTREG(1'b0), .RSTREGB(1'b0),
        .ADDRARDADDR({{a[10:0], 3'h0}}), .ADDRBWRADDR(14'h0), .DIADI(16'h0), .DIBDI(16'h0), .DIPADIP(2'h0), .DIPBDIP(2'h0),
        .WEA(2'h0), .WEBWE(4'h0), .DOADO(a9), .DOBDO(unused16), .DOPADOP(pa9), .DOPBDOP(unused2));
    RAMB36E1 #(.RAM_MODE("TDP"), .READ_WIDTH_A(1), .WRITE_MODE_A("READ_FIRST"), {p1}) tdp1 (
        .CLKARDCLK(ap_clk), .CLKBWRCLK(1'b0), .ENARDEN(take), .ENBWREN(1'b0), .REGCEAREGCE(1'b0), .REGCEB(1'b0),
        .RSTRAMARSTRAM(1'b0), .RSTRAMB(1'b0), .RSTREGARSTREG(1'b0), .RSTREGB(1'b0),
        .ADDRARDADDR({{1'b0, a[14:0]}}), .ADDRBWRADDR(16'h0), .DIADI(32'h0), .DIBDI(32'h0), .DIPADIP(4'h0),
        .DIPBDIP(4'h0), .WEA(4'h0), .WEBWE(8'h0), .DOADO(a1), .DOBDO(unused32), .DOPADOP(pa1), .DOPBDOP(unused4));
    RAMB18E1 #(.RAM_MODE("TDP"), .READ_WIDTH_A(18), .WRITE_WIDTH_A(18), .WRITE_MODE_A("READ_FIRST"), {p18w}) tdp18 (
        .CLKARDCLK(ap_clk), .CLKBWRCLK(1'b0), .ENARDEN(take), .ENBWREN(1'b0), .REGCEAREGCE(1'b0), .REGCEB(1'b0),
        .RSTRAMARSTRAM(1'b0), .RSTRAMB(1'b0), .RSTREGARSTREG(1'b0), .RSTREGB(1'b0),
        .ADDRARDADDR({{a[9:0], 4'h0}}), .ADDRBWRADDR(14'h0), .DIADI(a ^ 16'ha5c3), .DIBDI(16'h0), .DIPADIP(a[1:0]),
        .DIPBDIP(2'h0), .WEA({{2{{a[15]}}}}), .WEBWE(4'h0), .DOADO(a18w), .DOBDO(unused16), .DOPADOP(pa18w), .DOPBDOP(unused2));
    assign m_axis_0_tdata = {{pa18w, a18w, a1[0], pa9[0], a9[7:0], pb36, pa36, b36, a36, pb18, pa18, b18, a18}};
endmodule
"""
    return source, contents


def expected_words(contents: dict, addresses: list[int]) -> list[int]:
    """What the 7-series block RAMs return (UG473: data bits and parity bits each linear in INIT_ / INITP_)."""
    memory = {name: (bits(values, "INIT"), bits(values, "INITP")) for name, values in contents.items()}

    def word(name, address, data_bits, parity_bits):
        data, parity = memory[name]
        return number(data[address * data_bits:][:data_bits]), number(parity[address * parity_bits:][:parity_bits]) if parity_bits else 0

    written = {}
    words = []
    for a in addresses:
        d18, p18 = word("sdp18", a & 0x1FF, 32, 4)
        d36, p36 = word("sdp36", a & 0x1FF, 64, 8)
        d9, p9 = word("tdp9", a & 0x7FF, 8, 1)
        d1, _ = word("tdp1", a & 0x7FFF, 1, 0)
        d18w, p18w = written.get(a & 0x3FF) or word("tdp18", a & 0x3FF, 16, 2)  # READ_FIRST: the old word
        if a & 0x8000:
            written[a & 0x3FF] = ((a ^ 0xA5C3) & 0xFFFF, a & 3)
        value = d18 & 0xFFFF | (d18 >> 16) << 16 | (p18 & 3) << 32 | (p18 >> 2) << 34   # {DOPB, DOPA, DOB, DOA}
        value |= (d36 & 0xFFFFFFFF | (d36 >> 32) << 32 | (p36 & 0xF) << 64 | (p36 >> 4) << 68) << 36
        value |= (d9 | p9 << 8 | d1 << 9) << 108
        value |= (d18w | p18w << 16) << 118
        words.append(value)
    return words


def probe_spec() -> dict:
    """flow.rtlsim.run_model's view of the probe: one 16-bit word in and one 160-bit word out per 'image'."""
    return {"top": "bram_probe", "in_axis_words": 1, "in_axis_bits": 16, "out_axis_words": 1,
            "out_axis_bits": 8 * PROBE_WORD_BYTES, "out_bytes": PROBE_WORD_BYTES, "streams": []}


def run_probe(tmp_path, source: str, addresses: list[int]) -> np.ndarray:
    from flow.netlist import simulation_sources
    from flow.rtlsim import compile_model, run_model

    design = tmp_path / "bram_probe.v"
    design.write_text(source)
    executable, _ = compile_model(tmp_path, "bram_probe", "-O0", simulation_sources(design))
    packed = np.array(addresses, "<u2").view(np.uint8).reshape(len(addresses), 2)
    run = run_model(executable, probe_spec(), tmp_path, packed, STALL, 1000, tmp_path / "run")
    return run["outputs"]


def test_block_ram_models_read_and_write_as_the_7_series_layout(tmp_path):
    rng = np.random.default_rng(14)
    source, contents = probe_design(rng)
    addresses = [int(a) for a in rng.integers(0, 1 << 15, 48)]
    addresses += [0x8000 | 5, 5, 0x8000 | 7, 0x8000 | 7, 7, 5]  # writes (old word out), then reads of what was written
    outputs = run_probe(tmp_path, source, addresses)
    got = [int.from_bytes(row.tobytes(), "little") for row in outputs]
    assert got == expected_words(contents, addresses)


def test_unmodelled_block_ram_mode_is_one_line(tmp_path):
    # SDP reading 18 bits (only the full 36 is modelled): one instance, the probe's ports
    source = """
module bram_probe (input ap_clk, input ap_rst_n, input s_axis_0_tvalid, output s_axis_0_tready, input [15:0] s_axis_0_tdata,
                   output m_axis_0_tvalid, input m_axis_0_tready, output [159:0] m_axis_0_tdata, output m_axis_0_tlast);
    assign {s_axis_0_tready, m_axis_0_tvalid, m_axis_0_tlast} = 3'b111;
    assign m_axis_0_tdata[159:16] = '0;
    RAMB18E1 #(.RAM_MODE("SDP"), .READ_WIDTH_A(18)) narrow (.CLKARDCLK(ap_clk), .ENARDEN(1'b1),
        .ADDRARDADDR(s_axis_0_tdata[13:0]), .DOADO(m_axis_0_tdata[15:0]));
endmodule
"""
    with pytest.raises(FlowError) as error:
        run_probe(tmp_path, source, [1, 2])
    message = str(error.value)
    assert "\n" not in message and "bram_probe.narrow" in message and "SDP with READ_WIDTH_A = 18 (only 36)" in message


@pytest.mark.slow
def test_tfc_netlist_equals_rtl_cycle_by_cycle_and_needs_the_bram_models(tfc_run, tmp_path):
    from flow.netlist import compare, netlist

    report = netlist(tfc_run, images=3)
    assert report["equal"] and report["netlist_outputs_equal_emulator"] and report["first_difference"] is None
    assert report["transfers_compared"]["m_axis_0"] == 3 and report["cycles_compared"] > 0
    assert sum(report["block_rams"].values()) > 0  # the weight ROMs are block RAMs: the models were used
    assert json.loads((tfc_run / "report" / "netlist.json").read_text())["equal"]
    # the same netlist and images with Yosys's empty RAMB shells: the weights read as nothing
    shells = tmp_path / "shells"
    shutil.copytree(tfc_run, shells, symlinks=True)
    report = compare(shells, images=10, bram_models=False)
    assert report["synth_cached"]  # the netlist simulated is the one above
    assert not report["equal"] and not report["netlist_outputs_equal_emulator"]
    assert report["first_difference"]["port"] in ("m_axis_0_tdata", "m_axis_0", "s_axis_0")


@pytest.mark.slow  # synthesis ~80 s, the netlist's model ~60 s on 2 shared cores
def test_conv_layer_chain_netlist_equals_rtl_cycle_by_cycle(tmp_path):
    """A CNV-like chain (sliding windows, integer and XNOR conv MVAUs, max-pools, flatten, FC):
    its netlist against its RTL on 3 images, and against the emulator."""
    from flow.artifacts import write_hardware_artifacts
    from flow.emulate import Emulator
    from flow.netlist import compare
    from tests.test_rtl import BOARD, random_conv_network

    rng = np.random.default_rng(24)  # test_rtl's draw: every conv kind
    write_hardware_artifacts(random_conv_network(rng), tmp_path / "conv" / "hw", BOARD)
    emulator = Emulator(tmp_path / "conv" / "hw")
    idt = emulator.idt
    inputs = rng.integers(int(idt.min()), int(idt.max()) + 1, size=(3, *emulator.ishape_normal[1:]))
    report = compare(tmp_path / "conv", inputs=inputs.astype(np.int8 if idt.signed() else np.uint8))
    assert report["equal"] and report["netlist_outputs_equal_emulator"] and report["first_difference"] is None
    assert report["netlist_output_words"] == 3 and report["cycles_compared"] > 0
    modules = [layer["module"] for layer in json.loads((tmp_path / "conv" / "rtl" / "rtl.json").read_text())["layers"]]
    assert {"bnn_swg", "bnn_mvau", "bnn_maxpool"} <= set(modules)
