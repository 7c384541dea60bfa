"""CUDA kernels for CuPy arrays: CUDA C in ``*.cu`` files (numbered versions, block sizes as
``#define`` placeholders filled in at load time), compiled once by ``cupy.RawModule`` and cached
(``_compile.py``), launched by thin wrappers with the signatures of kernels/reference.py.

kernels/registry.py imports these modules only when it sees a CuPy array, and nothing here
imports cupy at import time: the launchers import it inside the functions. Each module declares
its versions in ``LADDERS`` (kernels/ladder.py); a rung's ``fits`` says which inputs it takes
(dtype, head dim, row length, ...), and inputs no rung takes run kernels/reference.py, which
runs on CuPy too, so the answer is always right, only slower. The registry reads the modules
named in MODULES (adding an op is one line there).

Files (each .cu header lists its versions and what each is expected to gain):
  matmul.cu       FP32 SGEMM ladder v1..v5, TF32 tensor cores v6, fused bias / bias+GELU
  layernorm.cu    forward v1..v3, backward v1..v2
  softmax.cu      softmax / log-softmax forward v1..v3, backward v1..v2
  crossentropy.cu fused softmax + cross-entropy forward v1..v2, backward v1..v2
  gelu.cu         GELU and bias + GELU forward/backward v1..v2
  adamw.cu        fused AdamW over a flat buffer v1..v2
  attention.cu    flash attention forward/backward: v1 FP32, v2 FP16/BF16 tensor cores
  rmsnorm.cu      RMSNorm forward v1..v2, backward v1..v2 (Llama)
  rope.cu         rotary embeddings, one kernel for both directions, v1..v2 (Llama)
  swiglu.cu       SwiGLU forward/backward v1..v2 (Llama)
  qmatmul.cu      products with Q8_0/Q4_0/Q4_1 weights decoded inside them, forward and
                  backward_input v1..v2 (quantized Llama / GGUF models, LoRA on them)
"""

MODULES = ("matmul", "layernorm", "softmax", "crossentropy", "gelu", "adamw", "attention",
           "rmsnorm", "rope", "swiglu", "qmatmul")


def all_configs():
    """Every (file, defines) the launchers can compile: the compile test builds each one."""
    import importlib

    out = []
    for name in MODULES:
        out += importlib.import_module(f"{__name__}.{name}").CONFIGS
    return out

