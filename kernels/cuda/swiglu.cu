// SwiGLU (Shazeer 2020), FP32, forward + backward: Llama's MLP activation.
//
//   y = silu(gate) * up,  silu(g) = g s,  s = 1 / (1 + exp(-g))
//   dgate = dy * up * s * (1 + g (1 - s)),  dup = dy * g * s
//   gate, up, y: (M,) (any shape, flattened).
//
// Elementwise and memory-bound: the forward moves 12 bytes per element, the backward 20. At
// SmolLM2-135M's MLP (F = 1536) and 8192 tokens that is 151 MB and 252 MB.
// expf (not __expf): the kernels are tested to ~1e-5 against the reference; for g < -88,
// expf(-g) = inf and s = 1 / inf = 0, as it should be.
//
// Placeholder: SG_THREADS (threads per block).
//
// Versions (expected, NOT measured: "not yet measured: needs a GPU"):
//   v1  one thread per element, scalar loads. Expected ~70-80% of bandwidth.
//   v2  grid-stride loops over float4s (128-bit loads and stores, a scalar tail, a scalar
//       path for unaligned inputs). Expected ~85-90% of bandwidth.

#if !defined(SG_THREADS)
#error "swiglu.cu needs SG_THREADS (kernels/cuda/_compile.py writes the #defines)"
#endif

__device__ __forceinline__ float sigmoid_f(float g) { return 1.0f / (1.0f + expf(-g)); }

__device__ __forceinline__ float swiglu_f(float g, float u) { return g * sigmoid_f(g) * u; }

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du) {
    const float s = sigmoid_f(g);
    dg = d * u * s * (1.0f + g * (1.0f - s));
    du = d * g * s;
}

// ----------------------------------------------------------------------------- v1
extern "C" __global__ void swiglu_forward_v1(float* __restrict__ y, const float* __restrict__ gate,
                                             const float* __restrict__ up, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = swiglu_f(gate[i], up[i]);
}

extern "C" __global__ void swiglu_backward_v1(float* __restrict__ dgate, float* __restrict__ dup,
                                              const float* __restrict__ dy,
                                              const float* __restrict__ gate,
                                              const float* __restrict__ up, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) swiglu_grad(dy[i], gate[i], up[i], dgate[i], dup[i]);
}

// ----------------------------------------------------------------------------- v2
// vec = 1: every pointer is 16-byte aligned, so elements 4i..4i+3 move as one float4.
extern "C" __global__ void __launch_bounds__(SG_THREADS)
swiglu_forward_v2(float* __restrict__ y, const float* __restrict__ gate,
                  const float* __restrict__ up, int n, int vec) {
    const int stride = gridDim.x * SG_THREADS, i0 = blockIdx.x * SG_THREADS + threadIdx.x;
    int done = 0;
    if (vec) {
        const int n4 = n / 4;
        for (int i = i0; i < n4; i += stride) {
            const float4 g = reinterpret_cast<const float4*>(gate)[i];
            const float4 u = reinterpret_cast<const float4*>(up)[i];
            reinterpret_cast<float4*>(y)[i] = make_float4(swiglu_f(g.x, u.x), swiglu_f(g.y, u.y),
                                                          swiglu_f(g.z, u.z), swiglu_f(g.w, u.w));
        }
        done = n4 * 4;
    }
    for (int i = done + i0; i < n; i += stride) y[i] = swiglu_f(gate[i], up[i]);
}

extern "C" __global__ void __launch_bounds__(SG_THREADS)
swiglu_backward_v2(float* __restrict__ dgate, float* __restrict__ dup,
                   const float* __restrict__ dy, const float* __restrict__ gate,
                   const float* __restrict__ up, int n, int vec) {
    const int stride = gridDim.x * SG_THREADS, i0 = blockIdx.x * SG_THREADS + threadIdx.x;
    int done = 0;
    if (vec) {
        const int n4 = n / 4;
        for (int i = i0; i < n4; i += stride) {
            const float4 d = reinterpret_cast<const float4*>(dy)[i];
            const float4 g = reinterpret_cast<const float4*>(gate)[i];
            const float4 u = reinterpret_cast<const float4*>(up)[i];
            float4 dg, du;
            swiglu_grad(d.x, g.x, u.x, dg.x, du.x);
            swiglu_grad(d.y, g.y, u.y, dg.y, du.y);
            swiglu_grad(d.z, g.z, u.z, dg.z, du.z);
            swiglu_grad(d.w, g.w, u.w, dg.w, du.w);
            reinterpret_cast<float4*>(dgate)[i] = dg;
            reinterpret_cast<float4*>(dup)[i] = du;
        }
        done = n4 * 4;
    }
    for (int i = done + i0; i < n; i += stride) swiglu_grad(dy[i], gate[i], up[i], dgate[i], dup[i]);
}
