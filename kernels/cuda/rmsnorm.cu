// RMS normalisation over the channel axis (Zhang & Sennrich 2019), FP32, forward + backward.
//
//   y = x * rrms * w,  rrms = 1 / sqrt(mean_c(x^2) + eps)   x, y: (N, C)  w: (C,)  rrms: (N,)
//   Backward, with xhat = x * rrms and g = dy * w:
//   dx = rrms * (g - xhat * mean_c(g * xhat)),  dw = sum_n dy * xhat  (a column reduction).
//
// Memory-bound like layernorm.cu: the forward moves 8 bytes per element, the backward 12 (read
// dy, x; write dx) plus the dw pass, which reads dy and x again.
//
// Placeholders: RN_WARPS (warps per block of the warp-per-row kernels), RN_ROWS (rows of a
// block of the dw kernel, whose blocks are 32 columns x RN_ROWS rows).
//
// Versions (expected gains, NOT measured: "not yet measured: needs a GPU"):
// forward
//   v1  one thread per row, two passes over the row. Neighbouring threads read addresses C
//       floats apart: every load is its own transaction. The readable definition.
//   v2  one warp per row: lanes read consecutive floats (coalesced), a warp-shuffle sum.
//       Expected ~70-85% of bandwidth (the second pass mostly hits L1).
// backward
//   v1  dx: one thread per row; dw: one thread per column summing all N rows (only C threads).
//   v2  dx: one warp per row (coalesced, shuffle sums); dw: blocks of 32 columns x RN_ROWS
//       rows keep per-thread partials over a grid-stride set of rows, add them in shared
//       memory in a fixed order and write one partial row each; rms_norm_colsum adds the
//       partial rows in order. Deterministic, no float atomics.

#if !defined(RN_WARPS) || !defined(RN_ROWS)
#error "rmsnorm.cu needs RN_WARPS and RN_ROWS (kernels/cuda/_compile.py writes the #defines)"
#endif

#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;  // every lane holds the same total, summed in the same order on every run
}

// ----------------------------------------------------------------------------- forward v1
extern "C" __global__ void rms_norm_forward_v1(float* __restrict__ y, float* __restrict__ rrms,
                                               const float* __restrict__ x,
                                               const float* __restrict__ w, int N, int C,
                                               float eps) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    float q = 0.0f;
    for (int c = 0; c < C; ++c) q += xr[c] * xr[c];
    const float r = rsqrtf(q / C + eps);
    float* yr = y + (size_t)n * C;
    for (int c = 0; c < C; ++c) yr[c] = xr[c] * r * w[c];
    rrms[n] = r;
}

// ----------------------------------------------------------------------------- forward v2
extern "C" __global__ void __launch_bounds__(RN_WARPS * 32)
rms_norm_forward_v2(float* __restrict__ y, float* __restrict__ rrms, const float* __restrict__ x,
                    const float* __restrict__ w, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * RN_WARPS + threadIdx.x / 32;  // one warp per row
    if (n >= N) return;  // a whole warp leaves together, so the shuffles stay full-warp
    const float* xr = x + (size_t)n * C;
    float q = 0.0f;
    for (int c = lane; c < C; c += 32) q += xr[c] * xr[c];
    const float r = rsqrtf(warp_sum(q) / C + eps);
    float* yr = y + (size_t)n * C;
    for (int c = lane; c < C; c += 32) yr[c] = xr[c] * r * w[c];
    if (lane == 0) rrms[n] = r;
}

// ----------------------------------------------------------------------------- backward v1
extern "C" __global__ void rms_norm_backward_dx_v1(float* __restrict__ dx,
                                                   const float* __restrict__ dy,
                                                   const float* __restrict__ x,
                                                   const float* __restrict__ w,
                                                   const float* __restrict__ rrms, int N, int C) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    const float* dyr = dy + (size_t)n * C;
    const float r = rrms[n];
    float sgx = 0.0f;  // sum_c g * xhat
    for (int c = 0; c < C; ++c) sgx += dyr[c] * w[c] * xr[c] * r;
    sgx /= C;
    float* dxr = dx + (size_t)n * C;
    for (int c = 0; c < C; ++c) dxr[c] = r * (dyr[c] * w[c] - xr[c] * r * sgx);
}

extern "C" __global__ void rms_norm_backward_dw_v1(float* __restrict__ dw,
                                                   const float* __restrict__ dy,
                                                   const float* __restrict__ x,
                                                   const float* __restrict__ rrms, int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;  // neighbouring threads: coalesced
    if (c >= C) return;
    float s = 0.0f;
    for (int n = 0; n < N; ++n) s += dy[(size_t)n * C + c] * x[(size_t)n * C + c] * rrms[n];
    dw[c] = s;
}

// ----------------------------------------------------------------------------- backward v2
extern "C" __global__ void __launch_bounds__(RN_WARPS * 32)
rms_norm_backward_dx_v2(float* __restrict__ dx, const float* __restrict__ dy,
                        const float* __restrict__ x, const float* __restrict__ w,
                        const float* __restrict__ rrms, int N, int C) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * RN_WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    const float* dyr = dy + (size_t)n * C;
    const float r = rrms[n];
    float sgx = 0.0f;
    for (int c = lane; c < C; c += 32) sgx += dyr[c] * w[c] * xr[c] * r;
    sgx = warp_sum(sgx) / C;
    float* dxr = dx + (size_t)n * C;
    for (int c = lane; c < C; c += 32) dxr[c] = r * (dyr[c] * w[c] - xr[c] * r * sgx);
}

// grid: (ceil(C / 32), G); block: (32, RN_ROWS). Thread (cx, ry) owns column c = 32 bx + cx and
// rows ry + RN_ROWS (by + G k); writes partial_dw[by, c], which rms_norm_colsum adds up.
extern "C" __global__ void __launch_bounds__(32 * RN_ROWS)
rms_norm_backward_dw_v2(float* __restrict__ partial_dw, const float* __restrict__ dy,
                        const float* __restrict__ x, const float* __restrict__ rrms, int N,
                        int C) {
    __shared__ float part[RN_ROWS][32];
    const int cx = threadIdx.x, ry = threadIdx.y;
    const int c = blockIdx.x * 32 + cx;
    float s = 0.0f;
    if (c < C) {
        for (int n = blockIdx.y * RN_ROWS + ry; n < N; n += gridDim.y * RN_ROWS) {
            const size_t o = (size_t)n * C + c;  // a warp covers 32 neighbouring columns
            s += dy[o] * x[o] * rrms[n];
        }
    }
    part[ry][cx] = s;
    __syncthreads();
    if (ry == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < RN_ROWS; ++k) t += part[k][cx];  // fixed order
        partial_dw[(size_t)blockIdx.y * C + c] = t;
    }
}

// out[c] = sum_g partial[g, c], g in order (deterministic).
extern "C" __global__ void rms_norm_colsum(float* __restrict__ out,
                                           const float* __restrict__ partial, int G, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int g = 0; g < G; ++g) s += partial[(size_t)g * C + c];
    out[c] = s;
}
