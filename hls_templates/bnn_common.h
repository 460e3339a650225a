// Shared definitions of the bnn-flow streaming kernels (header-only, synthesizable).
#ifndef BNN_COMMON_H
#define BNN_COMMON_H

// Streams of wide layers exceed ap_int's default 1024 bits (LFC: a 1026-bit word);
// Vitis HLS allows up to 4096. Every header defines it before its first ap_int.h.
#ifndef AP_INT_MAX_W
#define AP_INT_MAX_W 4096
#endif
#include <ap_int.h>
#include <hls_stream.h>

// AXI4-Stream word with TLAST: Vitis HLS' own ap_axiu where its header exists
// (synthesis); the same field layout for C simulation against the open
// ap_int.h/hls_stream.h, which ship without ap_axi_sdata.h.
#if defined(__has_include)
#if __has_include(<ap_axi_sdata.h>)
#include <ap_axi_sdata.h>
#define BNN_HAVE_AP_AXI_SDATA 1
#endif
#endif
#ifndef BNN_HAVE_AP_AXI_SDATA
template <int D, int U, int TI, int TD>
struct ap_axiu {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<1> last;
};
#endif

namespace bnn {

// Bits needed to hold the unsigned value n (at least 1).
constexpr unsigned bits_for(unsigned long long n) { return n < 2 ? 1 : 1 + bits_for(n >> 1); }

// Element e (width W) of a packed word: element 0 sits in the least significant bits,
// as FINN packs a folded innermost dimension (finnpy_to_packed_bytearray, reverse_inner).
template <typename T, unsigned W, typename Word>
inline T element(const Word &word, unsigned e) {
#pragma HLS INLINE
    T value;
    value.range(W - 1, 0) = word.range(e * W + W - 1, e * W);
    return value;
}

template <typename T, unsigned W, typename Word>
inline void set_element(Word &word, unsigned e, const T &value) {
#pragma HLS INLINE
    word.range(e * W + W - 1, e * W) = value.range(W - 1, 0);
}

}  // namespace bnn

#endif
