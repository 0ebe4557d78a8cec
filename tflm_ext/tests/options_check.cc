// Runs the glue's ParseOptions (tflm/tfq_options.h) on custom-options buffers
// given as one hex string per line on stdin and prints, per line, "bad" or
// "ok" followed by the 14 fields in the README's order, has_act_min,
// has_act_max, the three shapes as rank + 4 dims, pad_h, pad_w and alpha_bits. Built by
// `make -C tflm_ext options-check` (ASan + UBSan); tests/test_tflm_ext_build.py
// compares its answers with the shim's reader.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "../tflm/tfq_options.h"

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::vector<char> bytes;
    for (size_t i = 0; i + 1 < line.size(); i += 2) {
      bytes.push_back(static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16)));
    }
    tfq_tflm::Options opt;
    tfq_tflm::ParseOptions(bytes.empty() ? nullptr : bytes.data(), bytes.size(), &opt);
    if (opt.bad_options) {
      std::printf("bad\n");
      continue;
    }
    std::printf("ok %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d", opt.input_bits,
                opt.weight_bits, opt.output_bits, opt.act_min, opt.act_max, opt.padding,
                opt.stride_h, opt.stride_w, opt.filter_h, opt.filter_w, opt.dilation_h,
                opt.dilation_w, opt.depth_multiplier, opt.input2_bits, opt.has_act_min,
                opt.has_act_max);
    for (const tfq_tflm::Dims* dims : {&opt.input_shape, &opt.input2_shape, &opt.output_shape}) {
      std::printf(" %d %d %d %d %d", dims->rank, dims->d[0], dims->d[1], dims->d[2], dims->d[3]);
    }
    std::printf(" %d %d %d\n", opt.pad_h, opt.pad_w, opt.alpha_bits);
  }
  return 0;
}
