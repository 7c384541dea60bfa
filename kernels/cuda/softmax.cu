// Softmax and log-softmax over the last axis, FP32, forward + backward.
//
//   x, y, dy, dx: (N, V) rows.  softmax: y = exp(x - m) / s,  m = max x,  s = sum exp(x - m)
//   log-softmax: y = x - m - log s.   backward: softmax dx = y (dy - sum(dy y));
//   log-softmax dx = dy - exp(y) sum(dy).
//
// Memory-bound: forward reads x once (v2/v3 twice from L1/L2) and writes y: 8 bytes per
// element at best; backward 12. Online softmax (Milakov & Gimelshein 2018): one pass keeps a
// running max m and a sum s rescaled whenever m grows, so max and sum come from one read.
//
// Placeholders: SM_WARPS (warps per block, warp-per-row kernels), SM_THREADS (threads per
// block, block-per-row kernels).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   v1  one thread per row, three passes (max, sum, write); uncoalesced. Readable baseline.
//   v2  one warp per row, online max/sum in one coalesced pass, warp-shuffle merge of the
//       (m, s) pairs, second pass writes. Expected ~70-85% of bandwidth for rows of ~1k.
//   v3  one block per row (SM_THREADS threads), same online pass, block merge through shared
//       memory: for long rows (the V = 50304 vocabulary) where a warp per row leaves too few
//       rows in flight per thread. Expected ~80% of bandwidth at V ~ 50k.
//   backward v1 thread per row; v2 warp per row (one reduction, one write).

#if !defined(SM_WARPS) || !defined(SM_THREADS)
#error "softmax.cu needs SM_WARPS and SM_THREADS (kernels/cuda/_compile.py writes the #defines)"
#endif

#define FULL 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// Add one value to a running (max m, sum of exp(x - m) s); -inf entries add nothing.
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != -INFINITY) {
        s += expf(x - m);
    }
}

// Merge two running pairs; an empty side (m = -inf, s = 0) contributes exp(-inf) * 0 = 0.
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

__device__ __forceinline__ void warp_online_merge(float& m, float& s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(FULL, m, o), s2 = __shfl_xor_sync(FULL, s, o);
        online_merge(m, s, m2, s2);
    }
}

template <bool LOG>
__device__ __forceinline__ float finish(float x, float m, float s) {
    return LOG ? x - m - logf(s) : expf(x - m) / s;
}

// ----------------------------------------------------------------------------- forward v1
template <bool LOG>
__device__ void forward_v1(float* __restrict__ y, const float* __restrict__ x, int N, int V) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* xr = x + (size_t)n * V;
    float m = -INFINITY;
    for (int i = 0; i < V; ++i) m = fmaxf(m, xr[i]);
    float s = 0.0f;
    for (int i = 0; i < V; ++i) s += expf(xr[i] - m);
    float* yr = y + (size_t)n * V;
    for (int i = 0; i < V; ++i) yr[i] = finish<LOG>(xr[i], m, s);
}
extern "C" __global__ void softmax_forward_v1(float* y, const float* x, int N, int V) {
    forward_v1<false>(y, x, N, V);
}
extern "C" __global__ void log_softmax_forward_v1(float* y, const float* x, int N, int V) {
    forward_v1<true>(y, x, N, V);
}

// ----------------------------------------------------------------------------- forward v2
template <bool LOG>
__device__ void forward_v2(float* __restrict__ y, const float* __restrict__ x, int N, int V) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * SM_WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const float* xr = x + (size_t)n * V;
    float m = -INFINITY, s = 0.0f;
    for (int i = lane; i < V; i += 32) online_add(m, s, xr[i]);
    warp_online_merge(m, s);
    float* yr = y + (size_t)n * V;
    for (int i = lane; i < V; i += 32) yr[i] = finish<LOG>(xr[i], m, s);
}
extern "C" __global__ void __launch_bounds__(SM_WARPS * 32)
softmax_forward_v2(float* y, const float* x, int N, int V) {
    forward_v2<false>(y, x, N, V);
}
extern "C" __global__ void __launch_bounds__(SM_WARPS * 32)
log_softmax_forward_v2(float* y, const float* x, int N, int V) {
    forward_v2<true>(y, x, N, V);
}

