"""Layers whose weights stay in GGML blocks: QuantLinear and QuantEmbedding.

A quantized layer holds a ``kernels.quant.QuantWeight`` (Q8_0: 8.5 bits per weight, Q4_1: 5)
instead of a float32 Parameter (32 bits), and runs through kernels that dequantize inside the
product. The weight is frozen: it is not a Parameter, so ``parameters()`` and optimizers never
see it, and ``named_quant_weights(model)`` finds it for export (by the name a Linear's weight
would have). Activations stay float32, so outputs equal those of a Linear holding the
dequantized weight, to float32 rounding. ``set_activations(model, "q8_0")`` makes inference
(``forward_array``, and ``forward`` under ``no_grad``) round them to Q8_0 blocks first instead,
as llama.cpp does (kernels/reference.py ``qmatmul_q8_forward``): faster with AVX-512 VNNI, and
logits that move (SmolLM2: by 0.2 RMS, perplexity +0.3%); with gradients on, float32.
"""

import numpy as np

from minillm.autograd import is_grad_enabled
from minillm.kernels import registry
from minillm.kernels.quant import QuantWeight
from minillm.nn.module import Module, Parameter
from minillm.ops.quant import quant_embedding, quant_linear
from minillm.tensor import Tensor

# what a quantized product does with its activations -> the kernel that runs it
ACTIVATIONS = {"float32": "qmatmul_forward", "q8_0": "qmatmul_q8_forward"}


class QuantLinear(Module):
    """y = x W^T (+ b) with W: (out_features, in_features) in blocks; called like nn.Linear."""

    def __init__(self, weight, bias=None):
        super().__init__()
        if not isinstance(weight, QuantWeight):
            raise TypeError(f"QuantLinear holds a QuantWeight, not {type(weight).__name__}")
        self.out_features, self.in_features = weight.shape
        self.weight = weight  # frozen, not a Parameter
        self.bias = None if bias is None else Parameter(np.asarray(bias, dtype=np.float32))
        self.activations = "float32"  # or "q8_0": see set_activations

    @classmethod
    def from_linear(cls, linear, qtype="q8_0"):
        """Quantize an nn.Linear's weight (its bias, if any, stays float32 and trainable), in
        the row-group layout where its rows allow (the CPU kernels' decoding layout)."""
        qw = QuantWeight.from_float(np.asarray(linear.weight.data), qtype).to_groups()
        return cls(qw, None if linear.bias is None else linear.bias.data)

    def forward(self, x):
        if self.activations != "float32" and not is_grad_enabled():  # inference: as decoding
            return Tensor(self.forward_array(x.data))
        y = quant_linear(x, self.weight)  # (..., out)
        return y if self.bias is None else y + self.bias

    def forward_array(self, x):
        """forward on a plain array (..., in) outside the graph (the decoding step's path)."""
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        op = ACTIVATIONS[self.activations]
        y = registry.get(op, x2)(x2, self.weight)
        if self.bias is not None:
            y = y + self.bias.data
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, {self.weight.format.name}, "
                f"bias={self.bias is not None}")


class QuantEmbedding(Module):
    """A frozen lookup table (num_embeddings, embedding_dim) in blocks: only the rows looked up
    are dequantized. Its ``weight`` can also serve a tied output head (QuantLinear(weight))."""

    def __init__(self, weight):
        super().__init__()
        if not isinstance(weight, QuantWeight):
            raise TypeError(f"QuantEmbedding holds a QuantWeight, not {type(weight).__name__}")
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = weight

    def forward(self, idx):
        return quant_embedding(idx, self.weight)  # (..., C)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.weight.format.name}"


