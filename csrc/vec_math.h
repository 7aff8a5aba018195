// What the CPU kernels share: 256-bit vectors (GCC vector extensions) with the exp and log they need, and at the
// end a parallel loop that really runs in parallel and an allocator for large outputs. Needs GCC (vector
// conditionals, __builtin_shuffle).
//
// ATen's vectorised math (Sleef) is not reachable from an out-of-tree extension, std::exp/std::log are opaque
// calls, and GCC does not auto-vectorise a scalar exp with clamps: under the default -ftrapping-math its jump
// threading leaves floating-point operations in branches. Vector types make the vectorisation explicit.
//
// A kernel is instantiated twice from one always-inlined body: once in a function marked INSPO_AVX2_FMA and once
// in a plain one (which runs each 256-bit operation as two SSE2 ones), and picks one per call with
// has_avx2_fma(). (GCC's target_clones("arch=haswell") would dispatch on the CPU model, not its features, and
// take the baseline clone on every AMD CPU.)
//
// exp and log are within about 1 ulp of the correctly rounded value; exp flushes denormal results to 0.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define INSPO_AVX2_FMA __attribute__((target("avx2,fma")))
#else
#define INSPO_AVX2_FMA
#endif
#define INSPO_INLINE inline __attribute__((always_inline))

// Kernels keep every function that takes or returns a vector always inlined (as here), so no vector crosses a call
// boundary and GCC's note that the baseline instantiation passes 256-bit vectors differently from AVX code does not
// apply; the suppression deliberately extends to the files that include this header.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace inspo {
namespace simd {

inline bool has_avx2_fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

template <typename T>
struct Traits;

template <>
struct Traits<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));  // lane masks of comparisons
  typedef uint32_t U __attribute__((vector_size(32)));
  using Bits = uint32_t;
  static constexpr int64_t kWidth = 8;
  static constexpr int kMantBits = 23;
  static constexpr Bits kBias = 127;
  // Adding 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer held in the low mantissa bits.
  static constexpr float kRound = 12582912.0f;
  static constexpr float kExpLo = -87.33654f;  // exp of it is the smallest normal float
};

template <>
struct Traits<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t I __attribute__((vector_size(32)));
  typedef uint64_t U __attribute__((vector_size(32)));
  using Bits = uint64_t;
  static constexpr int64_t kWidth = 4;
  static constexpr int kMantBits = 52;
  static constexpr Bits kBias = 1023;
  static constexpr double kRound = 6755399441055744.0;
  static constexpr double kExpLo = -708.3964185322641;
};

template <typename T>
using Vec = typename Traits<T>::V;
template <typename T>
using Mask = typename Traits<T>::I;
template <typename T>
constexpr int64_t kWidth = Traits<T>::kWidth;

template <typename T>
INSPO_INLINE Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
INSPO_INLINE void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// Four values of either precision as four doubles, and back: the row-wise epilogues run in double.
using Vec4f = float __attribute__((vector_size(16)));

INSPO_INLINE Vec<double> load4(const double* p) { return load(p); }

