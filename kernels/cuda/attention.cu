// Flash attention (Dao et al. 2022; FlashAttention-2, Dao 2023), forward + backward, causal or
// not, head dim 64 or 128.
//
//   q: (B, H, Tq, D)  k, v: (B, H, Tk, D)  o: (B, H, Tq, D)  lse: (B, H, Tq) float32
//   s = q k^T * scale; causal: query i sits at absolute position Tk - Tq + i and sees keys
//   0 .. Tk - Tq + i (Tq < Tk is a KV-cache step); p = softmax(s) row-wise; o = p v.
//   The (Tq, Tk) score matrix is never stored: the forward walks over key tiles with an online
//   softmax (running max m, running sum l, rescaled accumulator), and saves lse = m + log l per
//   row. The backward rebuilds p = exp(s - lse) tile by tile:
//     delta_i = rowsum(do * o)          (attention_delta, a separate pass)
//     dv = p^T do;  dp = do v^T;  ds = p (dp - delta);  dq = ds k scale;  dk = ds^T q scale.
//   dk, dv are computed by blocks that own a key tile and walk over the query tiles
//   (attention_backward_dkdv), dq by blocks that own a query tile and walk over the key tiles
//   (attention_backward_dq): every output element has exactly one writer, so there are no
//   atomics and the results repeat bit for bit (the price: s and p are recomputed twice).
//
// Placeholders: HEAD_DIM (64 or 128), ATT_VERSION (1 or 2), and
//   v1: ATT_WARPS (warps per block), ATT_RPW (rows per warp)
//   v2: ATT_BF16 (0: fp16, 1: bf16), ATT_BQ (query rows per block / tile), ATT_BK (keys per
//       block / tile); both multiples of 16 (one warp per 16 rows).
// Shared memory is dynamic (extern __shared__); kernels/cuda/attention.py computes the same
// sizes as the *_SMEM macros below and opts in above 48 KiB.
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"; targets from the issue:
// BF16/FP16 forward >= 50% of PyTorch SDPA, backward >= 35%; FP32 >= 5x the unfused path):
//   v1  FP32 on CUDA cores, the readable one. A warp owns ATT_RPW query rows; for each tile of
//       32 keys (one key per lane) a lane computes its key's score, the warp reduces max / sum
//       with shuffles, and the P V update broadcasts p_j by shuffle while lanes own D/32
//       output columns each. K rows are padded by one float in shared memory so that 32 lanes
//       reading 32 different rows hit 32 banks. The backward uses the same pattern with the
//       roles of queries and keys swapped. Expected well above the unfused cuBLAS + softmax
//       path at T = 1024 (it never writes the 4 MB-per-head score matrix), far below v2.
//   v2  FP16/BF16 inputs on tensor cores: mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16},
//       FP32 accumulation and softmax. A warp owns 16 query rows; S = Q K^T and O += P V are
//       mma tiles; the S accumulator fragment is reused directly as the A fragment of P V
//       (packed to 16 bits), as in FlashAttention-2. V is read as the B operand with 16-bit
//       shared-memory loads (no ldmatrix.trans yet: that and cp.async double buffering are
//       the next versions). exp2 with the scale folded in (log2 e). Expected 40-60% of SDPA.

#if !defined(HEAD_DIM) || !defined(ATT_VERSION)
#error "attention.cu needs HEAD_DIM and ATT_VERSION (kernels/cuda/_compile.py writes the #defines)"
#endif
static_assert(HEAD_DIM == 64 || HEAD_DIM == 128, "head dim 64 or 128");

#define FULL 0xffffffffu
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

#if ATT_VERSION == 2
#if !defined(ATT_BF16) || !defined(ATT_BQ) || !defined(ATT_BK)
#error "attention v2 needs ATT_BF16, ATT_BQ, ATT_BK"
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#if ATT_BF16
typedef __nv_bfloat16 elem_t;
#define MMA_T "bf16"
__device__ __forceinline__ float to_f(elem_t x) { return __bfloat162float(x); }
__device__ __forceinline__ unsigned bits(elem_t x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x = lo: the lower 16 bits
    return *reinterpret_cast<const unsigned*>(&h);
}
#else
typedef __half elem_t;
#define MMA_T "f16"
__device__ __forceinline__ float to_f(elem_t x) { return __half2float(x); }
__device__ __forceinline__ unsigned bits(elem_t x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}
#endif
#else
typedef float elem_t;
__device__ __forceinline__ float to_f(float x) { return x; }
#endif

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}