class FusedProjections:
    """Several bias-free QuantLinear layers reading the same input (q, k, v; gate, up), their
    grouped weights laid end to end in one buffer: one product computes all their outputs
    (a decoding step then calls one kernel instead of three). Each layer keeps its own weight,
    a view of its rows of the buffer, so nothing is held twice. ``fuse`` returns None where the
    layers cannot share a buffer."""

    def __init__(self, layers, weight):
        self.layers = tuple(layers)
        self.parts = tuple(m.weight for m in layers)  # the views, to see a layer replaced
        self.weight = weight
        ends = np.cumsum([w.shape[0] for w in self.parts])
        self.bounds = tuple(zip((0, *ends[:-1].tolist()), ends.tolist()))  # column ranges

    @classmethod
    def fuse(cls, layers):
        ws = [getattr(m, "weight", None) for m in layers]
        if not all(type(m) is QuantLinear and m.bias is None and w.grouped for m, w in
                   zip(layers, ws)) or len({(w.qtype, w.shape[1]) for w in ws}) != 1:
            return None
        blocks = np.concatenate([w.blocks for w in ws])  # whole groups of rows, end to end
        views, o = [], 0
        for m, w in zip(layers, ws):
            m.weight = QuantWeight(w.qtype, w.shape, blocks[o:o + w.shape[0]], grouped=True)
            views.append(m.weight)
            o += w.shape[0]
        total = QuantWeight(ws[0].qtype, (o, ws[0].shape[1]), blocks, grouped=True)
        return cls(layers, total)

    def current(self, layers):
        """True while ``layers`` are still the fused layers holding their fused weights (a
        LoRA wrapper or a new weight in their place ends the fusion)."""
        return all(a is b and a.weight is w for a, b, w in zip(layers, self.layers, self.parts))

    def forward_array(self, x):
        """The layers' outputs for a plain array x (..., in), as a list."""
        x2 = x.reshape(-1, x.shape[-1])
        op = ACTIVATIONS[self.layers[0].activations]
        y = registry.get(op, x2)(x2, self.weight)  # (N, sum of outs)
        lead = x.shape[:-1]
        return [y[:, a:b].reshape(lead + (b - a,)) for a, b in self.bounds]  # views, no copies


def set_activations(module, activations):
    """Every QuantLinear under ``module``: "float32" keeps x as it is in inference's products
    (the default), "q8_0" rounds it to Q8_0 blocks first (llama.cpp's way: on AVX-512 VNNI the
    products multiply bytes, kernels/cpu/qmatmul_q8.py). A forward with gradients on (training,
    LoRA) keeps float32 either way. Returns how many layers it set."""
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be {' or '.join(ACTIVATIONS)}, not {activations!r}")
    layers = [m for m in module.modules() if isinstance(m, QuantLinear)]
    for m in layers:
        m.activations = activations
    return len(layers)


def named_quant_weights(module):
    """(name, QuantWeight) for every quantized layer under ``module``, named as the Linear or
    Embedding weight would be ("layers.0.mlp.up_proj.weight"); a shared weight once."""
    seen = set()
    for name, m in module.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            yield (f"{name}.weight" if name else "weight"), m.weight


def linear_from(weight):
    """A bias-free layer holding ``weight`` (out, in) as read from a file: a QuantLinear for a
    QuantWeight in a format with product kernels (Q8_0, Q4_0, Q4_1), else a float32 Linear
    (dequantized: F16, BF16, Q5 and K-quant matrices have no kernels here)."""
    from minillm.kernels.quant import MATMUL_TYPES
    from minillm.nn.layers import Linear

    if isinstance(weight, QuantWeight) and weight.qtype in MATMUL_TYPES:
        return QuantLinear(weight)
    w = weight.dequantize() if isinstance(weight, QuantWeight) else np.asarray(weight)
    layer = Linear(w.shape[1], w.shape[0], bias=False, init=False)
    layer.weight = Parameter(np.ascontiguousarray(w, dtype=np.float32))
    return layer


def embedding_from(weight):
    """A QuantEmbedding for any QuantWeight (rows are dequantized as looked up), else an
    nn.Embedding holding the float32 table."""
    from minillm.nn.layers import Embedding

    if isinstance(weight, QuantWeight):
        return QuantEmbedding(weight)
    w = np.asarray(weight, dtype=np.float32)
    layer = Embedding(*w.shape, init=False)
    layer.weight = Parameter(np.ascontiguousarray(w))
    return layer


def quantize_linears(model, qtype="q8_0", skip=()):
    """Replace every nn.Linear of ``model`` (whose in_features is a whole number of 32-weight
    blocks and whose name does not end with a suffix in ``skip``) by a QuantLinear holding its
    weight in ``qtype``, in place, keeping module order; ``--dtype q8_0`` on a float model.
    Returns the names of the replaced layers."""
    from minillm.nn.layers import Linear

    replaced = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            full = f"{name}.{child_name}" if name else child_name
            if (type(child) is Linear and child.in_features % 32 == 0
                    and not any(full == s or full.endswith("." + s) for s in skip)):
                q = QuantLinear.from_linear(child, qtype)
                q.train(child.training)
                parent._modules[child_name] = q
                object.__setattr__(parent, child_name, q)
                replaced.append(full)
    return replaced
