// bnn_swg: sliding-window generator (FINN's ConvolutionInputGenerator, square kernel, no
// padding or dilation), standard or depthwise alike.
//
// Stream contract: in, per image IH x IW pixels in row-major order, each CF = CHANNELS / SIMD
// words of SIMD EBITS-bit lanes (lane s of word c is channel c * SIMD + s, lane 0 in the low
// bits); out, per output pixel (oy, ox) in row-major order (OH = (IH - K) / STRIDE + 1,
// likewise OW) its K x K window in (ky, kx, channel) order, channels innermost: the words
// of input pixel (oy * STRIDE + ky, ox * STRIDE + kx), K x K x CF words per output pixel
// (the emulator's SlidingWindowLayer order; a max-pool after a depthwise window reads the
// same order). Input pixels no window covers (IH - K not a multiple of STRIDE) are read
// and dropped.
// Buffer: a ring of BUFFER words (at least one window's span, ((K - 1) x IW + K) x CF;
// the generator gives it the span plus the step to the next image's first window, so the
// next image streams in while the last windows leave). D = words written - the current
// window's first word (in one running count over images): an output word at offset o in
// the window may leave when o < D, an input word may enter when D < BUFFER (it overwrites
// a word before the window). One word in and one word out per cycle; the output leaves
// through a register with one global stall (synchronous read, as a BRAM reads).
module bnn_swg #(
    parameter int IH = 4,
    parameter int IW = 4,
    parameter int CHANNELS = 1,
    parameter int SIMD = 1,
    parameter int EBITS = 1,
    parameter int K = 2,
    parameter int STRIDE = 1,
    parameter int BUFFER = 16
) (
    input  logic                  clk,
    input  logic                  rst_n,
    input  logic                  s_tvalid,
    output logic                  s_tready,
    input  logic [SIMD*EBITS-1:0] s_tdata,
    output logic                  m_tvalid,
    input  logic                  m_tready,
    output logic [SIMD*EBITS-1:0] m_tdata
);
    localparam int CF = CHANNELS / SIMD;
    localparam int OH = (IH - K) / STRIDE + 1;
    localparam int OW = (IW - K) / STRIDE + 1;
    localparam int IN_WORDS = IH * IW * CF;
    localparam int ROW_WORDS = K * CF;  // one kernel row of a window: consecutive input words
    localparam int SPAN = ((K - 1) * IW + K) * CF;
    // the window start's steps: next pixel in the row, first pixel of the next row, of the next image
    localparam int STEP_X = STRIDE * CF;
    localparam int STEP_Y = (STRIDE * IW - (OW - 1) * STRIDE) * CF;
    localparam int STEP_I = IN_WORDS - ((OH - 1) * STRIDE * IW + (OW - 1) * STRIDE) * CF;
    localparam int AW = BUFFER > 1 ? $clog2(BUFFER) : 1;
    localparam int OFW = $clog2(SPAN + 1);
    localparam int DW = $clog2(BUFFER + IN_WORDS + 1) + 1;  // D, signed: the writer may trail the reader
    localparam int RW = ROW_WORDS > 1 ? $clog2(ROW_WORDS) : 1;
    localparam int KW = K > 1 ? $clog2(K) : 1;
    localparam int XW = OW > 1 ? $clog2(OW) : 1;
    localparam int YW = OH > 1 ? $clog2(OH) : 1;

    (* ram_style = "distributed" *) logic [SIMD*EBITS-1:0] ring [BUFFER];
    logic [AW-1:0] write_addr, start_addr;
    logic signed [DW-1:0] held;  // D
    logic [OFW-1:0] offset;      // of the next output word in its window
    logic [RW-1:0] col;          // within the kernel row
    logic [KW-1:0] ky;
    logic [XW-1:0] ox;
    logic [YW-1:0] oy;

    wire en = !m_tvalid || m_tready;
    wire issue = en && $signed({1'b0, offset}) < held;
    wire push = s_tvalid && s_tready;
    assign s_tready = held < $signed(DW'(BUFFER));

    wire row_end = col == RW'(ROW_WORDS - 1);
    wire window_end = row_end && ky == KW'(K - 1);
    wire line_end = ox == XW'(OW - 1);
    wire image_end = line_end && oy == YW'(OH - 1);
    wire [DW-1:0] step = !line_end ? DW'(STEP_X) : !image_end ? DW'(STEP_Y) : DW'(STEP_I);
    wire [AW-1:0] step_mod = !line_end ? AW'(STEP_X % BUFFER) : !image_end ? AW'(STEP_Y % BUFFER) : AW'(STEP_I % BUFFER);

    function automatic logic [AW-1:0] ring_add(input logic [AW-1:0] a, input logic [AW-1:0] b);  // (a + b) mod BUFFER, a, b < BUFFER
        logic [AW:0] sum;
        sum = {1'b0, a} + {1'b0, b};
        return sum >= (AW+1)'(BUFFER) ? AW'(sum - (AW+1)'(BUFFER)) : AW'(sum);
    endfunction

    always_ff @(posedge clk) begin
        if (push) ring[write_addr] <= s_tdata;
        if (!rst_n) begin
            write_addr <= '0;
            start_addr <= '0;
            held <= '0;
            offset <= '0;
            col <= '0;
            ky <= '0;
            ox <= '0;
            oy <= '0;
            m_tvalid <= 1'b0;
        end else begin
            if (push) write_addr <= write_addr == AW'(BUFFER - 1) ? '0 : write_addr + 1'b1;
            held <= held + DW'(push) - (issue && window_end ? step : '0);
            if (en) begin
                m_tvalid <= issue;
                if (issue) m_tdata <= ring[ring_add(start_addr, AW'(offset))];
            end
            if (issue) begin
                col <= row_end ? '0 : col + 1'b1;
                offset <= window_end ? '0 : row_end ? offset + OFW'((IW - K) * CF + 1) : offset + 1'b1;
                if (row_end) ky <= ky == KW'(K - 1) ? '0 : ky + 1'b1;
                if (window_end) begin
                    start_addr <= ring_add(start_addr, step_mod);
                    ox <= line_end ? '0 : ox + 1'b1;
                    if (line_end) oy <= image_end ? '0 : oy + 1'b1;
                end
            end
        end
    end
endmodule
