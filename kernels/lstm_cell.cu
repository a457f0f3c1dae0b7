// lstm_cell.cu: PyTorch's LSTMCell (gate order i, f, g, o), one step, batched over tasks.
// CPU twins: lstm_cell_forward / lstm_cell_backward in crates/engine/src/lstm_cell.rs (same
// argument order, outputs first). The weights are shared by all tasks (phi); the states,
// features and gradients are per task. F = METASCHED_FEATURES = 3, H = hidden, B = tasks.
//
// lstm_cell_forward_f32
//   gates = W_ih x + b_ih + W_hh h + b_hh  (4H rows, i f g o);  i,f,o = σ, g = tanh
//   c' = f ⊙ c + i ⊙ g;  h' = o ⊙ tanh(c');  keeps the activated gates and tanh(c').
//   Launch: grid (B), block (min(roundup(H, 32), 256)), dynamic shared (H + 4)·4 bytes
//     (h of the task, then x). Thread j computes unit j's four gate rows (j, H+j, 2H+j, 3H+j).
//   Bytes: 4·[B·(F + 2H) read + B·9H written] per-task traffic, plus the weights
//     4·4H·(F + H + 2) read once per block (B times, from L2 after the first).
//   FLOPs: ≈ B·(8H·(F + H + 1) + 10H), with 5BH transcendentals.
//   h_new / c_new may alias h / c (h is staged in shared memory before any write).
//
// lstm_cell_backward_f32
//   from dh' = dJ/dh', dc' = dJ/dc':  dĉ = dc' + dh' ⊙ o ⊙ (1 − tanh²c');
//   dgates = [dĉ⊙g⊙i(1−i), dĉ⊙c⊙f(1−f), dĉ⊙i⊙(1−g²), dh'⊙tanh c'⊙o(1−o)];
//   dc = dĉ ⊙ f;  dh = W_hhᵀ dgates;  and per task (accumulating, +=):
//   dW_ih += dgates xᵀ, dW_hh += dgates hᵀ, db_ih += dgates, db_hh += dgates.
//   Launch: grid (B), block (min(roundup(H, 32), 256)), dynamic shared (5H + 4)·4 bytes
//     (dgates, h, x). The gradient buffers are per task ([B, 4H, F], [B, 4H, H], [B, 4H] ×2):
//     each block owns its task's slice, so no atomics.
//   Bytes: 4·[B·(F + 9H) read + B·6H written + 2·B·4H·(F + H + 2) gradient read-modify-write]
//     plus W_hh (4H²) per block.
//   FLOPs: ≈ B·(16H² + 8HF + 30H).
//   dh / dc may alias dh_new / dc_new (dh_new is read before the barrier, dh written after).
#include "common.cuh"

extern "C" __global__ void lstm_cell_forward_f32(float* h_new, float* c_new, float* gates, float* tanh_c,
                                                 const float* w_ih, const float* w_hh, const float* b_ih,
                                                 const float* b_hh, const float* x, const float* h,
                                                 const float* c, int tasks, int hidden) {
    using namespace metasched;
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    const int H = hidden, F = METASCHED_FEATURES;
    METASCHED_DYNAMIC_SHARED(float, smem);
    float* hs = smem;      // [H]
    float* xs = smem + H;  // [F]
    for (int k = threadIdx.x; k < H; k += blockDim.x) hs[k] = h[b * H + k];
    for (int f = threadIdx.x; f < F; f += blockDim.x) xs[f] = x[b * F + f];
    __syncthreads();
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float act[4];
        for (int q = 0; q < 4; ++q) {
            const int r = q * H + j;
            float pre = b_ih[r] + b_hh[r];
            for (int f = 0; f < F; ++f) pre += w_ih[r * F + f] * xs[f];
            const float* wr = w_hh + r * H;
            for (int k = 0; k < H; ++k) pre += wr[k] * hs[k];
            act[q] = q == 2 ? tanhf(pre) : sigmoid(pre);
        }
        float* gt = gates + b * 4 * H;
        for (int q = 0; q < 4; ++q) gt[q * H + j] = act[q];
        const float cn = act[1] * c[b * H + j] + act[0] * act[2];
        const float tc = tanhf(cn);
        c_new[b * H + j] = cn;
        tanh_c[b * H + j] = tc;
        h_new[b * H + j] = act[3] * tc;
    }
}

extern "C" __global__ void lstm_cell_backward_f32(float* dh, float* dc, float* dgates, float* gw_ih, float* gw_hh,
                                                  float* gb_ih, float* gb_hh, const float* w_ih,
                                                  const float* w_hh, const float* x, const float* h,
                                                  const float* c, const float* gates, const float* tanh_c,
                                                  const float* dh_new, const float* dc_new, int tasks,
                                                  int hidden) {
    using namespace metasched;
    (void)w_ih;  // the features are constants: no gradient flows into x
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    const int H = hidden, F = METASCHED_FEATURES, R = 4 * hidden;
    METASCHED_DYNAMIC_SHARED(float, smem);
    float* dg = smem;          // [4H]
    float* hs = smem + R;      // [H]
    float* xs = smem + R + H;  // [F]
    for (int k = threadIdx.x; k < H; k += blockDim.x) hs[k] = h[b * H + k];
    for (int f = threadIdx.x; f < F; f += blockDim.x) xs[f] = x[b * F + f];
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        const float* gt = gates + b * R;
        const float i = gt[j], f = gt[H + j], g = gt[2 * H + j], o = gt[3 * H + j];
        const float tc = tanh_c[b * H + j];
        const float dhn = dh_new[b * H + j];
        const float d_o = dhn * tc;
        const float dct = dc_new[b * H + j] + dhn * o * (1.0f - tc * tc);
        const float d_i = dct * g, d_f = dct * c[b * H + j], d_g = dct * i;
        dc[b * H + j] = dct * f;
        dg[j] = d_i * i * (1.0f - i);
        dg[H + j] = d_f * f * (1.0f - f);
        dg[2 * H + j] = d_g * (1.0f - g * g);
        dg[3 * H + j] = d_o * o * (1.0f - o);
        for (int q = 0; q < 4; ++q) dgates[b * R + q * H + j] = dg[q * H + j];
    }
    __syncthreads();
    // dh = W_hhᵀ dgates, summed over the 4H rows in order (as the engine).
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float acc = 0.0f;
        for (int r = 0; r < R; ++r) acc += dg[r] * w_hh[r * H + j];
        dh[b * H + j] = acc;
    }
    // Parameter gradients of this task, accumulated; consecutive threads touch consecutive
    // elements.
    float* gwh = gw_hh + b * R * H;
    for (int e = threadIdx.x; e < R * H; e += blockDim.x) gwh[e] += dg[e / H] * hs[e % H];
    float* gwi = gw_ih + b * R * F;
    for (int e = threadIdx.x; e < R * F; e += blockDim.x) gwi[e] += dg[e / F] * xs[e % F];
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
        gb_ih[b * R + r] += dg[r];
        gb_hh[b * R + r] += dg[r];
    }
}
