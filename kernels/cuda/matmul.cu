// FP32 matrix multiply C = A @ B (+ bias, + GELU), the CUDA SGEMM ladder.
//
//   A: (M, K) row-major   B: (K, N) row-major   C: (M, N) row-major   bias: (N,)
//   FLOPs = 2 M N K; at 4096^3 that is 137 GFLOP, so 1 ms is 137 TFLOP/s.
//
// The placeholder VERSION picks which section is compiled; each section lists the other
// placeholders it needs (kernels/cuda/_compile.py writes them as #define lines in front of this
// file; kernels/cuda/matmul.py holds the default values). Every version handles any M, N, K:
// tiles that hang over the edge of a matrix are loaded as zeros and their stores are masked.
//
// Versions (what each changes; the gains are what the change is expected to buy on an H100,
// NOT measured: every figure here is "not yet measured: needs a GPU"; run
// benchmarks/gpu/bench_kernels.py on a GPU machine and fill them in):
//   v1  naive: one thread per C element, K-loop straight from global memory. Each A element is
//       read N times and each B element M times (through L1/L2). Expected a few % of cuBLAS.
//   v2  shared-memory tiling (TILE x TILE): a block stages a tile of A and of B in shared
//       memory, so each global element is read M/TILE or N/TILE times. Expected ~2-3x over v1;
//       still one FMA per two shared-memory loads.
//   v3  2-D register blocking (BM x BN block tile, each thread a TM x TN micro-tile): one
//       shared-memory load now feeds TM (or TN) FMAs from registers. Expected the big jump,
//       ~40-60% of cuBLAS.
//   v4  v3 + 128-bit (float4) global loads and stores, float4 shared-memory reads of the
//       micro-tile. Fewer load instructions, wider transactions. Expected +10-20% over v3.
//       (float4 needs K % 4 == 0 for A and N % 4 == 0 for B/C; other shapes take the scalar
//       path inside the same kernel, decided per launch.)
//   v5  warp tiling: the block tile is split into warp tiles (WM x WN), each warp iterating
//       over WMITER x WNITER sub-tiles, so the 32 threads of a warp read neighbouring
//       shared-memory words (broadcast / no bank conflicts) and a warp's working set stays in
//       registers. Expected 70-90% of cuBLAS FP32 (the issue's target is >= 75%).
//       v5 also has the fused epilogues: C = A@B + bias and C = gelu(A@B + bias).
//   v6  TF32 tensor cores: mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 through inline
//       PTX. Inputs rounded to TF32 (10-bit mantissa, cvt.rna) when they are staged in shared
//       memory, FP32 accumulation. 128x128x32 block tile, 8 warps of 64x32. Single-buffered
//       (no cp.async pipeline yet). Expected 40-60% of cuBLAS TF32 (target >= 50%); the next
//       step would be cp.async double buffering and ldmatrix. Same epilogues as v5.

#ifndef VERSION
#error "VERSION must be defined (kernels/cuda/_compile.py writes the #defines)"
#endif

// GPT-2's GELU, tanh approximation, for the fused epilogue (same constants as reference.py).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// EPI: 0 plain, 1 + bias[col], 2 gelu(+ bias[col]).
template <int EPI>
__device__ __forceinline__ float epilogue(float acc, const float* __restrict__ bias, int col) {
    if (EPI == 0) return acc;
    float y = acc + bias[col];
    return EPI == 2 ? gelu_tanh(y) : y;
}

// =========================================================================================
#if VERSION == 1
// placeholders: BX, BY (block = BX x BY threads; x runs along N so loads of B and stores of C
// are coalesced, while all threads of a warp read the same A element: a broadcast).
#if !defined(BX) || !defined(BY)
#error "v1 needs BX, BY"
#endif
extern "C" __global__ void __launch_bounds__(BX * BY)
matmul_v1(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
          int M, int N, int K) {
    const int col = blockIdx.x * BX + threadIdx.x;
    const int row = blockIdx.y * BY + threadIdx.y;
    if (row >= M || col >= N) return;
    const float* a = A + (size_t)row * K;
    float acc = 0.0f;
    for (int k = 0; k < K; ++k) acc += a[k] * B[(size_t)k * N + col];
    C[(size_t)row * N + col] = acc;
}
#endif

// =========================================================================================
#if VERSION == 2
// placeholders: TILE (block = TILE x TILE threads, one C element each).
#if !defined(TILE)
#error "v2 needs TILE"
#endif
extern "C" __global__ void __launch_bounds__(TILE * TILE)
matmul_v2(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
          int M, int N, int K) {
    __shared__ float As[TILE][TILE];  // As[ty][k]: a warp (one ty) reads one word: broadcast
    __shared__ float Bs[TILE][TILE];  // Bs[k][tx]: a warp reads consecutive words
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[(size_t)row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(size_t)(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();  // the next iteration overwrites the tiles
    }
    if (row < M && col < N) C[(size_t)row * N + col] = acc;
}
#endif

// =========================================================================================
#if VERSION == 3
// placeholders: BM, BN, BK (block tile), TM, TN (per-thread micro-tile).
// threads = (BM / TM) * (BN / TN); thread (tr, tc) owns rows tr*TM.., cols tc*TN.. of the tile.
#if !defined(BM) || !defined(BN) || !defined(BK) || !defined(TM) || !defined(TN)
#error "v3 needs BM, BN, BK, TM, TN"
#endif
#define NT ((BM / TM) * (BN / TN))
extern "C" __global__ void __launch_bounds__(NT)
matmul_v3(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
          int M, int N, int K) {
    __shared__ float As[BK][BM];  // k-major: a thread's TM rows for one k are consecutive
    __shared__ float Bs[BK][BN];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int tr = tid / (BN / TN), tc = tid % (BN / TN);
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    float ra[TM], rb[TN];

    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int i = tid; i < BM * BK; i += NT) {  // consecutive threads walk along a row of A
            const int m = i / BK, k = i % BK, gm = m0 + m, gk = k0 + k;
            As[k][m] = (gm < M && gk < K) ? A[(size_t)gm * K + gk] : 0.0f;
        }
        for (int i = tid; i < BK * BN; i += NT) {
            const int k = i / BN, n = i % BN, gk = k0 + k, gn = n0 + n;
            Bs[k][n] = (gk < K && gn < N) ? B[(size_t)gk * N + gn] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; ++i) ra[i] = As[k][tr * TM + i];
#pragma unroll
            for (int j = 0; j < TN; ++j) rb[j] = Bs[k][tc * TN + j];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gm = m0 + tr * TM + i;
        if (gm >= M) break;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int gn = n0 + tc * TN + j;
            if (gn < N) C[(size_t)gm * N + gn] = acc[i][j];
        }
    }
}
#endif

// =========================================================================================
#if VERSION == 4 || VERSION == 5
// Tile loaders shared by v4 and v5. `vec` is decided per launch by the Python side (K % 4 == 0
// and 16-byte aligned pointers for A; N % 4 == 0 for B): with it, one thread moves a float4;
// without it, single floats. Both zero-fill what lies outside the matrix.

// A tile (TBM rows from m0, TBK columns from k0) into As[k * TBM + m] (k-major).
template <int TBM, int TBK, int NTH>
__device__ __forceinline__ void load_a_kmajor(float* As, const float* __restrict__ A, int M,
                                              int K, int m0, int k0, int vec) {
    if (vec) {
        for (int i = threadIdx.x; i < TBM * TBK / 4; i += NTH) {
            const int m = i / (TBK / 4), k = (i % (TBK / 4)) * 4, gm = m0 + m, gk = k0 + k;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            // K % 4 == 0 and gk % 4 == 0, so gk < K means all four are inside the row
            if (gm < M && gk < K) v = *reinterpret_cast<const float4*>(A + (size_t)gm * K + gk);
            As[(k + 0) * TBM + m] = v.x;
            As[(k + 1) * TBM + m] = v.y;
            As[(k + 2) * TBM + m] = v.z;
            As[(k + 3) * TBM + m] = v.w;
        }
    } else {
        for (int i = threadIdx.x; i < TBM * TBK; i += NTH) {
            const int m = i / TBK, k = i % TBK, gm = m0 + m, gk = k0 + k;
            As[k * TBM + m] = (gm < M && gk < K) ? A[(size_t)gm * K + gk] : 0.0f;
        }
    }
}