INSPO_INLINE Vec4f load4(const float* p) {
  Vec4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

INSPO_INLINE Vec<double> to_double(Vec<double> v) { return v; }

INSPO_INLINE Vec<double> to_double(Vec4f v) { return __builtin_convertvector(v, Vec<double>); }

INSPO_INLINE void store_as(double* p, Vec<double> v) { store(p, v); }

INSPO_INLINE void store_as(float* p, Vec<double> v) {
  const Vec4f f = __builtin_convertvector(v, Vec4f);
  std::memcpy(p, &f, sizeof f);
}

// A float vector widened to double, as its low and high four lanes. (Converting all eight lanes at once is what
// GCC turns into two vcvtps2pd; converting a four-lane half goes through 128-bit pieces.)
INSPO_INLINE void widen(Vec<float> v, Vec<double>& lo, Vec<double>& hi) {
  typedef double V8d __attribute__((vector_size(64)));
  const V8d d = __builtin_convertvector(v, V8d);
  std::memcpy(&lo, &d, sizeof lo);
  std::memcpy(&hi, reinterpret_cast<const char*>(&d) + sizeof lo, sizeof hi);
}

// The first n < kWidth lanes; the others are zero.
template <typename T>
INSPO_INLINE Vec<T> load_first(const T* p, int64_t n) {
  Vec<T> v{};
  std::memcpy(&v, p, n * sizeof(T));
  return v;
}

template <typename T>
INSPO_INLINE void store_first(T* p, Vec<T> v, int64_t n) {
  std::memcpy(p, &v, n * sizeof(T));
}

template <typename T>
INSPO_INLINE Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

// Lane masks (all ones where true) from kWidth bools: each lane shifts its byte out of a broadcast word, which
// AVX2 does in one variable shift.
INSPO_INLINE Mask<float> bool_mask(const bool* p, float) {
  uint32_t w[2];
  std::memcpy(w, p, sizeof w);
  const Traits<float>::U words = {w[0], w[0], w[0], w[0], w[1], w[1], w[1], w[1]};
  const Traits<float>::U shifts = {0, 8, 16, 24, 0, 8, 16, 24};
  return ((words >> shifts) & 0xFF) != 0;
}

INSPO_INLINE Mask<double> bool_mask(const bool* p, double) {
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
  const Traits<double>::U words = {w, w, w, w};
  const Traits<double>::U shifts = {0, 8, 16, 24};
  return ((words >> shifts) & 0xFF) != 0;
}

template <typename T>
INSPO_INLINE Mask<T> load_mask(const bool* p) {
  return bool_mask(p, T());
}

template <typename T>
INSPO_INLINE Mask<T> load_mask_first(const bool* p, int64_t n) {
  bool b[kWidth<T>] = {};
  std::memcpy(b, p, n);
  return bool_mask(b, T());
}

// Transposes the W x W tile whose row i starts at src + i * stride: out[j] holds column j. (Unpack, in-lane shuffle
// and 128-bit permute stages; GCC maps each __builtin_shuffle to one AVX instruction.)
INSPO_INLINE void transpose(const float* src, int64_t stride, Vec<float>* out) {
  using V = Vec<float>;
  using I = Mask<float>;
  V t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    const V a = load(src + 2 * i * stride), b = load(src + (2 * i + 1) * stride);
    t[2 * i] = __builtin_shuffle(a, b, I{0, 8, 1, 9, 4, 12, 5, 13});
    t[2 * i + 1] = __builtin_shuffle(a, b, I{2, 10, 3, 11, 6, 14, 7, 15});
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i) {
      u[4 * h + 2 * i] = __builtin_shuffle(t[4 * h + i], t[4 * h + i + 2], I{0, 1, 8, 9, 4, 5, 12, 13});
      u[4 * h + 2 * i + 1] = __builtin_shuffle(t[4 * h + i], t[4 * h + i + 2], I{2, 3, 10, 11, 6, 7, 14, 15});
    }
  for (int j = 0; j < 4; ++j) {
    out[j] = __builtin_shuffle(u[j], u[j + 4], I{0, 1, 2, 3, 8, 9, 10, 11});
    out[j + 4] = __builtin_shuffle(u[j], u[j + 4], I{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

INSPO_INLINE void transpose(const double* src, int64_t stride, Vec<double>* out) {
  using V = Vec<double>;
  using I = Mask<double>;
  const V r0 = load(src), r1 = load(src + stride), r2 = load(src + 2 * stride), r3 = load(src + 3 * stride);
  const V t0 = __builtin_shuffle(r0, r1, I{0, 4, 2, 6}), t1 = __builtin_shuffle(r0, r1, I{1, 5, 3, 7});
  const V t2 = __builtin_shuffle(r2, r3, I{0, 4, 2, 6}), t3 = __builtin_shuffle(r2, r3, I{1, 5, 3, 7});
  out[0] = __builtin_shuffle(t0, t2, I{0, 1, 4, 5});
  out[1] = __builtin_shuffle(t1, t3, I{0, 1, 4, 5});
  out[2] = __builtin_shuffle(t0, t2, I{2, 3, 6, 7});
  out[3] = __builtin_shuffle(t1, t3, I{2, 3, 6, 7});
}

// out[i] = keep[i] ? x[i] : fill for i < n. Widening bools to lane masks takes one instruction in AVX2
// (vpmovzxbd) but about eight with generic vectors, so AVX2 kernels (kAvx2) call select_avx2. It cannot be part of
// the always-inlined bodies: a function using intrinsics only inlines into one compiled for AVX2 as well.
template <typename T>
INSPO_INLINE void select_generic(const T* x, const bool* keep, T fill, int64_t n, T* out) {
  constexpr int64_t W = kWidth<T>;
  const Vec<T> f = splat(fill);
  const int64_t full = n / W * W;
  for (int64_t i = 0; i < full; i += W) store(out + i, load_mask<T>(keep + i) ? load(x + i) : f);
  if (full < n)
    store_first(out + full, load_mask_first<T>(keep + full, n - full) ? load_first(x + full, n - full) : f, n - full);
}

#if defined(__x86_64__) && defined(__GNUC__)
INSPO_AVX2_FMA inline void select_avx2(const float* x, const bool* keep, float fill, int64_t n, float* out) {
  const __m256 f = _mm256_set1_ps(fill);
  const int64_t full = n / 8 * 8;
  for (int64_t i = 0; i < full; i += 8) {
    const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep + i)));
    // blendv picks by the sign bit: all ones where the byte is not 0 (any nonzero byte is true, as in bool_mask).
    _mm256_storeu_ps(out + i, _mm256_blendv_ps(f, _mm256_loadu_ps(x + i),
                                               _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, _mm256_setzero_si256()))));
  }
  select_generic(x + full, keep + full, fill, n - full, out + full);
}

