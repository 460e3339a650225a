// Threshold unit (FINN's Thresholding): out[c] = ACTVAL + #{s : in[c] >= thr[c][s]}.
#ifndef BNN_THRESHOLDING_H
#define BNN_THRESHOLDING_H

#include "activation.h"
#include "bnn_common.h"

namespace bnn {

// Stream order and folding contract (FINN's Thresholding):
//   input/output: per pixel, NF = C/PE words of PE elements; word nf holds channels
//           nf*PE + p, p = 0..PE-1 (element p in the least significant bits first).
//   thresholds: Thresholds<C/PE, PE, STEPS, ...>, channel nf*PE + p at thr[p][nf]
//           (FINN's get_hw_compatible_threshold_tensor, PE x TMEM x steps).
// One word in, one word out per cycle at II=1; PIXELS spatial positions per image.
template <unsigned C, unsigned PE, typename TI, typename TO, unsigned PIXELS, typename TActivation>
void thresholding(hls::stream<ap_uint<PE * TI::width> > &in, hls::stream<ap_uint<PE * TO::width> > &out,
                  const TActivation &activation, const unsigned images) {
    static_assert(C % PE == 0, "C must be a multiple of PE");
    const unsigned NF = C / PE;
    unsigned nf = 0;
    for (unsigned i = 0; i < images * PIXELS * NF; i++) {
#pragma HLS PIPELINE II = 1
        const ap_uint<PE * TI::width> x = in.read();
        ap_uint<PE * TO::width> y;
        for (unsigned p = 0; p < PE; p++) {
#pragma HLS UNROLL
            set_element<TO, TO::width>(y, p, activation.activate(nf, p, element<TI, TI::width>(x, p)));
        }
        out.write(y);
        nf = (nf == NF - 1) ? 0 : nf + 1;
    }
}

}  // namespace bnn

#endif
