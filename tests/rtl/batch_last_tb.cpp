// Testbench of hls_templates/rtl/bnn_batch_last.sv (tests/test_vivado.py): 200 random DMA
// transfers of 1..5 images of IN_WORDS words; each image's last output word comes, at random,
// some cycles after its last input word. out_tlast must be high on exactly each transfer's last image.
#include "Vbnn_batch_last.h"
#include <cstdio>
#include <cstdlib>
#include <deque>
int main() {
    Vbnn_batch_last m; srand(3);
    const int IN_WORDS = 3;
    std::deque<int> lengths; std::deque<int> pending_out; // images whose input is complete
    int errors = 0, tlasts = 0;
    auto tick = [&]() { m.clk = 0; m.eval(); m.clk = 1; m.eval(); };
    m.rst_n = 0; tick(); m.rst_n = 1;
    int transfers = 200;
    std::deque<std::pair<int,bool>> in_words; // (image end?, tlast)
    for (int t = 0; t < transfers; t++) { int n = 1 + rand() % 5; lengths.push_back(n);
        for (int i = 0; i < n; i++) for (int w = 0; w < IN_WORDS; w++) in_words.push_back({w == IN_WORDS-1, i == n-1 && w == IN_WORDS-1}); }
    std::deque<int> expect = lengths; int out_in_transfer = 0; int images_in = 0, images_out = 0, total = 0;
    for (auto n : lengths) total += n;
    for (long cyc = 0; images_out < total && cyc < 1000000; cyc++) {
        bool in_v = !in_words.empty() && rand() % 3; m.in_tvalid = in_v; m.in_tready = 1; m.in_tlast = in_v && in_words.front().second;
        bool out_v = images_out < images_in && rand() % 2; // last word of an image, one cycle after its input
        m.out_tvalid = out_v; m.out_tready = 1; m.image_last = out_v; m.eval();
        if (out_v) { bool want = out_in_transfer == expect.front() - 1; if (m.out_tlast != want) errors++; tlasts += m.out_tlast;
            if (want) { expect.pop_front(); out_in_transfer = 0; } else out_in_transfer++; images_out++; }
        if (in_v) { if (in_words.front().first) images_in++; in_words.pop_front(); }
        tick();
    }
    printf("images %d transfers %d tlasts %d errors %d\n", images_out, transfers, tlasts, errors);
    return errors != 0 || tlasts != transfers;
}