// B tile (TBK rows from k0, TBN columns from n0) into Bs[k * TBN + n].
template <int TBK, int TBN, int NTH>
__device__ __forceinline__ void load_b(float* Bs, const float* __restrict__ B, int K, int N,
                                       int k0, int n0, int vec) {
    if (vec) {
        for (int i = threadIdx.x; i < TBK * TBN / 4; i += NTH) {
            const int k = i / (TBN / 4), n = (i % (TBN / 4)) * 4, gk = k0 + k, gn = n0 + n;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (gk < K && gn < N) v = *reinterpret_cast<const float4*>(B + (size_t)gk * N + gn);
            *reinterpret_cast<float4*>(Bs + k * TBN + n) = v;
        }
    } else {
        for (int i = threadIdx.x; i < TBK * TBN; i += NTH) {
            const int k = i / TBN, n = i % TBN, gk = k0 + k, gn = n0 + n;
            Bs[k * TBN + n] = (gk < K && gn < N) ? B[(size_t)gk * N + gn] : 0.0f;
        }
    }
}

// Store 4 consecutive outputs of one row (gn % 4 == 0), through the epilogue; float4 when the
// row is float4-aligned (vec: N % 4 == 0, aligned C and bias), else one by one with a mask.
template <int EPI>
__device__ __forceinline__ void store4(float* __restrict__ C, const float* __restrict__ bias,
                                       int N, int gm, int gn, float a0, float a1, float a2,
                                       float a3, int vec) {
    float* c = C + (size_t)gm * N + gn;
    if (vec) {
        if (gn < N)
            *reinterpret_cast<float4*>(c) =
                make_float4(epilogue<EPI>(a0, bias, gn), epilogue<EPI>(a1, bias, gn + 1),
                            epilogue<EPI>(a2, bias, gn + 2), epilogue<EPI>(a3, bias, gn + 3));
    } else {
        if (gn + 0 < N) c[0] = epilogue<EPI>(a0, bias, gn + 0);
        if (gn + 1 < N) c[1] = epilogue<EPI>(a1, bias, gn + 1);
        if (gn + 2 < N) c[2] = epilogue<EPI>(a2, bias, gn + 2);
        if (gn + 3 < N) c[3] = epilogue<EPI>(a3, bias, gn + 3);
    }
}
#endif

// =========================================================================================
#if VERSION == 4
// placeholders: BM, BN, BK, TM, TN as v3 (BK, TM, TN multiples of 4).
#if !defined(BM) || !defined(BN) || !defined(BK) || !defined(TM) || !defined(TN)
#error "v4 needs BM, BN, BK, TM, TN"
#endif
#define NT ((BM / TM) * (BN / TN))
static_assert(BK % 4 == 0 && TM % 4 == 0 && TN % 4 == 0 && BM % 4 == 0 && BN % 4 == 0,
              "v4 moves float4s: BK, TM, TN, BM, BN must be multiples of 4");
extern "C" __global__ void __launch_bounds__(NT)
matmul_v4(float* __restrict__ C, const float* __restrict__ A, const float* __restrict__ B,
          int M, int N, int K, int vecA, int vecB, int vecC) {
    __shared__ __align__(16) float As[BK * BM];
    __shared__ __align__(16) float Bs[BK * BN];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int tr = tid / (BN / TN), tc = tid % (BN / TN);
    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;
    float ra[TM], rb[TN];

    for (int k0 = 0; k0 < K; k0 += BK) {
        load_a_kmajor<BM, BK, NT>(As, A, M, K, m0, k0, vecA);
        load_b<BK, BN, NT>(Bs, B, K, N, k0, n0, vecB);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int i = 0; i < TM; i += 4) {
                const float4 t = *reinterpret_cast<const float4*>(As + k * BM + tr * TM + i);
                ra[i] = t.x; ra[i + 1] = t.y; ra[i + 2] = t.z; ra[i + 3] = t.w;
            }
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                const float4 t = *reinterpret_cast<const float4*>(Bs + k * BN + tc * TN + j);
                rb[j] = t.x; rb[j + 1] = t.y; rb[j + 2] = t.z; rb[j + 3] = t.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gm = m0 + tr * TM + i;
        if (gm >= M) break;
#pragma unroll
        for (int j = 0; j < TN; j += 4)
            store4<0>(C, nullptr, N, gm, n0 + tc * TN + j, acc[i][j], acc[i][j + 1],
                      acc[i][j + 2], acc[i][j + 3], vecC);
    }
}
#endif

// =========================================================================================
#if VERSION == 5
// placeholders: BM, BN, BK (block tile), WM, WN (warp tile), WMITER, WNITER (sub-tiles per
// warp), TM, TN (per-thread micro-tile of one sub-tile).
// threads = (BM / WM) * (BN / WN) * 32. A warp's sub-tile (WM/WMITER) x (WN/WNITER) is covered
// by its 32 lanes as a ((WM/WMITER)/TM) x ((WN/WNITER)/TN) grid of TM x TN micro-tiles.
#if !defined(BM) || !defined(BN) || !defined(BK) || !defined(WM) || !defined(WN) || \
    !defined(WMITER) || !defined(WNITER) || !defined(TM) || !defined(TN)
#error "v5 needs BM, BN, BK, WM, WN, WMITER, WNITER, TM, TN"
#endif
#define NT ((BM / WM) * (BN / WN) * 32)
#define WSUBM (WM / WMITER)
#define WSUBN (WN / WNITER)
static_assert(BM % WM == 0 && BN % WN == 0, "the warp tiles must cover the block tile");
static_assert((WSUBM / TM) * (WSUBN / TN) == 32, "a warp sub-tile must be 32 micro-tiles");
static_assert(BK % 4 == 0 && TM % 4 == 0 && TN % 4 == 0, "v5 moves float4s");

template <int EPI>
__device__ __forceinline__ void matmul_v5_body(float* __restrict__ C,
                                               const float* __restrict__ A,
                                               const float* __restrict__ B,
                                               const float* __restrict__ bias, int M, int N,
                                               int K, int vecA, int vecB, int vecC) {
    __shared__ __align__(16) float As[BK * BM];
    __shared__ __align__(16) float Bs[BK * BN];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wr = warp / (BN / WN), wc = warp % (BN / WN);           // warp's place in block
    const int tr = lane / (WSUBN / TN), tc = lane % (WSUBN / TN);     // lane's place in sub-tile
    float acc[WMITER * TM][WNITER * TN];
#pragma unroll
    for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
        for (int j = 0; j < WNITER * TN; ++j) acc[i][j] = 0.0f;
    float ra[WMITER * TM], rb[WNITER * TN];

    for (int k0 = 0; k0 < K; k0 += BK) {
        load_a_kmajor<BM, BK, NT>(As, A, M, K, m0, k0, vecA);
        load_b<BK, BN, NT>(Bs, B, K, N, k0, n0, vecB);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < BK; ++k) {
#pragma unroll
            for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
                for (int i = 0; i < TM; i += 4) {
                    const float4 t = *reinterpret_cast<const float4*>(
                        As + k * BM + wr * WM + wm * WSUBM + tr * TM + i);
                    ra[wm * TM + i] = t.x; ra[wm * TM + i + 1] = t.y;
                    ra[wm * TM + i + 2] = t.z; ra[wm * TM + i + 3] = t.w;
                }
#pragma unroll
            for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
                for (int j = 0; j < TN; j += 4) {
                    const float4 t = *reinterpret_cast<const float4*>(
                        Bs + k * BN + wc * WN + wn * WSUBN + tc * TN + j);
                    rb[wn * TN + j] = t.x; rb[wn * TN + j + 1] = t.y;
                    rb[wn * TN + j + 2] = t.z; rb[wn * TN + j + 3] = t.w;
                }
#pragma unroll
            for (int i = 0; i < WMITER * TM; ++i)
#pragma unroll
                for (int j = 0; j < WNITER * TN; ++j) acc[i][j] += ra[i] * rb[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int wm = 0; wm < WMITER; ++wm)
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int gm = m0 + wr * WM + wm * WSUBM + tr * TM + i;
            if (gm >= M) continue;
            const float* a = acc[wm * TM + i];
#pragma unroll
            for (int wn = 0; wn < WNITER; ++wn)
#pragma unroll
                for (int j = 0; j < TN; j += 4) {
                    const int c = wn * TN + j;
                    store4<EPI>(C, bias, N, gm, n0 + wc * WN + wn * WSUBN + tc * TN + j, a[c],
                                a[c + 1], a[c + 2], a[c + 3], vecC);
                }
        }
}

extern "C" __global__ void __launch_bounds__(NT)
matmul_v5(float* C, const float* A, const float* B, int M, int N, int K, int vecA, int vecB,
          int vecC) {
    matmul_v5_body<0>(C, A, B, nullptr, M, N, K, vecA, vecB, vecC);
}
extern "C" __global__ void __launch_bounds__(NT)
matmul_bias_v5(float* C, const float* A, const float* B, const float* bias, int M, int N, int K,
               int vecA, int vecB, int vecC) {
    matmul_v5_body<1>(C, A, B, bias, M, N, K, vecA, vecB, vecC);
}
extern "C" __global__ void __launch_bounds__(NT)
matmul_bias_gelu_v5(float* C, const float* A, const float* B, const float* bias, int M, int N,
                    int K, int vecA, int vecB, int vecC) {
    matmul_v5_body<2>(C, A, B, bias, M, N, K, vecA, vecB, vecC);
}
#endif

// =========================================================================================
#if VERSION == 6
// placeholders: BM, BN, BK (block tile; BK a multiple of 8), WARPS_M, WARPS_N (warp grid).
// Warp tile = (BM / WARPS_M) x (BN / WARPS_N), made of 16 x 8 mma tiles.
//
// Fragment layouts of mma.m16n8k8 .tf32 (PTX ISA, "Matrix fragments for mma.m16n8k8"), with
// g = lane / 4 (group) and t = lane % 4 (thread in group):
//   A 16x8 (row):  a0 (g, t)   a1 (g+8, t)   a2 (g, t+4)   a3 (g+8, t+4)
//   B 8x8  (col):  b0 (k=t, n=g)   b1 (k=t+4, n=g)
//   C 16x8 f32:    c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
#if !defined(BM) || !defined(BN) || !defined(BK) || !defined(WARPS_M) || !defined(WARPS_N)
#error "v6 needs BM, BN, BK, WARPS_M, WARPS_N"
#endif
#define NT (WARPS_M * WARPS_N * 32)
#define WTM (BM / WARPS_M)  // warp tile rows
#define WTN (BN / WARPS_N)  // warp tile cols
#define MT (WTM / 16)       // mma tiles per warp along M
#define NTL (WTN / 8)       // mma tiles per warp along N
// Row paddings chosen so that a fragment load of 32 lanes hits 32 different banks:
// As row stride BK+4 -> bank (4g + t) % 32; Bs row stride BN+8 -> bank (8t + g) % 32.
#define AS_STRIDE (BK + 4)
#define BS_STRIDE (BN + 8)
static_assert(BK % 8 == 0 && WTM % 16 == 0 && WTN % 8 == 0, "v6 tile shapes");
static_assert((AS_STRIDE % 32) == 4 && (BS_STRIDE % 32) == 8, "v6 paddings (bank conflicts)");

__device__ __forceinline__ float to_tf32(float x) {  // round to nearest, ties away (cvt.rna)
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
}

__device__ __forceinline__ void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

