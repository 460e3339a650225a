// bnn_label_select: the index of the largest of LABELS values (FINN's LabelSelect, K = 1).
//
// Stream contract: in, LABELS / PE words per image of PE IBITS-bit lanes (lane p of
// word a is label a * PE + p, signed when ISIGNED); out, one OBITS-bit word per image:
// the label of the largest value, ties to the lowest index (a value replaces the kept
// one only when strictly greater, as the HLS unit does). One input word per cycle; the
// label leaves one cycle after the image's last word.
module bnn_label_select #(
    parameter int LABELS = 10,
    parameter int PE = 1,
    parameter int IBITS = 8,
    parameter bit ISIGNED = 0,
    parameter int OBITS = 8
) (
    input  logic                clk,
    input  logic                rst_n,
    input  logic                s_tvalid,
    output logic                s_tready,
    input  logic [PE*IBITS-1:0] s_tdata,
    output logic                m_tvalid,
    input  logic                m_tready,
    output logic [OBITS-1:0]    m_tdata
);
    localparam int WORDS = LABELS / PE;
    localparam int AW = WORDS > 1 ? $clog2(WORDS) : 1;
    localparam int LW = $clog2(LABELS + 1);
    localparam int VW = IBITS + 1;  // signed, either signedness of the input

    logic [AW-1:0] word;
    logic signed [VW-1:0] best;
    logic [LW-1:0] best_label;
    wire en = !m_tvalid || m_tready;
    assign s_tready = en;

    // the best after this word: the kept one (none at word 0), then lanes in index order
    logic signed [VW-1:0] next_best;
    logic [LW-1:0] next_label;
    always_comb begin
        next_best = best;
        next_label = best_label;
        for (int p = 0; p < PE; p++) begin
            logic signed [VW-1:0] v;
            v = ISIGNED ? VW'($signed(s_tdata[p*IBITS +: IBITS])) : VW'($unsigned(s_tdata[p*IBITS +: IBITS]));
            if ((word == '0 && p == 0) || v > next_best) begin
                next_best = v;
                next_label = LW'(int'(word) * PE + p);
            end
        end
    end

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            m_tvalid <= 1'b0;
            word <= '0;
        end else if (en) begin
            m_tvalid <= s_tvalid && word == AW'(WORDS - 1);
            if (s_tvalid) begin
                best <= next_best;
                best_label <= next_label;
                word <= word == AW'(WORDS - 1) ? '0 : word + 1'b1;
                m_tdata <= OBITS'(next_label);
            end
        end
    end
endmodule
