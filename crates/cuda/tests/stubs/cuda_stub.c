/* A stand-in CUDA driver (libcuda.so.1) for tests on machines without one: enough for the
 * probe's "driver present" branch and no more. cuInit succeeds, cuDeviceGetCount reports
 * $STUB_CUDA_DEVICES devices (default 1), and the first call that would do real work,
 * cuDeviceGet (the start of cudarc's CudaContext::new), fails with
 * CUDA_ERROR_NOT_SUPPORTED, whose text (cuGetErrorString) names this stub. */
#include <stdlib.h>

int cuInit(unsigned int flags) { (void)flags; return 0; }
int cuDeviceGetCount(int *count) {
    const char *n = getenv("STUB_CUDA_DEVICES");
    *count = n ? atoi(n) : 1;
    return 0;
}
int cuDeviceGet(int *device, int ordinal) { (void)device; (void)ordinal; return 801; }
int cuGetErrorString(int error, const char **text) {
    *text = error == 801 ? "operation not supported (stub driver)" : "unknown error (stub driver)";
    return 0;
}
int cuGetErrorName(int error, const char **text) {
    *text = error == 801 ? "CUDA_ERROR_NOT_SUPPORTED" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
