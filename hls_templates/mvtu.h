// Matrix-vector-threshold unit (FINN's MVAU): out = activation(W x) for every input vector.
#ifndef BNN_MVTU_H
#define BNN_MVTU_H

#include "activation.h"
#include "bnn_common.h"

namespace bnn {

// How one SIMD word of inputs meets one SIMD word of weights (dot) and, for the
// lane-by-lane modes, how one lane multiplies (mul).
//
// XNOR-popcount (FINN binaryXnorMode): BINARY input and weight bits stand for
// bipolar -1/+1; the product is 1 when they are equal, so the accumulator is
// the popcount of XNOR, in [0, MW], as qonnx' xnorpopcountmatmul.
struct XnorPopcount {
    static const unsigned IBITS = 1;
    static const unsigned WBITS = 1;
    template <unsigned SIMD>
    static ap_uint<bits_for(SIMD)> dot(const ap_uint<SIMD> &x, const ap_uint<SIMD> &w) {
#pragma HLS INLINE
        const ap_uint<SIMD> agree = ~(x ^ w);
        ap_uint<bits_for(SIMD)> count = 0;
        for (unsigned s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
            count += agree[s];
        }
        return count;
    }
};

// The dot product of one SIMD word of inputs with one of weights, lane by lane.
template <unsigned SIMD, typename Mode>
struct LaneDot {
    template <typename TProduct>
    static TProduct sum(const ap_uint<SIMD * Mode::IBITS> &x, const ap_uint<SIMD * Mode::WBITS> &w) {
#pragma HLS INLINE
        TProduct total = 0;
        for (unsigned s = 0; s < SIMD; s++) {
#pragma HLS UNROLL
            total += Mode::mul(x.range(s * Mode::IBITS + Mode::IBITS - 1, s * Mode::IBITS),
                               w.range(s * Mode::WBITS + Mode::WBITS - 1, s * Mode::WBITS));
        }
        return total;
    }
};

// Non-binary input TI x bipolar weight (weight bit 1 = +1, 0 = -1, as FINN's
// get_hw_compatible_weight_tensor stores BIPOLAR weights): +x or -x.
template <typename TI>
struct BipolarWeights {
    static const unsigned IBITS = TI::width;
    static const unsigned WBITS = 1;
    static ap_int<TI::width + 2> mul(const ap_uint<IBITS> &xbits, const ap_uint<1> &w) {
#pragma HLS INLINE
        TI x;
        x.range(IBITS - 1, 0) = xbits;
        const ap_int<TI::width + 2> value = x;
        return w ? value : ap_int<TI::width + 2>(-value);
    }
    template <unsigned SIMD>
    static ap_int<TI::width + 2 + bits_for(SIMD)> dot(const ap_uint<SIMD * IBITS> &x, const ap_uint<SIMD> &w) {
#pragma HLS INLINE
        return LaneDot<SIMD, BipolarWeights<TI> >::template sum<ap_int<TI::width + 2 + bits_for(SIMD)> >(x, w);
    }
};

// Integer input TI x integer weight TW.
template <typename TI, typename TW>
struct IntegerWeights {
    static const unsigned IBITS = TI::width;
    static const unsigned WBITS = TW::width;
    static ap_int<TI::width + TW::width + 1> mul(const ap_uint<IBITS> &xbits, const ap_uint<WBITS> &wbits) {
#pragma HLS INLINE
        TI x;
        TW w;
        x.range(IBITS - 1, 0) = xbits;
        w.range(WBITS - 1, 0) = wbits;
        return ap_int<TI::width + TW::width + 1>(x) * ap_int<TI::width + TW::width + 1>(w);
    }
    template <unsigned SIMD>
    static ap_int<TI::width + TW::width + 1 + bits_for(SIMD)> dot(const ap_uint<SIMD * IBITS> &x,
                                                                    const ap_uint<SIMD * WBITS> &w) {
#pragma HLS INLINE
        return LaneDot<SIMD, IntegerWeights<TI, TW> >::template sum<ap_int<TI::width + TW::width + 1 + bits_for(SIMD)> >(x, w);
    }
};

// Stream order and folding contract (FINN's MVAU):
//   input : per vector, SF = MW/SIMD words of SIMD elements; word sf holds input
//           elements sf*SIMD + s, s = 0..SIMD-1 (element s in bits [s*IBITS, (s+1)*IBITS)).
//   output: per vector, NF = MH/PE words of PE elements; word nf holds output
//           channels nf*PE + p, p = 0..PE-1 (element p in bits [p*OBITS, ...)).
//   weights[p][nf*SF + sf]: SIMD weights of channel nf*PE + p for inputs sf*SIMD + s
//           (FINN's get_hw_compatible_weight_tensor, PE x WMEM x SIMD, SIMD packed LSB first).
// The input vector is read once (during nf = 0) and replayed from a buffer for nf > 0.
// One loop iteration per (vector, nf, sf): NF*SF cycles per vector at II=1;
// VECTORS vectors per image (1 for a fully-connected layer, OH*OW for a convolution).
// TA must hold every accumulator value; TO is the output element type.
template <unsigned MW, unsigned MH, unsigned SIMD, unsigned PE, typename Mode, typename TA, typename TO,
          unsigned VECTORS, typename TActivation>
void mvtu(hls::stream<ap_uint<SIMD * Mode::IBITS> > &in, hls::stream<ap_uint<PE * TO::width> > &out,
          const ap_uint<SIMD * Mode::WBITS> weights[PE][(MH / PE) * (MW / SIMD)], const TActivation &activation,
          const unsigned images) {
    static_assert(MW % SIMD == 0, "MW must be a multiple of SIMD");
    static_assert(MH % PE == 0, "MH must be a multiple of PE");
    const unsigned SF = MW / SIMD;
    const unsigned NF = MH / PE;
#pragma HLS ARRAY_PARTITION variable = weights complete dim = 1

    ap_uint<SIMD * Mode::IBITS> input_buffer[SF];
    TA acc[PE];
#pragma HLS ARRAY_PARTITION variable = acc complete

    unsigned nf = 0;
    unsigned sf = 0;
    for (unsigned i = 0; i < images * VECTORS * NF * SF; i++) {
#pragma HLS PIPELINE II = 1
        ap_uint<SIMD * Mode::IBITS> x;
        if (nf == 0) {
            x = in.read();
            input_buffer[sf] = x;
        } else {
            x = input_buffer[sf];
        }
        for (unsigned p = 0; p < PE; p++) {
#pragma HLS UNROLL
            const ap_uint<SIMD * Mode::WBITS> w = weights[p][nf * SF + sf];
            // accumulate in TA, wrapping as the hardware's TA-wide adder does
            acc[p] = ((sf == 0) ? TA(0) : acc[p]) + Mode::template dot<SIMD>(x, w);
        }
        if (sf == SF - 1) {
            ap_uint<PE * TO::width> y;
            for (unsigned p = 0; p < PE; p++) {
#pragma HLS UNROLL
                set_element<TO, TO::width>(y, p, activation.activate(nf, p, acc[p]));
            }
            out.write(y);
            sf = 0;
            nf = (nf == NF - 1) ? 0 : nf + 1;
        } else {
            sf++;
        }
    }
}

}  // namespace bnn

#endif
