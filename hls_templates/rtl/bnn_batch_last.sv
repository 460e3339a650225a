// bnn_batch_last: the output stream's TLAST for an AXI DMA, one per input DMA transfer.
//
// Stream contract: watches, never stalls, the two AXI4-Stream handshakes of the accelerator
// (finn_design): the input (in_tvalid && in_tready, IN_WORDS words per image; in_tlast high
// on the last word of each MM2S transfer, which holds whole images) and the output
// (out_tvalid && out_tready; image_last high on each image's last word, finn_design's
// m_axis_0_tlast). out_tlast is high on the last word of the image that ended an input
// transfer, so an S2MM transfer of n images' bytes ends with its n-th image: the AXI DMA
// ends an S2MM transfer at TLAST, and one TLAST per image would end it after the first.
// An image's last output word leaves at least one cycle after its last input word arrived
// (every output depends on the whole image), so the transfer's length is known by then.
// At most DEPTH (a power of two) transfers may be in flight; PYNQ's driver has one.
module bnn_batch_last #(
    parameter int IN_WORDS = 1,
    parameter int DEPTH = 4,
    parameter int COUNT_BITS = 32  // images per transfer: the DMA moves at most 2^26 bytes
) (
    input  logic clk,
    input  logic rst_n,
    input  logic in_tvalid,
    input  logic in_tready,
    input  logic in_tlast,
    input  logic out_tvalid,
    input  logic out_tready,
    input  logic image_last,
    output logic out_tlast
);
    localparam int WORD_BITS = IN_WORDS > 1 ? $clog2(IN_WORDS) : 1;
    localparam int PTR_BITS = DEPTH > 1 ? $clog2(DEPTH) : 1;

    logic [WORD_BITS-1:0] in_word;
    logic [COUNT_BITS-1:0] in_images, out_images;  // images of the current transfer, per side
    logic [COUNT_BITS-1:0] lengths [DEPTH];  // images of each finished input transfer, oldest first
    logic [PTR_BITS:0] head, tail;
    wire in_word_done = in_tvalid && in_tready;
    wire in_image_end = in_word_done && in_word == WORD_BITS'(IN_WORDS - 1);
    wire known = head != tail;

    assign out_tlast = image_last && known && out_images == lengths[head[PTR_BITS-1:0]] - 1'b1;

    always_ff @(posedge clk) begin
        if (in_word_done && in_tlast) lengths[tail[PTR_BITS-1:0]] <= in_images + COUNT_BITS'(in_image_end);
        if (!rst_n) begin
            in_word <= '0;
            in_images <= '0;
            out_images <= '0;
            head <= '0;
            tail <= '0;
        end else begin
            if (in_word_done) begin
                in_word <= in_image_end ? '0 : in_word + 1'b1;
                if (in_tlast) begin
                    in_images <= '0;
                    tail <= tail + 1'b1;
                end else if (in_image_end) begin
                    in_images <= in_images + 1'b1;
                end
            end
            if (out_tvalid && out_tready && image_last) begin
                if (out_tlast) begin
                    out_images <= '0;
                    head <= head + 1'b1;
                end else begin
                    out_images <= out_images + 1'b1;
                end
            end
        end
    end
endmodule
