// bnn_thresholding: standalone multi-threshold unit (FINN's Thresholding, e.g. on the
// 8-bit pixels in front of the first MVAU).
//
// Stream contract: in, CHANNELS / PE words per image of PE IBITS-bit lanes (lane p of
// word a is channel a * PE + p, lane 0 in the low bits, signed when ISIGNED); out, the
// same fold of PE OBITS-bit lanes, lane value ACT_VAL + #{i : x >= T[channel][i]}
// (FINN's y = sum(T_i <= x), ties count). One word per cycle, one cycle of latency.
// Thresholds: THRESH_FILE, $readmemh, PE x TMEM x STEPS words of TBITS-bit two's
// complement, FINN's get_hw_compatible_threshold_tensor order (channel c in PE c % PE
// at address c / PE).
module bnn_thresholding #(
    parameter int CHANNELS = 8,
    parameter int PE = 1,
    parameter int IBITS = 8,
    parameter bit ISIGNED = 0,
    parameter int STEPS = 1,
    parameter int TBITS = 9,
    parameter int OBITS = 1,
    parameter int ACT_VAL = 0,
    parameter string THRESH_FILE = ""
) (
    input  logic                clk,
    input  logic                rst_n,
    input  logic                s_tvalid,
    output logic                s_tready,
    input  logic [PE*IBITS-1:0] s_tdata,
    output logic                m_tvalid,
    input  logic                m_tready,
    output logic [PE*OBITS-1:0] m_tdata
);
    localparam int TMEM = CHANNELS / PE;
    localparam int AW = TMEM > 1 ? $clog2(TMEM) : 1;
    localparam int CW = (IBITS + 1 > TBITS ? IBITS + 1 : TBITS) + 1;  // both sides, signed

    logic signed [TBITS-1:0] thresholds [PE * TMEM * STEPS];
    initial $readmemh(THRESH_FILE, thresholds);

    logic [AW-1:0] addr;
    wire en = !m_tvalid || m_tready;
    assign s_tready = en;

    logic [PE*OBITS-1:0] result;
    always_comb begin
        for (int p = 0; p < PE; p++) begin
            logic signed [CW-1:0] x;
            int count;
            x = ISIGNED ? CW'($signed(s_tdata[p*IBITS +: IBITS])) : CW'($unsigned(s_tdata[p*IBITS +: IBITS]));
            count = ACT_VAL;
            for (int i = 0; i < STEPS; i++)
                count += int'(x >= CW'(thresholds[(p * TMEM + int'(addr)) * STEPS + i]));
            result[p*OBITS +: OBITS] = OBITS'(count);
        end
    end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            m_tvalid <= 1'b0;
            addr <= '0;
        end else if (en) begin
            m_tvalid <= s_tvalid;
            if (s_tvalid) begin
                m_tdata <= result;
                addr <= addr == AW'(TMEM - 1) ? '0 : addr + 1'b1;
            end
        end
    end
endmodule