// delta[r] = sum_d do[r, d] * o[r, d] over rows r < R = B*H*Tq; one warp per row, 8 per block.
extern "C" __global__ void __launch_bounds__(256)
attention_delta(float* __restrict__ delta, const elem_t* __restrict__ dout,
                const elem_t* __restrict__ o, int R) {
    const int r = blockIdx.x * 8 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= R) return;
    const size_t base = (size_t)r * HEAD_DIM;
    float s = 0.0f;
#pragma unroll
    for (int d = lane; d < HEAD_DIM; d += 32) s += to_f(dout[base + d]) * to_f(o[base + d]);
    s = warp_sum(s);
    if (lane == 0) delta[r] = s;
}

// =========================================================================================
#if ATT_VERSION == 1
#if !defined(ATT_WARPS) || !defined(ATT_RPW)
#error "attention v1 needs ATT_WARPS, ATT_RPW"
#endif
#define V1_NT (ATT_WARPS * 32)
#define V1_BR (ATT_WARPS * ATT_RPW)  // rows (queries in fwd/dq, keys in dkdv) a block owns
#define V1_BC 32                     // the tile walked over: one row per lane
#define DL (HEAD_DIM / 32)           // output columns per lane: lane + 32 * dl
#define PD (HEAD_DIM + 1)            // padded row of a lane-indexed tile (conflict-free)
// shared memory, in floats
#define V1_FWD_SMEM (V1_BR * HEAD_DIM + V1_BC * PD + V1_BC * HEAD_DIM)
#define V1_DKDV_SMEM (2 * V1_BR * HEAD_DIM + 2 * V1_BC * PD + 2 * V1_BC)
#define V1_DQ_SMEM (2 * V1_BR * HEAD_DIM + 2 * V1_BC * PD)

// rows [row0, row0 + R) of a (T, HEAD_DIM) matrix into S (row stride `stride`), zeros past T
__device__ __forceinline__ void stage_rows(float* S, int stride, const float* __restrict__ G,
                                           int row0, int T, int R) {
    for (int i = threadIdx.x; i < R * HEAD_DIM; i += V1_NT) {
        const int r = i / HEAD_DIM, d = i % HEAD_DIM;
        S[r * stride + d] = row0 + r < T ? G[(size_t)(row0 + r) * HEAD_DIM + d] : 0.0f;
    }
}

// grid: (ceil(Tq / V1_BR), B*H); block: V1_NT.
extern "C" __global__ void __launch_bounds__(V1_NT)
attention_forward_v1(float* __restrict__ o, float* __restrict__ lse,
                     const float* __restrict__ q, const float* __restrict__ k,
                     const float* __restrict__ v, int Tq, int Tk, float scale, int causal) {
    extern __shared__ float smem[];
    float* Qs = smem;                      // (V1_BR, HEAD_DIM): every lane reads one word
    float* Ks = Qs + V1_BR * HEAD_DIM;     // (V1_BC, PD): lane j reads row j
    float* Vs = Ks + V1_BC * PD;           // (V1_BC, HEAD_DIM): lanes read along a row
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t bh = blockIdx.y;
    const int q0 = blockIdx.x * V1_BR, off = Tk - Tq;
    const float* qb = q + bh * Tq * HEAD_DIM;
    const float* kb = k + bh * Tk * HEAD_DIM;
    const float* vb = v + bh * Tk * HEAD_DIM;
    stage_rows(Qs, HEAD_DIM, qb, q0, Tq, V1_BR);

    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][DL];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < DL; ++c) acc[r][c] = 0.0f;
    }
    // keys past the last query's position are masked for the whole block: skip their tiles
    const int kend = causal ? min(Tk, off + min(q0 + V1_BR, Tq)) : Tk;
    for (int k0 = 0; k0 < kend; k0 += V1_BC) {
        __syncthreads();  // the previous tile is consumed (and Qs is staged, first time)
        stage_rows(Ks, PD, kb, k0, Tk, V1_BC);
        stage_rows(Vs, HEAD_DIM, vb, k0, Tk, V1_BC);
        __syncthreads();
        const int kj = k0 + lane;  // this lane's key
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; ++rr) {
            const int r = warp * ATT_RPW + rr, qi = q0 + r;
            float s = 0.0f;
#pragma unroll 16
            for (int d = 0; d < HEAD_DIM; ++d) s += Qs[r * HEAD_DIM + d] * Ks[lane * PD + d];
            const bool ok = kj < Tk && (!causal || kj <= off + qi);
            s = ok ? s * scale : -INFINITY;
            const float mn = fmaxf(m[rr], warp_max(s));
            if (mn == -INFINITY) continue;  // nothing visible yet (uniform across the warp)
            const float p = expf(s - mn);          // 0 where masked
            const float alpha = expf(m[rr] - mn);  // 0 while m was -inf
            l[rr] = l[rr] * alpha + warp_sum(p);
            m[rr] = mn;
#pragma unroll
            for (int c = 0; c < DL; ++c) acc[rr][c] *= alpha;
#pragma unroll 8
            for (int j = 0; j < V1_BC; ++j) {
                const float pj = __shfl_sync(FULL, p, j);
#pragma unroll
                for (int c = 0; c < DL; ++c) acc[rr][c] += pj * Vs[j * HEAD_DIM + lane + 32 * c];
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; ++rr) {
        const int qi = q0 + warp * ATT_RPW + rr;
        if (qi >= Tq) continue;
        float* orow = o + (bh * Tq + qi) * HEAD_DIM;
        const float inv = 1.0f / l[rr];
#pragma unroll
        for (int c = 0; c < DL; ++c) orow[lane + 32 * c] = acc[rr][c] * inv;
        if (lane == 0) lse[bh * Tq + qi] = m[rr] + logf(l[rr]);
    }
}

