// Fused softmax + cross-entropy, FP32, forward + backward, with ignore_index.
//
//   logits: (N, V)  targets: (N,) int64  lse: (N,) saved for the backward
//   loss = sum_{n valid} (lse_n - logits[n, t_n]) / count,  count = #{n : t_n != ignore_index}
//   (count = 0 gives loss 0, as kernels/reference.py).  Backward:
//   dlogits[n, v] = (exp(logits[n, v] - lse_n) - [v == t_n]) * dloss / count, 0 on ignored rows.
//
// The probabilities are never stored: the forward keeps one float per row (lse) and the
// backward rebuilds softmax from it, so the (N, V) matrix is read once forward and read once +
// written once backward. At GPT-2 shapes (N = 8192, V = 50304) that is 1.65 GB forward and
// 3.3 GB backward: ~0.6 ms and ~1.2 ms at ~2.8 TB/s.
// The loss and the 1 / count scale are reduced on the device in a fixed order (no host sync,
// no float atomics: the same inputs give the same bits).
//
// Placeholders: CE_THREADS (threads per block; a power of two, >= 64).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   forward v1  one thread per row, two passes (max, then sum of exp). Uncoalesced; readable.
//   forward v2  one block per row, online max/sum in one coalesced pass (Milakov & Gimelshein
//               2018), warp-shuffle then shared-memory merge. Expected ~80% of bandwidth.
//   backward v1 one thread per row writing its V gradients: uncoalesced.
//   backward v2 one thread per element, a 2-D grid (rows x column chunks): coalesced reads of
//               logits and writes of dlogits. Expected ~80-90% of bandwidth.

#if !defined(CE_THREADS)
#error "crossentropy.cu needs CE_THREADS (kernels/cuda/_compile.py writes the #defines)"
#endif
static_assert((CE_THREADS & (CE_THREADS - 1)) == 0 && CE_THREADS >= 64, "CE_THREADS: 2^k >= 64");

#define FULL 0xffffffffu

__device__ __forceinline__ void online_add(float& m, float& s, float x) {
    if (x > m) {
        s = s * expf(m - x) + 1.0f;
        m = x;
    } else if (x != -INFINITY) {
        s += expf(x - m);
    }
}

__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
    const float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// -log p(target) from the row's lse; NaN for a target outside 0..V-1 (the caller validates
// targets; NaN makes a slip visible instead of reading out of bounds).
__device__ __forceinline__ float nll_of(const float* row, float lse, long long t, int V) {
    return (t >= 0 && t < V) ? lse - row[t] : __int_as_float(0x7fc00000);
}

// ----------------------------------------------------------------------------- forward v1
extern "C" __global__ void cross_entropy_forward_v1(float* __restrict__ lse,
                                                    float* __restrict__ nll,
                                                    const float* __restrict__ logits,
                                                    const long long* __restrict__ targets,
                                                    int N, int V, int ignore_index) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float* row = logits + (size_t)n * V;
    float m = -INFINITY;
    for (int i = 0; i < V; ++i) m = fmaxf(m, row[i]);
    float s = 0.0f;
    for (int i = 0; i < V; ++i) s += expf(row[i] - m);
    const float l = m + logf(s);
    lse[n] = l;
    const long long t = targets[n];
    nll[n] = t == ignore_index ? 0.0f : nll_of(row, l, t, V);
}

// ----------------------------------------------------------------------------- forward v2
extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_forward_v2(float* __restrict__ lse, float* __restrict__ nll,
                         const float* __restrict__ logits, const long long* __restrict__ targets,
                         int N, int V, int ignore_index) {
    __shared__ float sm[32], ss[32];
    const size_t n = blockIdx.x;  // one block per row
    const float* row = logits + n * V;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) online_add(m, s, row[i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        online_merge(m, s, __shfl_xor_sync(FULL, m, o), __shfl_xor_sync(FULL, s, o));
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < CE_THREADS / 32 ? sm[lane] : -INFINITY;
        s = lane < CE_THREADS / 32 ? ss[lane] : 0.0f;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            online_merge(m, s, __shfl_xor_sync(FULL, m, o), __shfl_xor_sync(FULL, s, o));
        if (lane == 0) {
            const float l = m + logf(s);
            lse[n] = l;
            const long long t = targets[n];
            nll[n] = t == ignore_index ? 0.0f : nll_of(row, l, t, V);
        }
    }
}

