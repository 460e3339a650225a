// Max-pool (FINN's StreamingMaxPool): the channel-wise maximum over K x K windows.
#ifndef BNN_MAXPOOL_H
#define BNN_MAXPOOL_H

#include "bnn_common.h"

namespace bnn {

// Stream order and folding contract (FINN's StreamingMaxPool, NHWC, square K x K window,
// stride K; PE channels of type T per word, CF = C/PE words per pixel):
//   input : per image, IH x IW pixels in row-major order, each CF words.
//   output: per image, OH x OW pixels (OH = IH/K, OW = IW/K, rounded down) in row-major
//           order, each CF words; element p of word cf = max over the window of channel
//           cf*PE + p (for BINARY activations: OR). Rows/columns beyond OH*K / OW*K are
//           read and dropped.
// One input word per cycle; a row of OW*CF running maxima is kept, and a window's
// result is written when its last (bottom-right) input word arrives.
template <unsigned IH, unsigned IW, unsigned CF, unsigned PE, unsigned K, typename T>
void maxpool(hls::stream<ap_uint<PE * T::width> > &in, hls::stream<ap_uint<PE * T::width> > &out,
             const unsigned images) {
    static_assert(K >= 1 && K <= IH && K <= IW, "the window must fit the image");
    const unsigned OH = IH / K;
    const unsigned OW = IW / K;
    ap_uint<PE * T::width> maxima[OW * CF];
    for (unsigned i = 0; i < images * IH * IW * CF; i++) {
#pragma HLS PIPELINE II = 1
        const unsigned cf = i % CF;
        const unsigned iw = (i / CF) % IW;
        const unsigned ih = (i / (CF * IW)) % IH;
        const ap_uint<PE * T::width> x = in.read();
        if (ih < OH * K && iw < OW * K) {
            const unsigned slot = (iw / K) * CF + cf;
            const bool first = (ih % K == 0) && (iw % K == 0);
            ap_uint<PE * T::width> m;
            for (unsigned p = 0; p < PE; p++) {
#pragma HLS UNROLL
                const T value = element<T, T::width>(x, p);
                const T held = element<T, T::width>(maxima[slot], p);
                set_element<T, T::width>(m, p, (first || value > held) ? value : held);
            }
            maxima[slot] = m;
            if (ih % K == K - 1 && iw % K == K - 1) out.write(m);
        }
    }
}

}  // namespace bnn

#endif
