// GELU (GPT-2's tanh approximation) and bias + GELU, FP32, forward + backward.
//
//   y = 0.5 x (1 + tanh(k (x + a x^3))),  k = sqrt(2/pi), a = 0.044715
//   dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 a x^2),  t = tanh(k (x + a x^3))
//   bias_gelu: y = gelu(x + b) with x: (N, C), b: (C,);  backward dx = dy gelu'(x + b),
//   db = sum_n dx  (a column reduction).
//
// Elementwise and memory-bound: gelu forward moves 8 bytes per element, backward 12. At the
// MLP shape of GPT-2 124M (N = 8192, C = 3072) that is 100 MB and 151 MB.
//
// Placeholders: GL_THREADS (threads per block of the elementwise kernels), GL_ROWS (rows of a
// block of the fused bias backward, whose blocks are 32 columns x GL_ROWS rows).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   v1  one thread per element, scalar loads; bias backward = dx kernel + a thread-per-column
//       sum over all rows (C threads only). Expected ~70-80% of bandwidth for the elementwise
//       kernels, much less for db.
//   v2  grid-stride loops over float4s (128-bit loads and stores; a scalar tail for sizes not a
//       multiple of 4, and a scalar path for unaligned inputs); the bias backward writes dx
//       and sums db in one pass: each block's 32 x GL_ROWS threads keep per-column partials,
//       add them in shared memory in a fixed order and write one partial row, and a second
//       kernel sums those rows in order (deterministic). Expected ~85-90% of bandwidth.

#if !defined(GL_THREADS) || !defined(GL_ROWS)
#error "gelu.cu needs GL_THREADS and GL_ROWS (kernels/cuda/_compile.py writes the #defines)"
#endif

__device__ __forceinline__ float gelu_f(float x) {
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float gelu_grad(float x) {
    const float k = 0.7978845608028654f, a = 0.044715f;
    const float t = tanhf(k * (x + a * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * a * x * x);
}

// ----------------------------------------------------------------------------- v1
extern "C" __global__ void gelu_forward_v1(float* __restrict__ y, const float* __restrict__ x,
                                           int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = gelu_f(x[i]);
}

extern "C" __global__ void gelu_backward_v1(float* __restrict__ dx, const float* __restrict__ dy,
                                            const float* __restrict__ x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = dy[i] * gelu_grad(x[i]);
}

extern "C" __global__ void bias_gelu_forward_v1(float* __restrict__ y, const float* __restrict__ x,
                                                const float* __restrict__ b, int N, int C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * C) y[i] = gelu_f(x[i] + b[i % C]);
}

extern "C" __global__ void bias_gelu_backward_dx_v1(float* __restrict__ dx,
                                                    const float* __restrict__ dy,
                                                    const float* __restrict__ x,
                                                    const float* __restrict__ b, int N, int C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * C) dx[i] = dy[i] * gelu_grad(x[i] + b[i % C]);
}

// db[c] = sum_n dx[n, c], one thread per column (coalesced across threads, but only C threads)
extern "C" __global__ void colsum_v1(float* __restrict__ db, const float* __restrict__ dx, int N,
                                     int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int n = 0; n < N; ++n) s += dx[(size_t)n * C + c];
    db[c] = s;
}

// ----------------------------------------------------------------------------- v2
// vec = 1: every pointer is 16-byte aligned, so elements 4i..4i+3 move as one float4.
extern "C" __global__ void __launch_bounds__(GL_THREADS)
gelu_forward_v2(float* __restrict__ y, const float* __restrict__ x, int n, int vec) {
    const int stride = gridDim.x * GL_THREADS, i0 = blockIdx.x * GL_THREADS + threadIdx.x;
    int done = 0;
    if (vec) {
        const int n4 = n / 4;
        for (int i = i0; i < n4; i += stride) {
            const float4 v = reinterpret_cast<const float4*>(x)[i];
            reinterpret_cast<float4*>(y)[i] =
                make_float4(gelu_f(v.x), gelu_f(v.y), gelu_f(v.z), gelu_f(v.w));
        }
        done = n4 * 4;
    }
    for (int i = done + i0; i < n; i += stride) y[i] = gelu_f(x[i]);
}

