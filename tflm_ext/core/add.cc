// ADD with TFLM's int8 arithmetic, on packed 2/4/8-bit inputs and output.
#include "tfq_arithmetic.h"
#include "tfq_kernels.h"
#include "tfq_validate.h"

namespace tfq {
namespace {

// Output shape and per-input element strides, all extended to 4-D; a stride
// of 0 repeats the input along a broadcast dimension.
struct Broadcast {
  int32_t dims[4];
  int32_t stride1[4];
  int32_t stride2[4];
  bool same_shape;
};

template <int kIn1Bits, int kIn2Bits>
inline int32_t AddOne(const AddParams& p, const ConstTensor& in1,
                      const ConstTensor& in2, int32_t i1, int32_t i2) {
  const int32_t a = p.input1_offset + LoadPacked<kIn1Bits>(in1.data, i1);
  const int32_t b = p.input2_offset + LoadPacked<kIn2Bits>(in2.data, i2);
  const int32_t sa = MultiplyByQuantizedMultiplierSmallerThanOneExp(
      WrapShiftLeft(a, p.left_shift), p.input1_multiplier, p.input1_shift);
  const int32_t sb = MultiplyByQuantizedMultiplierSmallerThanOneExp(
      WrapShiftLeft(b, p.left_shift), p.input2_multiplier, p.input2_shift);
  const int32_t v = MultiplyByQuantizedMultiplierSmallerThanOneExp(
      WrapAdd(sa, sb), p.output_multiplier, p.output_shift);
  return Clamp(WrapAdd(v, p.output_offset), p.act_min, p.act_max);
}

template <int kIn1Bits, int kIn2Bits>
void AddImpl(const AddParams& p, const Broadcast& bc, int32_t count,
             const ConstTensor& in1, const ConstTensor& in2,
             const Tensor& out) {
  const int32_t out_bits = out.bits;
  if (bc.same_shape) {  // no broadcasting: one flat loop
    for (int32_t i = 0; i < count; ++i) {
      SetPacked(out.data, i, out_bits,
                AddOne<kIn1Bits, kIn2Bits>(p, in1, in2, i, i));
    }
    return;
  }
  int32_t o = 0;
  for (int32_t d0 = 0; d0 < bc.dims[0]; ++d0) {
    for (int32_t d1 = 0; d1 < bc.dims[1]; ++d1) {
      for (int32_t d2 = 0; d2 < bc.dims[2]; ++d2) {
        int32_t i1 =
            d0 * bc.stride1[0] + d1 * bc.stride1[1] + d2 * bc.stride1[2];
        int32_t i2 =
            d0 * bc.stride2[0] + d1 * bc.stride2[1] + d2 * bc.stride2[2];
        for (int32_t d3 = 0; d3 < bc.dims[3]; ++d3, ++o) {
          SetPacked(out.data, o, out_bits,
                    AddOne<kIn1Bits, kIn2Bits>(p, in1, in2, i1, i2));
          i1 += bc.stride1[3];
          i2 += bc.stride2[3];
        }
      }
    }
  }
}

// Right-aligns `t`'s shape into 4 dims (leading 1s).
template <typename T>
void Extend(const T& t, int32_t dims[4]) {
  const int32_t lead = kMaxRank - t.rank;
  for (int i = 0; i < kMaxRank; ++i) dims[i] = i < lead ? 1 : t.dims[i - lead];
}

// Checks NumPy/TFLM broadcasting of in1 and in2 to exactly out's shape.
Status MakeBroadcast(const ConstTensor& in1, const ConstTensor& in2,
                     const Tensor& out, Broadcast* bc) {
  if (out.rank < in1.rank || out.rank < in2.rank) return kErrShapeMismatch;
  if (out.rank != (in1.rank > in2.rank ? in1.rank : in2.rank)) {
    return kErrShapeMismatch;
  }
  int32_t d1[4], d2[4];
  Extend(in1, d1);
  Extend(in2, d2);
  Extend(out, bc->dims);
  int32_t s1 = 1, s2 = 1;
  for (int i = kMaxRank - 1; i >= 0; --i) {
    const int32_t o = bc->dims[i];
    if ((d1[i] != o && d1[i] != 1) || (d2[i] != o && d2[i] != 1)) {
      return kErrShapeMismatch;
    }
    if (o != (d1[i] > d2[i] ? d1[i] : d2[i])) return kErrShapeMismatch;
    bc->stride1[i] = d1[i] == 1 ? 0 : s1;
    bc->stride2[i] = d2[i] == 1 ? 0 : s2;
    s1 *= d1[i];
    s2 *= d2[i];
  }
  // Broadcasting to `out` never shrinks a dim, so equal products mean equal
  // shapes.
  const int32_t n = bc->dims[0] * bc->dims[1] * bc->dims[2] * bc->dims[3];
  bc->same_shape = (s1 == n) && (s2 == n);
  return kOk;
}

template <int kIn1Bits>
void DispatchIn2Bits(const AddParams& p, const Broadcast& bc, int32_t count,
                     const ConstTensor& in1, const ConstTensor& in2,
                     const Tensor& out) {
  switch (in2.bits) {
    case 8:
      AddImpl<kIn1Bits, 8>(p, bc, count, in1, in2, out);
      break;
    case 4:
      AddImpl<kIn1Bits, 4>(p, bc, count, in1, in2, out);
      break;
    default:
      AddImpl<kIn1Bits, 2>(p, bc, count, in1, in2, out);
      break;
  }
}

Status CheckAddMultiplier(int32_t multiplier, int32_t shift) {
  if (multiplier < 0) return kErrBadMultiplier;
  if (shift < -31 || shift > 0) return kErrBadShift;
  return kOk;
}

}  // namespace

Status Add(const AddParams& p, const ConstTensor& in1, const ConstTensor& in2,
           const Tensor& out) {
  using namespace internal;
  int32_t n1 = 0, n2 = 0, n_out = 0;
  if (in1.rank < 1 || in1.rank > kMaxRank || in2.rank < 1 ||
      in2.rank > kMaxRank || out.rank < 1 || out.rank > kMaxRank) {
    return kErrBadRank;
  }
  TFQ_RETURN_IF_ERROR(CheckTensor(in1, in1.rank, &n1));
  TFQ_RETURN_IF_ERROR(CheckTensor(in2, in2.rank, &n2));
  TFQ_RETURN_IF_ERROR(CheckTensor(out, out.rank, &n_out));
  Broadcast bc;
  TFQ_RETURN_IF_ERROR(MakeBroadcast(in1, in2, out, &bc));
  TFQ_RETURN_IF_ERROR(CheckInputOffset(p.input1_offset, in1.bits));
  TFQ_RETURN_IF_ERROR(CheckInputOffset(p.input2_offset, in2.bits));
  TFQ_RETURN_IF_ERROR(CheckZeroPoint(p.output_offset, out.bits));
  TFQ_RETURN_IF_ERROR(CheckActRange(p.act_min, p.act_max, out.bits));
  if (p.left_shift < 0 || p.left_shift > 30) return kErrBadShift;
  TFQ_RETURN_IF_ERROR(CheckAddMultiplier(p.input1_multiplier, p.input1_shift));
  TFQ_RETURN_IF_ERROR(CheckAddMultiplier(p.input2_multiplier, p.input2_shift));
  TFQ_RETURN_IF_ERROR(CheckAddMultiplier(p.output_multiplier, p.output_shift));
  TFQ_RETURN_IF_ERROR(CheckNoAlias(out, n_out, in1, n1));
  TFQ_RETURN_IF_ERROR(CheckNoAlias(out, n_out, in2, n2));

  ClearPackedTail(out.data, n_out, out.bits);
  switch (in1.bits) {
    case 8:
      DispatchIn2Bits<8>(p, bc, n_out, in1, in2, out);
      break;
    case 4:
      DispatchIn2Bits<4>(p, bc, n_out, in1, in2, out);
      break;
    default:
      DispatchIn2Bits<2>(p, bc, n_out, in1, in2, out);
      break;
  }
  return kOk;
}

}  // namespace tfq
