// cuda_emu.h: the CUDA device-side vocabulary, re-implemented in plain C++17 so that the
// kernel sources in kernels/*.cu compile with g++ and run on the CPU (one fiber per CUDA
// thread; see emu_runtime.cpp for the scheduler).
//
// Only used when METASCHED_EMU is defined. A real CUDA build (nvcc/NVRTC) never sees this
// file: kernels/common.cuh includes it under `#ifdef METASCHED_EMU` only, and everything
// here mirrors a CUDA builtin of the same name and meaning.
//
// What it provides:
//   - qualifiers: __global__, __device__, __host__, __forceinline__, __launch_bounds__,
//     __align__ (mapped to nothing / inline / alignas); a bare __shared__ is a compile
//     error naming the macros to use instead;
//   - types and builtins: uint3, dim3, threadIdx, blockIdx, blockDim, gridDim, warpSize
//     (thread-local state the scheduler sets before it resumes a fiber);
//   - __syncthreads(), __syncwarp(), __shfl_sync/_up/_down/_xor, __ballot_sync,
//     __any_sync, __all_sync, __activemask() (cooperative barriers implemented by the runtime,
//     which records the call site so divergence errors name it);
//   - shared memory through METASCHED_SHARED / METASCHED_DYNAMIC_SHARED (per block, from a
//     block-local arena; the runtime poisons it with NaN bytes before first use);
//   - atomicAdd/atomicMax/atomicExch, and the float math (expf, tanhf, ..., __expf, rsqrtf).
#ifndef METASCHED_CUDA_EMU_H
#define METASCHED_CUDA_EMU_H

#ifndef METASCHED_EMU
#error "cuda_emu.h is the CPU emulation of CUDA; include it only with METASCHED_EMU defined"
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------
// Qualifiers.
#define __global__
#define __device__ inline
#define __host__
#define __forceinline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// ---------------------------------------------------------------------------------------
// Vector types and launch geometry.
struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

namespace metasched_emu {

// The CUDA thread the current fiber is; set by the scheduler before every resume.
inline thread_local uint3 tls_thread_idx = {0, 0, 0};
inline thread_local uint3 tls_block_idx = {0, 0, 0};
inline thread_local dim3 tls_block_dim = dim3(1, 1, 1);
inline thread_local dim3 tls_grid_dim = dim3(1, 1, 1);

// Kinds of warp-collective operations (the scheduler matches lanes on kind and mask).
enum WarpOp : int {
    kShflIdx = 0,
    kShflUp = 1,
    kShflDown = 2,
    kShflXor = 3,
    kBallot = 4,
    kSyncWarp = 5,
};

// Implemented in emu_runtime.cpp. Each suspends the calling fiber until the block (or the
// lanes of `mask`) have all arrived, or never returns if the launch fails meanwhile (the
// scheduler then abandons the block and reports why).
void syncthreads_at(const char* file, int line);
std::uint64_t warp_collective(int op, unsigned mask, std::uint64_t value, int param, int width,
                              const char* file, int line);
unsigned active_mask();
void* block_static_shared(const void* key, std::size_t bytes, std::size_t align, const char* file,
                          int line);
void* block_dynamic_shared();
[[noreturn]] void device_trap(const char* what, const char* file, int line);

template <typename T>
inline std::uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move at most 8 bytes of a trivially copyable type");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <typename T>
inline T from_bits(std::uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

template <typename T>
inline T shfl(int op, unsigned mask, T v, int param, int width, const char* file, int line) {
    return from_bits<T>(warp_collective(op, mask, to_bits(v), param, width, file, line));
}

}  // namespace metasched_emu

#define threadIdx (::metasched_emu::tls_thread_idx)
#define blockIdx (::metasched_emu::tls_block_idx)
#define blockDim (::metasched_emu::tls_block_dim)
#define gridDim (::metasched_emu::tls_grid_dim)
#define warpSize 32

// ---------------------------------------------------------------------------------------
// Barriers and warp collectives: functions whose defaulted `file`/`line` parameters are
// filled in at the call site (__builtin_FILE/__builtin_LINE), so the runtime can name the
// barrier a thread waits at when it reports divergence.
#define METASCHED_EMU_SITE const char *file = __builtin_FILE(), int line = __builtin_LINE()

inline void __syncthreads(METASCHED_EMU_SITE) { ::metasched_emu::syncthreads_at(file, line); }

inline void __syncwarp(unsigned mask = 0xffffffffu, METASCHED_EMU_SITE) {
    (void)::metasched_emu::warp_collective(::metasched_emu::kSyncWarp, mask, 0, 0, 32, file, line);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32, METASCHED_EMU_SITE) {
    return ::metasched_emu::shfl(::metasched_emu::kShflIdx, mask, v, src_lane, width, file, line);
}

template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, METASCHED_EMU_SITE) {
    return ::metasched_emu::shfl(::metasched_emu::kShflUp, mask, v, (int)delta, width, file, line);
}

template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32, METASCHED_EMU_SITE) {
    return ::metasched_emu::shfl(::metasched_emu::kShflDown, mask, v, (int)delta, width, file, line);
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, METASCHED_EMU_SITE) {
    return ::metasched_emu::shfl(::metasched_emu::kShflXor, mask, v, lane_mask, width, file, line);
}

inline unsigned __ballot_sync(unsigned mask, int pred, METASCHED_EMU_SITE) {
    return (unsigned)::metasched_emu::warp_collective(::metasched_emu::kBallot, mask, pred ? 1u : 0u, 0,
                                                      32, file, line);
}

inline int __any_sync(unsigned mask, int pred, METASCHED_EMU_SITE) {
    return __ballot_sync(mask, pred, file, line) != 0u;
}

