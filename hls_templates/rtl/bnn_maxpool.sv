// bnn_maxpool: streaming max-pool over the windows of a sliding-window generator (FINN's
// Pool with Function MaxPool, after a depthwise ConvolutionInputGenerator).
//
// Stream contract: in, per output pixel its window of WINDOW = K x K positions in order,
// each CF = CHANNELS / PE words of PE IBITS-bit lanes (lane p of word c is channel
// c * PE + p, signed when ISIGNED); out, per output pixel CF words of the same lanes, each
// the channel-wise maximum over the window's positions (for bits, BINARY or BIPOLAR's
// 1 = +1, the OR). The unit does not count pixels: windows follow each other with no gap.
// The running maxima of the CF channel folds are held in registers; the word of a
// window's last position leaves with the maximum, one cycle later. One input word per
// cycle, WINDOW x CF cycles per output pixel (FINN's get_exp_cycles).
module bnn_maxpool #(
    parameter int CHANNELS = 2,
    parameter int PE = 1,
    parameter int WINDOW = 4,
    parameter int IBITS = 1,
    parameter bit ISIGNED = 0
) (
    input  logic                clk,
    input  logic                rst_n,
    input  logic                s_tvalid,
    output logic                s_tready,
    input  logic [PE*IBITS-1:0] s_tdata,
    output logic                m_tvalid,
    input  logic                m_tready,
    output logic [PE*IBITS-1:0] m_tdata
);
    localparam int CF = CHANNELS / PE;
    localparam int FW = CF > 1 ? $clog2(CF) : 1;
    localparam int PW = WINDOW > 1 ? $clog2(WINDOW) : 1;
    localparam int VW = IBITS + 1;  // signed, either signedness of the input

    logic [PE*IBITS-1:0] running [CF];
    logic [FW-1:0] fold;
    logic [PW-1:0] position;
    wire en = !m_tvalid || m_tready;
    assign s_tready = en;
    wire first = position == '0;
    wire last = position == PW'(WINDOW - 1);

    function automatic logic signed [VW-1:0] value(input logic [IBITS-1:0] x);
        return ISIGNED ? VW'($signed(x)) : VW'($unsigned(x));
    endfunction

    logic [PE*IBITS-1:0] larger;  // lane by lane: the input, or the running maximum where greater
    always_comb
        for (int p = 0; p < PE; p++) begin
            logic [IBITS-1:0] kept, x;
            kept = running[fold][p*IBITS +: IBITS];
            x = s_tdata[p*IBITS +: IBITS];
            larger[p*IBITS +: IBITS] = !first && value(kept) > value(x) ? kept : x;
        end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            fold <= '0;
            position <= '0;
            m_tvalid <= 1'b0;
        end else if (en) begin
            m_tvalid <= s_tvalid && last;
            if (s_tvalid) begin
                if (last) m_tdata <= larger;
                else running[fold] <= larger;
                fold <= fold == FW'(CF - 1) ? '0 : fold + 1'b1;
                if (fold == FW'(CF - 1)) position <= last ? '0 : position + 1'b1;
            end
        end
    end
endmodule
