#include "vec_math.h"

#include <cmath>
#include <cstring>

namespace inspo {
namespace {

inline float exp_f32(float x) {
  // Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, then a degree-6 minimax polynomial for exp(r).
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  const float xc = x < -87.33654f ? -87.33654f : (x > 88.72284f ? 88.72284f : x);
  const float k = std::floor(xc * kLog2e + 0.5f);
  float r = std::fma(-k, kLn2Hi, xc);
  r = std::fma(-k, kLn2Lo, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  // 2^k by building the exponent bits; k is in [-126, 128] after the clamp, so split it to stay representable.
  const int32_t ki = static_cast<int32_t>(k);
  const int32_t k1 = ki >> 1;
  const int32_t k2 = ki - k1;
  int32_t b1 = (k1 + 127) << 23;
  int32_t b2 = (k2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  float y = p * s1 * s2;
  y = x < -87.33654f ? 0.0f : y;
  y = x > 88.72284f ? INFINITY : y;
  return x != x ? x : y;
}

}  // namespace

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=haswell", "default")))
#endif
void exp_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = exp_f32(x[i]);
}

void exp_inplace(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

}  // namespace inspo
