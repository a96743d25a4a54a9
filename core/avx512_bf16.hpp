// What the AVX-512 BF16 kernels (core/bfloat16.cpp's rounding, the products of core/gemm_bf16_small.cpp
// and core/gemv_bf16.cpp) need from the compiler. Internal to core (not installed).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define LATENT_HAVE_AVX512_BF16_KERNEL 1

// Target attributes rather than -march: the kernels are built whatever the build machine (-Dnative=false
// included), and only called after the run-time check (cpu_has_avx512_bf16). Lambdas would not inherit
// the attribute, so a kernel's helpers are functions of their own with the same target.
#define LATENT_AVX512_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// GCC 12's AVX-512 intrinsics (the reductions, shifts and widenings) start their results from
// _mm512_undefined_*() placeholders, which -Wuninitialized then reports wherever they are inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif
