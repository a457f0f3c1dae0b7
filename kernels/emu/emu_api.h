/* emu_api.h: the C ABI of the CUDA emulator (what crates/cuda/src/ffi.rs binds).
 *
 * emu_launch runs one kernel launch to completion on the CPU and returns EMU_OK or one of the
 * error codes below, with a message in err_buf. It is reentrant: several threads may launch
 * concurrently (each launch owns its worker threads, fibers and shared memory). */
#ifndef METASCHED_EMU_API_H
#define METASCHED_EMU_API_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A launch dimension (grid or block), as CUDA's dim3. */
typedef struct emu_dim3 {
    uint32_t x, y, z;
} emu_dim3;

/* In which order the scheduler resumes the fibers of a block (and hands blocks to workers). */
enum emu_order {
    EMU_ORDER_FORWARD = 0,  /* thread 0, 1, ..., n-1 in every round */
    EMU_ORDER_REVERSE = 1,  /* thread n-1, ..., 0 */
    EMU_ORDER_SHUFFLED = 2, /* a fresh seeded permutation every round */
};

/* Options of one launch; a null pointer means all defaults. */
typedef struct emu_options {
    uint32_t order;       /* enum emu_order */
    uint32_t workers;     /* OS threads running blocks; 0 = automatic (2..8, at most one per block) */
    uint64_t seed;        /* seed of EMU_ORDER_SHUFFLED */
    uint64_t stack_bytes; /* stack of each fiber; 0 = 64 KiB */
} emu_options;

/* Result codes of emu_launch. */
enum emu_status {
    EMU_OK = 0,
    EMU_ERR_UNKNOWN_KERNEL = 1,    /* no kernel of that name is registered */
    EMU_ERR_SIGNATURE = 2,         /* argument count or types differ from the kernel's */
    EMU_ERR_LAUNCH_CONFIG = 3,     /* grid/block/shared-memory size outside CUDA's limits */
    EMU_ERR_DIVERGENT_BARRIER = 4, /* __syncthreads not reached by every live thread of a block */
    EMU_ERR_EXITED_LANE = 5,       /* a warp collective's mask names an exited (or absent) lane */
    EMU_ERR_DEADLOCK = 6,          /* threads wait for each other forever (e.g. mismatched masks) */
    EMU_ERR_SHARED_MEMORY = 7,     /* shared memory over the limit, or written past its end */
    EMU_ERR_WARP_USAGE = 8,        /* invalid warp-collective use (width, own lane not in mask) */
    EMU_ERR_TRAP = 9,              /* the kernel called __trap() */
    EMU_ERR_INTERNAL = 10,         /* the emulator itself failed (out of memory, ...) */
};

/* Launches `kernel_name` over `grid` x `block` threads with `shared_bytes` of dynamic shared
 * memory. `args[i]` points at the value of parameter i (as cuLaunchKernel's kernelParams);
 * `signature` (may be null) is one letter per parameter as the caller sees it (f float,
 * i int, u unsigned, F float*, I int*, U unsigned*) and must equal the kernel's. Writes a
 * NUL-terminated message to err_buf (if err_len > 0) on failure. */
int emu_launch(const char* kernel_name, emu_dim3 grid, emu_dim3 block, size_t shared_bytes, void** args,
               size_t nargs, const char* signature, const emu_options* options, char* err_buf,
               size_t err_len);

/* Number of registered kernels (the built-in ones, plus test fixtures when linked in). */
size_t emu_kernel_count(void);

/* Name of registered kernel i (< emu_kernel_count()), or null. */
const char* emu_kernel_name(size_t i);

/* Parameter signature of a registered kernel, or null if none has that name. */
const char* emu_kernel_signature(const char* kernel_name);

#ifdef __cplusplus
}
#endif

#endif /* METASCHED_EMU_API_H */
