// Instruction-count driver for the tflm_ext core kernels (CONV_2D and
// FULLY_CONNECTED) on one layer shape and one bit combination.
//
// It builds random packed tensors (fixed seed), then calls the kernel
// `iterations` times. It does no timing: run it under
//
//   valgrind --tool=callgrind --collect-atstart=no
//            --toggle-collect='tfq::ConvPerChannel(*' build/kernel_bench conv ...
//
// so only the kernel function (argument validation included) is counted.
// examples/bench_kernels.py does exactly that and divides by the MAC count.
//
// usage:
//   kernel_bench conv H W C O KH KW STRIDE same|valid WBITS ABITS OBITS ITERS
//   kernel_bench fc K O WBITS ABITS OBITS ITERS
// Prints one line "macs=<nominal MACs> checksum=<hash of the last output>".
// MACs are nominal (padding positions counted): OH*OW*O*KH*KW*C for conv,
// K*O for fully connected.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "tfq_kernels.h"

namespace {

std::mt19937 g_rng(12345);

int32_t Uniform(int32_t lo, int32_t hi) {
  return std::uniform_int_distribution<int32_t>(lo, hi)(g_rng);
}

int32_t QMinBits(int bits) { return -(1 << (bits - 1)); }
int32_t QMaxBits(int bits) { return (1 << (bits - 1)) - 1; }

std::vector<uint8_t> RandomPacked(int64_t count, int bits) {
  std::vector<int8_t> v(static_cast<size_t>(count));
  for (auto& e : v) e = static_cast<int8_t>(Uniform(QMinBits(bits), QMaxBits(bits)));
  std::vector<uint8_t> packed(tfq::PackedBytes(static_cast<uint64_t>(count), bits));
  if (tfq::Pack(v.data(), static_cast<int32_t>(count), bits, packed.data(),
                packed.size()) != tfq::kOk) {
    std::fprintf(stderr, "pack failed\n");
    std::exit(2);
  }
  return packed;
}

// TFLM's QuantizeMultiplier (double -> Q31 multiplier and shift).
void QuantizeMultiplier(double real, int32_t* multiplier, int32_t* shift) {
  int exp = 0;
  const double q = std::frexp(real, &exp);
  int64_t q_fixed = static_cast<int64_t>(std::llround(q * (1LL << 31)));
  if (q_fixed == (1LL << 31)) {
    q_fixed /= 2;
    ++exp;
  }
  *multiplier = static_cast<int32_t>(q_fixed);
  *shift = exp;
}

// Per-channel requantization that maps a typical accumulator of `depth`
// products onto the output range (as a real model's scales would).
void RandomRequant(int32_t channels, int32_t depth, int wbits, int abits,
                   int obits, std::vector<int32_t>* m, std::vector<int32_t>* s,
                   std::vector<int32_t>* bias) {
  const double typical = std::sqrt(static_cast<double>(depth)) *
                         (1 << (abits - 1)) * (1 << (wbits - 1));
  m->resize(channels);
  s->resize(channels);
  bias->resize(channels);
  for (int32_t c = 0; c < channels; ++c) {
    const double real = (1 << (obits - 1)) / typical *
                        std::exp(std::uniform_real_distribution<double>(
                            std::log(0.5), std::log(2.0))(g_rng));
    QuantizeMultiplier(real, &(*m)[c], &(*s)[c]);
    (*bias)[c] = Uniform(-static_cast<int32_t>(typical), static_cast<int32_t>(typical));
  }
}

uint32_t Checksum(const std::vector<uint8_t>& v) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (uint8_t b : v) h = (h ^ b) * 16777619u;
  return h;
}

int ParseBits(const char* s) {
  const int b = std::atoi(s);
  if (b != 2 && b != 4 && b != 8) {
    std::fprintf(stderr, "bits must be 2, 4 or 8, got %s\n", s);
    std::exit(2);
  }
  return b;
}

int Usage() {
  std::fprintf(stderr,
               "usage: kernel_bench conv H W C O KH KW STRIDE same|valid "
               "WBITS ABITS OBITS ITERS\n"
               "       kernel_bench fc K O WBITS ABITS OBITS ITERS\n");
  return 2;
}