// ----------------------------------------------------------------------------- reductions
// One block of CE_THREADS: strided partial sums, then a shared-memory tree in a fixed order.
// Returns (sum of vals over valid rows, count of valid rows) in thread 0.
__device__ __forceinline__ void sum_valid(float& total, int& count, const float* vals,
                                          const long long* targets, int N, int ignore_index) {
    __shared__ float sv[CE_THREADS];
    __shared__ int sc[CE_THREADS];
    float v = 0.0f;
    int c = 0;
    for (int i = threadIdx.x; i < N; i += CE_THREADS) {
        if (targets[i] != ignore_index) {
            if (vals) v += vals[i];
            ++c;
        }
    }
    sv[threadIdx.x] = v;
    sc[threadIdx.x] = c;
    __syncthreads();
    for (int stride = CE_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            sv[threadIdx.x] += sv[threadIdx.x + stride];
            sc[threadIdx.x] += sc[threadIdx.x + stride];
        }
        __syncthreads();
    }
    total = sv[0];
    count = sc[0];
}

// loss[0] = sum of nll over valid rows / max(count, 1).   Launch: 1 block of CE_THREADS.
extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_loss(float* __restrict__ loss, const float* __restrict__ nll,
                   const long long* __restrict__ targets, int N, int ignore_index) {
    float total;
    int count;
    sum_valid(total, count, nll, targets, N, ignore_index);
    if (threadIdx.x == 0) loss[0] = total / (float)max(count, 1);
}

// scale[0] = dloss[0] / max(count, 1).   Launch: 1 block of CE_THREADS.
extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_scale(float* __restrict__ scale, const float* __restrict__ dloss,
                    const long long* __restrict__ targets, int N, int ignore_index) {
    float total;
    int count;
    sum_valid(total, count, nullptr, targets, N, ignore_index);
    if (threadIdx.x == 0) scale[0] = dloss[0] / (float)max(count, 1);
}

// ----------------------------------------------------------------------------- backward
extern "C" __global__ void cross_entropy_backward_v1(float* __restrict__ dlogits,
                                                     const float* __restrict__ logits,
                                                     const float* __restrict__ lse,
                                                     const long long* __restrict__ targets,
                                                     const float* __restrict__ scale, int N,
                                                     int V, int ignore_index) {
    const int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const size_t o = (size_t)n * V;
    const long long t = targets[n];
    const float k = t == ignore_index ? 0.0f : scale[0], l = lse[n];
    for (int i = 0; i < V; ++i) dlogits[o + i] = (expf(logits[o + i] - l) - (i == t)) * k;
}

// grid: (N, ceil(V / CE_THREADS)); block: CE_THREADS. Thread = one (row, column).
extern "C" __global__ void __launch_bounds__(CE_THREADS)
cross_entropy_backward_v2(float* __restrict__ dlogits, const float* __restrict__ logits,
                          const float* __restrict__ lse, const long long* __restrict__ targets,
                          const float* __restrict__ scale, int N, int V, int ignore_index) {
    const size_t n = blockIdx.x;
    const int i = blockIdx.y * CE_THREADS + threadIdx.x;
    if (i >= V) return;
    const long long t = targets[n];
    const float k = t == ignore_index ? 0.0f : scale[0];
    const size_t o = n * V + i;
    dlogits[o] = (expf(logits[o] - lse[n]) - (i == t)) * k;
}