template <int EPI>
__device__ __forceinline__ void matmul_v6_body(float* __restrict__ C,
                                               const float* __restrict__ A,
                                               const float* __restrict__ B,
                                               const float* __restrict__ bias, int M, int N,
                                               int K, int vecA, int vecB) {
    __shared__ __align__(16) float As[BM * AS_STRIDE];  // (m, k) row-major, TF32 values
    __shared__ __align__(16) float Bs[BK * BS_STRIDE];  // (k, n) row-major, TF32 values
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, t = lane % 4;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wm0 = (warp / WARPS_N) * WTM, wn0 = (warp % WARPS_N) * WTN;
    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
        // ---- stage A (BM x BK) and B (BK x BN) in shared memory, rounded to TF32
        if (vecA) {
            for (int i = tid; i < BM * BK / 4; i += NT) {
                const int m = i / (BK / 4), k = (i % (BK / 4)) * 4, gm = m0 + m, gk = k0 + k;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (gm < M && gk < K)
                    v = *reinterpret_cast<const float4*>(A + (size_t)gm * K + gk);
                *reinterpret_cast<float4*>(As + m * AS_STRIDE + k) =
                    make_float4(to_tf32(v.x), to_tf32(v.y), to_tf32(v.z), to_tf32(v.w));
            }
        } else {
            for (int i = tid; i < BM * BK; i += NT) {
                const int m = i / BK, k = i % BK, gm = m0 + m, gk = k0 + k;
                As[m * AS_STRIDE + k] = to_tf32((gm < M && gk < K) ? A[(size_t)gm * K + gk] : 0.0f);
            }
        }
        if (vecB) {
            for (int i = tid; i < BK * BN / 4; i += NT) {
                const int k = i / (BN / 4), n = (i % (BN / 4)) * 4, gk = k0 + k, gn = n0 + n;
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (gk < K && gn < N)
                    v = *reinterpret_cast<const float4*>(B + (size_t)gk * N + gn);
                *reinterpret_cast<float4*>(Bs + k * BS_STRIDE + n) =
                    make_float4(to_tf32(v.x), to_tf32(v.y), to_tf32(v.z), to_tf32(v.w));
            }
        } else {
            for (int i = tid; i < BK * BN; i += NT) {
                const int k = i / BN, n = i % BN, gk = k0 + k, gn = n0 + n;
                Bs[k * BS_STRIDE + n] = to_tf32((gk < K && gn < N) ? B[(size_t)gk * N + gn] : 0.0f);
            }
        }
        __syncthreads();

        // ---- BK / 8 steps of MT x NTL mma tiles per warp
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned af[MT][4], bf[NTL][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const float* a = As + (wm0 + i * 16 + g) * AS_STRIDE + kk + t;
                af[i][0] = __float_as_uint(a[0]);
                af[i][1] = __float_as_uint(a[8 * AS_STRIDE]);
                af[i][2] = __float_as_uint(a[4]);
                af[i][3] = __float_as_uint(a[8 * AS_STRIDE + 4]);
            }
#pragma unroll
            for (int j = 0; j < NTL; ++j) {
                const float* b = Bs + (kk + t) * BS_STRIDE + wn0 + j * 8 + g;
                bf[j][0] = __float_as_uint(b[0]);
                bf[j][1] = __float_as_uint(b[4 * BS_STRIDE]);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NTL; ++j) mma_tf32(acc[i][j], af[i], bf[j]);
        }
        __syncthreads();
    }

    // ---- epilogue: c0/c1 at row g, c2/c3 at row g+8; columns 2t, 2t+1 of each n8 tile
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j) {
            const int gn = n0 + wn0 + j * 8 + 2 * t;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int gm = m0 + wm0 + i * 16 + g + 8 * h;
                if (gm >= M) continue;
                float* c = C + (size_t)gm * N;
                if (gn < N) c[gn] = epilogue<EPI>(acc[i][j][2 * h], bias, gn);
                if (gn + 1 < N) c[gn + 1] = epilogue<EPI>(acc[i][j][2 * h + 1], bias, gn + 1);
            }
        }
}

extern "C" __global__ void __launch_bounds__(NT)
matmul_v6(float* C, const float* A, const float* B, int M, int N, int K, int vecA, int vecB) {
    matmul_v6_body<0>(C, A, B, nullptr, M, N, K, vecA, vecB);
}
extern "C" __global__ void __launch_bounds__(NT)
matmul_bias_v6(float* C, const float* A, const float* B, const float* bias, int M, int N, int K,
               int vecA, int vecB) {
    matmul_v6_body<1>(C, A, B, bias, M, N, K, vecA, vecB);
}
extern "C" __global__ void __launch_bounds__(NT)
matmul_bias_gelu_v6(float* C, const float* A, const float* B, const float* bias, int M, int N,
                    int K, int vecA, int vecB) {
    matmul_v6_body<2>(C, A, B, bias, M, N, K, vecA, vecB);
}
#endif