// grid: (ceil(Tk / V1_BR), B*H); a block owns V1_BR keys (a warp ATT_RPW of them) and walks
// over query tiles of 32 (one query per lane).
extern "C" __global__ void __launch_bounds__(V1_NT)
attention_backward_dkdv_v1(float* __restrict__ dk, float* __restrict__ dv,
                           const float* __restrict__ q, const float* __restrict__ k,
                           const float* __restrict__ v, const float* __restrict__ dout,
                           const float* __restrict__ lse, const float* __restrict__ delta,
                           int Tq, int Tk, float scale, int causal) {
    extern __shared__ float smem[];
    float* Ks = smem;                       // (V1_BR, HEAD_DIM) broadcast reads
    float* Vs = Ks + V1_BR * HEAD_DIM;      // (V1_BR, HEAD_DIM)
    float* Qs = Vs + V1_BR * HEAD_DIM;      // (32, PD) lane-indexed
    float* dOs = Qs + V1_BC * PD;           // (32, PD)
    float* Ls = dOs + V1_BC * PD;           // (32,)
    float* Ds = Ls + V1_BC;                 // (32,)
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t bh = blockIdx.y;
    const int k0 = blockIdx.x * V1_BR, off = Tk - Tq;
    const float* qb = q + bh * Tq * HEAD_DIM;
    const float* dob = dout + bh * Tq * HEAD_DIM;
    stage_rows(Ks, HEAD_DIM, k + bh * Tk * HEAD_DIM, k0, Tk, V1_BR);
    stage_rows(Vs, HEAD_DIM, v + bh * Tk * HEAD_DIM, k0, Tk, V1_BR);

    float dka[ATT_RPW][DL], dva[ATT_RPW][DL];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r)
