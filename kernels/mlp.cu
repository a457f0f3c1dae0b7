// mlp.cu: the learner's dense layers, batched over tasks, each task with its own parameters
// (theta_t differs per task during the inner loop): forward, gradient, and the two halves of
// the R-operator for exact Hessian-vector products (Pearlmutter). CPU twin: Mlp::forward,
// Mlp::loss_and_grad and Mlp::hvp in crates/engine/src/mlp.rs; a host-side driver running
// these per layer is metasched_cuda::learner.
//
// Conventions (B = tasks, n = rows = points per task, layer l maps din -> dout):
//   activations H, Z, deltas: [B, n, width], task b at b·n·width, row-major;
//   parameter vectors theta, u (direction), grad, hv: [B, S] with S = param_stride ≥ the
//   learner's parameter count; task b's weight W [dout, din] starts at b·S + w_off and its
//   bias [dout] at b·S + b_off (PyTorch nn.Linear layout). act: 0 none, 1 relu, 2 tanh.
// All GEMM-like kernels use 16×16 tiles staged in static shared memory (2 × 16×17 floats,
// padded against bank conflicts), block (16, 16), two barriers per K-tile; grid.y = B and
// grid.x enumerates the output tiles (row-tile major). "Tiles(M, N)" = ⌈M/16⌉·⌈N/16⌉.
//
// linear_forward_f32:   out = act(in Wᵀ + b).
//   Grid (Tiles(n, dout), B). Bytes: 4·B·(n·din + n·dout + dout·din + dout) (+ tile re-reads).
//   FLOPs: 2·B·n·din·dout + B·n·dout.
// linear_backward_f32:  grad[W] = δᵀ in, grad[b] = Σ_rows δ (written, not accumulated), and,
//   if want_dinput: dh = δ W, delta_prev = dh ⊙ act'(in) (act = the activation that made in).
//   Grid (Tiles(dout, din + 1) + want_dinput·Tiles(n, din), B): the bias is computed as an
//   extra column of the weight gradient against a column of ones.
//   Bytes: 4·B·(n·dout + n·din + dout·(din + 1) + want·(dout·din + 3·n·din)).
//   FLOPs: 2·B·n·dout·(din + 1) + want·(2·B·n·dout·din + B·n·din).
// linear_rop_f32 (R-forward): rz = R{H} Wᵀ [if has_rh_in] + in Uᵀ + U_b;
//   rh_out = act'(h_out) ⊙ rz [if act != none] (h_out = this layer's activation output).
//   Grid (Tiles(n, dout), B). Bytes: 4·B·((1 + has)·(n·din + dout·din) + dout + 2·n·dout
//   + [act]·2·n·dout). FLOPs: 2·(1 + has)·B·n·din·dout + 2·B·n·dout.
// linear_rop_backward_f32 (R-backward): hv[W] = R{δ}ᵀ in + [has_prev] δᵀ R{H}, hv[b] = Σ R{δ};
//   and if has_prev: R{dH} = R{δ} W + δ U,
//   rdelta_prev = R{dH} ⊙ act'(in) + [tanh] dh_in ⊙ act''(in) ⊙ rz_prev
//   (in = H_l = act(Z_{l−1}), rh_in = R{H_l}, dh_in = dL/dH_l, rz_prev = R{Z_{l−1}}).
//   Grid (Tiles(dout, din + 1) + has_prev·Tiles(n, din), B).
//   Bytes: 4·B·((1 + has)·(n·dout + n·din) + dout·(din + 1) + has·(2·dout·din + 4·n·din)).
//   FLOPs: 2·(1 + has)·B·n·dout·(din + 1) + has·(4·B·n·dout·din + 5·B·n·din).
// activation_forward_f32:  out = act(in), elementwise over count values.
//   Grid (⌈count/256⌉), block (256). Bytes: 8·count. FLOPs: count (tanh: count transcendentals).
// activation_backward_f32: delta = dh ⊙ act'(h) given h = act(z).
//   Grid (⌈count/256⌉), block (256). Bytes: 12·count. FLOPs: 3·count.
#include "common.cuh"