inline int __all_sync(unsigned mask, int pred, METASCHED_EMU_SITE) {
    return __ballot_sync(mask, pred, file, line) == mask;
}

// The lanes of the caller's warp that exist and have not exited (no synchronisation: on a GPU
// it is the lanes converged at this instruction, which a kernel cannot rely on either).
inline unsigned __activemask() { return ::metasched_emu::active_mask(); }

[[noreturn]] inline void __trap(METASCHED_EMU_SITE) { ::metasched_emu::device_trap("__trap()", file, line); }

// ---------------------------------------------------------------------------------------
// Shared memory. `METASCHED_SHARED(float, tile, 256)` declares a per-block array (a static
// `__shared__ float tile[256]` on the GPU); `METASCHED_DYNAMIC_SHARED(float, buf)` gives the
// block's dynamic shared memory (the launch's `shared bytes`) as a `float*`. A function-local
// static here would be one array for the whole grid, so instead the runtime hands every
// thread of a block the same slot of that block's arena, keyed by the declaration site.
#define METASCHED_SHARED(type, name, count)                                                      \
    static const char name##_emu_site_ = 0;                                                      \
    type(&name)[count] = *static_cast<type(*)[count]>(::metasched_emu::block_static_shared(    \
        &name##_emu_site_, sizeof(type) * (count), alignof(type), __FILE__, __LINE__))
#define METASCHED_DYNAMIC_SHARED(type, name) \
    type* name = static_cast<type*>(::metasched_emu::block_dynamic_shared())
// A bare `__shared__` would be one variable for the whole grid here: refuse it by name.
#define __shared__ metasched_emu_declare_shared_memory_with_METASCHED_SHARED_or_METASCHED_DYNAMIC_SHARED

// ---------------------------------------------------------------------------------------
// Atomics (blocks run concurrently on several OS threads, so these are real atomics).
inline float atomicAdd(float* address, float val) {
    auto* word = reinterpret_cast<std::uint32_t*>(address);
    std::uint32_t expected = __atomic_load_n(word, __ATOMIC_RELAXED);
    for (;;) {
        const float cur = ::metasched_emu::from_bits<float>(expected);
        const auto desired = static_cast<std::uint32_t>(::metasched_emu::to_bits(cur + val));
        if (__atomic_compare_exchange_n(word, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            return cur;
        }
    }
}
inline int atomicAdd(int* address, int val) { return __atomic_fetch_add(address, val, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* address, unsigned val) {
    return __atomic_fetch_add(address, val, __ATOMIC_SEQ_CST);
}
inline int atomicMax(int* address, int val) {
    int cur = __atomic_load_n(address, __ATOMIC_SEQ_CST);
    while (cur < val &&
           !__atomic_compare_exchange_n(address, &cur, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return cur;
}
inline int atomicExch(int* address, int val) { return __atomic_exchange_n(address, val, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned* address, unsigned val) {
    return __atomic_exchange_n(address, val, __ATOMIC_SEQ_CST);
}

// ---------------------------------------------------------------------------------------
// Device math: <cmath> gives expf, logf, tanhf, sqrtf, fmaxf, fminf, fabsf in the global
// namespace; these are the CUDA-only names.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return fminf(fmaxf(x, 0.0f), 1.0f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------
// Registration: the generated wrapper of each .cu file lists its entry points with
// METASCHED_EMU_KERNEL(name); the runtime looks kernels up by name and calls them through a
// thunk that unpacks the `void** args` of a launch (each pointing at one argument value,
// exactly as cuLaunchKernel's kernelParams).
namespace metasched_emu {

using Thunk = void (*)(void** args);

struct KernelEntry {
    const char* name;
    Thunk thunk;
    // One letter per parameter: f float, i int, u unsigned, F float*, I int*, U unsigned*,
    // '?' anything else (which the runtime refuses to launch).
    const char* signature;
};

template <typename T>
struct TypeCode {
    static constexpr char value = '?';
};
template <> struct TypeCode<float> { static constexpr char value = 'f'; };
template <> struct TypeCode<int> { static constexpr char value = 'i'; };
template <> struct TypeCode<unsigned> { static constexpr char value = 'u'; };
template <> struct TypeCode<float*> { static constexpr char value = 'F'; };
template <> struct TypeCode<const float*> { static constexpr char value = 'F'; };
template <> struct TypeCode<int*> { static constexpr char value = 'I'; };
template <> struct TypeCode<const int*> { static constexpr char value = 'I'; };
template <> struct TypeCode<unsigned*> { static constexpr char value = 'U'; };
template <> struct TypeCode<const unsigned*> { static constexpr char value = 'U'; };

template <typename F>
struct KernelTraits;

template <typename... A>
struct KernelTraits<void (*)(A...)> {
    template <void (*F)(A...), std::size_t... I>
    static void call_impl(void** args, std::index_sequence<I...>) {
        (void)args;
        F(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
    }
    template <void (*F)(A...)>
    static void call(void** args) {
        call_impl<F>(args, std::index_sequence_for<A...>{});
    }
    static const char* signature() {
        static const char sig[] = {TypeCode<std::remove_cv_t<A>>::value..., '\0'};
        return sig;
    }
};

}  // namespace metasched_emu

#define METASCHED_EMU_KERNEL(fn)                                                      \
    ::metasched_emu::KernelEntry {                                                    \
        #fn, &::metasched_emu::KernelTraits<decltype(&fn)>::template call<&fn>,       \
            ::metasched_emu::KernelTraits<decltype(&fn)>::signature()                 \
    }

#endif  // METASCHED_CUDA_EMU_H