INSPO_AVX2_FMA inline void select_avx2(const double* x, const bool* keep, double fill, int64_t n, double* out) {
  const __m256d f = _mm256_set1_pd(fill);
  const int64_t full = n / 4 * 4;
  for (int64_t i = 0; i < full; i += 4) {
    int32_t bytes;
    std::memcpy(&bytes, keep + i, sizeof bytes);
    const __m256i k = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(bytes));
    _mm256_storeu_pd(out + i, _mm256_blendv_pd(f, _mm256_loadu_pd(x + i),
                                               _mm256_castsi256_pd(_mm256_cmpgt_epi64(k, _mm256_setzero_si256()))));
  }
  select_generic(x + full, keep + full, fill, n - full, out + full);
}
#endif

template <bool kAvx2, typename T>
INSPO_INLINE void select(const T* x, const bool* keep, T fill, int64_t n, T* out) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (kAvx2) {
    select_avx2(x, keep, fill, n, out);
    return;
  }
#endif
  select_generic(x, keep, fill, n, out);
}

// max/min that return a when either operand is NaN, so a NaN input flows through.
template <typename T>
INSPO_INLINE Vec<T> max(Vec<T> a, Vec<T> b) {
  return a < b ? b : a;
}

template <typename T>
INSPO_INLINE Vec<T> min(Vec<T> a, Vec<T> b) {
  return b < a ? b : a;
}

// 2^k for integer-valued k in [-bias+1, bias]: k + kRound + bias holds k + bias in its low mantissa bits, and the
// shift moves them into the exponent field while pushing everything else out of the lane.
template <typename T>
INSPO_INLINE Vec<T> pow2i(Vec<T> k) {
  using Tr = Traits<T>;
  return (Vec<T>)((typename Tr::U)(k + (Tr::kRound + T(Tr::kBias))) << Tr::kMantBits);
}

// exp(x) = 2^k exp(r) with the Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and a polynomial for exp(r): the
// degree-6 minimax of Cephes for float, Taylor to degree 13 for double (truncation error < 1e-17).
template <typename T>
INSPO_INLINE void exp_reduce(Vec<T> x, Vec<T>& k, Vec<T>& p) {
  using Tr = Traits<T>;
  constexpr bool kFloat = std::is_same_v<T, float>;
  constexpr T kLog2e = T(1.4426950408889634);
  // High part of ln2 with trailing zero bits, so k * kLn2Hi is exact.
  constexpr T kLn2Hi = kFloat ? T(0.693359375) : T(6.93147180369123816490e-01);
  constexpr T kLn2Lo = kFloat ? T(-2.12194440e-4) : T(1.90821492927058770002e-10);
  k = (x * kLog2e + Tr::kRound) - Tr::kRound;
  Vec<T> r = x - k * kLn2Hi;
  r = r - k * kLn2Lo;
  if constexpr (kFloat) {
    p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
  } else {
    p = splat(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
  }
  p = (p * r * r + r) + T(1);
}

// exp(x) for any x. 2^k is applied as two normal factors, so that the last multiplication overflows to inf exactly
// where exp does. A result below the smallest normal number is 0 instead of a denormal: computing it takes a
// microcode assist that slows the whole loop down 2.5x on Zen 3. NaN stays NaN.
template <typename T>
INSPO_INLINE Vec<T> exp(Vec<T> x) {
  using Tr = Traits<T>;
  // Far above the overflow threshold, where the factors of 2^k are still normal.
  constexpr T kHi = T(Tr::kBias + 8) * T(0.6931471805599453);
  Vec<T> k, p;
  exp_reduce<T>(min<T>(max<T>(x, splat(Tr::kExpLo)), splat(kHi)), k, p);
  const Vec<T> k1 = (k * T(0.5) + Tr::kRound) - Tr::kRound;
  const Vec<T> y = p * pow2i<T>(k1) * pow2i<T>(k - k1);
  return x < Tr::kExpLo ? Vec<T>{} : y;
}

// exp(x) for x in [kExpLo, 0] only (the caller clamps, and zeroes what was below kExpLo): 2^k is one normal factor.
template <typename T>
INSPO_INLINE Vec<T> exp_nonpositive(Vec<T> x) {
  Vec<T> k, p;
  exp_reduce<T>(x, k, p);
  return p * pow2i<T>(k);
}

// log(x) for positive, normal, finite x (callers guarantee it): x = 2^e m with m in [sqrt(1/2), sqrt(2)), then
// fdlibm's kernel log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)) with s = f / (2 + f).
template <typename T>
INSPO_INLINE Vec<T> log(Vec<T> x) {
  using Tr = Traits<T>;
  using U = typename Tr::U;
  constexpr bool kFloat = std::is_same_v<T, float>;
  // High part of ln2 with trailing zero bits, so e * kLn2Hi is exact.
  constexpr T kLn2Hi = kFloat ? T(6.9313812256e-01) : T(6.93147180369123816490e-01);
  constexpr T kLn2Lo = kFloat ? T(9.0580006145e-06) : T(1.90821492927058770002e-10);
  constexpr typename Tr::Bits kMantMask = (typename Tr::Bits(1) << Tr::kMantBits) - 1;
  constexpr T kTwoPowMant = T(typename Tr::Bits(1) << Tr::kMantBits);
  typename Tr::Bits one_bits, two_pow_mant_bits;
  const T one = T(1);
  std::memcpy(&one_bits, &one, sizeof one);
  std::memcpy(&two_pow_mant_bits, &kTwoPowMant, sizeof kTwoPowMant);
  const U bits = (U)x;
  Vec<T> m = (Vec<T>)((bits & kMantMask) | one_bits);
  // The biased exponent, converted exactly through the mantissa of 2^mant_bits (AVX2 has no int64 -> double).
  Vec<T> e = (Vec<T>)((bits >> Tr::kMantBits) | two_pow_mant_bits) - (kTwoPowMant + T(Tr::kBias));
  const Mask<T> big = m > T(1.4142135623730951);
  m = big ? m * T(0.5) : m;
  e = big ? e + T(1) : e;
  const Vec<T> f = m - T(1);
  const Vec<T> s = f / (T(2) + f);
  const Vec<T> z = s * s;
  const Vec<T> w = z * z;
  const Vec<T> t1 =
      w * (T(3.999999999940941908e-01) + w * (T(2.222219843214978396e-01) + w * T(1.531383769920937332e-01)));
  const Vec<T> t2 =
      z * (T(6.666666666666735130e-01) +
           w * (T(2.857142874366239149e-01) + w * (T(1.818357216161805012e-01) + w * T(1.479819860511658591e-01))));
  const Vec<T> hfsq = T(0.5) * f * f;
  return e * kLn2Hi - ((hfsq - (s * (hfsq + (t1 + t2)) + e * kLn2Lo)) - f);
}

}  // namespace simd