#define METASCHED_TILE 16
#define METASCHED_TILE_PAD (METASCHED_TILE + 1)

namespace metasched {

// A matrix operand read through strides: element (r, c) is p[r·sr + c·sc] inside rows × cols,
// 0 outside, and 1 in column ones_col (for r < rows; -1 for none).
struct Operand {
    const float* p;
    int sr, sc, rows, cols, ones_col;
};

__device__ __forceinline__ float operand_at(const Operand& o, int r, int c) {
    if (r >= o.rows) return 0.0f;
    if (c == o.ones_col) return 1.0f;
    if (c >= o.cols) return 0.0f;
    return o.p[r * o.sr + c * o.sc];
}

// acc + Σ_k A(m, k) B(k, n) for the calling thread's element (m, n) = (m0 + ty, n0 + tx), over
// k < K, one 16-wide K-tile at a time through shared memory. Every thread of the (16, 16)
// block must call it with the same K (it contains barriers).
__device__ __forceinline__ float tile_product(float acc, const Operand& A, const Operand& B, int K, int m0,
                                              int n0, float* as, float* bs) {
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (int k0 = 0; k0 < K; k0 += METASCHED_TILE) {
        as[ty * METASCHED_TILE_PAD + tx] = operand_at(A, m0 + ty, k0 + tx);
        bs[ty * METASCHED_TILE_PAD + tx] = operand_at(B, k0 + ty, n0 + tx);
        __syncthreads();
        for (int kk = 0; kk < METASCHED_TILE; ++kk) {
            acc += as[ty * METASCHED_TILE_PAD + kk] * bs[kk * METASCHED_TILE_PAD + tx];
        }
        __syncthreads();
    }
    return acc;
}

// The GEMM kernels assume a (16, 16, 1) block; anything else is a launch bug.
__device__ __forceinline__ void require_tile_block() {
    if (blockDim.x != METASCHED_TILE || blockDim.y != METASCHED_TILE || blockDim.z != 1) __trap();
}

// Splits a tile index of an M × N output into its top-left element.
__device__ __forceinline__ void tile_origin(int tile, int n_cols, int* m0, int* n0) {
    const int tiles_n = ceil_div(n_cols, METASCHED_TILE);
    *m0 = tile / tiles_n * METASCHED_TILE;
    *n0 = tile % tiles_n * METASCHED_TILE;
}

__device__ __forceinline__ int tiles(int m, int n) {
    return ceil_div(m, METASCHED_TILE) * ceil_div(n, METASCHED_TILE);
}

}  // namespace metasched

extern "C" __global__ void linear_forward_f32(float* out, const float* in, const float* theta, int tasks, int rows,
                                              int din, int dout, int param_stride, int w_off, int b_off, int act) {
    using namespace metasched;
    require_tile_block();
    const int b = blockIdx.y, tile = blockIdx.x;
    if (b >= tasks || tile >= tiles(rows, dout)) return;  // uniform over the block
    METASCHED_SHARED(float, as, METASCHED_TILE * METASCHED_TILE_PAD);
    METASCHED_SHARED(float, bs, METASCHED_TILE * METASCHED_TILE_PAD);
    const float* params = theta + static_cast<long long>(b) * param_stride;
    const Operand A{in + b * rows * din, din, 1, rows, din, -1};
    const Operand W{params + w_off, 1, din, din, dout, -1};  // (k, j) = W[j, k]
    int m0, n0;
    tile_origin(tile, dout, &m0, &n0);
    const float acc = tile_product(0.0f, A, W, din, m0, n0, as, bs);
    const int r = m0 + threadIdx.y, j = n0 + threadIdx.x;
    if (r < rows && j < dout) out[(b * rows + r) * dout + j] = act_apply(act, acc + params[b_off + j]);
}

