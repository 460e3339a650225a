// rtlsim_tb: Verilator testbench of a generated accelerator top (flow.rtlsim), never synthesized.
//
// Streams packed images (FINN's input bytes) into s_axis_0 and collects m_axis_0, with
// random stalls on both ends: s_axis_0_tvalid is held low with probability IN_STALL and
// m_axis_0_tready with probability OUT_STALL each cycle (xorshift, fixed seed).
// Writes OUT_DIR/output.bin (the output bytes), OUT_DIR/trace_<stream>.bin (every word
// of every stream, ceil(its bits / 8) little-endian bytes each, from the top's DPI trace),
// OUT_DIR/stats.txt (cycles, per-image input start and output end cycles, FIFO maxima)
// and, when no output word leaves for BOUND cycles, OUT_DIR/deadlock.txt (each stream's
// valid, ready and how long it has been blocked) with exit status 3.
// After the last output word it keeps clocking until every stream has carried its words
// of every image (a layer may still read input no output depends on, e.g. the rows a
// strided window skips), or no stream moves for BOUND cycles.
//
// Compiled with -DTOP_HEADER='"Vtop.h"' -DTOP_CLASS=Vtop; its arguments:
//   input.bin out_dir images in_words in_word_bytes out_words out_word_bytes
//   in_stall out_stall seed bound streams (bits:words per image of each, comma-separated)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "svdpi.h"
#include "verilated.h"
#include TOP_HEADER

namespace {

struct Trace {
    std::vector<uint8_t> bytes;
};
std::map<int, Trace> traces;
std::vector<int> stream_bytes;           // bytes a traced word of each stream takes
std::vector<long> stream_words;          // words per image of each stream
std::vector<long> stream_count(64, 0);   // words each stream has carried
uint64_t last_transfer = 0;
std::map<int, std::pair<int, int>> fifo_max;  // id -> (depth, occupancy)
std::vector<uint64_t> blocked_since(64, 0);   // cycle since which valid && !ready, 0 = not blocked
std::vector<int> last_valid(64, 0), last_ready(64, 0);
int streams = 0;
uint64_t cycle = 0;

uint64_t rng_state = 88172645463325252ull;
double uniform() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (rng_state >> 11) * (1.0 / 9007199254740992.0);
}

template <typename T>
void set_word(T &port, const uint8_t *bytes, int n) {
    uint64_t value = 0;
    for (int i = n - 1; i >= 0; i--) value = (value << 8) | bytes[i];
    port = static_cast<T>(value);
}
template <std::size_t N>
void set_word(VlWide<N> &port, const uint8_t *bytes, int n) {
    for (std::size_t w = 0; w < N; w++) port[w] = 0;
    for (int i = 0; i < n; i++) port[i / 4] |= static_cast<uint32_t>(bytes[i]) << (8 * (i % 4));
}
template <typename T>
void get_word(const T &port, uint8_t *bytes, int n) {
    uint64_t value = port;
    for (int i = 0; i < n; i++) bytes[i] = (value >> (8 * i)) & 0xff;
}
template <std::size_t N>
void get_word(const VlWide<N> &port, uint8_t *bytes, int n) {
    for (int i = 0; i < n; i++) bytes[i] = (port[i / 4] >> (8 * (i % 4))) & 0xff;
}

bool bit_of(const svBitVecVal *v, int i) { return (v[i / 32] >> (i % 32)) & 1; }

}  // namespace

extern "C" void rtlsim_word(int stream, const svBitVecVal *data) {
    std::vector<uint8_t> &out = traces[stream].bytes;
    for (int i = 0; i < stream_bytes[stream]; i++) out.push_back((data[i / 4] >> (8 * (i % 4))) & 0xff);
    stream_count[stream]++;
    last_transfer = cycle;
}

extern "C" void rtlsim_cycle(const svBitVecVal *valid, const svBitVecVal *ready) {
    for (int s = 0; s < streams; s++) {
        last_valid[s] = bit_of(valid, s);
        last_ready[s] = bit_of(ready, s);
        bool blocked = last_valid[s] && !last_ready[s];
        if (!blocked) blocked_since[s] = 0;
        else if (!blocked_since[s]) blocked_since[s] = cycle;
    }
}

extern "C" void rtlsim_fifo_max(int id, int depth, int occupancy) { fifo_max[id] = {depth, occupancy}; }

