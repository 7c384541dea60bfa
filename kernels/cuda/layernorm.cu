// Layer normalisation over the channel axis (Ba, Kiros & Hinton 2016), FP32, forward + backward.
//
//   y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var + eps)   x, y: (N, C)  w, b: (C,)
//   forward saves mean, rstd: (N,). Backward, with xhat = (x - mean) * rstd and g = dy * w:
//   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  dw = sum_n dy * xhat,  db = sum_n dy.
//
// Memory-bound: the forward must move 8 bytes per element (read x, write y), the backward 12
// (read dy, x; write dx). At GPT-2 124M shapes (N = B*T = 8192, C = 768) that is 25 MB and
// 38 MB: ~8 us and ~12 us at an H100's ~3 TB/s. The issue's target is >= 80% of the measured
// device-to-device copy bandwidth.
//
// Placeholders: LN_WARPS (warps per block, v2/v3/bwd v2), LN_J (columns per lane, v3 and bwd
// v2: a row of C <= 32 * LN_J floats is held in registers, lane l owning columns l + 32 j).
//
// Versions (expected gains, NOT measured: "not yet measured: needs a GPU"):
// forward
//   v1  one thread per row, three passes over the row (mean, variance, write). Neighbouring
//       threads read addresses C floats apart: every load is its own transaction. Expected
//       ~10-20% of bandwidth; the readable definition.
//   v2  one warp per row: lanes read consecutive floats (coalesced), warp-shuffle sums. Still
//       reads the row twice from global (second time mostly from L1). Expected ~60-70%.
//   v3  v2 with the row kept in registers (LN_J per lane): one global read, variance from the
//       registers (two-pass accuracy at one-pass cost). Expected ~80-90% of bandwidth.
// backward
//   v1  dx: one thread per row; dw/db: one thread per column summing over all N rows (only C
//       threads: the GPU is mostly idle). Expected ~5-10% of bandwidth; readable.
//   v2  one warp per row for dx; each lane also accumulates dw/db for its LN_J columns in
//       registers over the rows its warp handles, the warps of a block add theirs in shared
//       memory in a fixed order, each block writes one partial row, and a small kernel sums
//       the partials in a fixed order: deterministic (no float atomics), x and dy read once.
//       Expected ~75-85% of bandwidth.

#if !defined(LN_WARPS) || !defined(LN_J)
#error "layernorm.cu needs LN_WARPS and LN_J (kernels/cuda/_compile.py writes the #defines)"
#endif

#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;  // every lane holds the same total (xor butterfly: same order on every run)
}

// ----------------------------------------------------------------------------- forward v1
extern "C" __global__ void layernorm_forward_v1(float* __restrict__ y, float* __restrict__ mean,
                                                float* __restrict__ rstd,
                                                const float* __restrict__ x,
                                                const float* __restrict__ w,
                                                const float* __restrict__ b, int N, int C,
                                                float eps) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    float s = 0.0f;
    for (int c = 0; c < C; ++c) s += xr[c];
    const float mu = s / C;
    float q = 0.0f;
    for (int c = 0; c < C; ++c) {
        const float d = xr[c] - mu;
        q += d * d;
    }
    const float r = rsqrtf(q / C + eps);
    float* yr = y + (size_t)n * C;
    for (int c = 0; c < C; ++c) yr[c] = (xr[c] - mu) * r * w[c] + b[c];
    mean[n] = mu;
    rstd[n] = r;
}

// ----------------------------------------------------------------------------- forward v2
extern "C" __global__ void __launch_bounds__(LN_WARPS * 32)
layernorm_forward_v2(float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                     const float* __restrict__ x, const float* __restrict__ w,
                     const float* __restrict__ b, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * LN_WARPS + threadIdx.x / 32;  // one warp per row
    if (n >= N) return;  // a whole warp leaves together, so the shuffles stay full-warp
    const float* xr = x + (size_t)n * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += xr[c];
    const float mu = warp_sum(s) / C;
    float q = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float d = xr[c] - mu;
        q += d * d;
    }
    const float r = rsqrtf(warp_sum(q) / C + eps);
    float* yr = y + (size_t)n * C;
    for (int c = lane; c < C; c += 32) yr[c] = (xr[c] - mu) * r * w[c] + b[c];
    if (lane == 0) {
        mean[n] = mu;
        rstd[n] = r;
    }
}

// ----------------------------------------------------------------------------- forward v3
extern "C" __global__ void __launch_bounds__(LN_WARPS * 32)
layernorm_forward_v3(float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                     const float* __restrict__ x, const float* __restrict__ w,
                     const float* __restrict__ b, int N, int C, float eps) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * LN_WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    float v[LN_J];  // columns lane + 32 j of this row; fully unrolled, so they stay in registers
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < LN_J; ++j) {
        const int c = lane + 32 * j;
        v[j] = c < C ? xr[c] : 0.0f;
        s += v[j];
    }
    const float mu = warp_sum(s) / C;
    float q = 0.0f;
#pragma unroll
    for (int j = 0; j < LN_J; ++j) {
        const int c = lane + 32 * j;
        const float d = c < C ? v[j] - mu : 0.0f;
        q += d * d;
    }
    const float r = rsqrtf(warp_sum(q) / C + eps);
    float* yr = y + (size_t)n * C;
#pragma unroll
    for (int j = 0; j < LN_J; ++j) {
        const int c = lane + 32 * j;
        if (c < C) yr[c] = (v[j] - mu) * r * w[c] + b[c];
    }
    if (lane == 0) {
        mean[n] = mu;
        rstd[n] = r;
    }
}

