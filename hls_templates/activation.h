// Activations applied per output channel by the matrix-vector and threshold units.
#ifndef BNN_ACTIVATION_H
#define BNN_ACTIVATION_H

#include "bnn_common.h"

namespace bnn {

// No activation: the accumulator itself is the output (FINN's noActivation=1).
template <typename TO>
struct PassThrough {
    template <typename TA>
    TO activate(unsigned nf, unsigned pe, const TA &acc) const {
#pragma HLS INLINE
        return TO(acc);
    }
};

// Multi-threshold activation (FINN MultiThreshold): ACTVAL + #{s : acc >= thr[pe][nf][s]}.
// Memory layout as FINN's get_hw_compatible_threshold_tensor: channel c = nf*PE + pe
// lives at thr[pe][nf], STEPS thresholds each, ascending.
template <unsigned TMEM, unsigned PE, unsigned STEPS, typename TT, typename TO, int ACTVAL>
struct Thresholds {
    TT thr[PE][TMEM][STEPS];

    template <typename TA>
    TO activate(unsigned nf, unsigned pe, const TA &acc) const {
#pragma HLS INLINE
        ap_int<bits_for(STEPS) + 1> count = 0;
        for (unsigned s = 0; s < STEPS; s++) {
#pragma HLS UNROLL
            count += (acc >= thr[pe][nf][s]) ? 1 : 0;
        }
        return TO(count + ACTVAL);
    }
};

}  // namespace bnn

#endif
