// Sliding-window generator (FINN's ConvolutionInputGenerator): image -> im2col windows.
#ifndef BNN_SLIDING_WINDOW_H
#define BNN_SLIDING_WINDOW_H

#include "bnn_common.h"

namespace bnn {

// Stream order and folding contract (FINN's ConvolutionInputGenerator, NHWC, square
// K x K kernel, stride S, no padding or dilation; CF = C/SIMD words of W bits per pixel):
//   input : per image, IH x IW pixels in row-major order, each CF words (word cf holds
//           channels cf*SIMD .. cf*SIMD + SIMD-1).
//   output: per image, OH x OW windows (OH = (IH-K)/S + 1, OW = (IW-K)/S + 1) in row-major
//           order; per window its K x K pixels in row-major order (kh, kw), each CF words:
//           FINN's im2col order (kh, kw, c), what the MVAU of a convolution reads as one
//           input vector of K*K*C elements (SIMD per word).
// A ring of K input rows is buffered; the rows a window row needs are read just before
// it is emitted, and rows below the last window are read and dropped.
template <unsigned IH, unsigned IW, unsigned CF, unsigned K, unsigned S, unsigned W>
void sliding_window(hls::stream<ap_uint<W> > &in, hls::stream<ap_uint<W> > &out, const unsigned images) {
    static_assert(K >= 1 && K <= IH && K <= IW && S >= 1, "the window must fit the image");
    const unsigned OH = (IH - K) / S + 1;
    const unsigned OW = (IW - K) / S + 1;
    ap_uint<W> rows[K][IW * CF];
    for (unsigned image = 0; image < images; image++) {
        unsigned next_row = 0;  // the next input row to read
        for (unsigned oh = 0; oh < OH; oh++) {
            for (; next_row < oh * S + K; next_row++) {
                for (unsigned i = 0; i < IW * CF; i++) {
#pragma HLS PIPELINE II = 1
                    rows[next_row % K][i] = in.read();
                }
            }
            for (unsigned i = 0; i < OW * K * K * CF; i++) {
#pragma HLS PIPELINE II = 1
                const unsigned cf = i % CF;
                const unsigned kw = (i / CF) % K;
                const unsigned kh = (i / (CF * K)) % K;
                const unsigned ow = i / (CF * K * K);
                out.write(rows[(oh * S + kh) % K][(ow * S + kw) * CF + cf]);
            }
        }
        for (; next_row < IH; next_row++) {
            for (unsigned i = 0; i < IW * CF; i++) {
#pragma HLS PIPELINE II = 1
                in.read();
            }
        }
    }
}

}  // namespace bnn

#endif
