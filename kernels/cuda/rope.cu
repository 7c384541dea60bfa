// Rotary position embeddings (Su et al. 2021, RoFormer), FP32, forward and backward.
//
//   y1 = x1 cos - x2 sin,  y2 = x1 sin + x2 cos      x, y: (B, H, T, D)  cos, sin: (Bc, T, D/2)
//   Bc = 1 (shared positions) or B (per-row positions). Pair i is (x[i], x[i + D/2]) in the
//   half-split layout (interleaved = 0, Hugging Face) and (x[2i], x[2i+1]) in the interleaved
//   one (interleaved = 1, Meta / GGUF). The backward is the rotation by -theta: the same
//   kernels with sign = -1 on sin.
//
// Streaming: 8 bytes read and 8 written per pair, cos/sin (D/2 per position) shared by the H
// heads and served from L2.
//
// Placeholder: RP_THREADS (threads per block).
//
// Versions (expected gains, NOT measured: "not yet measured: needs a GPU"):
//   v1  one thread per pair, scalar loads. In the half-split layout a warp reads 32
//       consecutive x1 and 32 consecutive x2 (coalesced); in the interleaved one each lane
//       reads two floats 4 bytes apart (two load instructions for one 8-byte pair).
//   v2  grid-stride loop; in the interleaved layout a pair moves as one float2 (one 8-byte
//       load and store per pair, half the memory instructions). Expected close to copy
//       bandwidth in both layouts.

#if !defined(RP_THREADS)
#error "rope.cu needs RP_THREADS (kernels/cuda/_compile.py writes the #defines)"
#endif

// pair p of the flattened (B, H, T, D/2) index space -> its row (b, t) of cos/sin
__device__ __forceinline__ size_t angle_index(size_t p, int H, int T, int half, int Bc) {
    const size_t i = p % half;
    const size_t row = p / half;  // (b, h, t) flattened
    const size_t t = row % T;
    const size_t b = row / ((size_t)T * H);
    return ((Bc > 1 ? b : 0) * T + t) * half + i;
}

// ----------------------------------------------------------------------------- v1
extern "C" __global__ void rope_rotate_v1(float* __restrict__ y, const float* __restrict__ x,
                                          const float* __restrict__ cos_,
                                          const float* __restrict__ sin_, int B, int H, int T,
                                          int D, int Bc, float sign, int interleaved) {
    const int half = D / 2;
    const size_t P = (size_t)B * H * T * half;
    const size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const size_t a = angle_index(p, H, T, half, Bc);
    const float c = cos_[a], s = sign * sin_[a];
    const size_t row = p / half, i = p % half;
    const size_t j1 = row * D + (interleaved ? 2 * i : i);
    const size_t j2 = j1 + (interleaved ? 1 : half);
    const float x1 = x[j1], x2 = x[j2];
    y[j1] = x1 * c - x2 * s;
    y[j2] = x1 * s + x2 * c;
}

// ----------------------------------------------------------------------------- v2
// vec = 1 (interleaved layout, x and y 8-byte aligned): pair p is the float2 at index p.
extern "C" __global__ void __launch_bounds__(RP_THREADS)
rope_rotate_v2(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ cos_,
               const float* __restrict__ sin_, int B, int H, int T, int D, int Bc, float sign,
               int interleaved, int vec) {
    const int half = D / 2;
    const size_t P = (size_t)B * H * T * half;
    const size_t stride = (size_t)gridDim.x * RP_THREADS;
    for (size_t p = (size_t)blockIdx.x * RP_THREADS + threadIdx.x; p < P; p += stride) {
        const size_t a = angle_index(p, H, T, half, Bc);
        const float c = cos_[a], s = sign * sin_[a];
        if (vec) {
            const float2 v = reinterpret_cast<const float2*>(x)[p];
            reinterpret_cast<float2*>(y)[p] = make_float2(v.x * c - v.y * s, v.x * s + v.y * c);
        } else {
            const size_t row = p / half, i = p % half;
            const size_t j1 = row * D + (interleaved ? 2 * i : i);
            const size_t j2 = j1 + (interleaved ? 1 : half);
            const float x1 = x[j1], x2 = x[j2];
            y[j1] = x1 * c - x2 * s;
            y[j2] = x1 * s + x2 * c;
        }
    }
}
