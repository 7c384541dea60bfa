// Products with weights kept in GGML blocks (Q8_0, Q4_0, Q4_1), FP32 activations:
//
//   forward         y = x W^T    x: (N, K)   y: (N, O)
//   backward_input  dx = dy W    dy: (N, O)  dx: (N, K)   (no dW: a quantized base is frozen)
//
// W: (O, K) as O rows of K / 32 blocks, each block a float16 scale d (Q4_1: and a float16
// offset m) then 32 codes (kernels/quant.py):
//   Q8_0 (34 bytes): w = d q,        q int8
//   Q4_0 (18 bytes): w = d (q - 8),  q in 0..15
//   Q4_1 (20 bytes): w = d q + m,    q in 0..15
// A 4-bit block's byte j (0..15) holds weight j in its low nibble and weight j + 16 in its
// high nibble. Blocks are 34/18/20 bytes long, so nothing in them is aligned: bytes are read
// one at a time. The weights are decoded inside the product, never written out as floats; the
// activations keep FP32 (llama.cpp rounds them to 8 bits here instead).
//
// Back of the envelope: decoding one token (N = 1) is a matrix-vector product in which every
// byte of W is read once: the floor is W's bytes over memory bandwidth (Q4_0 reads 4.5 bits
// per weight, 7x fewer bytes than FP32). Prefill and LoRA training (N in the hundreds) reuse
// each weight N times: 2 N O K flops, compute-bound, so tiles that decode a weight once and
// use it for many rows of x.
//
// Placeholders: QM_TYPE (the GGML type id: 8 Q8_0, 2 Q4_0, 3 Q4_1), QM_WARPS (warps per block
// in the v1 kernels), QM_TILE (output tile edge of the v2 kernels, a multiple of 16; each v2
// block has (QM_TILE / 4)^2 threads computing 4 x 4 outputs each).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   forward v1         one warp per (x row, output row); lane l decodes blocks l, l + 32, ...
//                      (d and m read once per block), dots each with x, and the warp adds its
//                      32 partial sums with shuffles. At N = 1 the warp's lanes read 32
//                      neighbouring blocks: W streams through once. Expected 50-70% of
//                      bandwidth at N = 1; re-reads W from L2 for every x row at N > 1.
//   forward v2         QM_TILE x QM_TILE output tiles; per 32-wide K step the tile's slice of x
//                      and its slice of W, decoded once, go to shared memory, and each decoded
//                      weight serves QM_TILE rows of x. For N >= 16 (the launcher's rule).
//   backward_input v1  one thread per dx element, looping over the O rows of W; the 32 lanes
//                      of a warp read the 32 weights of one block.
//   backward_input v2  the v2 tiling with W's roles swapped: a dx tile = a dy tile (rows x 32
//                      of O) times the decoded (32 of O) x QM_TILE slice of W.

#if !defined(QM_TYPE) || !defined(QM_WARPS) || !defined(QM_TILE)
#error "qmatmul.cu needs QM_TYPE, QM_WARPS and QM_TILE (kernels/cuda/_compile.py writes the #defines)"
#endif
#if QM_TILE % 16 != 0
#error "QM_TILE must be a multiple of 16"
#endif

#include <cuda_fp16.h>

#if QM_TYPE == 8
#define QM_BYTES 34  // d, 32 int8 codes
#define QM_CODES 2   // byte offset of the codes
#elif QM_TYPE == 2
#define QM_BYTES 18  // d, 16 bytes of nibbles
#define QM_CODES 2
#elif QM_TYPE == 3
#define QM_BYTES 20  // d, m, 16 bytes of nibbles
#define QM_CODES 4
#else
#error "QM_TYPE must be 8 (Q8_0), 2 (Q4_0) or 3 (Q4_1)"
#endif

#define QM_TPR (QM_TILE / 4)          // v2: threads along each edge of the tile
#define QM_THREADS (QM_TPR * QM_TPR)  // v2: threads per block

__device__ __forceinline__ float f16_at(const unsigned char* p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

// d and m of the block at blk (m = 0 where the format has no offset): w = d * code + m
__device__ __forceinline__ void block_scales(const unsigned char* blk, float& d, float& m) {
    d = f16_at(blk);
#if QM_TYPE == 3
    m = f16_at(blk + 2);
#else
    m = 0.0f;
#endif
}

// the centred integer code of weight j (0..31) of the block at blk
__device__ __forceinline__ float block_code(const unsigned char* blk, int j) {
#if QM_TYPE == 8
    return (float)(signed char)blk[QM_CODES + j];
#else
    const int b = blk[QM_CODES + (j & 15)];
    const int q = j < 16 ? (b & 15) : (b >> 4);
#if QM_TYPE == 2
    return (float)(q - 8);
#else
    return (float)q;
#endif
#endif
}

// weight (o, k) of W, decoded: rb = bytes per row of W
__device__ __forceinline__ float weight_at(const unsigned char* __restrict__ w, size_t rb, int o,
                                           int k) {
    const unsigned char* blk = w + (size_t)o * rb + (size_t)(k >> 5) * QM_BYTES;
    float d, m;
    block_scales(blk, d, m);
    return d * block_code(blk, k & 31) + m;
}

// ----------------------------------------------------------------------------- forward v1
// grid (ceil(O / QM_WARPS), min(N, 65535)), block 32 * QM_WARPS
extern "C" __global__ void qmatmul_forward_v1(float* __restrict__ y, const float* __restrict__ x,
                                              const unsigned char* __restrict__ w, int N, int O,
                                              int K) {
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * QM_WARPS + (threadIdx.x >> 5);
    if (o >= O) return;
    const int nb = K >> 5;
    const unsigned char* row = w + (size_t)o * nb * QM_BYTES;
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const float* xr = x + (size_t)n * K;
        float acc = 0.0f;
        for (int b = lane; b < nb; b += 32) {
            const unsigned char* blk = row + (size_t)b * QM_BYTES;
            float d, m;
            block_scales(blk, d, m);
            const float* xb = xr + b * 32;
            float dot = 0.0f, xsum = 0.0f;  // x . w = d (x . code) + m sum(x)
#pragma unroll
            for (int j = 0; j < 32; ++j) {
                const float xv = xb[j];
                dot += xv * block_code(blk, j);
                xsum += xv;
            }
            acc += d * dot + m * xsum;
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0) y[(size_t)n * O + o] = acc;
    }
}

