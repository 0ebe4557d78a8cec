// Standalone test driver for the tflm_ext core kernels (no TFLM, no Python).
//
// 1. Random cases on all bit combinations: the core kernels on packed buffers
//    against a plain scalar implementation written here on unpacked ints
//    (its own packing and its own formulation of the rounding arithmetic).
// 2. Malformed shapes/params: must return an error status. Every buffer is a
//    heap allocation of exactly the size its (claimed) shape needs, so under
//    AddressSanitizer any read or write past it is a finding.
// 3. Fuzz: random, often invalid, parameter sets; whatever the status, no
//    sanitizer finding, and an OK status must agree with the scalar reference.
//
// Built and run by `make -C tflm_ext asan-test` with
// -fsanitize=address,undefined -fno-sanitize-recover=all; prints
// "N passed, M failed" and exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "tfq_kernels.h"

namespace {

int g_passed = 0;
int g_failed = 0;

void Expect(bool ok, const char* what, int case_id) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    if (g_failed <= 20) std::printf("FAIL: %s (case %d)\n", what, case_id);
  }
}

// ---- the obviously-correct scalar reference ---------------------------------

int32_t RefQMin(int bits) { return -(1 << (bits - 1)); }
int32_t RefQMax(int bits) { return (1 << (bits - 1)) - 1; }

// round(a * b / 2^31), ties toward +infinity, saturating (gemmlowp SRDHM).
int32_t RefHighMul(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const int64_t p = static_cast<int64_t>(a) * b;
  return static_cast<int32_t>((p + (int64_t{1} << 30)) >> 31);  // floor
}

// x / 2^e rounded to nearest, ties away from zero.
int32_t RefRoundShift(int32_t x, int e) {
  if (e == 0) return x;
  const int64_t half = int64_t{1} << (e - 1);
  const int64_t v = x;
  return static_cast<int32_t>(v >= 0 ? (v + half) >> e : -((-v + half) >> e));
}

int32_t RefRequant(int32_t x, int32_t m, int shift) {
  const int32_t shifted = static_cast<int32_t>(
      static_cast<uint32_t>(x) << (shift > 0 ? shift : 0));
  return RefRoundShift(RefHighMul(shifted, m), shift > 0 ? 0 : -shift);
}

