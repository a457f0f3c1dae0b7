// common.cuh: helpers shared by the metasched kernels.
//
// Compiles three ways: nvcc/NVRTC (real CUDA), and g++ with METASCHED_EMU defined, where
// emu/cuda_emu.h supplies the CUDA vocabulary and runs each CUDA thread as a fiber. Kernels
// therefore stick to plain C++17 plus the CUDA builtins that header provides, declare shared
// memory only through the two macros below, and use no inline PTX and no standard headers.
#ifndef METASCHED_COMMON_CUH
#define METASCHED_COMMON_CUH

#ifdef METASCHED_EMU
#include "emu/cuda_emu.h"
#else
// A per-block array `type name[count]` (count a compile-time constant).
#define METASCHED_SHARED(type, name, count) __shared__ type name[count]
// The block's dynamic shared memory (the launch's shared-bytes argument) as a `type*`.
#define METASCHED_DYNAMIC_SHARED(type, name)                              \
    extern __shared__ __align__(16) unsigned char metasched_dynamic_smem_[]; \
    type* name = reinterpret_cast<type*>(metasched_dynamic_smem_)
#endif

// Scheduler input features per step (spec §3: ln loss, ln ||g||, t/T).
#define METASCHED_FEATURES 3
#define METASCHED_FULL_MASK 0xffffffffu
// Floats of shared scratch block_sum needs (one per warp, plus the broadcast slot).
#define METASCHED_REDUCE_SCRATCH 33

namespace metasched {

// Activation codes passed to kernels (match metasched_cuda::ActCode).
enum ActCode : int { kActNone = 0, kActRelu = 1, kActTanh = 2 };

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// σ(x) without overflow for large |x| (the engine's `sigmoid`).
__device__ __forceinline__ float sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

// act(z).
__device__ __forceinline__ float act_apply(int act, float z) {
    if (act == kActRelu) return fmaxf(z, 0.0f);
    if (act == kActTanh) return tanhf(z);
    return z;
}

// act'(z) given h = act(z) (relu: 1 where h > 0, so 0 at the kink, as PyTorch).
__device__ __forceinline__ float act_d1(int act, float h) {
    if (act == kActRelu) return h > 0.0f ? 1.0f : 0.0f;
    if (act == kActTanh) return 1.0f - h * h;
    return 1.0f;
}

// act''(z) given h = act(z) (0 for relu and identity).
__device__ __forceinline__ float act_d2(int act, float h) {
    if (act == kActTanh) return -2.0f * h * (1.0f - h * h);
    return 0.0f;
}

// Linear index of the calling thread in its block, and the block's thread count.
__device__ __forceinline__ unsigned thread_linear() {
    return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
}
__device__ __forceinline__ unsigned block_threads() { return blockDim.x * blockDim.y * blockDim.z; }

// Lanes that exist in the calling thread's warp (the last warp of a block whose size is not a
// multiple of 32 is partial), and their mask: the mask every warp collective must use, since
// naming an absent lane is undefined behaviour.
__device__ __forceinline__ unsigned warp_lanes() {
    const unsigned first = thread_linear() & ~31u;
    const unsigned left = block_threads() - first;
    return left < 32u ? left : 32u;
}
__device__ __forceinline__ unsigned warp_mask() {
    const unsigned n = warp_lanes();
    return n == 32u ? METASCHED_FULL_MASK : ((1u << n) - 1u);
}

// Sum of `v` over the lanes of the calling warp by shuffles; the total is in lane 0.
__device__ __forceinline__ float warp_sum(float v) {
    const unsigned lane = thread_linear() & 31u;
    const unsigned n = warp_lanes();
    const unsigned mask = warp_mask();
    for (unsigned off = 16; off > 0; off >>= 1) {
        const float other = __shfl_down_sync(mask, v, off);
        if (lane + off < n) v += other;
    }
    return v;
}

// Sum of `v` over the whole block, returned to every thread. Every thread of the block must
// call it (it contains barriers); `scratch` is METASCHED_REDUCE_SCRATCH floats of shared
// memory, free again when it returns. The summation order is fixed by the block shape.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const unsigned t = thread_linear();
    const unsigned lane = t & 31u, warp = t >> 5;
    const unsigned warps = (block_threads() + 31u) >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? scratch[lane] : 0.0f;
        w = warp_sum(w);
        if (lane == 0) scratch[32] = w;
    }
    __syncthreads();
    const float total = scratch[32];
    __syncthreads();
    return total;
}

}  // namespace metasched

#endif  // METASCHED_COMMON_CUH
