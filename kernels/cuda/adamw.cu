// AdamW, one fused in-place step over a flat FP32 buffer (Loshchilov & Hutter 2019).
//
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  mhat = m / (1 - b1^t);  vhat = v / (1 - b2^t)
//   p = p - lr (mhat / (sqrt(vhat) + eps) + wd p)          p, g, m, v: (n,) contiguous
//
// The scalars that depend on the step (1 / (1 - b1^t), 1 / sqrt(1 - b2^t)) are computed once
// on the host in float64 and passed in. Memory-bound: 16 bytes read (p, g, m, v) and 12 written
// (p, m, v) per parameter; 124 M parameters move 3.5 GB, ~1.2 ms at ~2.8 TB/s. One launch can
// update every parameter of a model when they live in one flat buffer (the optimizer then
// makes one launch per step instead of one per tensor).
//
// Placeholders: AW_THREADS (threads per block).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   v1  one thread per element, scalar loads. Expected ~75-85% of bandwidth (elementwise
//       kernels are easy to saturate; the launch count matters more than the kernel).
//   v2  grid-stride over float4s (four 128-bit loads and three stores per 4 parameters), a
//       scalar tail, a few blocks per SM. Expected ~85-90% of bandwidth.

#if !defined(AW_THREADS)
#error "adamw.cu needs AW_THREADS (kernels/cuda/_compile.py writes the #defines)"
#endif

// One parameter; rbc1 = 1 / (1 - b1^t), rsbc2 = 1 / sqrt(1 - b2^t), so that
// mhat / (sqrt(vhat) + eps) = m rbc1 / (sqrt(v) rsbc2 + eps).
__device__ __forceinline__ void adamw_one(float& p, float g, float& m, float& v, float lr,
                                          float b1, float b2, float eps, float wd, float rbc1,
                                          float rsbc2) {
    m = b1 * m + (1.0f - b1) * g;
    v = b2 * v + (1.0f - b2) * g * g;
    p -= lr * (m * rbc1 / (sqrtf(v) * rsbc2 + eps) + wd * p);
}

extern "C" __global__ void __launch_bounds__(AW_THREADS)
adamw_step_v1(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
              float* __restrict__ v, int n, float lr, float b1, float b2, float eps, float wd,
              float rbc1, float rsbc2) {
    const int i = blockIdx.x * AW_THREADS + threadIdx.x;
    if (i >= n) return;
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_one(pi, g[i], mi, vi, lr, b1, b2, eps, wd, rbc1, rsbc2);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
}

// vec = 1: all four buffers are 16-byte aligned.
extern "C" __global__ void __launch_bounds__(AW_THREADS)
adamw_step_v2(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
              float* __restrict__ v, int n, float lr, float b1, float b2, float eps, float wd,
              float rbc1, float rsbc2, int vec) {
    const int stride = gridDim.x * AW_THREADS, i0 = blockIdx.x * AW_THREADS + threadIdx.x;
    int done = 0;
    if (vec) {
        float4* p4 = reinterpret_cast<float4*>(p);
        float4* m4 = reinterpret_cast<float4*>(m);
        float4* v4 = reinterpret_cast<float4*>(v);
        const float4* g4 = reinterpret_cast<const float4*>(g);
        for (int i = i0; i < n / 4; i += stride) {
            float4 pp = p4[i], mm = m4[i], vv = v4[i];
            const float4 gg = g4[i];
            adamw_one(pp.x, gg.x, mm.x, vv.x, lr, b1, b2, eps, wd, rbc1, rsbc2);
            adamw_one(pp.y, gg.y, mm.y, vv.y, lr, b1, b2, eps, wd, rbc1, rsbc2);
            adamw_one(pp.z, gg.z, mm.z, vv.z, lr, b1, b2, eps, wd, rbc1, rsbc2);
            adamw_one(pp.w, gg.w, mm.w, vv.w, lr, b1, b2, eps, wd, rbc1, rsbc2);
            p4[i] = pp;
            m4[i] = mm;
            v4[i] = vv;
        }
        done = (n / 4) * 4;
    }
    for (int i = done + i0; i < n; i += stride) {
        float pi = p[i], mi = m[i], vi = v[i];
        adamw_one(pi, g[i], mi, vi, lr, b1, b2, eps, wd, rbc1, rsbc2);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}
