/* A stand-in CUDA driver (libcuda.so.1) for tests on machines without one: enough for the
 * probe's "driver present" branch and no more. cuInit succeeds, cuDeviceGetCount reports
 * $STUB_CUDA_DEVICES devices (default 1), and the first call that would do real work,
 * cuDeviceGet (the start of cudarc's CudaContext::new), fails with
 * CUDA_ERROR_NOT_SUPPORTED, whose text (cuGetErrorString) names this stub.
 *
 * With STUB_CUDA_CONTEXT=1 a context opens instead (device 0, compute capability
 * $STUB_CUDA_CC, default 90; driver version $STUB_CUDA_VERSION, default 12020) and every module
 * load fails with CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222): enough to test how a refused
 * precompiled kernel is reported. Streams can be created (the runtime opens a compute stream of
 * its own before loading modules) and do nothing. */
#include <stdlib.h>

int cuInit(unsigned int flags) { (void)flags; return 0; }
int cuDeviceGetCount(int *count) {
    const char *n = getenv("STUB_CUDA_DEVICES");
    *count = n ? atoi(n) : 1;
    return 0;
}
static int context_mode(void) {
    const char *m = getenv("STUB_CUDA_CONTEXT");
    return m && m[0] == '1';
}
static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v ? atoi(v) : dflt;
}
int cuDeviceGet(int *device, int ordinal) {
    if (!context_mode()) return 801;
    *device = ordinal;
    return 0;
}
static int stub_ctx;
int cuDevicePrimaryCtxRetain(void **ctx, int dev) { (void)dev; *ctx = &stub_ctx; return 0; }
int cuDevicePrimaryCtxRelease(int dev) { (void)dev; return 0; }
int cuDevicePrimaryCtxRelease_v2(int dev) { (void)dev; return 0; }
int cuCtxSetCurrent(void *ctx) { (void)ctx; return 0; }
int cuCtxGetCurrent(void **ctx) { *ctx = &stub_ctx; return 0; }
int cuCtxSynchronize(void) { return 0; }
static int stub_stream;
int cuStreamCreate(void **stream, unsigned int flags) { (void)flags; *stream = &stub_stream; return 0; }
int cuStreamDestroy(void *stream) { (void)stream; return 0; }
int cuStreamDestroy_v2(void *stream) { (void)stream; return 0; }
int cuStreamSynchronize(void *stream) { (void)stream; return 0; }
int cuDeviceGetAttribute(int *value, int attrib, int dev) {
    (void)dev;
    int cc = env_int("STUB_CUDA_CC", 90);
    if (attrib == 75) *value = cc / 10;      /* COMPUTE_CAPABILITY_MAJOR */
    else if (attrib == 76) *value = cc % 10; /* COMPUTE_CAPABILITY_MINOR */
    else *value = 0;
    return 0;
}
int cuDriverGetVersion(int *version) { *version = env_int("STUB_CUDA_VERSION", 12020); return 0; }
int cuModuleLoadData(void **module, const void *image) { (void)module; (void)image; return 222; }
int cuGetErrorString(int error, const char **text) {
    *text = error == 801 ? "operation not supported (stub driver)"
          : error == 222 ? "the provided PTX was compiled with an unsupported toolchain. (stub driver)"
          : "unknown error (stub driver)";
    return 0;
}
int cuGetErrorName(int error, const char **text) {
    *text = error == 801 ? "CUDA_ERROR_NOT_SUPPORTED"
          : error == 222 ? "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