#pragma unroll
        for (int c = 0; c < DL; ++c) dka[r][c] = dva[r][c] = 0.0f;
    // the first query that sees key k0 is i = k0 - off; earlier query tiles contribute nothing
    const int qstart = causal ? (max(0, k0 - off) / V1_BC) * V1_BC : 0;
    for (int i0 = qstart; i0 < Tq; i0 += V1_BC) {
        __syncthreads();
        stage_rows(Qs, PD, qb, i0, Tq, V1_BC);
        stage_rows(dOs, PD, dob, i0, Tq, V1_BC);
        if (threadIdx.x < V1_BC) {
            const int i = i0 + threadIdx.x;
            Ls[threadIdx.x] = i < Tq ? lse[bh * Tq + i] : 0.0f;
            Ds[threadIdx.x] = i < Tq ? delta[bh * Tq + i] : 0.0f;
        }
        __syncthreads();
        const int qi = i0 + lane;  // this lane's query
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; ++rr) {
            const int j = warp * ATT_RPW + rr, kj = k0 + j;
            float s = 0.0f, dp = 0.0f;
#pragma unroll 16
            for (int d = 0; d < HEAD_DIM; ++d) {
                s += Qs[lane * PD + d] * Ks[j * HEAD_DIM + d];
                dp += dOs[lane * PD + d] * Vs[j * HEAD_DIM + d];
            }
            const bool ok = qi < Tq && kj < Tk && (!causal || kj <= off + qi);
            const float p = ok ? expf(s * scale - Ls[lane]) : 0.0f;
            const float ds = p * (dp - Ds[lane]);
#pragma unroll 8
            for (int i = 0; i < V1_BC; ++i) {
                const float pi = __shfl_sync(FULL, p, i), dsi = __shfl_sync(FULL, ds, i);
#pragma unroll
                for (int c = 0; c < DL; ++c) {
                    dva[rr][c] += pi * dOs[i * PD + lane + 32 * c];
                    dka[rr][c] += dsi * Qs[i * PD + lane + 32 * c];
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; ++rr) {
        const int kj = k0 + warp * ATT_RPW + rr;
        if (kj >= Tk) continue;
        const size_t base = (bh * Tk + kj) * HEAD_DIM;
#pragma unroll
        for (int c = 0; c < DL; ++c) {
            dk[base + lane + 32 * c] = dka[rr][c] * scale;
            dv[base + lane + 32 * c] = dva[rr][c];
        }
    }
}

// grid: (ceil(Tq / V1_BR), B*H); a block owns V1_BR queries and walks over key tiles of 32.
extern "C" __global__ void __launch_bounds__(V1_NT)
attention_backward_dq_v1(float* __restrict__ dq, const float* __restrict__ q,
                         const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, int Tq, int Tk, float scale,
                         int causal) {
    extern __shared__ float smem[];
    float* Qs = smem;                       // (V1_BR, HEAD_DIM) broadcast reads
    float* dOs = Qs + V1_BR * HEAD_DIM;     // (V1_BR, HEAD_DIM)
    float* Ks = dOs + V1_BR * HEAD_DIM;     // (32, PD): lane-indexed rows and row reads
    float* Vs = Ks + V1_BC * PD;            // (32, PD)
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const size_t bh = blockIdx.y;
    const int q0 = blockIdx.x * V1_BR, off = Tk - Tq;
    const float* kb = k + bh * Tk * HEAD_DIM;
    const float* vb = v + bh * Tk * HEAD_DIM;
    stage_rows(Qs, HEAD_DIM, q + bh * Tq * HEAD_DIM, q0, Tq, V1_BR);
    stage_rows(dOs, HEAD_DIM, dout + bh * Tq * HEAD_DIM, q0, Tq, V1_BR);

    float dqa[ATT_RPW][DL], Lr[ATT_RPW], Dr[ATT_RPW];
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; ++rr) {
        const int qi = q0 + warp * ATT_RPW + rr;
        Lr[rr] = qi < Tq ? lse[bh * Tq + qi] : 0.0f;
        Dr[rr] = qi < Tq ? delta[bh * Tq + qi] : 0.0f;
#pragma unroll
        for (int c = 0; c < DL; ++c) dqa[rr][c] = 0.0f;
    }
    const int kend = causal ? min(Tk, off + min(q0 + V1_BR, Tq)) : Tk;
    for (int k0 = 0; k0 < kend; k0 += V1_BC) {
        __syncthreads();
        stage_rows(Ks, PD, kb, k0, Tk, V1_BC);
        stage_rows(Vs, PD, vb, k0, Tk, V1_BC);
        __syncthreads();
        const int kj = k0 + lane;
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; ++rr) {
            const int r = warp * ATT_RPW + rr, qi = q0 + r;
            float s = 0.0f, dp = 0.0f;
#pragma unroll 16
            for (int d = 0; d < HEAD_DIM; ++d) {
                s += Qs[r * HEAD_DIM + d] * Ks[lane * PD + d];
                dp += dOs[r * HEAD_DIM + d] * Vs[lane * PD + d];
            }
            const bool ok = qi < Tq && kj < Tk && (!causal || kj <= off + qi);
            const float p = ok ? expf(s * scale - Lr[rr]) : 0.0f;
            const float ds = p * (dp - Dr[rr]);
#pragma unroll 8
            for (int j = 0; j < V1_BC; ++j) {
                const float dsj = __shfl_sync(FULL, ds, j);
#pragma unroll
                for (int c = 0; c < DL; ++c) dqa[rr][c] += dsj * Ks[j * PD + lane + 32 * c];
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; ++rr) {
        const int qi = q0 + warp * ATT_RPW + rr;
        if (qi >= Tq) continue;
        const size_t base = (bh * Tq + qi) * HEAD_DIM;
#pragma unroll
        for (int c = 0; c < DL; ++c) dq[base + lane + 32 * c] = dqa[rr][c] * scale;
    }
}
#endif  // ATT_VERSION == 1

// =========================================================================================
#if ATT_VERSION == 2
// Fragment layouts of mma.m16n8k16 with 16-bit inputs (PTX ISA, "Matrix fragments for
// mma.m16n8k16"), g = lane / 4, t = lane % 4; each A/B register holds two 16-bit values, the
// lower-indexed one in the low half:
//   A 16x16 (row): a0 (g, 2t..2t+1)  a1 (g+8, 2t..2t+1)  a2 (g, 2t+8..+9)  a3 (g+8, 2t+8..+9)
//   B 16x8  (col): b0 (k = 2t..2t+1, n = g)   b1 (k = 2t+8..2t+9, n = g)
//   C 16x8  f32:   c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
// So the C fragments of two neighbouring n8 tiles of S are exactly the A fragment of a 16-wide
// k slice of P: P V needs no trip through shared memory.
static_assert(ATT_BQ % 16 == 0 && ATT_BK % 16 == 0, "ATT_BQ and ATT_BK: multiples of 16");
#define SD (HEAD_DIM + 8)  // padded row (elements): rows stay 16-byte aligned, and the 32-bit
                           // fragment loads of a warp (rows g, words t) fall in 32 banks
#define NDT (HEAD_DIM / 8) // n8 tiles across the head dim
// shared memory, in bytes
#define V2_FWD_SMEM ((ATT_BQ + 2 * ATT_BK) * SD * 2)
#define V2_BWD_SMEM (2 * (ATT_BQ + ATT_BK) * SD * 2 + 2 * ATT_BQ * 4)

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32." MMA_T "." MMA_T ".f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A fragment of the 16x16 block of S (row-major, stride SD) at (row0, col0).
__device__ __forceinline__ void frag_a(unsigned* a, const elem_t* S, int row0, int col0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const elem_t* p = S + (row0 + g) * SD + col0 + 2 * t;
    a[0] = *reinterpret_cast<const unsigned*>(p);
    a[1] = *reinterpret_cast<const unsigned*>(p + 8 * SD);
    a[2] = *reinterpret_cast<const unsigned*>(p + 8);
    a[3] = *reinterpret_cast<const unsigned*>(p + 8 * SD + 8);
}

// B fragment (16 x 8) with B[k][n] = S[n0 + n][k0 + k]: S holds B transposed (keys as rows for
// Q K^T), so each register's pair is contiguous in a row of S.
__device__ __forceinline__ void frag_b_nk(unsigned* b, const elem_t* S, int n0, int k0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const elem_t* p = S + (n0 + g) * SD + k0 + 2 * t;
    b[0] = *reinterpret_cast<const unsigned*>(p);
    b[1] = *reinterpret_cast<const unsigned*>(p + 8);
}

// B fragment (16 x 8) with B[k][n] = S[k0 + k][n0 + n]: S holds B as is (V for P V), so a
// register's pair comes from two rows: two 16-bit loads (ldmatrix.trans would do it in one).
__device__ __forceinline__ void frag_b_kn(unsigned* b, const elem_t* S, int k0, int n0) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const elem_t* p = S + (k0 + 2 * t) * SD + n0 + g;
    b[0] = bits(p[0]) | (bits(p[SD]) << 16);
    b[1] = bits(p[8 * SD]) | (bits(p[9 * SD]) << 16);
}

