// Stream data-width converter and the AXI-stream adapters of the network top.
#ifndef BNN_DWC_H
#define BNN_DWC_H

#include "bnn_common.h"

namespace bnn {

// Stream order and folding contract (FINN's StreamingDataWidthConverter): the bits
// of each image are a little-endian bit string (word 0 first, least significant
// bit first); it is re-cut into OW-bit words. IN_WORDS x IW must be a multiple of
// OW. The buffer holds up to IW + OW bits; each cycle it writes an output word when
// it holds one and, in the same cycle, reads an input word when that word then fits,
// so an image takes max(IN_WORDS, OUT_WORDS) cycles at II=1 (plus one to fill the
// buffer at the start of a call): the rate flow.cycles counts. Any IW/OW ratio works.
template <unsigned IW, unsigned OW, unsigned IN_WORDS>
void dwc(hls::stream<ap_uint<IW> > &in, hls::stream<ap_uint<OW> > &out, const unsigned images) {
    static_assert((IN_WORDS * IW) % OW == 0, "a vector must fill whole output words");
    const unsigned OUT_WORDS = IN_WORDS * IW / OW;
    const unsigned total_in = images * IN_WORDS, total_out = images * OUT_WORDS;
    ap_uint<IW + OW> buffer = 0;
    ap_uint<bits_for(IW + OW)> held = 0;
    unsigned read = 0;
    for (unsigned written = 0; written < total_out;) {
#pragma HLS PIPELINE II = 1
        ap_uint<IW + OW> kept = buffer;
        ap_uint<bits_for(IW + OW)> left = held;
        if (held >= OW) {
            out.write(ap_uint<OW>(buffer.range(OW - 1, 0)));
            kept = buffer >> OW;
            left = held - OW;
            written++;
        }
        if (read < total_in && left <= OW) {
            ap_uint<IW + OW> word = in.read();
            kept |= word << left;
            left += IW;
            read++;
        }
        buffer = kept;
        held = left;
    }
}

// Width change of every word without re-cutting: drops the padding bits of a
// byte-aligned (DMA) word, or adds zero padding (OW > IW). WORDS words per image.
template <unsigned IW, unsigned OW, unsigned WORDS>
void repad(hls::stream<ap_uint<IW> > &in, hls::stream<ap_uint<OW> > &out, const unsigned images) {
    for (unsigned i = 0; i < images * WORDS; i++) {
#pragma HLS PIPELINE II = 1
        out.write(ap_uint<OW>(in.read()));
    }
}

// AXI4-Stream -> internal stream (TDATA only); WORDS words per image.
template <unsigned W, unsigned WORDS>
void axis_to_stream(hls::stream<ap_axiu<W, 0, 0, 0> > &in, hls::stream<ap_uint<W> > &out, const unsigned images) {
    for (unsigned i = 0; i < images * WORDS; i++) {
#pragma HLS PIPELINE II = 1
        out.write(in.read().data);
    }
}

// Internal stream -> AXI4-Stream with TLAST on the last word of the transfer,
// as the AXI DMA's S2MM channel needs to end a transfer; WORDS words per image.
template <unsigned W, unsigned WORDS>
void stream_to_axis(hls::stream<ap_uint<W> > &in, hls::stream<ap_axiu<W, 0, 0, 0> > &out, const unsigned images) {
    const unsigned words = images * WORDS;
    for (unsigned i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
        ap_axiu<W, 0, 0, 0> word;
        word.data = in.read();
        word.keep = -1;
        word.strb = -1;
        word.last = (i == words - 1);
        out.write(word);
    }
}

}  // namespace bnn

#endif