extern "C" __global__ void __launch_bounds__(GL_THREADS)
gelu_backward_v2(float* __restrict__ dx, const float* __restrict__ dy,
                 const float* __restrict__ x, int n, int vec) {
    const int stride = gridDim.x * GL_THREADS, i0 = blockIdx.x * GL_THREADS + threadIdx.x;
    int done = 0;
    if (vec) {
        const int n4 = n / 4;
        for (int i = i0; i < n4; i += stride) {
            const float4 v = reinterpret_cast<const float4*>(x)[i];
            const float4 d = reinterpret_cast<const float4*>(dy)[i];
            reinterpret_cast<float4*>(dx)[i] = make_float4(d.x * gelu_grad(v.x), d.y * gelu_grad(v.y),
                                                           d.z * gelu_grad(v.z), d.w * gelu_grad(v.w));
        }
        done = n4 * 4;
    }
    for (int i = done + i0; i < n; i += stride) dx[i] = dy[i] * gelu_grad(x[i]);
}

// vec = 1 also needs C % 4 == 0, so the four elements of a float4 share a row and b[c..c+3].
extern "C" __global__ void __launch_bounds__(GL_THREADS)
bias_gelu_forward_v2(float* __restrict__ y, const float* __restrict__ x,
                     const float* __restrict__ b, int N, int C, int vec) {
    const int n = N * C, stride = gridDim.x * GL_THREADS, i0 = blockIdx.x * GL_THREADS + threadIdx.x;
    if (vec) {
        for (int i = i0; i < n / 4; i += stride) {
            const float4 v = reinterpret_cast<const float4*>(x)[i];
            const float4 bb = reinterpret_cast<const float4*>(b)[i % (C / 4)];
            reinterpret_cast<float4*>(y)[i] = make_float4(gelu_f(v.x + bb.x), gelu_f(v.y + bb.y),
                                                          gelu_f(v.z + bb.z), gelu_f(v.w + bb.w));
        }
    } else {
        for (int i = i0; i < n; i += stride) y[i] = gelu_f(x[i] + b[i % C]);
    }
}

// grid: (ceil(C / 32), G); block: (32, GL_ROWS). Thread (cx, ry) owns column c = 32 bx + cx
// and rows ry + GL_ROWS (by + G k). Writes dx and partial_db[by, c]; colsum_partials adds the
// G partial rows.
extern "C" __global__ void __launch_bounds__(32 * GL_ROWS)
bias_gelu_backward_v2(float* __restrict__ dx, float* __restrict__ partial_db,
                      const float* __restrict__ dy, const float* __restrict__ x,
                      const float* __restrict__ b, int N, int C) {
    __shared__ float part[GL_ROWS][32];
    const int cx = threadIdx.x, ry = threadIdx.y;
    const int c = blockIdx.x * 32 + cx;
    float s = 0.0f;
    if (c < C) {
        const float bc = b[c];
        for (int n = blockIdx.y * GL_ROWS + ry; n < N; n += gridDim.y * GL_ROWS) {
            const size_t o = (size_t)n * C + c;  // a warp covers 32 neighbouring columns
            const float d = dy[o] * gelu_grad(x[o] + bc);
            dx[o] = d;
            s += d;
        }
    }
    part[ry][cx] = s;
    __syncthreads();
    if (ry == 0 && c < C) {
        float t = 0.0f;
        for (int r = 0; r < GL_ROWS; ++r) t += part[r][cx];  // fixed order
        partial_db[(size_t)blockIdx.y * C + c] = t;
    }
}

// out[c] = sum_g partial[g, c], g in order.
extern "C" __global__ void colsum_partials(float* __restrict__ out,
                                           const float* __restrict__ partial, int G, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int g = 0; g < G; ++g) s += partial[(size_t)g * C + c];
    out[c] = s;
}