// ----------------------------------------------------------------------------- forward v3
// Block-wide (m, s): warps merge by shuffles, warp 0 merges the warps' pairs, all read it back.
__device__ __forceinline__ void block_online_merge(float& m, float& s) {
    __shared__ float sm[32], ss[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    warp_online_merge(m, s);
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < SM_THREADS / 32 ? sm[lane] : -INFINITY;
        s = lane < SM_THREADS / 32 ? ss[lane] : 0.0f;
        warp_online_merge(m, s);
        if (lane == 0) {
            sm[0] = m;
            ss[0] = s;
        }
    }
    __syncthreads();
    m = sm[0];
    s = ss[0];
}

template <bool LOG>
__device__ void forward_v3(float* __restrict__ y, const float* __restrict__ x, int V) {
    const size_t n = blockIdx.x;  // one block per row
    const float* xr = x + n * V;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += SM_THREADS) online_add(m, s, xr[i]);
    block_online_merge(m, s);
    float* yr = y + n * V;
    for (int i = threadIdx.x; i < V; i += SM_THREADS) yr[i] = finish<LOG>(xr[i], m, s);
}
extern "C" __global__ void __launch_bounds__(SM_THREADS)
softmax_forward_v3(float* y, const float* x, int N, int V) {
    forward_v3<false>(y, x, V);
}
extern "C" __global__ void __launch_bounds__(SM_THREADS)
log_softmax_forward_v3(float* y, const float* x, int N, int V) {
    forward_v3<true>(y, x, V);
}

// ----------------------------------------------------------------------------- backward
// softmax:     dx = y * (dy - sum(dy * y))
// log-softmax: dx = dy - exp(y) * sum(dy)
template <bool LOG>
__device__ __forceinline__ float bwd_term(float dy, float y) { return LOG ? dy : dy * y; }
template <bool LOG>
__device__ __forceinline__ float bwd_out(float dy, float y, float r) {
    return LOG ? dy - expf(y) * r : y * (dy - r);
}

template <bool LOG>
__device__ void backward_v1(float* __restrict__ dx, const float* __restrict__ dy,
                            const float* __restrict__ y, int N, int V) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const size_t o = (size_t)n * V;
    float r = 0.0f;
    for (int i = 0; i < V; ++i) r += bwd_term<LOG>(dy[o + i], y[o + i]);
    for (int i = 0; i < V; ++i) dx[o + i] = bwd_out<LOG>(dy[o + i], y[o + i], r);
}
extern "C" __global__ void softmax_backward_v1(float* dx, const float* dy, const float* y, int N,
                                               int V) {
    backward_v1<false>(dx, dy, y, N, V);
}
extern "C" __global__ void log_softmax_backward_v1(float* dx, const float* dy, const float* y,
                                                   int N, int V) {
    backward_v1<true>(dx, dy, y, N, V);
}

template <bool LOG>
__device__ void backward_v2(float* __restrict__ dx, const float* __restrict__ dy,
                            const float* __restrict__ y, int N, int V) {
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * SM_WARPS + threadIdx.x / 32;
    if (n >= N) return;
    const size_t o = (size_t)n * V;
    float r = 0.0f;
    for (int i = lane; i < V; i += 32) r += bwd_term<LOG>(dy[o + i], y[o + i]);
    r = warp_sum(r);
    for (int i = lane; i < V; i += 32) dx[o + i] = bwd_out<LOG>(dy[o + i], y[o + i], r);
}
extern "C" __global__ void __launch_bounds__(SM_WARPS * 32)
softmax_backward_v2(float* dx, const float* dy, const float* y, int N, int V) {
    backward_v2<false>(dx, dy, y, N, V);
}
extern "C" __global__ void __launch_bounds__(SM_WARPS * 32)
log_softmax_backward_v2(float* dx, const float* dy, const float* y, int N, int V) {
    backward_v2<true>(dx, dy, y, N, V);
}
