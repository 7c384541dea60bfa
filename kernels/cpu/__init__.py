"""Numba CPU kernels. Each module holds numbered versions of one op (v1 the plain loop, later
versions faster; the module docstring says what each step changed and what it gained) and
functional wrappers with the same signatures as kernels/reference.py that call DEFAULT_VERSION.
"""

from .attention import attention_backward, attention_forward
from .crossentropy import cross_entropy_backward, cross_entropy_forward
from .adamw import adamw_step
from .gelu import bias_gelu_backward, bias_gelu_forward, gelu_backward, gelu_forward
from .layernorm import layernorm_backward, layernorm_forward
from .qmatmul import qmatmul_backward_input, qmatmul_forward
from .softmax import (
    log_softmax_backward,
    log_softmax_forward,
    softmax_backward,
    softmax_forward,
)

# Llama ops (RMSNorm, rotary embeddings, SwiGLU)
from .rmsnorm import rms_norm_backward, rms_norm_forward
from .rope import rope_backward, rope_forward
from .swiglu import swiglu_backward, swiglu_forward
