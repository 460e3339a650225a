// Label select (FINN's LabelSelect / ONNX TopK): the indices of the K largest inputs.
#ifndef BNN_LABEL_SELECT_H
#define BNN_LABEL_SELECT_H

#include "bnn_common.h"

namespace bnn {

// The smallest value of an ap_(u)int type.
template <typename T>
inline T lowest() {
#pragma HLS INLINE
    T value = 0;
    if (T(-1) < T(0)) value[T::width - 1] = 1;
    return value;
}

// Stream order and folding contract (FINN's LabelSelect):
//   input : per vector, L/PE words of PE values; word nf holds labels nf*PE + p.
//   output: per vector, K words of one TO each: the labels of the K largest values,
//           largest first; equal values: lower label first (ONNX TopK, as FINN
//           executes LabelSelect in Python). As finn-hlslib's LabelSelect_Batch, the
//           K slots start as (lowest value of TI, label 0) and a value enters only
//           when strictly greater, so slots no value above the minimum reached keep label 0.
// The K best are kept sorted in registers; each value is inserted by K parallel
// compares and a shift (unrolled), so one word of PE values is consumed per cycle.
// VECTORS label vectors per image.
template <unsigned L, unsigned PE, unsigned K, typename TI, typename TO, unsigned VECTORS>
void label_select(hls::stream<ap_uint<PE * TI::width> > &in, hls::stream<ap_uint<TO::width> > &out,
                  const unsigned images) {
    static_assert(L % PE == 0, "L must be a multiple of PE");
    static_assert(K >= 1 && K <= L, "K must be in [1, L]");
    const unsigned NF = L / PE;
    typedef ap_uint<bits_for(L)> label_t;
    for (unsigned v = 0; v < images * VECTORS; v++) {
        TI best_value[K];
        label_t best_label[K];
#pragma HLS ARRAY_PARTITION variable = best_value complete
#pragma HLS ARRAY_PARTITION variable = best_label complete
        for (unsigned k = 0; k < K; k++) {
#pragma HLS UNROLL
            best_value[k] = lowest<TI>();
            best_label[k] = 0;
        }
        for (unsigned nf = 0; nf < NF; nf++) {
#pragma HLS PIPELINE II = 1
            const ap_uint<PE * TI::width> x = in.read();
            for (unsigned p = 0; p < PE; p++) {
#pragma HLS UNROLL
                const TI value = element<TI, TI::width>(x, p);
                const label_t label = nf * PE + p;
                // the list is sorted, so `greater` is false...false true...true;
                // the value goes to the first true slot, the slots after it shift down
                bool greater[K];
                for (unsigned k = 0; k < K; k++) {
#pragma HLS UNROLL
                    greater[k] = value > best_value[k];
                }
                for (unsigned k = K; k-- > 0;) {
#pragma HLS UNROLL
                    if (greater[k]) {
                        const bool insert_here = (k == 0) || !greater[k - 1];
                        best_value[k] = insert_here ? value : best_value[k == 0 ? 0 : k - 1];
                        best_label[k] = insert_here ? label : best_label[k == 0 ? 0 : k - 1];
                    }
                }
            }
        }
        for (unsigned k = 0; k < K; k++) {
#pragma HLS PIPELINE II = 1
            out.write(ap_uint<TO::width>(best_label[k]));
        }
    }
}

}  // namespace bnn

#endif