int RunConv(int argc, char** argv) {
  if (argc != 14) return Usage();
  const int32_t h = std::atoi(argv[2]), w = std::atoi(argv[3]), c = std::atoi(argv[4]);
  const int32_t o = std::atoi(argv[5]), kh = std::atoi(argv[6]), kw = std::atoi(argv[7]);
  const int32_t stride = std::atoi(argv[8]);
  const bool same = std::strcmp(argv[9], "same") == 0;
  const int wbits = ParseBits(argv[10]);
  const int abits = ParseBits(argv[11]);
  const int obits = ParseBits(argv[12]);
  const int iters = std::atoi(argv[13]);
  if (h < 1 || w < 1 || c < 1 || o < 1 || kh < 1 || kw < 1 || stride < 1 || iters < 0) {
    return Usage();
  }
  // TFLM's ComputePaddingHeightWidth (dilation 1): the odd extra goes after.
  const int32_t oh = same ? (h + stride - 1) / stride : (h - kh) / stride + 1;
  const int32_t ow = same ? (w + stride - 1) / stride : (w - kw) / stride + 1;
  const int32_t ph = same ? std::max(0, ((oh - 1) * stride + kh - h) / 2) : 0;
  const int32_t pw = same ? std::max(0, ((ow - 1) * stride + kw - w) / 2) : 0;

  std::vector<uint8_t> x = RandomPacked(int64_t{h} * w * c, abits);
  std::vector<uint8_t> f = RandomPacked(int64_t{o} * kh * kw * c, wbits);
  std::vector<uint8_t> y(tfq::PackedBytes(uint64_t(oh) * ow * o, obits));
  std::vector<int32_t> m, s, bias;
  RandomRequant(o, kh * kw * c, wbits, abits, obits, &m, &s, &bias);
  const int32_t in_zp = Uniform(QMinBits(abits), QMaxBits(abits));
  const int32_t out_zp = Uniform(QMinBits(obits), QMaxBits(obits));

  const tfq::ConvParams p{stride, stride, 1, 1, ph, pw, -in_zp, out_zp,
                          QMinBits(obits), QMaxBits(obits)};
  const tfq::Requant rq{m.data(), s.data(), o};
  const tfq::ConstTensor in{x.data(), x.size(), abits, 4, {1, h, w, c}};
  const tfq::ConstTensor filt{f.data(), f.size(), wbits, 4, {o, kh, kw, c}};
  const tfq::Bias b{bias.data(), o};
  const tfq::Tensor out{y.data(), y.size(), obits, 4, {1, oh, ow, o}};
  for (int i = 0; i < iters; ++i) {
    const tfq::Status st = tfq::ConvPerChannel(p, rq, in, filt, b, out);
    if (st != tfq::kOk) {
      std::fprintf(stderr, "ConvPerChannel failed: %s\n", tfq::StatusString(st));
      return 1;
    }
  }
  std::printf("macs=%lld checksum=%08x\n",
              static_cast<long long>(oh) * ow * o * kh * kw * c, Checksum(y));
  return 0;
}

int RunFullyConnected(int argc, char** argv) {
  if (argc != 8) return Usage();
  const int32_t k = std::atoi(argv[2]), o = std::atoi(argv[3]);
  const int wbits = ParseBits(argv[4]);
  const int abits = ParseBits(argv[5]);
  const int obits = ParseBits(argv[6]);
  const int iters = std::atoi(argv[7]);
  if (k < 1 || o < 1 || iters < 0) return Usage();

  std::vector<uint8_t> x = RandomPacked(k, abits);
  std::vector<uint8_t> f = RandomPacked(int64_t{o} * k, wbits);
  std::vector<uint8_t> y(tfq::PackedBytes(uint64_t(o), obits));
  std::vector<int32_t> m, s, bias;
  RandomRequant(o, k, wbits, abits, obits, &m, &s, &bias);
  const int32_t in_zp = Uniform(QMinBits(abits), QMaxBits(abits));
  const int32_t out_zp = Uniform(QMinBits(obits), QMaxBits(obits));

  const tfq::FullyConnectedParams p{-in_zp, out_zp, QMinBits(obits), QMaxBits(obits)};
  const tfq::Requant rq{m.data(), s.data(), o};
  const tfq::ConstTensor in{x.data(), x.size(), abits, 2, {1, k}};
  const tfq::ConstTensor filt{f.data(), f.size(), wbits, 2, {o, k}};
  const tfq::Bias b{bias.data(), o};
  const tfq::Tensor out{y.data(), y.size(), obits, 2, {1, o}};
  for (int i = 0; i < iters; ++i) {
    const tfq::Status st = tfq::FullyConnected(p, rq, in, filt, b, out);
    if (st != tfq::kOk) {
      std::fprintf(stderr, "FullyConnected failed: %s\n", tfq::StatusString(st));
      return 1;
    }
  }
  std::printf("macs=%lld checksum=%08x\n", static_cast<long long>(k) * o, Checksum(y));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  if (std::strcmp(argv[1], "conv") == 0) return RunConv(argc, argv);
  if (std::strcmp(argv[1], "fc") == 0) return RunFullyConnected(argc, argv);
  return Usage();
}