// A fragment of a 16-wide k slice kc of P from the f32 accumulators of S tiles 2kc, 2kc+1.
__device__ __forceinline__ void frag_a_from_acc(unsigned* a, const float (*s)[4], int kc) {
    a[0] = pack2(s[2 * kc][0], s[2 * kc][1]);
    a[1] = pack2(s[2 * kc][2], s[2 * kc][3]);
    a[2] = pack2(s[2 * kc + 1][0], s[2 * kc + 1][1]);
    a[3] = pack2(s[2 * kc + 1][2], s[2 * kc + 1][3]);
}

// rows [row0, row0 + R) of a (T, HEAD_DIM) matrix into S, 16 bytes per thread per step, zeros
// past T. Global rows are HEAD_DIM * 2 = 128 or 256 bytes: 16-byte aligned when the base is.
__device__ __forceinline__ void stage_rows(elem_t* S, const elem_t* __restrict__ G, int row0,
                                           int T, int R) {
    constexpr int CH = HEAD_DIM / 8;
    for (int i = threadIdx.x; i < R * CH; i += blockDim.x) {
        const int r = i / CH, c = (i % CH) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (row0 + r < T) val = *reinterpret_cast<const uint4*>(G + (size_t)(row0 + r) * HEAD_DIM + c);
        *reinterpret_cast<uint4*>(S + r * SD + c) = val;
    }
}