extern "C" __global__ void linear_backward_f32(float* grad, float* dh, float* delta_prev, const float* delta,
                                               const float* in, const float* theta, int tasks, int rows, int din,
                                               int dout, int param_stride, int w_off, int b_off, int act,
                                               int want_dinput) {
    using namespace metasched;
    require_tile_block();
    const int b = blockIdx.y;
    const int weight_tiles = tiles(dout, din + 1);
    const int input_tiles = want_dinput ? tiles(rows, din) : 0;
    int tile = blockIdx.x;
    if (b >= tasks || tile >= weight_tiles + input_tiles) return;  // uniform over the block
    METASCHED_SHARED(float, as, METASCHED_TILE * METASCHED_TILE_PAD);
    METASCHED_SHARED(float, bs, METASCHED_TILE * METASCHED_TILE_PAD);
    const long long pbase = static_cast<long long>(b) * param_stride;
    const float* d = delta + b * rows * dout;
    const float* x = in + b * rows * din;
    int m0, n0;
    if (tile < weight_tiles) {
        // [gW | gb] (dout × (din + 1)) = δᵀ [in | 1].
        const Operand dT{d, 1, dout, dout, rows, -1};
        const Operand X1{x, din, 1, rows, din, din};
        tile_origin(tile, din + 1, &m0, &n0);
        const float acc = tile_product(0.0f, dT, X1, rows, m0, n0, as, bs);
        const int j = m0 + threadIdx.y, p = n0 + threadIdx.x;
        if (j < dout && p < din) grad[pbase + w_off + j * din + p] = acc;
        if (j < dout && p == din) grad[pbase + b_off + j] = acc;
    } else {
        // dh (n × din) = δ W;  delta_prev = dh ⊙ act'(in).
        tile -= weight_tiles;
        const Operand D{d, dout, 1, rows, dout, -1};
        const Operand W{theta + pbase + w_off, din, 1, dout, din, -1};
        tile_origin(tile, din, &m0, &n0);
        const float acc = tile_product(0.0f, D, W, dout, m0, n0, as, bs);
        const int r = m0 + threadIdx.y, p = n0 + threadIdx.x;
        if (r < rows && p < din) {
            const int e = (b * rows + r) * din + p;
            dh[e] = acc;
            delta_prev[e] = acc * act_d1(act, in[e]);
        }
    }
}

extern "C" __global__ void linear_rop_f32(float* rz, float* rh_out, const float* rh_in, const float* in,
                                          const float* h_out, const float* theta, const float* u, int tasks,
                                          int rows, int din, int dout, int param_stride, int w_off, int b_off,
                                          int act, int has_rh_in) {
    using namespace metasched;
    require_tile_block();
    const int b = blockIdx.y, tile = blockIdx.x;
    if (b >= tasks || tile >= tiles(rows, dout)) return;  // uniform over the block
    METASCHED_SHARED(float, as, METASCHED_TILE * METASCHED_TILE_PAD);
    METASCHED_SHARED(float, bs, METASCHED_TILE * METASCHED_TILE_PAD);
    const long long pbase = static_cast<long long>(b) * param_stride;
    int m0, n0;
    tile_origin(tile, dout, &m0, &n0);
    float acc = 0.0f;
    if (has_rh_in) {
        const Operand RH{rh_in + b * rows * din, din, 1, rows, din, -1};
        const Operand W{theta + pbase + w_off, 1, din, din, dout, -1};
        acc = tile_product(acc, RH, W, din, m0, n0, as, bs);
    }
    const Operand X{in + b * rows * din, din, 1, rows, din, -1};
    const Operand U{u + pbase + w_off, 1, din, din, dout, -1};
    acc = tile_product(acc, X, U, din, m0, n0, as, bs);
    const int r = m0 + threadIdx.y, j = n0 + threadIdx.x;
    if (r < rows && j < dout) {
        const int e = (b * rows + r) * dout + j;
        acc += u[pbase + b_off + j];
        rz[e] = acc;
        if (act != kActNone) rh_out[e] = act_d1(act, h_out[e]) * acc;
    }
}

