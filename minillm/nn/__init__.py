"""minillm.nn: modules with PyTorch's names and behaviour."""

from minillm.nn import functional, utils
from minillm.nn.activation import GELU, Identity, ReLU, Sigmoid, SiLU, Softmax, Tanh
from minillm.nn.attention import Block, CausalSelfAttention, KVCache
from minillm.nn.layers import MLP, Dropout, Embedding, LayerNorm, Linear
from minillm.nn.lora import LoRALinear, apply_lora
from minillm.nn.loss import CrossEntropyLoss, MSELoss
from minillm.nn.module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "Module", "ModuleList", "Sequential", "Parameter", "Linear", "Embedding", "LayerNorm",
    "Dropout", "MLP", "CausalSelfAttention", "Block", "KVCache", "LoRALinear", "apply_lora",
    "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Softmax", "Identity", "CrossEntropyLoss",
    "MSELoss", "functional", "utils",
]

# the layers of a Llama block
from minillm.nn.llama import LlamaAttention, LlamaBlock, LlamaMLP, RMSNorm  # noqa: E402

__all__ += ["RMSNorm", "LlamaMLP", "LlamaAttention", "LlamaBlock"]
