// bnn_fifo: AXI-Stream FIFO between two layers of the generated accelerator.
//
// Stream contract: s_* in, m_* out, one WIDTH-bit word per handshake (tvalid && tready),
// words leave in arrival order. First-word fall-through: a word written in cycle t can
// leave in cycle t+1. Holds DEPTH words; s_tready is low only while it holds DEPTH.
// Throughput: one word in and one out per cycle.
// Under RTLSIM (the Verilator testbench) it reports its largest occupancy at the end.
module bnn_fifo #(
    parameter int WIDTH = 8,
    parameter int DEPTH = 2,
    parameter int ID = 0  // its index in the testbench's FIFO report
) (
    input  logic             clk,
    input  logic             rst_n,
    input  logic             s_tvalid,
    output logic             s_tready,
    input  logic [WIDTH-1:0] s_tdata,
    output logic             m_tvalid,
    input  logic             m_tready,
    output logic [WIDTH-1:0] m_tdata
);
    localparam int AW = DEPTH > 1 ? $clog2(DEPTH) : 1;
    (* ram_style = "distributed" *) logic [WIDTH-1:0] mem [DEPTH];
    logic [AW-1:0] wr_ptr, rd_ptr;
    logic [AW:0] count;
    wire push = s_tvalid && s_tready;
    wire pop = m_tvalid && m_tready;

    assign s_tready = count != (AW+1)'(DEPTH);
    assign m_tvalid = count != 0;
    assign m_tdata = mem[rd_ptr];

    always_ff @(posedge clk) begin
        if (push) mem[wr_ptr] <= s_tdata;
        if (!rst_n) begin
            wr_ptr <= '0;
            rd_ptr <= '0;
            count <= '0;
        end else begin
            if (push) wr_ptr <= wr_ptr == AW'(DEPTH - 1) ? '0 : wr_ptr + 1'b1;
            if (pop) rd_ptr <= rd_ptr == AW'(DEPTH - 1) ? '0 : rd_ptr + 1'b1;
            count <= count + (AW+1)'(push) - (AW+1)'(pop);
        end
    end

`ifdef RTLSIM
    import "DPI-C" function void rtlsim_fifo_max(input int id, input int depth, input int occupancy);
    int max_count = 0;
    always_ff @(posedge clk) if (int'(count) > max_count) max_count <= int'(count);
    final rtlsim_fifo_max(ID, DEPTH, max_count);
`endif
endmodule