int32_t RefClamp(int64_t v, int32_t lo, int32_t hi) {
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

std::vector<uint8_t> RefPack(const std::vector<int>& v, int bits) {
  const size_t per = 8 / bits;
  std::vector<uint8_t> out((v.size() + per - 1) / per, 0);
  for (size_t i = 0; i < v.size(); ++i) {
    const unsigned field = static_cast<unsigned>(v[i]) & ((1u << bits) - 1u);
    out[i / per] = static_cast<uint8_t>(out[i / per] | (field << (bits * (i % per))));
  }
  return out;
}

std::vector<int> RefUnpack(const std::vector<uint8_t>& buf, size_t count,
                           int bits) {
  const size_t per = 8 / bits;
  std::vector<int> out(count);
  for (size_t i = 0; i < count; ++i) {
    int field = (buf[i / per] >> (bits * (i % per))) & ((1 << bits) - 1);
    if (field >= (1 << (bits - 1))) field -= (1 << bits);
    out[i] = field;
  }
  return out;
}

struct ConvCase {
  int n, h, w, c, o, kh, kw, groups, mult;  // mult: depthwise multiplier
  int sh, sw, dh, dw, ph, pw, oh, ow;
  int in_bits, w_bits, out_bits;
  int in_zp, out_zp, act_min, act_max;
  bool has_bias;
  std::vector<int> x, f;
  std::vector<int32_t> bias, m, s;
};

// Conv (depthwise when dw) on unpacked ints, TFLM loop semantics.
std::vector<int> RefConv(const ConvCase& k, bool dw) {
  std::vector<int> out;
  const int fd = dw ? 1 : k.c / k.groups;
  const int per_group = k.o / (dw ? 1 : k.groups);
  for (int b = 0; b < k.n; ++b)
    for (int oy = 0; oy < k.oh; ++oy)
      for (int ox = 0; ox < k.ow; ++ox)
        for (int oc = 0; oc < k.o; ++oc) {
          int64_t acc = 0;
          for (int fy = 0; fy < k.kh; ++fy)
            for (int fx = 0; fx < k.kw; ++fx) {
              const int iy = oy * k.sh - k.ph + fy * k.dh;
              const int ix = ox * k.sw - k.pw + fx * k.dw;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
              for (int i = 0; i < fd; ++i) {
                const int ic = dw ? oc / k.mult : (oc / per_group) * fd + i;
                const int xv = k.x[((b * k.h + iy) * k.w + ix) * k.c + ic];
                const int wv = dw ? k.f[(fy * k.kw + fx) * k.o + oc]
                                  : k.f[((oc * k.kh + fy) * k.kw + fx) * fd + i];
                acc += static_cast<int64_t>(wv) * (xv - k.in_zp);
              }
            }
          if (k.has_bias) acc += k.bias[oc];
          const int64_t v = static_cast<int64_t>(RefRequant(
                                static_cast<int32_t>(acc), k.m[oc], k.s[oc])) +
                            k.out_zp;
          out.push_back(RefClamp(v, k.act_min, k.act_max));
        }
  return out;
}

// ---- random case generation -------------------------------------------------

std::mt19937 g_rng(12345);

int Uniform(int lo, int hi) {  // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(g_rng);
}
double UniformReal(double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(g_rng);
}

// TFLM's QuantizeMultiplier for positive reals (frexp + round).
void QuantizeMultiplier(double real, int32_t* m, int32_t* shift) {
  int exp = 0;
  const double q = std::frexp(real, &exp);
  int64_t qf = static_cast<int64_t>(std::round(q * 2147483648.0));
  if (qf == (int64_t{1} << 31)) {
    qf /= 2;
    ++exp;
  }
  if (exp < -31) {
    exp = 0;
    qf = 0;
  }
  if (exp > 30) {
    exp = 30;
    qf = INT32_MAX;
  }
  *m = static_cast<int32_t>(qf);
  *shift = exp;
}

// SAME or VALID output size and pad-before as TFLM computes them.
bool Padding(int in, int k, int s, int d, bool same, int* pad, int* out) {
  const int eff = (k - 1) * d + 1;
  *out = same ? (in + s - 1) / s : (in - eff + s) / s;
  if (*out <= 0) return false;
  const int total = (*out - 1) * s + eff - in;
  *pad = total > 0 ? total / 2 : 0;
  return true;
}

std::vector<int> RandomValues(size_t count, int bits) {
  std::vector<int> v(count);
  for (auto& e : v) e = Uniform(RefQMin(bits), RefQMax(bits));
  return v;
}

void RandomRange(ConvCase* k) {
  k->in_zp = Uniform(RefQMin(k->in_bits), RefQMax(k->in_bits));
  k->out_zp = Uniform(RefQMin(k->out_bits), RefQMax(k->out_bits));
  k->act_min = RefQMin(k->out_bits);
  k->act_max = RefQMax(k->out_bits);
  const int r = Uniform(0, 3);
  if (r == 1) k->act_min = k->out_zp;
  if (r == 2) {
    int a = Uniform(k->act_min, k->act_max), b = Uniform(k->act_min, k->act_max);
    k->act_min = a < b ? a : b;
    k->act_max = a < b ? b : a;
  }
}

void RandomRequant(ConvCase* k, int depth) {
  const double typical = std::sqrt(static_cast<double>(depth)) *
                         (1 << (k->in_bits - 1)) * (1 << (k->w_bits - 1));
  k->m.resize(k->o);
  k->s.resize(k->o);
  k->bias.assign(k->o, 0);
  k->has_bias = Uniform(0, 5) != 0;
  for (int i = 0; i < k->o; ++i) {
    const double real = (1 << (k->out_bits - 1)) / typical *
                        std::exp(UniformReal(std::log(0.05), std::log(4.0)));
    QuantizeMultiplier(real, &k->m[i], &k->s[i]);
    const int span = static_cast<int>(typical) + 1;
    k->bias[i] = Uniform(-span, span);
  }
}

ConvCase RandomConv(int w_bits, int in_bits, int out_bits, bool dw) {
  ConvCase k{};
  k.in_bits = in_bits;
  k.w_bits = w_bits;
  k.out_bits = out_bits;
  for (;;) {
    k.n = Uniform(1, 2);
    k.h = Uniform(1, 9);
    k.w = Uniform(1, 9);
    k.c = Uniform(1, 6);
    k.kh = Uniform(1, 4);
    k.kw = Uniform(1, 4);
    k.sh = Uniform(1, 3);
    k.sw = Uniform(1, 3);
    const bool dil = Uniform(0, 2) == 0;
    k.dh = dil ? Uniform(1, 3) : 1;
    k.dw = dil ? Uniform(1, 3) : 1;
    const bool same = Uniform(0, 1) == 1;
    if (Padding(k.h, k.kh, k.sh, k.dh, same, &k.ph, &k.oh) &&
        Padding(k.w, k.kw, k.sw, k.dw, same, &k.pw, &k.ow)) {
      break;
    }
  }
  if (dw) {
    k.mult = Uniform(1, 3);
    k.o = k.c * k.mult;
    k.groups = 1;
  } else {
    k.groups = (k.c % 2 == 0 && Uniform(0, 4) == 0) ? 2 : 1;
    k.o = k.groups * Uniform(1, 4);
    k.mult = 1;
  }
  k.x = RandomValues(static_cast<size_t>(k.n) * k.h * k.w * k.c, in_bits);
  const int fd = dw ? 1 : k.c / k.groups;
  k.f = RandomValues(static_cast<size_t>(k.o) * k.kh * k.kw * fd, w_bits);
  RandomRange(&k);
  RandomRequant(&k, k.kh * k.kw * fd);
  return k;
}

template <typename T>
T MakeTensor(std::vector<uint8_t>* buf, int bits, std::initializer_list<int> dims) {
  T t{};
  t.data = buf->data();
  t.bytes = buf->size();
  t.bits = bits;
  t.rank = static_cast<int32_t>(dims.size());
  int i = 0;
  for (int d : dims) t.dims[i++] = d;
  return t;
}

// Runs the core conv/depthwise kernel on case k; returns status and output.
tfq::Status RunConv(const ConvCase& k, bool dw, std::vector<int>* result) {
  std::vector<uint8_t> xb = RefPack(k.x, k.in_bits);
  std::vector<uint8_t> fb = RefPack(k.f, k.w_bits);
  const size_t out_count = static_cast<size_t>(k.n) * k.oh * k.ow * k.o;
  std::vector<uint8_t> ob((out_count * k.out_bits + 7) / 8, 0xA5);
  const int fd = dw ? k.o : k.c / k.groups;
  const auto in = MakeTensor<tfq::ConstTensor>(&xb, k.in_bits, {k.n, k.h, k.w, k.c});
  const auto f = dw ? MakeTensor<tfq::ConstTensor>(&fb, k.w_bits, {1, k.kh, k.kw, k.o})
                    : MakeTensor<tfq::ConstTensor>(&fb, k.w_bits, {k.o, k.kh, k.kw, fd});
  const auto out = MakeTensor<tfq::Tensor>(&ob, k.out_bits, {k.n, k.oh, k.ow, k.o});
  const tfq::Requant rq{k.m.data(), k.s.data(), k.o};
  const tfq::Bias bias{k.has_bias ? k.bias.data() : nullptr, k.o};
  tfq::Status st;
  if (dw) {
    tfq::DepthwiseParams p{k.sh, k.sw, k.dh, k.dw, k.ph, k.pw, k.mult,
                           -k.in_zp, k.out_zp, k.act_min, k.act_max};
    st = tfq::DepthwiseConvPerChannel(p, rq, in, f, bias, out);
  } else {
    tfq::ConvParams p{k.sh, k.sw, k.dh, k.dw, k.ph, k.pw,
                      -k.in_zp, k.out_zp, k.act_min, k.act_max};
    st = tfq::ConvPerChannel(p, rq, in, f, bias, out);
  }
  if (st == tfq::kOk) {
    *result = RefUnpack(ob, out_count, k.out_bits);
    // Unused tail bits of the last byte must be cleared.
    const size_t used = out_count * k.out_bits;
    if (used % 8 != 0 && (ob.back() >> (used % 8)) != 0) return tfq::kErrBadParam;
  }
  return st;
}

void TestConvFamily(bool dw, int cases_per_combo) {
  const int bits[3] = {2, 4, 8};
  int id = 0;
  for (int wb : bits)
    for (int ib : bits)
      for (int ob : bits)
        for (int i = 0; i < cases_per_combo; ++i, ++id) {
          const ConvCase k = RandomConv(wb, ib, ob, dw);
          std::vector<int> got;
          const tfq::Status st = RunConv(k, dw, &got);
          Expect(st == tfq::kOk && got == RefConv(k, dw),
                 dw ? "depthwise matches scalar reference"
                    : "conv matches scalar reference",
                 id);
        }
}

void TestFullyConnected(int cases_per_combo) {
  const int bits[3] = {2, 4, 8};
  int id = 0;
  for (int wb : bits)
    for (int ib : bits)
      for (int ob : bits)
        for (int i = 0; i < cases_per_combo; ++i, ++id) {
          ConvCase k{};
          k.in_bits = ib;
          k.w_bits = wb;
          k.out_bits = ob;
          k.n = Uniform(1, 3);
          const int depth = Uniform(1, 70);
          k.o = Uniform(1, 12);
          k.x = RandomValues(static_cast<size_t>(k.n) * depth, ib);
          k.f = RandomValues(static_cast<size_t>(k.o) * depth, wb);
          RandomRange(&k);
          RandomRequant(&k, depth);
          const bool per_tensor = Uniform(0, 3) == 0;
          // Scalar reference.
          std::vector<int> want;
          for (int b = 0; b < k.n; ++b)
            for (int oc = 0; oc < k.o; ++oc) {
              int64_t acc = 0;
              for (int d = 0; d < depth; ++d)
                acc += static_cast<int64_t>(k.f[oc * depth + d]) *
                       (k.x[b * depth + d] - k.in_zp);
              if (k.has_bias) acc += k.bias[oc];
              const int q = per_tensor ? 0 : oc;
              want.push_back(RefClamp(
                  static_cast<int64_t>(RefRequant(static_cast<int32_t>(acc),
                                                  k.m[q], k.s[q])) + k.out_zp,
                  k.act_min, k.act_max));
            }
          std::vector<uint8_t> xb = RefPack(k.x, ib), fb = RefPack(k.f, wb);
          std::vector<uint8_t> ob_buf((static_cast<size_t>(k.n) * k.o * ob + 7) / 8);
          const auto in = MakeTensor<tfq::ConstTensor>(&xb, ib, {k.n, depth});
          const auto f = MakeTensor<tfq::ConstTensor>(&fb, wb, {k.o, depth});
          const auto out = MakeTensor<tfq::Tensor>(&ob_buf, ob, {k.n, k.o});
          const tfq::FullyConnectedParams p{-k.in_zp, k.out_zp, k.act_min, k.act_max};
          const tfq::Bias bias{k.has_bias ? k.bias.data() : nullptr, k.o};
          const tfq::Status st =
              per_tensor ? tfq::FullyConnectedPerTensor(p, k.m[0], k.s[0], in, f,
                                                        bias, out)
                         : tfq::FullyConnected(p, {k.m.data(), k.s.data(), k.o},
                                               in, f, bias, out);
          Expect(st == tfq::kOk &&
                     RefUnpack(ob_buf, want.size(), ob) == want,
                 "fully connected matches scalar reference", id);
        }
}

void TestAdd(int cases_per_combo) {
  const int bits[3] = {2, 4, 8};
  int id = 0;
  for (int b1 : bits)
    for (int b2 : bits)
      for (int ob : bits)
        for (int i = 0; i < cases_per_combo; ++i, ++id) {
          // Random 4-D output shape; each input broadcasts along random dims.
          int od[4], d1[4], d2[4];
          for (int j = 0; j < 4; ++j) {
            od[j] = Uniform(1, 5);
            d1[j] = Uniform(0, 2) ? od[j] : 1;
            d2[j] = Uniform(0, 2) ? od[j] : 1;
            if (d1[j] != od[j] && d2[j] != od[j]) d1[j] = od[j];
          }
          const int n1 = d1[0] * d1[1] * d1[2] * d1[3];
          const int n2 = d2[0] * d2[1] * d2[2] * d2[3];
          const int no = od[0] * od[1] * od[2] * od[3];
          const std::vector<int> x1 = RandomValues(n1, b1), x2 = RandomValues(n2, b2);
          const int zp1 = Uniform(RefQMin(b1), RefQMax(b1));
          const int zp2 = Uniform(RefQMin(b2), RefQMax(b2));
          const int zpo = Uniform(RefQMin(ob), RefQMax(ob));
          // Parameters as TFLM's Prepare derives them from scales.
          const double s1 = UniformReal(0.01, 1.0), s2 = UniformReal(0.01, 1.0);
          const double so = UniformReal(0.01, 1.0) *
                            std::pow(2.0, std::max(b1, b2) - ob);
          const double twice_max = 2.0 * std::max(s1, s2);
          const int left_shift = 20;
          tfq::AddParams p{};
          p.input1_offset = -zp1;
          p.input2_offset = -zp2;
          p.output_offset = zpo;
          p.left_shift = left_shift;
          QuantizeMultiplier(s1 / twice_max, &p.input1_multiplier, &p.input1_shift);
          QuantizeMultiplier(s2 / twice_max, &p.input2_multiplier, &p.input2_shift);
          QuantizeMultiplier(twice_max / ((1 << left_shift) * so),
                             &p.output_multiplier, &p.output_shift);
          p.act_min = RefQMin(ob);
          p.act_max = RefQMax(ob);
          std::vector<int> want;
          for (int a = 0; a < od[0]; ++a)
            for (int b = 0; b < od[1]; ++b)
              for (int c = 0; c < od[2]; ++c)
                for (int e = 0; e < od[3]; ++e) {
                  auto at = [&](const int* d, const std::vector<int>& v) {
                    const int i0 = d[0] == 1 ? 0 : a, i1 = d[1] == 1 ? 0 : b;
                    const int i2 = d[2] == 1 ? 0 : c, i3 = d[3] == 1 ? 0 : e;
                    return v[((i0 * d[1] + i1) * d[2] + i2) * d[3] + i3];
                  };
                  const int32_t v1 = (at(d1, x1) - zp1) * (1 << left_shift);
                  const int32_t v2 = (at(d2, x2) - zp2) * (1 << left_shift);
                  const int32_t r1 = RefRoundShift(RefHighMul(v1, p.input1_multiplier),
                                                   -p.input1_shift);
                  const int32_t r2 = RefRoundShift(RefHighMul(v2, p.input2_multiplier),
                                                   -p.input2_shift);
                  const int64_t r = static_cast<int64_t>(RefRoundShift(
                                        RefHighMul(r1 + r2, p.output_multiplier),
                                        -p.output_shift)) + zpo;
                  want.push_back(RefClamp(r, p.act_min, p.act_max));
                }
          std::vector<uint8_t> xb1 = RefPack(x1, b1), xb2 = RefPack(x2, b2);
          std::vector<uint8_t> obuf((static_cast<size_t>(no) * ob + 7) / 8);
          const auto t1 = MakeTensor<tfq::ConstTensor>(&xb1, b1, {d1[0], d1[1], d1[2], d1[3]});
          const auto t2 = MakeTensor<tfq::ConstTensor>(&xb2, b2, {d2[0], d2[1], d2[2], d2[3]});
          const auto to = MakeTensor<tfq::Tensor>(&obuf, ob, {od[0], od[1], od[2], od[3]});
          const tfq::Status st = tfq::Add(p, t1, t2, to);
          Expect(st == tfq::kOk && RefUnpack(obuf, no, ob) == want,
                 "add matches scalar reference", id);
        }
}

struct PoolCase {
  int n, h, w, c, fh, fw, sh, sw, ph, pw, oh, ow, in_bits, out_bits;
  int in_zp, out_zp;  // average pool only
  int32_t m, s;       // average pool only: QuantizeMultiplier(s_in / s_out)
  int act_min, act_max;
  std::vector<int> x;
};

// Average: sum(x - in_zp) * (s_in / s_out) / count rounded once (ties up), plus
// out_zp. Max: the window's maximum.
std::vector<int> RefPool(const PoolCase& k, bool average) {
  std::vector<int> out;
  for (int b = 0; b < k.n; ++b)
    for (int oy = 0; oy < k.oh; ++oy)
      for (int ox = 0; ox < k.ow; ++ox)
        for (int ch = 0; ch < k.c; ++ch) {
          int64_t sum = 0;
          int count = 0, mx = -1000;
          for (int fy = 0; fy < k.fh; ++fy)
            for (int fx = 0; fx < k.fw; ++fx) {
              const int iy = oy * k.sh - k.ph + fy, ix = ox * k.sw - k.pw + fx;
              if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
              const int v = k.x[((b * k.h + iy) * k.w + ix) * k.c + ch];
              sum += v - k.in_zp;
              ++count;
              mx = v > mx ? v : mx;
            }
          int64_t v = mx;
          if (average) {  // floor(sum * m / (count * 2^(31 - s)) + 1/2), exact in 128 bits
            const __int128 num = static_cast<__int128>(sum) * k.m * 2 +
                                 (static_cast<__int128>(count) << (31 - k.s));
            const __int128 den = static_cast<__int128>(count) << (32 - k.s);
            __int128 q = num / den;
            if (num % den != 0 && num < 0) --q;
            const __int128 lo = -(__int128{1} << 40), hi = __int128{1} << 40;
            v = static_cast<int64_t>(q < lo ? lo : (q > hi ? hi : q)) + k.out_zp;
          }
          out.push_back(RefClamp(v, k.act_min, k.act_max));
        }
  return out;
}

tfq::Status RunPool(const PoolCase& k, bool average, std::vector<int>* got) {
  std::vector<uint8_t> xb = RefPack(k.x, k.in_bits);
  const size_t no = static_cast<size_t>(k.n) * k.oh * k.ow * k.c;
  std::vector<uint8_t> ob((no * k.out_bits + 7) / 8);
  const auto in = MakeTensor<tfq::ConstTensor>(&xb, k.in_bits, {k.n, k.h, k.w, k.c});
  const auto out = MakeTensor<tfq::Tensor>(&ob, k.out_bits, {k.n, k.oh, k.ow, k.c});
  const tfq::PoolParams p{k.fh,  k.fw,     k.sh, k.sw, k.ph,      k.pw,
                          k.in_zp, k.out_zp, k.m,  k.s,  k.act_min, k.act_max};
  const tfq::Status st = average ? tfq::AveragePool(p, in, out) : tfq::MaxPool(p, in, out);
  if (st == tfq::kOk) *got = RefUnpack(ob, no, k.out_bits);
  return st;
}

// Random geometry (a fifth are global pools: one window over the whole input),
// values, zero points, act range and a scale ratio s_in / s_out around
// 2^(out_bits - in_bits), both below and above 1.
PoolCase RandomPool(int ib, int ob) {
  PoolCase k{};
  k.in_bits = ib;
  k.out_bits = ob;
  for (;;) {
    k.n = Uniform(1, 2);
    k.h = Uniform(1, 10);
    k.w = Uniform(1, 10);
    k.c = Uniform(1, 5);
    const bool global = Uniform(0, 4) == 0;
    k.fh = global ? k.h : Uniform(1, 4);
    k.fw = global ? k.w : Uniform(1, 4);
    k.sh = Uniform(1, 3);
    k.sw = Uniform(1, 3);
    const bool same = !global && Uniform(0, 1) == 1;
    if (Padding(k.h, k.fh, k.sh, 1, same, &k.ph, &k.oh) &&
        Padding(k.w, k.fw, k.sw, 1, same, &k.pw, &k.ow)) {
      break;
    }
  }
  k.x = RandomValues(static_cast<size_t>(k.n) * k.h * k.w * k.c, ib);
  k.in_zp = Uniform(RefQMin(ib), RefQMax(ib));
  k.out_zp = Uniform(RefQMin(ob), RefQMax(ob));
  const double ratio = std::ldexp(std::exp(UniformReal(std::log(0.25), std::log(4.0))),
                                  ob - ib);
  QuantizeMultiplier(ratio, &k.m, &k.s);
  k.act_min = RefQMin(ob);
  k.act_max = RefQMax(ob);
  if (Uniform(0, 2) == 0) k.act_min = Uniform(k.act_min, k.act_max);
  return k;
}

void TestPools(int cases_per_combo) {
  const int bits[3] = {2, 4, 8};
  int id = 0;
  for (int average = 0; average < 2; ++average)
    for (int ib : bits)
      for (int ob : bits)
        for (int i = 0; i < cases_per_combo; ++i, ++id) {
          PoolCase k = RandomPool(ib, ob);
          if (!average) {  // max pool: one grid; the requant fields are ignored
            k.in_zp = k.out_zp = 0;
            k.m = Uniform(-5, 5);
            k.s = Uniform(-40, 40);
          }
          std::vector<int> got;
          const tfq::Status st = RunPool(k, average != 0, &got);
          Expect(st == tfq::kOk && got == RefPool(k, average != 0),
                 average ? "average pool matches scalar reference"
                         : "max pool matches scalar reference",
                 id);
        }
}

// Extreme rescalings: full-range window sums of both signs with the largest
// multiplier and (a) the largest left shift (the result is clamped in int64),
// (b) the smallest right shift the int64 headroom rule allows
// (area < 2^(31 + shift)); under UBSan any signed overflow in the kernel is a
// finding. One more right shift is rejected.
void TestAveragePoolHeadroom() {
  const int bits[3] = {2, 4, 8};
  int id = 0;
  for (int ib : bits)
    for (int sign = 0; sign < 2; ++sign, ++id) {
      PoolCase k{};
      k.in_bits = ib;
      k.out_bits = 8;
      k.n = 1;
      k.h = k.fh = 8;
      k.w = k.fw = 4;  // area 32 = 2^5
      k.c = 2;
      k.sh = k.sw = 1;
      k.oh = k.ow = 1;
      k.in_zp = sign ? RefQMax(ib) : RefQMin(ib);
      k.x.assign(static_cast<size_t>(k.h) * k.w * k.c, sign ? RefQMin(ib) : RefQMax(ib));
      k.x[3] = 0;  // not exactly a power of two
      k.out_zp = 0;
      k.m = INT32_MAX;
      k.act_min = -128;
      k.act_max = 127;
      std::vector<int> got;
      k.s = 30;
      Expect(RunPool(k, true, &got) == tfq::kOk && got == RefPool(k, true),
             "average pool with the largest left shift", id);
      k.s = 5 - 31 + 1;
      Expect(RunPool(k, true, &got) == tfq::kOk && got == RefPool(k, true),
             "average pool at the int64 headroom limit", id);
      k.s -= 1;
      Expect(RunPool(k, true, &got) == tfq::kErrBadParam,
             "average pool beyond the int64 headroom rejected", id);
    }
}

void TestPackRoundTrip() {
  const int bits[3] = {2, 4, 8};
  for (int b : bits)
    for (int count = 0; count < 40; ++count) {
      const std::vector<int> v = RandomValues(count, b);
      std::vector<int8_t> v8(v.begin(), v.end());
      std::vector<uint8_t> packed((count * b + 7) / 8);
      const tfq::Status st = tfq::Pack(v8.data(), count, b, packed.data(), packed.size());
      std::vector<int8_t> back(count);
      const tfq::Status st2 =
          tfq::Unpack(packed.data(), packed.size(), count, b, back.data(), back.size());
      Expect(st == tfq::kOk && st2 == tfq::kOk && packed == RefPack(v, b) &&
                 std::vector<int>(back.begin(), back.end()) == v,
             "pack/unpack round trip and layout", count);
      if (count > 0) {
        Expect(tfq::Pack(v8.data(), count, b, packed.data(), packed.size() - 1) ==
                   tfq::kErrBufferTooSmall,
               "pack rejects short buffer", count);
        Expect(tfq::Unpack(packed.data(), packed.size() - 1, count, b, back.data(),
                           back.size()) == tfq::kErrBufferTooSmall,
               "unpack rejects short buffer", count);
      }
    }
  int8_t bad = 8;
  uint8_t one = 0;
  Expect(tfq::Pack(&bad, 1, 4, &one, 1) == tfq::kErrValueOutOfRange,
         "pack rejects out-of-range value", 0);
  Expect(tfq::Pack(&bad, 1, 3, &one, 1) == tfq::kErrBadBits, "pack rejects 3 bits", 0);
}

// ---- malformed arguments ---------------------------------------------------

// A valid baseline conv; each malformed case mutates one thing. Buffers are
// sized exactly for what the (possibly lying) tensors claim.
struct ConvArgs {
  tfq::ConvParams p{1, 1, 1, 1, 0, 0, 0, 0, -8, 7};
  int in_dims[4] = {1, 5, 5, 4};
  int f_dims[4] = {3, 3, 3, 4};
  int out_dims[4] = {1, 3, 3, 3};
  int in_bits = 4, w_bits = 2, out_bits = 4;
  long in_bytes_delta = 0, f_bytes_delta = 0, out_bytes_delta = 0;
  int quant_count = 3, bias_count = 3;
  int32_t shift0 = -3, mult0 = 1 << 30;
  bool null_input = false, null_mult = false;
};

long CountOf(const int* d) {
  long n = 1;
  for (int i = 0; i < 4; ++i) n *= d[i] > 0 ? d[i] : 0;
  return n;
}

size_t BytesFor(const int* d, int bits, long delta) {
  const int b = (bits == 2 || bits == 4 || bits == 8) ? bits : 8;
  long bytes = (CountOf(d) * b + 7) / 8 + delta;
  if (bytes > (1 << 20)) bytes = 1 << 20;  // claims beyond this stay lies
  return bytes > 0 ? static_cast<size_t>(bytes) : 0;
}

tfq::Status RunConvArgs(const ConvArgs& a) {
  std::vector<uint8_t> xb(BytesFor(a.in_dims, a.in_bits, a.in_bytes_delta), 0x11);
  std::vector<uint8_t> fb(BytesFor(a.f_dims, a.w_bits, a.f_bytes_delta), 0x22);
  std::vector<uint8_t> ob(BytesFor(a.out_dims, a.out_bits, a.out_bytes_delta), 0);
  std::vector<int32_t> mult(a.quant_count > 0 ? a.quant_count : 1, 1 << 30);
  std::vector<int32_t> shift(mult.size(), -3);
  mult[0] = a.mult0;
  shift[0] = a.shift0;
  std::vector<int32_t> bias(a.bias_count > 0 ? a.bias_count : 1, 5);
  auto fill = [](auto* t, std::vector<uint8_t>* buf, int bits, const int* d) {
    t->data = buf->empty() ? nullptr : buf->data();
    t->bytes = buf->size();
    t->bits = bits;
    t->rank = 4;
    for (int i = 0; i < 4; ++i) t->dims[i] = d[i];
  };
  tfq::ConstTensor in{}, f{};
  tfq::Tensor out{};
  fill(&in, &xb, a.in_bits, a.in_dims);
  fill(&f, &fb, a.w_bits, a.f_dims);
  fill(&out, &ob, a.out_bits, a.out_dims);
  if (a.null_input) in.data = nullptr;
  const tfq::Requant rq{a.null_mult ? nullptr : mult.data(), shift.data(), a.quant_count};
  const tfq::Bias b{bias.data(), a.bias_count};
  return tfq::ConvPerChannel(a.p, rq, in, f, b, out);
}

void TestMalformedConv() {
  int id = 0;
  Expect(RunConvArgs(ConvArgs{}) == tfq::kOk, "malformed baseline is valid", id++);
  std::vector<ConvArgs> bad;
  auto add = [&](auto mutate) {
    ConvArgs a;
    mutate(&a);
    bad.push_back(a);
  };
  add([](ConvArgs* a) { a->in_bytes_delta = -1; });
  add([](ConvArgs* a) { a->f_bytes_delta = -1; });
  add([](ConvArgs* a) { a->out_bytes_delta = -1; });
  add([](ConvArgs* a) { a->in_dims[1] = 0; });
  add([](ConvArgs* a) { a->in_dims[3] = -4; });
  add([](ConvArgs* a) { a->out_dims[1] = 5; });  // needs pad 1, not 0
  add([](ConvArgs* a) { a->out_dims[2] = 2; });
  add([](ConvArgs* a) { a->out_dims[3] = 2; });
  add([](ConvArgs* a) { a->out_dims[0] = 2; });
  add([](ConvArgs* a) { a->f_dims[3] = 3; });    // 4 % 3 != 0
  add([](ConvArgs* a) { a->f_dims[1] = 7; });    // filter taller than input
  add([](ConvArgs* a) { a->p.stride_height = 0; });
  add([](ConvArgs* a) { a->p.stride_width = -2; });
  add([](ConvArgs* a) { a->p.dilation_height = 0; });
  add([](ConvArgs* a) { a->p.pad_width = -1; });
  add([](ConvArgs* a) { a->p.pad_height = 1 << 30; });
  add([](ConvArgs* a) { a->p.stride_height = INT32_MAX; });
  add([](ConvArgs* a) { a->p.dilation_width = INT32_MAX; });
  add([](ConvArgs* a) { a->in_bits = 3; });
  add([](ConvArgs* a) { a->w_bits = 1; });
  add([](ConvArgs* a) { a->out_bits = 16; });
  add([](ConvArgs* a) { a->p.input_offset = -8; });  // zp 8 not in int4
  add([](ConvArgs* a) { a->p.input_offset = INT32_MIN; });
  add([](ConvArgs* a) { a->p.output_offset = 8; });
  add([](ConvArgs* a) { a->p.act_min = -9; });
  add([](ConvArgs* a) { a->p.act_max = 8; });
  add([](ConvArgs* a) { a->p.act_min = 3, a->p.act_max = 2; });
  add([](ConvArgs* a) { a->quant_count = 2; });
  add([](ConvArgs* a) { a->bias_count = 4; });
  add([](ConvArgs* a) { a->shift0 = 31; });
  add([](ConvArgs* a) { a->shift0 = -32; });
  add([](ConvArgs* a) { a->mult0 = -1; });
  add([](ConvArgs* a) { a->null_input = true; });
  add([](ConvArgs* a) { a->null_mult = true; });
  add([](ConvArgs* a) {  // element count overflowing int32
    a->in_dims[0] = 1 << 16, a->in_dims[1] = 1 << 16, a->out_dims[0] = 1 << 16;
  });
  for (const ConvArgs& a : bad) {
    Expect(RunConvArgs(a) != tfq::kOk, "malformed conv rejected", id++);
  }
}

void TestMalformedOthers() {
  // Depthwise: filter batch != 1, wrong multiplier, short buffers.
  std::vector<uint8_t> x(16), f(9 * 4), out(16);
  std::vector<int32_t> m(4, 1 << 30), s(4, -2);
  const tfq::Requant rq{m.data(), s.data(), 4};
  const tfq::Bias nb{nullptr, 0};
  auto ct = [](std::vector<uint8_t>* b, int bits, std::initializer_list<int> d) {
    return MakeTensor<tfq::ConstTensor>(b, bits, d);
  };
  auto mt = [](std::vector<uint8_t>* b, int bits, std::initializer_list<int> d) {
    return MakeTensor<tfq::Tensor>(b, bits, d);
  };
  tfq::DepthwiseParams dp{1, 1, 1, 1, 1, 1, 2, 0, 0, -128, 127};
  Expect(tfq::DepthwiseConvPerChannel(dp, rq, ct(&x, 8, {1, 2, 4, 2}),
                                      ct(&f, 8, {1, 3, 3, 4}), nb,
                                      mt(&out, 8, {1, 2, 4, 4})) == tfq::kErrBufferTooSmall,
         "depthwise output too small", 0);
  std::vector<uint8_t> out32(32);
  Expect(tfq::DepthwiseConvPerChannel(dp, rq, ct(&x, 8, {1, 2, 4, 2}),
                                      ct(&f, 8, {1, 3, 3, 4}), nb,
                                      mt(&out32, 8, {1, 2, 4, 4})) == tfq::kOk,
         "depthwise baseline", 0);
  tfq::DepthwiseParams dp3 = dp;
  dp3.depth_multiplier = 3;
  Expect(tfq::DepthwiseConvPerChannel(dp3, rq, ct(&x, 8, {1, 2, 4, 2}),
                                      ct(&f, 8, {1, 3, 3, 4}), nb,
                                      mt(&out32, 8, {1, 2, 4, 4})) != tfq::kOk,
         "depthwise multiplier mismatch", 0);
  dp3.depth_multiplier = 0;
  Expect(tfq::DepthwiseConvPerChannel(dp3, rq, ct(&x, 8, {1, 2, 4, 2}),
                                      ct(&f, 8, {1, 3, 3, 4}), nb,
                                      mt(&out32, 8, {1, 2, 4, 4})) != tfq::kOk,
         "depthwise multiplier zero", 0);
  Expect(tfq::DepthwiseConvPerChannel(dp, rq, ct(&x, 8, {1, 2, 4, 2}),
                                      ct(&f, 8, {2, 3, 3, 2}), nb,
                                      mt(&out32, 8, {1, 2, 4, 4})) != tfq::kOk,
         "depthwise filter batch", 0);
  // Fully connected: K mismatch, rank, per-tensor count elsewhere.
  tfq::FullyConnectedParams fp{0, 0, -128, 127};
  std::vector<uint8_t> fx(8), fw(24), fo(6);
  const tfq::Requant rq3{m.data(), s.data(), 3};
  Expect(tfq::FullyConnected(fp, rq3, ct(&fx, 8, {2, 4}), ct(&fw, 8, {3, 8}), nb,
                             mt(&fo, 8, {2, 3})) != tfq::kOk,
         "fc depth mismatch", 0);
  Expect(tfq::FullyConnected(fp, rq3, ct(&fx, 8, {1, 2, 4}), ct(&fw, 8, {3, 8}), nb,
                             mt(&fo, 8, {2, 3})) == tfq::kErrBadRank,
         "fc rank", 0);
  const tfq::Requant rq2{m.data(), s.data(), 2};
  Expect(tfq::FullyConnected(fp, rq2, ct(&fx, 4, {2, 4}), ct(&fw, 4, {3, 4}), nb,
                             mt(&fo, 4, {2, 3})) == tfq::kErrBadMultiplier,
         "fc multiplier count", 0);
  const tfq::FullyConnectedParams fp4{0, 0, -8, 7};
  Expect(tfq::FullyConnected(fp4, rq3, ct(&fx, 4, {2, 4}), ct(&fw, 4, {3, 4}), nb,
                             mt(&fo, 4, {2, 3})) == tfq::kOk,
         "fc baseline", 0);
  Expect(tfq::FullyConnected(fp, rq3, ct(&fx, 4, {2, 4}), ct(&fw, 4, {3, 4}), nb,
                             mt(&fo, 4, {2, 3})) == tfq::kErrBadActRange,
         "fc act range beyond 4-bit output", 0);
  // Add: non-broadcastable shapes, wrong output shape, positive shift.
  tfq::AddParams ap{0, 0, 0, 20, 1 << 30, -1, 1 << 30, -1, 1 << 30, -18, -128, 127};
  std::vector<uint8_t> a(6), b(6), o(6);
  Expect(tfq::Add(ap, ct(&a, 8, {2, 3}), ct(&b, 8, {3, 2}), mt(&o, 8, {2, 3})) ==
             tfq::kErrShapeMismatch,
         "add shapes", 0);
  Expect(tfq::Add(ap, ct(&a, 8, {2, 3}), ct(&b, 8, {2, 3}), mt(&o, 8, {3, 2})) ==
             tfq::kErrShapeMismatch,
         "add output shape", 0);
  Expect(tfq::Add(ap, ct(&a, 8, {2, 3}), ct(&b, 8, {1, 3}), mt(&o, 8, {6})) ==
             tfq::kErrShapeMismatch,
         "add output rank", 0);
  tfq::AddParams ap2 = ap;
  ap2.output_shift = 1;
  Expect(tfq::Add(ap2, ct(&a, 8, {2, 3}), ct(&b, 8, {2, 3}), mt(&o, 8, {2, 3})) ==
             tfq::kErrBadShift,
         "add positive shift", 0);
  Expect(tfq::Add(ap, ct(&a, 8, {2, 3}), ct(&b, 8, {2, 3}), mt(&a, 8, {2, 3})) ==
             tfq::kErrAliasing,
         "add in-place rejected", 0);
  Expect(tfq::Add(ap, ct(&a, 8, {2, 3}), ct(&b, 8, {2, 3}), mt(&o, 8, {2, 3})) == tfq::kOk,
         "add baseline", 0);
  // Pools: empty windows, inconsistent output, average pool rescaling.
  tfq::PoolParams pp{2, 2, 2, 2, 0, 0, 0, 0, 1 << 30, 0, -128, 127};
  std::vector<uint8_t> px(32), po(8), po_big(18);
  Expect(tfq::MaxPool(pp, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) == tfq::kOk,
         "pool baseline", 0);
  Expect(tfq::AveragePool(pp, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) ==
             tfq::kOk,
         "average pool baseline", 0);
  struct BadAverage {
    const char* what;
    void (*mutate)(tfq::PoolParams*, int* in_bits, int* out_bits);
    tfq::Status want;
  };
  const BadAverage bad_average[] = {
      {"average pool multiplier not normalized",
       [](tfq::PoolParams* q, int*, int*) { q->output_multiplier = (1 << 30) - 1; },
       tfq::kErrBadMultiplier},
      {"average pool negative multiplier",
       [](tfq::PoolParams* q, int*, int*) { q->output_multiplier = INT32_MIN; },
       tfq::kErrBadMultiplier},
      {"average pool shift 31",
       [](tfq::PoolParams* q, int*, int*) { q->output_shift = 31; }, tfq::kErrBadShift},
      {"average pool shift -32",
       [](tfq::PoolParams* q, int*, int*) { q->output_shift = -32; }, tfq::kErrBadShift},
      {"average pool divisor overflows int64",  // 4 * 2^(31 + 29) = 2^62
       [](tfq::PoolParams* q, int*, int*) { q->output_shift = -29; }, tfq::kErrBadParam},
      {"average pool input zero point outside int4",
       [](tfq::PoolParams* q, int* ib, int*) { *ib = 4, q->input_zero_point = 8; },
       tfq::kErrBadZeroPoint},
      {"average pool output zero point outside int2",
       [](tfq::PoolParams* q, int*, int* ob) {
         *ob = 2, q->output_zero_point = -3, q->act_min = -2, q->act_max = 1;
       },
       tfq::kErrBadZeroPoint},
      {"average pool act range outside int2",
       [](tfq::PoolParams*, int*, int* ob) { *ob = 2; }, tfq::kErrBadActRange},
  };
  for (const BadAverage& bad : bad_average) {
    tfq::PoolParams q = pp;
    int ib = 8, ob = 8;
    bad.mutate(&q, &ib, &ob);
    Expect(tfq::AveragePool(q, ct(&px, ib, {1, 4, 4, 2}), mt(&po, ob, {1, 2, 2, 2})) ==
               bad.want,
           bad.what, 0);
  }
  tfq::PoolParams edge = pp;
  edge.output_shift = 20;  // 4 * 2^8 * 2^20 < 2^31: still accepted
  Expect(tfq::AveragePool(edge, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) ==
             tfq::kOk,
         "average pool shift at the headroom limit", 0);
  edge.output_multiplier = 0;  // QuantizeMultiplier(0) or an underflowed ratio
  edge.output_shift = 0;
  edge.output_zero_point = 5;
  Expect(tfq::AveragePool(edge, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) ==
                 tfq::kOk &&
             RefUnpack(po, 8, 8) == std::vector<int>(8, 5),
         "average pool multiplier 0 gives the output zero point", 0);
  tfq::PoolParams garbage = pp;  // MaxPool ignores the requant fields
  garbage.output_multiplier = -1;
  garbage.output_shift = 99;
  garbage.input_zero_point = 1000;
  Expect(tfq::MaxPool(garbage, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) ==
             tfq::kOk,
         "max pool ignores the requant fields", 0);
  Expect(tfq::CheckAveragePoolRequant(pp, 3) == tfq::kErrBadBits,
         "average pool requant check bits", 0);
  tfq::PoolParams pp2 = pp;
  pp2.pad_height = 2;
  Expect(tfq::AveragePool(pp2, ct(&px, 8, {1, 4, 4, 2}), mt(&po_big, 8, {1, 3, 2, 2})) !=
             tfq::kOk,
         "pool empty window", 0);
  Expect(tfq::AveragePool(pp, ct(&px, 8, {1, 4, 4, 2}), mt(&po_big, 8, {1, 3, 3, 2})) ==
             tfq::kErrBadOutputShape,
         "pool output shape", 0);
  pp2 = pp;
  pp2.filter_width = 0;
  Expect(tfq::MaxPool(pp2, ct(&px, 8, {1, 4, 4, 2}), mt(&po, 8, {1, 2, 2, 2})) != tfq::kOk,
         "pool zero filter", 0);
}

// ---- fuzz: random (often invalid) parameters ----------------------------------

void FuzzConv(int iterations) {
  int ok_count = 0;
  for (int it = 0; it < iterations; ++it) {
    const bool dw = Uniform(0, 1) == 1;
    const int bits[3] = {2, 4, 8};
    ConvCase k = RandomConv(bits[Uniform(0, 2)], bits[Uniform(0, 2)], bits[Uniform(0, 2)], dw);
    // Perturb the geometry; the buffers follow the perturbed claims exactly.
    switch (Uniform(0, 5)) {
      case 0: k.oh += Uniform(-2, 2); break;
      case 1: k.ph += Uniform(-1, 3); break;
      case 2: k.pw += Uniform(-1, 3); break;
      case 3: k.ow += Uniform(-2, 2); break;
      case 4: k.sh += Uniform(-1, 1); break;
      default: break;
    }
    if (k.oh < 1 || k.ow < 1) continue;  // buffers need a positive size
    std::vector<int> got;
    const tfq::Status st = RunConv(k, dw, &got);
    if (st == tfq::kOk) {
      ++ok_count;
      Expect(k.sh >= 1 && k.ph >= 0 && k.pw >= 0 && got == RefConv(k, dw),
             "fuzzed conv accepted only when valid, and correct", it);
    } else {
      ++g_passed;  // rejected without a sanitizer finding
    }
  }
  std::printf("fuzz: %d of %d perturbed conv cases were valid and matched\n", ok_count,
              iterations);
}

}  // namespace

int main() {
  TestConvFamily(/*dw=*/false, 20);  // 27 combos x 20 = 540 cases
  TestConvFamily(/*dw=*/true, 20);
  TestFullyConnected(20);
  TestAdd(20);
  TestPools(60);  // 2 ops x 9 combos x 60
  TestAveragePoolHeadroom();
  TestPackRoundTrip();
  TestMalformedConv();
  TestMalformedOthers();
  FuzzConv(1500);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
