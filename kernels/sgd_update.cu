// sgd_update.cu: the differentiable inner SGD step of spec §3-4, batched over tasks.
// theta, grad, v, u are [B, P] (P = params, task b at b·P); rates and da are [B, G];
// group_offsets is [G + 1] (group k is theta[offsets[k] .. offsets[k+1]], offsets[G] = P),
// shared by all tasks. B = tasks, G = groups.
//
// sgd_update_forward_f32
//   theta'[b, i] = theta[b, i] − rates[b, group(i)] · grad[b, i].
//   Launch: grid (G, B), block (256, any size): block (k, b) updates group k of task b.
//   Bytes: 4·(3BP + BG) + 4·2G.  FLOPs: 2BP.
//   theta_new may alias theta (each element is read, then written, by the same thread).
//
// sgd_update_backward_f32
//   da[b, k] = −Σ_{i ∈ k} v[b, i] · grad[b, i]   (dJ/da_t, by a block reduction: warp
//              shuffles, then one value per warp through shared memory);
//   u[b, i]  = rates[b, group(i)] · v[b, i]      (the direction of the Hessian-vector
//              product v_t = v_{t+1} − H u; v itself is left unchanged).
//   Launch: grid (G, B), block (256, any size), static shared 33 floats.
//   Bytes: 4·(3BP + 2BG) + 4·2G.  FLOPs: 3BP.
#include "common.cuh"

extern "C" __global__ void sgd_update_forward_f32(float* theta_new, const float* theta, const float* grad,
                                                  const float* rates, const int* group_offsets, int tasks,
                                                  int params, int groups) {
    const int k = blockIdx.x, b = blockIdx.y;
    if (k >= groups || b >= tasks) return;  // uniform over the block
    const float a = rates[b * groups + k];
    const int lo = max(group_offsets[k], 0), hi = min(group_offsets[k + 1], params);
    const int stride = static_cast<int>(metasched::block_threads());
    const int base = b * params;
    for (int i = lo + static_cast<int>(metasched::thread_linear()); i < hi; i += stride) {
        theta_new[base + i] = theta[base + i] - a * grad[base + i];
    }
}

extern "C" __global__ void sgd_update_backward_f32(float* da, float* u, const float* v, const float* grad,
                                                   const float* rates, const int* group_offsets, int tasks,
                                                   int params, int groups) {
    const int k = blockIdx.x, b = blockIdx.y;
    if (k >= groups || b >= tasks) return;  // uniform over the block
    METASCHED_SHARED(float, scratch, METASCHED_REDUCE_SCRATCH);
    const float a = rates[b * groups + k];
    const int lo = max(group_offsets[k], 0), hi = min(group_offsets[k + 1], params);
    const int stride = static_cast<int>(metasched::block_threads());
    const int base = b * params;
    float partial = 0.0f;
    for (int i = lo + static_cast<int>(metasched::thread_linear()); i < hi; i += stride) {
        const float vi = v[base + i];
        partial += vi * grad[base + i];
        u[base + i] = a * vi;
    }
    const float total = metasched::block_sum(partial, scratch);
    if (metasched::thread_linear() == 0) da[b * groups + k] = -total;
}
