// Element-wise exp over contiguous buffers, written so that GCC vectorises it (AVX2+FMA clone chosen at run time).
// ATen's own vectorised exp (Sleef) is not reachable from an out-of-tree extension, and std::exp is scalar.
#pragma once
#include <cstdint>

namespace inspo {

// exp(x) in place for float32, max error about 1 ulp for x in [-87.3, 88.7]; x < -87.3 gives 0 and x > 88.7 gives
// +inf, as float32 exp does (denormal results are flushed to 0).
void exp_inplace(float* x, int64_t n);
void exp_inplace(double* x, int64_t n);

}  // namespace inspo
