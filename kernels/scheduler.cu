// scheduler.cu: the scheduler's head and the small per-task glue of the meta-gradient (spec
// §3-4), batched over tasks. CPU twins (same argument order, outputs first, same summation
// order where the engine fixes one):
//   scheduler_features_f32       `features` in crates/engine/src/inner_loop.rs;
//   scheduler_head_forward_f32   the head / LSLR branch of SchedulerTrace::step (scheduler.rs);
//   scheduler_head_backward_f32  the `dz` closure and the head loop of SchedulerTrace::backward;
//   task_sum_f32                 the task-order reduction of Engine::meta_gradient_range
//                                (metagrad.rs: grad.add_assign per task);
//   vector_axpy_f32              `v -= hv` of task_meta_gradient (alpha = −1);
//   vector_scale_f32             `v *= scale` (1/B) of task_meta_gradient.
// B = tasks, G = groups, H = hidden, P = params. Per-task arrays are task-major.
//
// scheduler_features_f32
//   x[b] = [ln(loss[b] + 1e-8), ln(||grad[b]||₂ + 1e-8), step / steps]   (x: [B, 3]).
//   Launch: grid (B), block (256, any size), static shared 33 floats (block reduction).
//   Bytes: 4·(BP + B + 3B).  FLOPs: 2BP, with 2B logarithms and B square roots.
//
// scheduler_head_forward_f32
//   z[b, k] = head_b[k] + Σ_j head_w[k, j] h[b, j];  sig = σ(z);  rates = lr_min + lr_span·sig.
//   With hidden = 0 the head is just a table row: z = head_b[k] (the LSLR scheduler passes
//   head_b = Z + t·G). sig, rates: [B, G]; h: [B, H]; head_w: [G, H]; head_b: [G].
//   Launch: grid (B), block (min(roundup(G, 32), 256)): thread k computes group k.
//   Bytes: 4·(BH + GH + G + 2BG).  FLOPs: 2BGH + 4BG, with BG exponentials.
//
// scheduler_head_backward_f32
//   dz[b, k] = da[b, k]·lr_span·sig[b, k]·(1 − sig[b, k]);  per task (accumulating, +=):
//   gw[b, k, j] += dz[b, k]·h[b, j],  gb[b, k] += dz[b, k];  and (written)
//   dh[b, j] = dh_carry[b, j] + Σ_k dz[b, k]·head_w[k, j]   (summed over k in order).
//   gw: [B, G, H], gb: [B, G] (each block owns its task's slice: no atomics). With hidden = 0
//   only gb is touched (the LSLR table's gradient of one step).
//   Launch: grid (B), block (min(roundup(max(G, H), 32), 256)), dynamic shared G·4 bytes (dz).
//   Bytes: 4·(2BG + BH + GH + 2BGH + 2BG + 2BH).  FLOPs: 4BG + 4BGH.
//   dh may alias dh_carry (each element is read, then written, by the same thread).
//
// task_sum_f32
//   out[i] = Σ_b per_task[b·count + i], summed over b = 0, 1, ... in task order.
//   Launch: grid (⌈count/256⌉), block (256): one element per thread.
//   Bytes: 4·(B + 1)·count.  FLOPs: B·count.
//
// vector_axpy_f32
//   y[i] += alpha·x[i].  Launch: grid (⌈count/256⌉), block (256). Bytes: 12·count. FLOPs: 2·count.
//
// vector_scale_f32
//   y[i] *= alpha.  Launch: grid (⌈count/256⌉), block (256). Bytes: 8·count. FLOPs: count.
#include "common.cuh"

extern "C" __global__ void scheduler_features_f32(float* x, const float* loss, const float* grad, int tasks,
                                                  int params, int step, int steps) {
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    METASCHED_SHARED(float, scratch, METASCHED_REDUCE_SCRATCH);
    const float* g = grad + b * params;
    float partial = 0.0f;
    const int stride = static_cast<int>(metasched::block_threads());
    for (int i = static_cast<int>(metasched::thread_linear()); i < params; i += stride) partial += g[i] * g[i];
    const float total = metasched::block_sum(partial, scratch);
    if (metasched::thread_linear() == 0) {
        const float eps = 1e-8f;
        x[b * METASCHED_FEATURES + 0] = logf(loss[b] + eps);
        x[b * METASCHED_FEATURES + 1] = logf(sqrtf(total) + eps);
        x[b * METASCHED_FEATURES + 2] = static_cast<float>(step) / static_cast<float>(steps);
    }
}

extern "C" __global__ void scheduler_head_forward_f32(float* sig, float* rates, const float* h,
                                                      const float* head_w, const float* head_b, int tasks,
                                                      int hidden, int groups, float lr_min, float lr_span) {
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    const int H = hidden;
    for (int k = threadIdx.x; k < groups; k += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < H; ++j) acc += head_w[k * H + j] * h[b * H + j];
        const float s = metasched::sigmoid(head_b[k] + acc);
        sig[b * groups + k] = s;
        rates[b * groups + k] = lr_min + lr_span * s;
    }
}

extern "C" __global__ void scheduler_head_backward_f32(float* dh, float* gw, float* gb, const float* da,
                                                       const float* sig, const float* h, const float* head_w,
                                                       const float* dh_carry, int tasks, int hidden, int groups,
                                                       float lr_span) {
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    const int H = hidden, G = groups;
    METASCHED_DYNAMIC_SHARED(float, dz);  // [G]
    for (int k = threadIdx.x; k < G; k += blockDim.x) {
        const float s = sig[b * G + k];
        const float d = da[b * G + k] * lr_span * s * (1.0f - s);
        dz[k] = d;
        gb[b * G + k] += d;
    }
    __syncthreads();
    float* gwb = gw + b * G * H;
    for (int e = threadIdx.x; e < G * H; e += blockDim.x) gwb[e] += dz[e / H] * h[b * H + e % H];
    for (int j = threadIdx.x; j < H; j += blockDim.x) {
        float acc = dh_carry[b * H + j];
        for (int k = 0; k < G; ++k) acc += dz[k] * head_w[k * H + j];
        dh[b * H + j] = acc;
    }
}

extern "C" __global__ void task_sum_f32(float* out, const float* per_task, int tasks, int count) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float acc = 0.0f;
    for (int b = 0; b < tasks; ++b) acc += per_task[static_cast<long long>(b) * count + i];
    out[i] = acc;
}

extern "C" __global__ void vector_axpy_f32(float* y, const float* x, float alpha, int count) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) y[i] += alpha * x[i];
}

extern "C" __global__ void vector_scale_f32(float* y, float alpha, int count) {
    const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < count) y[i] *= alpha;
}