// ----------------------------------------------------------------------------- tiled core
// acc[r][c] += sum_j a[tr + QM_TPR r][j] * b[tc + QM_TPR c][j] over one 32-wide step
__device__ __forceinline__ void tile_step(float (&acc)[4][4], const float (*a)[33],
                                          const float (*b)[33], int tr, int tc) {
#pragma unroll 8
    for (int j = 0; j < 32; ++j) {
        float av[4], bv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) av[r] = a[tr + QM_TPR * r][j];
#pragma unroll
        for (int c = 0; c < 4; ++c) bv[c] = b[tc + QM_TPR * c][j];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[r][c] += av[r] * bv[c];
    }
}

// ----------------------------------------------------------------------------- forward v2
// grid (ceil(O / QM_TILE), ceil(N / QM_TILE)), block QM_THREADS
extern "C" __global__ void qmatmul_forward_v2(float* __restrict__ y, const float* __restrict__ x,
                                              const unsigned char* __restrict__ w, int N, int O,
                                              int K) {
    __shared__ float xs[QM_TILE][33];  // x[n0 + i, 32 b + j]   (+1 column: no bank conflicts)
    __shared__ float ws[QM_TILE][33];  // W[o0 + i, 32 b + j] decoded
    const int n0 = blockIdx.y * QM_TILE, o0 = blockIdx.x * QM_TILE;
    const int tid = threadIdx.x, tr = tid / QM_TPR, tc = tid % QM_TPR;
    const int nb = K >> 5;
    const size_t rb = (size_t)nb * QM_BYTES;
    float acc[4][4] = {};
    for (int b = 0; b < nb; ++b) {
        for (int e = tid; e < QM_TILE * 32; e += QM_THREADS) {
            const int i = e >> 5, j = e & 31;
            xs[i][j] = n0 + i < N ? x[(size_t)(n0 + i) * K + b * 32 + j] : 0.0f;
            ws[i][j] = o0 + i < O ? weight_at(w, rb, o0 + i, b * 32 + j) : 0.0f;
        }
        __syncthreads();
        tile_step(acc, xs, ws, tr, tc);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int n = n0 + tr + QM_TPR * r;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int o = o0 + tc + QM_TPR * c;
            if (n < N && o < O) y[(size_t)n * O + o] = acc[r][c];
        }
    }
}

// ----------------------------------------------------------------------------- backward v1
// grid (ceil(K / 32 / QM_WARPS), min(N, 65535)), block 32 * QM_WARPS: thread -> column k
extern "C" __global__ void qmatmul_backward_input_v1(float* __restrict__ dx,
                                                     const float* __restrict__ dy,
                                                     const unsigned char* __restrict__ w, int N,
                                                     int O, int K) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= K) return;
    const size_t rb = (size_t)(K >> 5) * QM_BYTES;
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const float* dyr = dy + (size_t)n * O;
        float acc = 0.0f;
        for (int o = 0; o < O; ++o) acc += dyr[o] * weight_at(w, rb, o, k);
        dx[(size_t)n * K + k] = acc;
    }
}

// ----------------------------------------------------------------------------- backward v2
// grid (ceil(K / QM_TILE), ceil(N / QM_TILE)), block QM_THREADS
extern "C" __global__ void qmatmul_backward_input_v2(float* __restrict__ dx,
                                                     const float* __restrict__ dy,
                                                     const unsigned char* __restrict__ w, int N,
                                                     int O, int K) {
    __shared__ float ds[QM_TILE][33];  // dy[n0 + i, o_base + j]
    __shared__ float wt[QM_TILE][33];  // W[o_base + j, k0 + i] decoded (transposed)
    const int n0 = blockIdx.y * QM_TILE, k0 = blockIdx.x * QM_TILE;
    const int tid = threadIdx.x, tr = tid / QM_TPR, tc = tid % QM_TPR;
    const size_t rb = (size_t)(K >> 5) * QM_BYTES;
    float acc[4][4] = {};
    for (int ob = 0; ob < O; ob += 32) {
        for (int e = tid; e < QM_TILE * 32; e += QM_THREADS) {
            const int i = e >> 5, j = e & 31;
            ds[i][j] = (n0 + i < N && ob + j < O) ? dy[(size_t)(n0 + i) * O + ob + j] : 0.0f;
            // consecutive threads take consecutive k of one row o: neighbouring bytes of W
            const int kk = e % QM_TILE, oo = e / QM_TILE;
            wt[kk][oo] = (k0 + kk < K && ob + oo < O) ? weight_at(w, rb, ob + oo, k0 + kk) : 0.0f;
        }
        __syncthreads();
        tile_step(acc, ds, wt, tr, tc);
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int n = n0 + tr + QM_TPR * r;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
            const int k = k0 + tc + QM_TPR * c;
            if (n < N && k < K) dx[(size_t)n * K + k] = acc[r][c];
        }
    }
}
