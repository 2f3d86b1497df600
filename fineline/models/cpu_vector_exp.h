// glibc's vector expf (libmvec, within 4 ulp) for the kernels' loops, without -ffast-math.
//
// glibc declares the SIMD variants of its math functions only under __FAST_MATH__. That flag
// would also link a constructor that turns on flush-to-zero and denormals-are-zero for the
// whole Python process, and let the compiler assume no NaN or infinity (the non-finite step
// guard relies on NaN reaching the loss). Declaring the variant here gives the vectoriser the
// same calls while every other IEEE rule stays in force.

#ifndef FINELINE_MODELS_CPU_VECTOR_EXP_H_
#define FINELINE_MODELS_CPU_VECTOR_EXP_H_

#include <cmath>

extern "C" float expf(float) noexcept __attribute__((simd("notinbranch")));

#endif  // FINELINE_MODELS_CPU_VECTOR_EXP_H_
