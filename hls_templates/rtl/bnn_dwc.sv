// bnn_dwc: AXI-Stream data-width converter (FINN's StreamingDataWidthConverter).
//
// Stream contract: the words of a stream are one little-endian bit string (word 0
// first, bit 0 first); it is re-cut into OW-bit words. Per image the input bits must
// fill whole output words (the generator checks IN_WORDS x IW % OW == 0), so no word
// straddles two images. Throughput: an input word is taken whenever at most OW bits are
// held and an output word leaves whenever OW bits are held, in the same cycle when both,
// so the slower side runs at one word per cycle when one width divides the other.
module bnn_dwc #(
    parameter int IW = 8,
    parameter int OW = 8
) (
    input  logic          clk,
    input  logic          rst_n,
    input  logic          s_tvalid,
    output logic          s_tready,
    input  logic [IW-1:0] s_tdata,
    output logic          m_tvalid,
    input  logic          m_tready,
    output logic [OW-1:0] m_tdata
);
    localparam int BW = IW + OW;  // bits held: at most OW before a read, so IW + OW after it
    localparam int CW = $clog2(BW + 1);
    logic [BW-1:0] buffer;
    logic [CW-1:0] held;
    wire pop = m_tvalid && m_tready;
    wire push = s_tvalid && s_tready;
    wire [CW-1:0] kept = pop ? held - CW'(OW) : held;  // bits left after this cycle's output

    assign m_tvalid = held >= CW'(OW);
    assign m_tdata = buffer[OW-1:0];
    assign s_tready = kept <= CW'(OW);

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            held <= '0;
            buffer <= '0;
        end else begin
            logic [BW-1:0] shifted;
            shifted = pop ? buffer >> OW : buffer;
            if (push) shifted = shifted | (BW'(s_tdata) << kept);
            buffer <= shifted;
            held <= kept + (push ? CW'(IW) : '0);
        end
    end
endmodule