// ----------------------------------------------------------------------------- backward v1
extern "C" __global__ void layernorm_backward_dx_v1(float* __restrict__ dx,
                                                    const float* __restrict__ dy,
                                                    const float* __restrict__ x,
                                                    const float* __restrict__ w,
                                                    const float* __restrict__ mean,
                                                    const float* __restrict__ rstd, int N, int C) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* xr = x + (size_t)n * C;
    const float* dyr = dy + (size_t)n * C;
    const float mu = mean[n], r = rstd[n];
    float sg = 0.0f, sgx = 0.0f;  // sum g, sum g * xhat
    for (int c = 0; c < C; ++c) {
        const float g = dyr[c] * w[c];
        sg += g;
        sgx += g * (xr[c] - mu) * r;
    }
    sg /= C;
    sgx /= C;
    float* dxr = dx + (size_t)n * C;
    for (int c = 0; c < C; ++c) {
        const float xhat = (xr[c] - mu) * r;
        dxr[c] = r * (dyr[c] * w[c] - sg - xhat * sgx);
    }
}

extern "C" __global__ void layernorm_backward_dwdb_v1(float* __restrict__ dw,
                                                      float* __restrict__ db,
                                                      const float* __restrict__ dy,
                                                      const float* __restrict__ x,
                                                      const float* __restrict__ mean,
                                                      const float* __restrict__ rstd, int N,
                                                      int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;  // neighbouring threads: coalesced
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; ++n) {
        const float d = dy[(size_t)n * C + c];
        sw += d * (x[(size_t)n * C + c] - mean[n]) * rstd[n];
        sb += d;
    }
    dw[c] = sw;
    db[c] = sb;
}

// ----------------------------------------------------------------------------- backward v2
// grid: any number of blocks G (the launcher uses a few per SM); warp k of the grid handles
// rows k, k + G*LN_WARPS, ...  partial_dw, partial_db: (G, C), summed by layernorm_colsum.
extern "C" __global__ void __launch_bounds__(LN_WARPS * 32)
layernorm_backward_v2(float* __restrict__ dx, float* __restrict__ partial_dw,
                      float* __restrict__ partial_db, const float* __restrict__ dy,
                      const float* __restrict__ x, const float* __restrict__ w,
                      const float* __restrict__ mean, const float* __restrict__ rstd, int N,
                      int C) {
    __shared__ float sdw[32 * LN_J], sdb[32 * LN_J];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float wr[LN_J], pdw[LN_J], pdb[LN_J];
#pragma unroll
    for (int j = 0; j < LN_J; ++j) {
        const int c = lane + 32 * j;
        wr[j] = c < C ? w[c] : 0.0f;
        pdw[j] = 0.0f;
        pdb[j] = 0.0f;
    }
    const float inv_c = 1.0f / C;
    for (int n = blockIdx.x * LN_WARPS + warp; n < N; n += gridDim.x * LN_WARPS) {
        const float* xr = x + (size_t)n * C;
        const float* dyr = dy + (size_t)n * C;
        const float mu = mean[n], r = rstd[n];
        float d[LN_J], xh[LN_J];
        float sg = 0.0f, sgx = 0.0f;
#pragma unroll
        for (int j = 0; j < LN_J; ++j) {
            const int c = lane + 32 * j;
            d[j] = c < C ? dyr[c] : 0.0f;
            xh[j] = c < C ? (xr[c] - mu) * r : 0.0f;
            const float g = d[j] * wr[j];
            sg += g;
            sgx += g * xh[j];
            pdw[j] += d[j] * xh[j];
            pdb[j] += d[j];
        }
        sg = warp_sum(sg) * inv_c;
        sgx = warp_sum(sgx) * inv_c;
        float* dxr = dx + (size_t)n * C;
#pragma unroll
        for (int j = 0; j < LN_J; ++j) {
            const int c = lane + 32 * j;
            if (c < C) dxr[c] = r * (d[j] * wr[j] - sg - xh[j] * sgx);
        }
    }
    // the block's warps add their partials in warp order (fixed, so results repeat exactly)
    for (int k = 0; k < LN_WARPS; ++k) {
        if (warp == k) {
#pragma unroll
            for (int j = 0; j < LN_J; ++j) {
                const int c = lane + 32 * j;
                if (c < C) {
                    sdw[c] = k == 0 ? pdw[j] : sdw[c] + pdw[j];
                    sdb[c] = k == 0 ? pdb[j] : sdb[c] + pdb[j];
                }
            }
        }
        __syncthreads();
    }
    for (int c = threadIdx.x; c < C; c += LN_WARPS * 32) {
        partial_dw[(size_t)blockIdx.x * C + c] = sdw[c];
        partial_db[(size_t)blockIdx.x * C + c] = sdb[c];
    }
}

// out[c] = sum_g partial[g, c] for g = 0..G-1 in order (deterministic), for two arrays at once.
extern "C" __global__ void layernorm_colsum(float* __restrict__ out_a, float* __restrict__ out_b,
                                            const float* __restrict__ pa,
                                            const float* __restrict__ pb, int G, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sa = 0.0f, sb = 0.0f;
    for (int g = 0; g < G; ++g) {
        sa += pa[(size_t)g * C + c];
        sb += pb[(size_t)g * C + c];
    }
    out_a[c] = sa;
    out_b[c] = sb;
}
