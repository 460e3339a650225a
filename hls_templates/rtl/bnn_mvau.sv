// bnn_mvau: matrix-vector-activation unit (FINN's MVAU), folded PE x SIMD: the XNOR-popcount
// of binary layers (binaryXnorMode) or the integer dot product of the first conv layer
// (e.g. 8-bit pixels x bipolar or INT2 weights).
//
// Stream contract: in, one vector per output pixel (PIXELS per image, FC layers 1), each
// SF = MW / SIMD words of SIMD IBITS-bit lanes (lane s of word f is input column
// f * SIMD + s, lane 0 in the low bits); out, per vector NF = MH / PE words of PE OBITS-bit
// lanes (lane p of word n is output row n * PE + p). Vectors follow each other with no
// gap: the unit does not count pixels.
// Arithmetic, per row, into an ACC_BITS accumulator that wraps like ap_int/ap_uint:
// - XNOR: the number of columns where input bit == weight bit (popcount of the XNOR);
// - else: sum of x * w, x as IBITS two's complement when ISIGNED, +-1 when IBIPOLAR (bit 1
//   = +1), else unsigned; w likewise (WBITS, WSIGNED, WBIPOLAR). RES_TYPE (FINN's resType)
//   picks the multiplier: "dsp" writes x * w (Yosys maps it to DSP48 slices), "lut" a
//   conditional negation for bipolar weights, else shift-and-add (no DSP).
// ACC_SIGNED: the accumulator's bits read as two's complement. Then
// - STEPS > 0: lane = ACT_VAL + #{i : acc >= T[row][i]} (ties count), OBITS bits;
// - STEPS == 0 (no activation, the scores layer): lane = acc, truncated to OBITS bits.
// Folding: the fold counter (n, f) visits NF x SF weight words, one per cycle: a vector
// is read from the stream during n == 0 and replayed from a register buffer for n > 0,
// so a vector takes NF x SF cycles and an image PIXELS x NF x SF (FINN's get_exp_cycles).
// Memories: WEIGHT_FILE, $readmemh, WMEM = NF x SF words of PE x SIMD x WBITS bits (PE p's
// SIMD lanes at bits p * SIMD * WBITS, FINN's hw-compatible layout, address n * SF + f), read
// synchronously (BRAM when RAM_STYLE == "block", else LUTs); THRESH_FILE as in
// bnn_thresholding (PE x NF x STEPS). Pipeline: issue (address, input word) -> multiply +
// sum + accumulate -> threshold compare -> output register; one global stall (every stage
// advances when the output register is free).
module bnn_mvau #(
    parameter int MW = 8,
    parameter int MH = 8,
    parameter int SIMD = 1,
    parameter int PE = 1,
    parameter bit XNOR = 1,
    parameter int IBITS = 1,
    parameter bit ISIGNED = 0,
    parameter bit IBIPOLAR = 0,
    parameter int WBITS = 1,
    parameter bit WSIGNED = 0,
    parameter bit WBIPOLAR = 1,
    parameter string RES_TYPE = "lut",
    parameter int ACC_BITS = 4,
    parameter bit ACC_SIGNED = 0,
    parameter int STEPS = 1,
    parameter int TBITS = 5,
    parameter int OBITS = 1,
    parameter int ACT_VAL = 0,
    parameter string WEIGHT_FILE = "",
    parameter string THRESH_FILE = "",
    parameter string RAM_STYLE = "distributed"
) (
    input  logic                  clk,
    input  logic                  rst_n,
    input  logic                  s_tvalid,
    output logic                  s_tready,
    input  logic [SIMD*IBITS-1:0] s_tdata,
    output logic                  m_tvalid,
    input  logic                  m_tready,
    output logic [PE*OBITS-1:0]   m_tdata
);
    localparam int SF = MW / SIMD;
    localparam int NF = MH / PE;
    localparam int WMEM = SF * NF;
    localparam int FW = SF > 1 ? $clog2(SF) : 1;
    localparam int NW = NF > 1 ? $clog2(NF) : 1;
    localparam int MAW = WMEM > 1 ? $clog2(WMEM) : 1;
    localparam int PCW = $clog2(SIMD + 1);
    localparam int CW = (ACC_BITS + 1 > TBITS ? ACC_BITS + 1 : TBITS) + 1;
    localparam int XW = IBITS + 1;  // an input lane's value, signed
    localparam int WW = WBITS + 1;  // a weight's value, signed
    localparam int PW = XW + WW;    // a product
    localparam int SW = (ACC_BITS > PW ? ACC_BITS : PW) + PCW;  // a word's sum, before wrapping

    wire en = !m_tvalid || m_tready;  // the global stall

    // ---- issue: fold counter, weight address, the input word (stream or replay buffer)
    logic [FW-1:0] f;
    logic [NW-1:0] n;
    logic [MAW-1:0] waddr;
    logic [SIMD*IBITS-1:0] vector [SF];
    wire first_pass = n == '0;
    wire issue = en && (!first_pass || s_tvalid);
    assign s_tready = en && first_pass;

    logic a_valid, a_first, a_last;
    logic [NW-1:0] a_n;
    logic [SIMD*IBITS-1:0] a_x;
    logic [PE*SIMD*WBITS-1:0] a_w;

    always_ff @(posedge clk) begin
        if (!rst_n) begin
            f <= '0;
            n <= '0;
            waddr <= '0;
            a_valid <= 1'b0;
        end else if (en) begin
            a_valid <= issue;
            if (issue) begin
                a_x <= first_pass ? s_tdata : vector[f];
                if (first_pass) vector[f] <= s_tdata;
                a_first <= f == '0;
                a_last <= f == FW'(SF - 1);
                a_n <= n;
                f <= f == FW'(SF - 1) ? '0 : f + 1'b1;
                if (f == FW'(SF - 1)) n <= n == NW'(NF - 1) ? '0 : n + 1'b1;
                waddr <= waddr == MAW'(WMEM - 1) ? '0 : waddr + 1'b1;
            end
        end
    end

    // the weight ROM, read in the issue stage (synchronous, as a BRAM reads)
    generate
        if (RAM_STYLE == "block") begin : block_rom
            (* rom_style = "block", ram_style = "block" *) logic [PE*SIMD*WBITS-1:0] weights [WMEM];
            initial $readmemh(WEIGHT_FILE, weights);
            always_ff @(posedge clk) if (en && issue) a_w <= weights[waddr];
        end else begin : lut_rom
            (* rom_style = "distributed", ram_style = "distributed" *) logic [PE*SIMD*WBITS-1:0] weights [WMEM];
            initial $readmemh(WEIGHT_FILE, weights);
            always_ff @(posedge clk) if (en && issue) a_w <= weights[waddr];
        end
    endgenerate

    // ---- one word's contribution per PE: popcount of the XNOR, or the sum of the products
    function automatic logic signed [XW-1:0] x_value(input logic [IBITS-1:0] x);
        if (IBIPOLAR) return x[0] ? XW'(1) : -XW'(1);
        return ISIGNED ? XW'($signed(x)) : XW'($unsigned(x));
    endfunction
    function automatic logic signed [WW-1:0] w_value(input logic [WBITS-1:0] w);
        if (WBIPOLAR) return w[0] ? WW'(1) : -WW'(1);
        return WSIGNED ? WW'($signed(w)) : WW'($unsigned(w));
    endfunction
    // x * w without a multiplier: x or -x for a bipolar weight, else the weight's bits (two's
    // complement: the top bit of a signed weight counts negative) as shifted partial sums
    function automatic logic signed [PW-1:0] lut_product(input logic signed [XW-1:0] x, input logic [WBITS-1:0] w);
        logic signed [PW-1:0] sum;
        if (WBIPOLAR) return w[0] ? PW'(x) : -PW'(x);
        sum = '0;
        for (int b = 0; b < WBITS; b++)
            if (w[b]) sum = (WSIGNED && b == WBITS - 1) ? sum - (PW'(x) <<< b) : sum + (PW'(x) <<< b);
        return sum;
    endfunction

    logic [ACC_BITS-1:0] contribution [PE];
    always_comb
        for (int p = 0; p < PE; p++) begin
            if (XNOR) begin
                logic [PCW-1:0] agree;
                agree = '0;
                for (int s = 0; s < SIMD; s++) agree += PCW'(a_x[s] == a_w[p*SIMD + s]);
                contribution[p] = ACC_BITS'(agree);
            end else begin
                logic signed [SW-1:0] sum;
                sum = '0;
                for (int s = 0; s < SIMD; s++) begin
                    logic signed [XW-1:0] x;
                    logic [WBITS-1:0] w;
                    x = x_value(a_x[s*IBITS +: IBITS]);
                    w = a_w[(p*SIMD + s)*WBITS +: WBITS];
                    sum += SW'(RES_TYPE == "dsp" ? PW'(x) * PW'(w_value(w)) : lut_product(x, w));
                end
                contribution[p] = ACC_BITS'(sum);  // the low bits: the accumulator wraps
            end
        end

    // ---- accumulate
    logic [ACC_BITS-1:0] acc [PE];
    logic b_done;
    logic [NW-1:0] b_n;
    always_ff @(posedge clk) begin
        if (!rst_n) b_done <= 1'b0;
        else if (en) begin
            b_done <= a_valid && a_last;
            if (a_valid) begin
                b_n <= a_n;
                for (int p = 0; p < PE; p++) acc[p] <= (a_first ? '0 : acc[p]) + contribution[p];
            end
        end
    end

    // ---- activation: threshold count, or the accumulator itself
    function automatic logic signed [CW-1:0] value(input logic [ACC_BITS-1:0] a);
        return ACC_SIGNED ? CW'($signed(a)) : CW'($unsigned(a));
    endfunction
    logic [PE*OBITS-1:0] result;
    generate
        if (STEPS > 0) begin : thresholded
            logic signed [TBITS-1:0] thresholds [PE * NF * STEPS];
            initial $readmemh(THRESH_FILE, thresholds);
            always_comb begin
                for (int p = 0; p < PE; p++) begin
                    int count;
                    count = ACT_VAL;
                    for (int i = 0; i < STEPS; i++)
                        count += int'(value(acc[p]) >= CW'(thresholds[(p * NF + int'(b_n)) * STEPS + i]));
                    result[p*OBITS +: OBITS] = OBITS'(count);
                end
            end
        end else begin : scores
            always_comb for (int p = 0; p < PE; p++) result[p*OBITS +: OBITS] = OBITS'(acc[p]);
        end
    endgenerate

    always_ff @(posedge clk) begin
        if (!rst_n) m_tvalid <= 1'b0;
        else if (en) begin
            m_tvalid <= b_done;
            if (b_done) m_tdata <= result;
        end
    end
endmodule