extern "C" __global__ void linear_rop_backward_f32(float* hv, float* rdelta_prev, const float* rdelta,
                                                   const float* delta, const float* in, const float* rh_in,
                                                   const float* dh_in, const float* rz_prev, const float* theta,
                                                   const float* u, int tasks, int rows, int din, int dout,
                                                   int param_stride, int w_off, int b_off, int act,
                                                   int has_prev) {
    using namespace metasched;
    require_tile_block();
    const int b = blockIdx.y;
    const int weight_tiles = tiles(dout, din + 1);
    const int input_tiles = has_prev ? tiles(rows, din) : 0;
    int tile = blockIdx.x;
    if (b >= tasks || tile >= weight_tiles + input_tiles) return;  // uniform over the block
    METASCHED_SHARED(float, as, METASCHED_TILE * METASCHED_TILE_PAD);
    METASCHED_SHARED(float, bs, METASCHED_TILE * METASCHED_TILE_PAD);
    const long long pbase = static_cast<long long>(b) * param_stride;
    const float* rd = rdelta + b * rows * dout;
    const float* x = in + b * rows * din;
    int m0, n0;
    if (tile < weight_tiles) {
        // [hvW | hvb] = R{δ}ᵀ [in | 1] + δᵀ [R{H} | 0].
        const Operand rdT{rd, 1, dout, dout, rows, -1};
        const Operand X1{x, din, 1, rows, din, din};
        tile_origin(tile, din + 1, &m0, &n0);
        float acc = tile_product(0.0f, rdT, X1, rows, m0, n0, as, bs);
        if (has_prev) {
            const Operand dT{delta + b * rows * dout, 1, dout, dout, rows, -1};
            const Operand RH0{rh_in + b * rows * din, din, 1, rows, din, -1};
            acc = tile_product(acc, dT, RH0, rows, m0, n0, as, bs);
        }
        const int j = m0 + threadIdx.y, p = n0 + threadIdx.x;
        if (j < dout && p < din) hv[pbase + w_off + j * din + p] = acc;
        if (j < dout && p == din) hv[pbase + b_off + j] = acc;
    } else {
        // R{dH} = R{δ} W + δ U;  rdelta_prev = R{dH} ⊙ act'(in) + [tanh] dh ⊙ act''(in) ⊙ R{Z}.
        tile -= weight_tiles;
        const Operand RD{rd, dout, 1, rows, dout, -1};
        const Operand W{theta + pbase + w_off, din, 1, dout, din, -1};
        const Operand D{delta + b * rows * dout, dout, 1, rows, dout, -1};
        const Operand U{u + pbase + w_off, din, 1, dout, din, -1};
        tile_origin(tile, din, &m0, &n0);
        float acc = tile_product(0.0f, RD, W, dout, m0, n0, as, bs);
        acc = tile_product(acc, D, U, dout, m0, n0, as, bs);
        const int r = m0 + threadIdx.y, p = n0 + threadIdx.x;
        if (r < rows && p < din) {
            const int e = (b * rows + r) * din + p;
            const float h = in[e];
            float v = acc * act_d1(act, h);
            if (act == kActTanh) v += dh_in[e] * act_d2(act, h) * rz_prev[e];
            rdelta_prev[e] = v;
        }
    }
}

extern "C" __global__ void activation_forward_f32(float* out, const float* in, int count, int act) {
    const long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e < count) out[e] = metasched::act_apply(act, in[e]);
}

extern "C" __global__ void activation_backward_f32(float* delta, const float* dh, const float* h, int count,
                                                   int act) {
    const long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e < count) delta[e] = dh[e] * metasched::act_d1(act, h[e]);
}