__device__ __forceinline__ float quad_max(float v) {  // over the 4 lanes that share a row
    v = fmaxf(v, __shfl_xor_sync(FULL, v, 1));
    return fmaxf(v, __shfl_xor_sync(FULL, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(FULL, v, 1);
    return v + __shfl_xor_sync(FULL, v, 2);
}

// grid: (ceil(Tq / ATT_BQ), B*H); block: ATT_BQ / 16 warps, warp w owning rows 16w..16w+15.
extern "C" __global__ void __launch_bounds__(ATT_BQ * 2)
attention_forward_v2(elem_t* __restrict__ o, float* __restrict__ lse,
                     const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                     const elem_t* __restrict__ v, int Tq, int Tk, float scale, int causal) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    elem_t* Qs = reinterpret_cast<elem_t*>(smem_raw);  // (ATT_BQ, SD)
    elem_t* Ks = Qs + ATT_BQ * SD;                        // (ATT_BK, SD)
    elem_t* Vs = Ks + ATT_BK * SD;                        // (ATT_BK, SD)
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const size_t bh = blockIdx.y;
    const int q0 = blockIdx.x * ATT_BQ, off = Tk - Tq;
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};  // this thread's 2 rows
    const elem_t* kb = k + bh * Tk * HEAD_DIM;
    const elem_t* vb = v + bh * Tk * HEAD_DIM;
    stage_rows(Qs, q + bh * Tq * HEAD_DIM, q0, Tq, ATT_BQ);
    const float sl2 = scale * LOG2E;  // scores in log2 units: exp(x) = exp2(x log2 e)

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float acc[NDT][4];
#pragma unroll
    for (int i = 0; i < NDT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

    const int kend = causal ? min(Tk, off + min(q0 + ATT_BQ, Tq)) : Tk;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        stage_rows(Ks, kb, k0, Tk, ATT_BK);
        stage_rows(Vs, vb, k0, Tk, ATT_BK);
        __syncthreads();

        float s[ATT_BK / 8][4];  // S = Q K^T: this warp's 16 rows x ATT_BK keys
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM; kc += 16) {
            unsigned a[4];
            frag_a(a, Qs, warp * 16, kc);
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; ++n) {
                unsigned b[2];
                frag_b_nk(b, Ks, n * 8, kc);
                mma16816(s[n], a, b);
            }
        }
        // mask, scale, running max per row (element e of a tile: row e / 2, column 2t + e % 2)
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = e / 2, col = k0 + n * 8 + 2 * t + (e & 1);
                const bool ok = col < Tk && (!causal || col <= off + row[h]);
                s[n][e] = ok ? s[n][e] * sl2 : -INFINITY;
                mx[h] = fmaxf(mx[h], s[n][e]);
            }
        float msafe[2], rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float mn = fmaxf(m[h], quad_max(mx[h]));
            msafe[h] = mn == -INFINITY ? 0.0f : mn;  // a row with nothing visible yet
            const float alpha = exp2f(m[h] - msafe[h]);  // 0 while m was -inf
            m[h] = mn;
            l[h] *= alpha;
#pragma unroll
            for (int i = 0; i < NDT; ++i) {
                acc[i][2 * h] *= alpha;
                acc[i][2 * h + 1] *= alpha;
            }
        }
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(s[n][e] - msafe[e / 2]);  // exp2(-inf) = 0 where masked
                s[n][e] = p;
                rs[e / 2] += p;
            }
        l[0] += quad_sum(rs[0]);
        l[1] += quad_sum(rs[1]);
        // O += P V: P from the S accumulators, V (keys x head dim) as the B operand
#pragma unroll
        for (int kc = 0; kc < ATT_BK / 16; ++kc) {
            unsigned a[4];
            frag_a_from_acc(a, s, kc);
#pragma unroll
            for (int i = 0; i < NDT; ++i) {
                unsigned b[2];
                frag_b_kn(b, Vs, kc * 16, i * 8);
                mma16816(acc[i], a, b);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        if (row[h] >= Tq) continue;
        const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
        elem_t* orow = o + (bh * Tq + row[h]) * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < NDT; ++i)
            *reinterpret_cast<unsigned*>(orow + i * 8 + 2 * t) =
                pack2(acc[i][2 * h] * inv, acc[i][2 * h + 1] * inv);
        if (t == 0) lse[bh * Tq + row[h]] = (m[h] + log2f(l[h])) * LN2;  // natural log
    }
}

