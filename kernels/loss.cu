// loss.cu: the learner's losses (spec §2), their gradient w.r.t. the network output and
// the R-operator of that gradient, batched over tasks. CPU twins: loss_forward_backward and
// loss_rop in crates/engine/src/loss.rs. out, dout, probs, y, rout, rdout are [B, n, d]
// (task b at b·n·d), labels [B, n], loss [B]. B = tasks, n = rows, d = cols.
//
// mse_forward_backward_f32
//   loss[b] = Σ (out − y)² / (n d);  dout = 2 (out − y) / (n d).
//   Launch: grid (B), block (256, any size), static shared 33 floats (block reduction).
//   Bytes: 4·(3Bnd + B).  FLOPs: 5Bnd.
//
// cross_entropy_forward_backward_f32
//   per row: p = softmax(out_r) (kept in probs), loss_r = logsumexp(out_r) − out_r[label];
//   loss[b] = Σ_r loss_r / n;  dout = (p − onehot(label)) / n. A label ≥ d gives NaN.
//   Launch: grid (B), block (256, any size), static shared 33 floats; one thread per row.
//   Bytes: 4·(3Bnd + Bn + B).  FLOPs: ≈ 7Bnd, with Bnd exponentials and Bn logarithms.
//
// mse_rop_f32
//   rdout = 2 rout / (n d)  (the output Hessian of the loss applied to rout = R{out}).
//   Launch: grid (ceil(Bnd / 256)), block (256): one element per thread.
//   Bytes: 4·2Bnd.  FLOPs: Bnd.
//
// cross_entropy_rop_f32
//   per row: rdout = p ⊙ (rout − ⟨p, rout⟩) / n.
//   Launch: grid (ceil(Bn / 256)), block (256): one row per thread.
//   Bytes: 4·3Bnd.  FLOPs: 5Bnd.
#include "common.cuh"

extern "C" __global__ void mse_forward_backward_f32(float* loss, float* dout, const float* out, const float* y,
                                                    int tasks, int rows, int cols) {
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    METASCHED_SHARED(float, scratch, METASCHED_REDUCE_SCRATCH);
    const int m = rows * cols;
    const float scale = 2.0f / static_cast<float>(m);
    const float* o = out + b * m;
    const float* t = y + b * m;
    float* g = dout + b * m;
    float partial = 0.0f;
    const int stride = static_cast<int>(metasched::block_threads());
    for (int e = static_cast<int>(metasched::thread_linear()); e < m; e += stride) {
        const float err = o[e] - t[e];
        partial += err * err;
        g[e] = scale * err;
    }
    const float total = metasched::block_sum(partial, scratch);
    if (metasched::thread_linear() == 0) loss[b] = total / static_cast<float>(m);
}

extern "C" __global__ void cross_entropy_forward_backward_f32(float* loss, float* dout, float* probs,
                                                              const float* out, const unsigned* labels,
                                                              int tasks, int rows, int cols) {
    const int b = blockIdx.x;
    if (b >= tasks) return;  // uniform over the block
    METASCHED_SHARED(float, scratch, METASCHED_REDUCE_SCRATCH);
    const float inv_n = 1.0f / static_cast<float>(rows);
    float partial = 0.0f;
    const int stride = static_cast<int>(metasched::block_threads());
    for (int r = static_cast<int>(metasched::thread_linear()); r < rows; r += stride) {
        const int at = (b * rows + r) * cols;
        const float* o = out + at;
        float* p = probs + at;
        float* g = dout + at;
        float m = o[0];
        for (int j = 1; j < cols; ++j) m = fmaxf(m, o[j]);
        float z = 0.0f;
        for (int j = 0; j < cols; ++j) {
            p[j] = expf(o[j] - m);
            z += p[j];
        }
        const unsigned label = labels[b * rows + r];
        const float inv_z = 1.0f / z;
        for (int j = 0; j < cols; ++j) {
            p[j] *= inv_z;
            g[j] = p[j] * inv_n;
        }
        if (label < static_cast<unsigned>(cols)) {
            partial += m + logf(z) - o[label];
            g[label] -= inv_n;
        } else {
            partial += nanf("");
        }
    }
    const float total = metasched::block_sum(partial, scratch);
    if (metasched::thread_linear() == 0) loss[b] = total * inv_n;
}

extern "C" __global__ void mse_rop_f32(float* rdout, const float* rout, int tasks, int rows, int cols) {
    const int m = rows * cols;
    const float scale = 2.0f / static_cast<float>(m);
    const long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e < static_cast<long long>(tasks) * m) rdout[e] = scale * rout[e];
}

extern "C" __global__ void cross_entropy_rop_f32(float* rdout, const float* probs, const float* rout, int tasks,
                                                 int rows, int cols) {
    const float inv_n = 1.0f / static_cast<float>(rows);
    const long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (r >= static_cast<long long>(tasks) * rows) return;
    const long long at = r * cols;
    float mean = 0.0f;
    for (int j = 0; j < cols; ++j) mean += probs[at + j] * rout[at + j];
    for (int j = 0; j < cols; ++j) rdout[at + j] = probs[at + j] * (rout[at + j] - mean) * inv_n;
}