int main(int argc, char **argv) {
    if (argc != 13) {
        std::fprintf(stderr, "usage: %s input.bin out_dir images in_words in_word_bytes out_words out_word_bytes "
                             "in_stall out_stall seed bound bits:words,bits:words,...\n", argv[0]);
        return 2;
    }
    const std::string input_path = argv[1], out_dir = argv[2];
    const long images = std::atol(argv[3]);
    const long in_words = std::atol(argv[4]), in_word_bytes = std::atol(argv[5]);
    const long out_words = std::atol(argv[6]), out_word_bytes = std::atol(argv[7]);
    const double in_stall = std::atof(argv[8]), out_stall = std::atof(argv[9]);
    rng_state ^= std::strtoull(argv[10], nullptr, 10) * 0x9E3779B97F4A7C15ull;
    const uint64_t bound = std::strtoull(argv[11], nullptr, 10);
    for (const char *p = argv[12]; *p;) {
        int bits = 0;
        long words = 0;
        std::sscanf(p, "%d:%ld", &bits, &words);
        stream_bytes.push_back((bits + 7) / 8);
        stream_words.push_back(words);
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }
    streams = static_cast<int>(stream_bytes.size());

    std::vector<uint8_t> input(images * in_words * in_word_bytes);
    FILE *f = std::fopen(input_path.c_str(), "rb");
    if (!f || std::fread(input.data(), 1, input.size(), f) != input.size()) {
        std::fprintf(stderr, "cannot read %zu bytes from %s\n", input.size(), input_path.c_str());
        return 2;
    }
    std::fclose(f);

    auto context = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<TOP_CLASS>(context.get());
    top->ap_clk = 0;
    top->ap_rst_n = 0;
    top->s_axis_0_tvalid = 0;
    top->m_axis_0_tready = 0;
    for (int i = 0; i < 8; i++) {
        top->ap_clk = 1; top->eval();
        top->ap_clk = 0; top->eval();
    }
    top->ap_rst_n = 1;

    std::vector<uint8_t> output(images * out_words * out_word_bytes);
    std::vector<uint64_t> in_start(images, 0), out_end(images, 0);
    const long in_total = images * in_words, out_total = images * out_words;
    long sent = 0, received = 0;
    uint64_t last_output = 0;
    bool deadlock = false;
    auto streams_done = [&]() {
        for (int s = 0; s < streams; s++)
            if (stream_count[s] < images * stream_words[s]) return false;
        return true;
    };
    while (received < out_total || !streams_done()) {
        if (received == out_total && cycle - last_transfer > bound) break;  // a stream stopped short: the layer check shows it
        cycle++;
        bool offer = sent < in_total && uniform() >= in_stall;
        top->s_axis_0_tvalid = offer;
        if (offer) set_word(top->s_axis_0_tdata, &input[sent * in_word_bytes], in_word_bytes);
        top->m_axis_0_tready = uniform() >= out_stall;
        top->eval();
        bool took = offer && top->s_axis_0_tready;
        bool gave = top->m_axis_0_tvalid && top->m_axis_0_tready;
        if (gave) get_word(top->m_axis_0_tdata, &output[received * out_word_bytes], out_word_bytes);
        top->ap_clk = 1; top->eval();
        top->ap_clk = 0; top->eval();
        if (took) {
            if (sent % in_words == 0) in_start[sent / in_words] = cycle;
            sent++;
        }
        if (gave) {
            received++;
            if (received % out_words == 0) out_end[received / out_words - 1] = cycle;
            last_output = cycle;
        }
        if (received < out_total && cycle - last_output > bound) {
            deadlock = true;
            break;
        }
    }
    top->final();

    f = std::fopen((out_dir + "/output.bin").c_str(), "wb");
    std::fwrite(output.data(), 1, received * out_word_bytes, f);
    std::fclose(f);
    for (auto &entry : traces) {
        f = std::fopen((out_dir + "/trace_" + std::to_string(entry.first) + ".bin").c_str(), "wb");
        std::fwrite(entry.second.bytes.data(), 1, entry.second.bytes.size(), f);
        std::fclose(f);
    }
    f = std::fopen((out_dir + "/stats.txt").c_str(), "w");
    std::fprintf(f, "cycles %llu\nsent %ld\nreceived %ld\n", (unsigned long long)cycle, sent, received);
    for (long i = 0; i < images; i++)
        std::fprintf(f, "image %ld %llu %llu\n", i, (unsigned long long)in_start[i], (unsigned long long)out_end[i]);
    for (auto &entry : fifo_max) std::fprintf(f, "fifo %d %d %d\n", entry.first, entry.second.first, entry.second.second);
    std::fclose(f);
    if (deadlock) {
        f = std::fopen((out_dir + "/deadlock.txt").c_str(), "w");
        for (int s = 0; s < streams; s++)
            std::fprintf(f, "stream %d %d %d %llu\n", s, last_valid[s], last_ready[s],
                         (unsigned long long)(blocked_since[s] ? cycle - blocked_since[s] : 0));
        std::fclose(f);
        return 3;
    }
    return 0;
}