// grid: (ceil(Tk / ATT_BK), B*H); block: ATT_BK / 16 warps, warp w owning keys 16w..16w+15 of
// the block's tile; walks over query tiles of ATT_BQ. Computes S^T and dP^T directly (keys as
// rows), so P^T and dS^T are in accumulator layout and feed dV += P^T dO and dK += dS^T Q as
// A fragments.
extern "C" __global__ void __launch_bounds__(ATT_BK * 2)
attention_backward_dkdv_v2(elem_t* __restrict__ dk, elem_t* __restrict__ dv,
                           const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                           const elem_t* __restrict__ v, const elem_t* __restrict__ dout,
                           const float* __restrict__ lse, const float* __restrict__ delta,
                           int Tq, int Tk, float scale, int causal) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    elem_t* Ks = reinterpret_cast<elem_t*>(smem_raw);  // (ATT_BK, SD)
    elem_t* Vs = Ks + ATT_BK * SD;                        // (ATT_BK, SD)
    elem_t* Qs = Vs + ATT_BK * SD;                        // (ATT_BQ, SD)
    elem_t* dOs = Qs + ATT_BQ * SD;                       // (ATT_BQ, SD)
    float* Ls = reinterpret_cast<float*>(dOs + ATT_BQ * SD);  // (ATT_BQ,) lse in log2 units
    float* Ds = Ls + ATT_BQ;                                  // (ATT_BQ,) delta
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const size_t bh = blockIdx.y;
    const int k0 = blockIdx.x * ATT_BK, off = Tk - Tq;
    const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
    const elem_t* qb = q + bh * Tq * HEAD_DIM;
    const elem_t* dob = dout + bh * Tq * HEAD_DIM;
    stage_rows(Ks, k + bh * Tk * HEAD_DIM, k0, Tk, ATT_BK);
    stage_rows(Vs, v + bh * Tk * HEAD_DIM, k0, Tk, ATT_BK);
    const float sl2 = scale * LOG2E;

    float dka[NDT][4], dva[NDT][4];
#pragma unroll
    for (int i = 0; i < NDT; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) dka[i][e] = dva[i][e] = 0.0f;

    const int qstart = causal ? (max(0, k0 - off) / ATT_BQ) * ATT_BQ : 0;
    for (int i0 = qstart; i0 < Tq; i0 += ATT_BQ) {
        __syncthreads();
        stage_rows(Qs, qb, i0, Tq, ATT_BQ);
        stage_rows(dOs, dob, i0, Tq, ATT_BQ);
        for (int r = threadIdx.x; r < ATT_BQ; r += blockDim.x) {
            const int i = i0 + r;
            Ls[r] = i < Tq ? lse[bh * Tq + i] * LOG2E : 0.0f;
            Ds[r] = i < Tq ? delta[bh * Tq + i] : 0.0f;
        }
        __syncthreads();

        float st[ATT_BQ / 8][4], dpt[ATT_BQ / 8][4];  // S^T, dP^T: 16 keys x ATT_BQ queries
#pragma unroll
        for (int n = 0; n < ATT_BQ / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM; kc += 16) {
            unsigned ak[4], av[4];
            frag_a(ak, Ks, warp * 16, kc);
            frag_a(av, Vs, warp * 16, kc);
#pragma unroll
            for (int n = 0; n < ATT_BQ / 8; ++n) {
                unsigned b[2];
                frag_b_nk(b, Qs, n * 8, kc);
                mma16816(st[n], ak, b);
                frag_b_nk(b, dOs, n * 8, kc);
                mma16816(dpt[n], av, b);
            }
        }
        // P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - delta); element e: key e / 2,
        // query column 2t + e % 2 of tile n
#pragma unroll
        for (int n = 0; n < ATT_BQ / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = n * 8 + 2 * t + (e & 1), qi = i0 + c, kj = key[e / 2];
                const bool ok = qi < Tq && kj < Tk && (!causal || kj <= off + qi);
                const float p = ok ? exp2f(st[n][e] * sl2 - Ls[c]) : 0.0f;
                st[n][e] = p;
                dpt[n][e] = p * (dpt[n][e] - Ds[c]);
            }
        // dV += P^T dO and dK += dS^T Q (queries are the k dimension; dO, Q as B row-major)
#pragma unroll
        for (int kc = 0; kc < ATT_BQ / 16; ++kc) {
            unsigned ap[4], ads[4];
            frag_a_from_acc(ap, st, kc);
            frag_a_from_acc(ads, dpt, kc);
#pragma unroll
            for (int i = 0; i < NDT; ++i) {
                unsigned b[2];
                frag_b_kn(b, dOs, kc * 16, i * 8);
                mma16816(dva[i], ap, b);
                frag_b_kn(b, Qs, kc * 16, i * 8);
                mma16816(dka[i], ads, b);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        if (key[h] >= Tk) continue;
        const size_t base = (bh * Tk + key[h]) * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < NDT; ++i) {
            *reinterpret_cast<unsigned*>(dk + base + i * 8 + 2 * t) =
                pack2(dka[i][2 * h] * scale, dka[i][2 * h + 1] * scale);
            *reinterpret_cast<unsigned*>(dv + base + i * 8 + 2 * t) =
                pack2(dva[i][2 * h], dva[i][2 * h + 1]);
        }
    }
}

