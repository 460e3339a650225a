// C-simulation harness (testbench only, not synthesized): packed DMA bytes in a
// file -> the network top -> packed DMA bytes in a file.
#ifndef BNN_TESTBENCH_H
#define BNN_TESTBENCH_H

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "bnn_common.h"

namespace bnn {

template <unsigned IW, unsigned OW>
using top_function = void (*)(hls::stream<ap_axiu<IW, 0, 0, 0> > &, hls::stream<ap_axiu<OW, 0, 0, 0> > &, unsigned);

// Runs `top` on every image of `in_path` (in_bytes each, back to back, as the input
// DMA reads them), `batch` images per call, and writes out_bytes per image to
// `out_path`. Returns non-zero (with a message) when the top reads or writes
// a different number of words than the stream contract says, or TLAST is wrong.
template <unsigned IW, unsigned OW>
int run_packed_file(top_function<IW, OW> top, const char *in_path, const char *out_path, unsigned in_bytes,
                    unsigned out_bytes, unsigned batch) {
    std::ifstream in_file(in_path, std::ios::binary);
    if (!in_file) {
        std::cerr << "error: cannot read " << in_path << std::endl;
        return 2;
    }
    const std::vector<unsigned char> input((std::istreambuf_iterator<char>(in_file)), std::istreambuf_iterator<char>());
    if (input.size() % in_bytes != 0) {
        std::cerr << "error: " << in_path << " holds " << input.size() << " bytes, not a multiple of " << in_bytes
                  << " bytes per image" << std::endl;
        return 2;
    }
    const unsigned images = input.size() / in_bytes;
    std::vector<unsigned char> output;
    output.reserve((size_t)images * out_bytes);
    for (unsigned first = 0; first < images; first += batch) {
        const unsigned n = (images - first < batch) ? images - first : batch;
        hls::stream<ap_axiu<IW, 0, 0, 0> > in("tb_in");
        hls::stream<ap_axiu<OW, 0, 0, 0> > out("tb_out");
        const unsigned in_words = n * in_bytes / (IW / 8);
        for (unsigned w = 0; w < in_words; w++) {
            ap_axiu<IW, 0, 0, 0> word;
            for (unsigned b = 0; b < IW / 8; b++)
                word.data.range(8 * b + 7, 8 * b) = input[(size_t)first * in_bytes + (size_t)w * (IW / 8) + b];
            word.keep = -1;
            word.strb = -1;
            word.last = (w == in_words - 1);
            in.write(word);
        }
        top(in, out, n);
        if (!in.empty()) {
            std::cerr << "error: the top left input words unread (images " << first << ".." << first + n - 1 << ")"
                      << std::endl;
            return 1;
        }
        const unsigned out_words = n * out_bytes / (OW / 8);
        for (unsigned w = 0; w < out_words; w++) {
            if (out.empty()) {
                std::cerr << "error: the top wrote " << w << " output words, expected " << out_words << std::endl;
                return 1;
            }
            const ap_axiu<OW, 0, 0, 0> word = out.read();
            if (word.last != (w == out_words - 1)) {
                std::cerr << "error: TLAST " << (int)word.last << " on output word " << w << " of " << out_words
                          << std::endl;
                return 1;
            }
            for (unsigned b = 0; b < OW / 8; b++) output.push_back(word.data.range(8 * b + 7, 8 * b).to_uint());
        }
        if (!out.empty()) {
            std::cerr << "error: the top wrote more than " << out_words << " output words" << std::endl;
            return 1;
        }
    }
    std::ofstream out_file(out_path, std::ios::binary);
    out_file.write(reinterpret_cast<const char *>(output.data()), output.size());
    if (!out_file) {
        std::cerr << "error: cannot write " << out_path << std::endl;
        return 2;
    }
    return 0;
}

}  // namespace bnn

#endif