// f(b, e) over pieces [b, e) of at least `grain` indices covering [begin, end), on up to at::get_num_threads()
// threads: the caller and helper tasks on torch's inter-op pool (at::launch) take pieces, about 8 per thread, from
// a shared counter. The caller never waits for a helper that has not started: on a shared machine the OS often
// keeps one of them off the CPU for a scheduler tick or more, and an OpenMP region (at::parallel_for) would have
// to wait for it to join; here the caller does its pieces instead and only waits for pieces in progress.
//
// (at::parallel_for also has a second problem here: with ATen's OpenMP backend it is an inline
// `#pragma omp parallel`, which in this extension, built without -fopenmp, silently runs on one thread.)
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const int64_t n = end - begin;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / std::max<int64_t>(grain, 1));
  if (threads <= 1 || at::in_parallel_region()) {
    if (n > 0) f(begin, end);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next, busy{0};
    int64_t end, piece;
    const F* f;
  };
  // Shared outlives this call if a helper starts late; it then only finds the counter exhausted. `busy` rises
  // before a helper takes a piece, so once the counter is exhausted the caller need only wait for busy == 0.
  const auto state = std::make_shared<Shared>();
  state->next = begin;
  state->end = end;
  state->piece = std::max(grain, n / (8 * threads));
  state->f = &f;
  const auto take = [](Shared& s, bool helper) {
    for (;;) {
      if (helper) ++s.busy;
      const int64_t b = s.next.fetch_add(s.piece);
      if (b < s.end) (*s.f)(b, std::min(b + s.piece, s.end));
      if (helper) --s.busy;
      if (b >= s.end) return;
    }
  };
  for (int64_t i = 1; i < threads; ++i) at::launch([state, take] { take(*state, true); });
  take(*state, false);
  while (state->busy.load() > 0) std::this_thread::yield();
}

// at::empty for an output that the kernel then writes in full. Above a few MiB glibc maps fresh pages on every
// call, and faulting them in 4 KiB at a time (about 2.4 us each in a VM) takes longer than writing them; asking
// for transparent huge pages (honoured in the common THP "madvise" mode) makes that 512x fewer faults. The advice
// covers the whole pages inside the tensor only, so it never touches a neighbouring allocation's pages.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kPage = 4096;
  if (t.nbytes() >= (uintptr_t(4) << 20)) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + kPage - 1) & ~(kPage - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + t.nbytes()) & ~(kPage - 1);
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // only advice: failure is harmless
  }
#endif
  return t;
}

}  // namespace inspo