// grid: (ceil(Tq / ATT_BQ), B*H); block: ATT_BQ / 16 warps owning 16 queries each; walks over
// key tiles of ATT_BK. dQ += dS K with dS from the accumulators and K as B row-major.
extern "C" __global__ void __launch_bounds__(ATT_BQ * 2)
attention_backward_dq_v2(elem_t* __restrict__ dq, const elem_t* __restrict__ q,
                         const elem_t* __restrict__ k, const elem_t* __restrict__ v,
                         const elem_t* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, int Tq, int Tk, float scale,
                         int causal) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    elem_t* Qs = reinterpret_cast<elem_t*>(smem_raw);  // (ATT_BQ, SD)
    elem_t* dOs = Qs + ATT_BQ * SD;                       // (ATT_BQ, SD)
    elem_t* Ks = dOs + ATT_BQ * SD;                       // (ATT_BK, SD)
    elem_t* Vs = Ks + ATT_BK * SD;                        // (ATT_BK, SD)
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const size_t bh = blockIdx.y;
    const int q0 = blockIdx.x * ATT_BQ, off = Tk - Tq;
    const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
    const elem_t* kb = k + bh * Tk * HEAD_DIM;
    const elem_t* vb = v + bh * Tk * HEAD_DIM;
    stage_rows(Qs, q + bh * Tq * HEAD_DIM, q0, Tq, ATT_BQ);
    stage_rows(dOs, dout + bh * Tq * HEAD_DIM, q0, Tq, ATT_BQ);
    const float sl2 = scale * LOG2E;
    float L2[2], Dr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        L2[h] = row[h] < Tq ? lse[bh * Tq + row[h]] * LOG2E : 0.0f;
        Dr[h] = row[h] < Tq ? delta[bh * Tq + row[h]] : 0.0f;
    }
    float dqa[NDT][4];
#pragma unroll
    for (int i = 0; i < NDT; ++i) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;

    const int kend = causal ? min(Tk, off + min(q0 + ATT_BQ, Tq)) : Tk;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        stage_rows(Ks, kb, k0, Tk, ATT_BK);
        stage_rows(Vs, vb, k0, Tk, ATT_BK);
        __syncthreads();

        float s[ATT_BK / 8][4], dp[ATT_BK / 8][4];  // S, dP: 16 queries x ATT_BK keys
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM; kc += 16) {
            unsigned aq[4], ado[4];
            frag_a(aq, Qs, warp * 16, kc);
            frag_a(ado, dOs, warp * 16, kc);
#pragma unroll
            for (int n = 0; n < ATT_BK / 8; ++n) {
                unsigned b[2];
                frag_b_nk(b, Ks, n * 8, kc);
                mma16816(s[n], aq, b);
                frag_b_nk(b, Vs, n * 8, kc);
                mma16816(dp[n], ado, b);
            }
        }
#pragma unroll
        for (int n = 0; n < ATT_BK / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = e / 2, kj = k0 + n * 8 + 2 * t + (e & 1);
                const bool ok = row[h] < Tq && kj < Tk && (!causal || kj <= off + row[h]);
                const float p = ok ? exp2f(s[n][e] * sl2 - L2[h]) : 0.0f;
                s[n][e] = p * (dp[n][e] - Dr[h]);  // dS
            }
#pragma unroll
        for (int kc = 0; kc < ATT_BK / 16; ++kc) {
            unsigned a[4];
            frag_a_from_acc(a, s, kc);
#pragma unroll
            for (int i = 0; i < NDT; ++i) {
                unsigned b[2];
                frag_b_kn(b, Ks, kc * 16, i * 8);
                mma16816(dqa[i], a, b);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        if (row[h] >= Tq) continue;
        elem_t* drow = dq + (bh * Tq + row[h]) * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < NDT; ++i)
            *reinterpret_cast<unsigned*>(drow + i * 8 + 2 * t) =
                pack2(dqa[i][2 * h] * scale, dqa[i][2 * h + 1] * scale);
    }
}
#endif  // ATT_VERSION == 2
