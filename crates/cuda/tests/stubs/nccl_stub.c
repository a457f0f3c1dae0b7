/* A stand-in libnccl.so.2 for tests without NCCL or a GPU: the entry points metasched's own
 * binding (crates/cuda/src/nccl_ffi.rs) resolves, with nccl.h's signatures. A communicator of
 * several ranks never finishes joining (ncclCommGetAsyncError says ncclInProgress forever: its
 * peers never come); one of a single rank joins after 20 polls. Every ncclCommAbort / ncclCommDestroy is appended to the file $STUB_NCCL_LOG. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct {
    size_t size;
    unsigned int magic;
    unsigned int version;
    int blocking;
    int cgaClusterSize;
    int minCTAs;
    int maxCTAs;
    const char *netName;
    int splitShare;
} ncclConfig_v21700;
typedef struct { int polls, needed; } stub_comm;

static void note(const char *what) {
    const char *path = getenv("STUB_NCCL_LOG");
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (f) { fprintf(f, "%s\n", what); fclose(f); }
}

int ncclGetVersion(int *version) { *version = 22304; return 0; }
int ncclGetUniqueId(ncclUniqueId *id) { memset(id->internal, 0x5a, sizeof id->internal); return 0; }
const char *ncclGetErrorString(int code) {
    switch (code) {
    case 4: return "invalid argument (stub)";
    case 7: return "operation in progress";
    default: return "stub error";
    }
}
int ncclCommInitRank(void **comm, int nranks, ncclUniqueId id, int rank) {
    (void)comm; (void)nranks; (void)id; (void)rank;
    return 2;
}
int ncclCommInitRankConfig(void **comm, int nranks, ncclUniqueId id, int rank, ncclConfig_v21700 *config) {
    *comm = NULL;
    if (config->magic != 0xcafebeef || config->size != sizeof(ncclConfig_v21700) || config->version != 21700
        || config->blocking != 0 || rank < 0 || rank >= nranks || id.internal[0] != 0x5a)
        return 4;
    stub_comm *c = calloc(1, sizeof *c);
    c->needed = nranks == 1 ? 20 : -1;
    *comm = c;
    return 7;
}
int ncclCommGetAsyncError(void *comm, int *state) {
    stub_comm *c = comm;
    *state = (c->needed >= 0 && ++c->polls >= c->needed) ? 0 : 7;
    return 0;
}
int ncclCommAbort(void *comm) { note("abort"); free(comm); return 0; }
int ncclCommDestroy(void *comm) { note("destroy"); free(comm); return 0; }
/* Enqueues nothing (no device memory is touched): "succeeds" unless the count is 0 or the type
 * and operation are not ncclInt64 / ncclSum, so the caller's wait on the stream is what ends it. */
int ncclAllReduce(const void *s, void *r, size_t n, int t, int op, void *comm, void *stream) {
    (void)s; (void)r; (void)comm; (void)stream;
    return (n == 0 || t != 4 || op != 0) ? 5 : 0;
}
