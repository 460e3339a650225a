// xilinx_sim_bram: behavioural model of one 7-series block RAM, for simulating Yosys
// synth_xilinx netlists in Verilator (flow.netlist); never synthesized. RAMB18E1.sv and
// RAMB36E1.sv wrap it under the primitives' names, ports and parameters: Yosys's
// xilinx/cells_sim.v declares both as empty shells (no memory, outputs undriven).
//
// Modelled (what synth_xilinx instantiates for our ROMs and simple RAMs):
// - RAM_MODE "TDP": each port reads and writes READ_WIDTH_x / WRITE_WIDTH_x bits, each
//   0 (unused), 1, 2, 4, 9, 18 or (RAMB36E1) 36; a port reading and writing does so at
//   one width. Byte write enables WEx (one per 9-bit byte; widths below 9 use bit 0).
// - RAM_MODE "SDP": reads READ_WIDTH_A = 36 (RAMB18E1) / 72 (RAMB36E1) bits at
//   ADDRARDADDR, DOADO the low data half, DOBDO the high, DOPADOP / DOPBDOP their
//   parity bits; writes WRITE_WIDTH_B = the same width (or 0: a ROM) at ADDRBWRADDR
//   from DIADI / DIBDI / DIPADIP / DIPBDIP, byte enables WEBWE.
// - WRITE_MODE_x READ_FIRST, WRITE_FIRST (a read sees the data written in the same
//   cycle), NO_CHANGE (TDP: the port's output keeps its value while it writes).
// - DOx_REG 0 or 1 (the output register with REGCEx, RSTREGx, RSTREG_PRIORITY_x),
//   RSTRAMx (the output latch to SRVAL_x), INIT_x (the outputs' initial value).
// - Contents: INIT_00.. (data bits, linear) and INITP_00.. (one parity bit per byte,
//   linear), the layout Yosys's brams_defs.vh slice_init / slice_initp writes; INIT_x /
//   SRVAL_x as Yosys's ival() packs them ({parity bits, data bits} of the port's width;
//   in SDP INIT_A the low half, INIT_B the high half).
// - One clock: both ports are clocked by the clock of the port in use (port A when it
//   reads or writes): writing port B on another clock stops the simulation.
// Not modelled, refused with $fatal at start-up naming the instance and parameter: other
// widths, differing read / write widths on a port, SDP NO_CHANGE, inverted pins
// (IS_*_INVERTED), INIT_FILE, cascading (RAM_EXTENSION_x), ECC. Collisions of two ports
// writing one address in one cycle: port B's data wins (the hardware's is undefined).
module xilinx_sim_bram #(
    parameter int DW = 16,  // data bits of one port: RAMB18E1 16, RAMB36E1 32
    parameter int LB = 14,  // address bits that select a data bit: RAMB18E1 14 (16 Kib), RAMB36E1 15 (32 Kib)
    parameter logic [DW*1024-1:0] INIT_DATA = '0,
    parameter logic [DW*128-1:0] INIT_PARITY = '0,
    parameter string RAM_MODE = "TDP",
    parameter int READ_WIDTH_A = 0,
    parameter int READ_WIDTH_B = 0,
    parameter int WRITE_WIDTH_A = 0,
    parameter int WRITE_WIDTH_B = 0,
    parameter string WRITE_MODE_A = "WRITE_FIRST",
    parameter string WRITE_MODE_B = "WRITE_FIRST",
    parameter int DOA_REG = 0,
    parameter int DOB_REG = 0,
    parameter string RSTREG_PRIORITY_A = "RSTREG",
    parameter string RSTREG_PRIORITY_B = "RSTREG",
    parameter logic [DW+DW/8-1:0] INIT_A = '0,
    parameter logic [DW+DW/8-1:0] INIT_B = '0,
    parameter logic [DW+DW/8-1:0] SRVAL_A = '0,
    parameter logic [DW+DW/8-1:0] SRVAL_B = '0,
    parameter string UNSUPPORTED = ""  // the wrapper's finding on its own parameters ("" when none)
) (
    input  logic              clka, ena, regcea, rstrama, rstrega,
    input  logic [LB-1:0]     addra,
    input  logic [DW-1:0]     dia,
    input  logic [DW/8-1:0]   dipa,
    input  logic [DW/8-1:0]   wea,
    output logic [DW-1:0]     doa,
    output logic [DW/8-1:0]   dopa,
    input  logic              clkb, enb, regceb, rstramb, rstregb,
    input  logic [LB-1:0]     addrb,
    input  logic [DW-1:0]     dib,
    input  logic [DW/8-1:0]   dipb,
    input  logic [DW/4-1:0]   web,
    output logic [DW-1:0]     dob,
    output logic [DW/8-1:0]   dopb
);
    localparam int UNITS = DW * 128;  // 9-bit units: a data byte and its parity bit
    localparam int PW = DW + DW / 8;  // one port's {parity, data} bits: 18 / 36
    localparam int FULL = 2 * PW;     // SDP's width: 36 / 72
    localparam bit SDP = RAM_MODE == "SDP";
    // the widths each port reads and writes at (SDP: A reads, B writes, both full width)
    localparam int RWA = READ_WIDTH_A;
    localparam int RWB = SDP ? 0 : READ_WIDTH_B;
    localparam int WWA = SDP ? 0 : WRITE_WIDTH_A;
    localparam int WWB = WRITE_WIDTH_B;

    function automatic bit port_width_ok(int width);
        return width inside {0, 1, 2, 4, 9, 18} || (width == 36 && DW == 32);
    endfunction

    initial begin : mode_check  // named: a $fatal message names TOP...<instance>.bram.mode_check
        string problem;
        problem = UNSUPPORTED;
        if (problem == "" && !(RAM_MODE inside {"TDP", "SDP"})) problem = $sformatf("RAM_MODE = %s", RAM_MODE);
        if (problem == "" && SDP && !(READ_WIDTH_A inside {0, FULL}))
            problem = $sformatf("SDP with READ_WIDTH_A = %0d (only %0d)", READ_WIDTH_A, FULL);
        if (problem == "" && SDP && !(WRITE_WIDTH_B inside {0, FULL}))
            problem = $sformatf("SDP with WRITE_WIDTH_B = %0d (only %0d)", WRITE_WIDTH_B, FULL);
        if (problem == "" && SDP && (READ_WIDTH_B != 0 || WRITE_WIDTH_A != 0))
            problem = $sformatf("SDP with READ_WIDTH_B = %0d, WRITE_WIDTH_A = %0d (only 0)", READ_WIDTH_B, WRITE_WIDTH_A);
        if (problem == "" && SDP && (WRITE_MODE_A == "NO_CHANGE" || DOA_REG != DOB_REG))
            problem = $sformatf("SDP with WRITE_MODE_A = %s, DOA_REG = %0d, DOB_REG = %0d", WRITE_MODE_A, DOA_REG, DOB_REG);
        if (problem == "" && !SDP && !(port_width_ok(READ_WIDTH_A) && port_width_ok(READ_WIDTH_B)
                                       && port_width_ok(WRITE_WIDTH_A) && port_width_ok(WRITE_WIDTH_B)))
            problem = $sformatf("TDP widths READ_WIDTH_A/B = %0d/%0d, WRITE_WIDTH_A/B = %0d/%0d", READ_WIDTH_A,
                                READ_WIDTH_B, WRITE_WIDTH_A, WRITE_WIDTH_B);
        if (problem == "" && !SDP && ((READ_WIDTH_A != 0 && WRITE_WIDTH_A != 0 && READ_WIDTH_A != WRITE_WIDTH_A)
                                      || (READ_WIDTH_B != 0 && WRITE_WIDTH_B != 0 && READ_WIDTH_B != WRITE_WIDTH_B)))
            problem = "TDP with a port's READ_WIDTH != WRITE_WIDTH";
        if (problem == "" && !(WRITE_MODE_A inside {"READ_FIRST", "WRITE_FIRST", "NO_CHANGE"}
                               && WRITE_MODE_B inside {"READ_FIRST", "WRITE_FIRST", "NO_CHANGE"}))
            problem = $sformatf("WRITE_MODE_A/B = %s/%s", WRITE_MODE_A, WRITE_MODE_B);
        if (problem == "" && !(DOA_REG inside {0, 1} && DOB_REG inside {0, 1}))
            problem = $sformatf("DOA_REG/DOB_REG = %0d/%0d", DOA_REG, DOB_REG);
        if (problem != "") $fatal(1, "block RAM mode not modelled: %s (hls_templates/rtl/xilinx_sim)", problem);
    end

    logic [8:0] mem [UNITS];
    initial for (int u = 0; u < UNITS; u++) mem[u] = {INIT_PARITY[u], INIT_DATA[8*u +: 8]};

    // a word of `width` bits at a port address: {parity bits, data bits} (the layout of INIT_x)
    function automatic logic [71:0] read_word(logic [LB-1:0] addr, int width);
        logic [71:0] word = '0;
        if (width == 0) return word;
        if (width < 9) begin
            int first = int'(addr) / width * width;
            for (int i = 0; i < width; i++) word[i] = mem[(first + i) / 8][(first + i) % 8];
        end else begin
            int bytes = width / 9;
            int first = int'(addr) / (8 * bytes) * bytes;
            for (int i = 0; i < bytes; i++) begin
                word[8*i +: 8] = mem[first + i][7:0];
                word[8*bytes + i] = mem[first + i][8];
            end
        end
        return word;
    endfunction

    task automatic write_word(logic [LB-1:0] addr, int width, logic [71:0] word, logic [7:0] byte_enable);
        if (width < 9) begin
            int first = int'(addr) / width * width;
            if (byte_enable[0]) for (int i = 0; i < width; i++) mem[(first + i) / 8][(first + i) % 8] = word[i];
        end else begin
            int bytes = width / 9;
            int first = int'(addr) / (8 * bytes) * bytes;
            for (int i = 0; i < bytes; i++)
                if (byte_enable[i]) mem[first + i] = {word[8*bytes + i], word[8*i +: 8]};
        end
    endtask

    // a TDP port's word <-> its DI/DIP, DO/DOP pins ({DOP, DO}, PW bits)
    function automatic logic [PW-1:0] tdp_pins(logic [71:0] word, int width);
        logic [PW-1:0] pins = '0;
        if (width < 9) pins[DW-1:0] = DW'(word[7:0] & 8'((1 << width) - 1));
        else for (int i = 0; i < width / 9; i++) begin
            pins[8*i +: 8] = word[8*i +: 8];
            pins[DW + i] = word[8*(width / 9) + i];
        end
        return pins;
    endfunction

    function automatic logic [71:0] tdp_word(logic [DW-1:0] data, logic [DW/8-1:0] parity, int width);
        logic [71:0] word = '0;
        if (width < 9) word[7:0] = data[7:0];
        else for (int i = 0; i < width / 9; i++) begin
            word[8*i +: 8] = data[8*i +: 8];
            word[8*(width / 9) + i] = parity[i];
        end
        return word;
    endfunction

    // SDP: a FULL-bit word <-> the A (low) and B (high) halves, each {parity, data} as INIT_A / INIT_B
    function automatic logic [71:0] sdp_word(logic [PW-1:0] low, logic [PW-1:0] high);
        logic [71:0] word = '0;
        word[2*DW-1:0] = {high[DW-1:0], low[DW-1:0]};
        word[2*DW +: DW/4] = {high[PW-1:DW], low[PW-1:DW]};
        return word;
    endfunction

    function automatic logic [2*PW-1:0] sdp_halves(logic [71:0] word);  // {high, low}
        return {word[2*DW + DW/8 +: DW/8], word[DW +: DW], word[2*DW +: DW/8], word[DW-1:0]};
    endfunction

    // what the output latches show, as {port B pins, port A pins}
    function automatic logic [2*PW-1:0] pins_of(logic [71:0] word_a, logic [71:0] word_b);
        if (SDP) return sdp_halves(word_a);
        return {tdp_pins(word_b, RWB), tdp_pins(word_a, RWA)};
    endfunction

    localparam logic [2*PW-1:0] INIT_PINS = SDP ? {INIT_B, INIT_A}
        : {tdp_pins(72'(INIT_B), READ_WIDTH_B), tdp_pins(72'(INIT_A), READ_WIDTH_A)};
    localparam logic [2*PW-1:0] SRVAL_PINS = SDP ? {SRVAL_B, SRVAL_A}
        : {tdp_pins(72'(SRVAL_B), READ_WIDTH_B), tdp_pins(72'(SRVAL_A), READ_WIDTH_A)};

    logic [PW-1:0] latch_a = INIT_PINS[PW-1:0], latch_b = INIT_PINS[2*PW-1:PW];
    logic [PW-1:0] out_a = INIT_PINS[PW-1:0], out_b = INIT_PINS[2*PW-1:PW];
    wire clk = (READ_WIDTH_A != 0 || WRITE_WIDTH_A != 0) ? clka : clkb;
    wire write_a = ena && WWA != 0 && |wea;
    wire write_b = enb && WWB != 0 && |web;

    always @(posedge clk) begin
        logic [71:0] old_a, old_b, new_a, new_b;
        logic [2*PW-1:0] old_pins, new_pins;
        old_a = read_word(addra, RWA);
        old_b = read_word(addrb, RWB);
        if (write_a) write_word(addra, WWA, tdp_word(dia, dipa, WWA), 8'(wea));
        if (write_b)
            if (SDP) write_word(addrb, WWB, sdp_word({dipa, dia}, {dipb, dib}), 8'(web));
            else write_word(addrb, WWB, tdp_word(dib, dipb, WWB), 8'(web));
        new_a = read_word(addra, RWA);
        new_b = read_word(addrb, RWB);
        old_pins = pins_of(old_a, old_b);
        new_pins = pins_of(new_a, new_b);
        if (ena && RWA != 0) begin
            if (rstrama) latch_a <= SRVAL_PINS[PW-1:0];
            else if (WRITE_MODE_A == "WRITE_FIRST") latch_a <= new_pins[PW-1:0];
            else if (!(WRITE_MODE_A == "NO_CHANGE" && write_a)) latch_a <= old_pins[PW-1:0];
        end
        // SDP: port A's read fills both halves
        if (SDP ? ena && RWA != 0 : enb && RWB != 0) begin
            if (SDP ? rstrama : rstramb) latch_b <= SRVAL_PINS[2*PW-1:PW];
            else if ((SDP ? WRITE_MODE_A : WRITE_MODE_B) == "WRITE_FIRST") latch_b <= new_pins[2*PW-1:PW];
            else if (!(WRITE_MODE_B == "NO_CHANGE" && write_b && !SDP)) latch_b <= old_pins[2*PW-1:PW];
        end
        // the optional output registers (SDP: port A's controls for both halves)
        if (rstrega && (RSTREG_PRIORITY_A == "RSTREG" || regcea)) out_a <= SRVAL_PINS[PW-1:0];
        else if (regcea) out_a <= latch_a;
        if (SDP ? rstrega && (RSTREG_PRIORITY_A == "RSTREG" || regcea) : rstregb && (RSTREG_PRIORITY_B == "RSTREG" || regceb))
            out_b <= SRVAL_PINS[2*PW-1:PW];
        else if (SDP ? regcea : regceb) out_b <= latch_b;
    end

    always @(posedge clkb) if (write_b && clk != 1'b1) $fatal(1, "block RAM port B written on a clock of its own (not modelled)");

    assign {dopa, doa} = DOA_REG ? out_a : latch_a;
    assign {dopb, dob} = DOB_REG ? out_b : latch_b;
endmodule
