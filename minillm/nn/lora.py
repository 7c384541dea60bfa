"""LoRA: low-rank adaptation of Linear layers (Hu et al. 2021, "LoRA", eq. 3).

A frozen weight W (out, in) is adapted by a trainable low-rank update:

    y = x W^T + b + (dropout(x) A^T B^T) * (alpha / r)        A: (r, in), B: (out, r)

A starts small and random (PyTorch's kaiming-uniform bound 1/sqrt(in)), B starts at zero, so
at step 0 the adapted model computes exactly what the base model computes. Only A and B are
trained: r (in + out) numbers per layer instead of in * out.

The base may also be a ``QuantLinear`` (weights in GGML blocks, frozen): the QLoRA idea. The
product with the base dequantizes inside the kernel, its backward gives only dx, and A, B train in
float32. Such a base cannot take the update in place: ``merge()`` replaces its weight by a float32
matrix (dequantized W + B A * alpha/r, 4 bytes a weight instead of about 1) and ``unmerge()``
puts the original blocks back.

``merge()`` folds the update into W (W' = W + B A * alpha/r), so inference costs nothing extra;
``unmerge()`` puts the original W back. It restores a copy of W taken at merge time rather than
subtracting B A again, so the base weights come back bit-identical (subtracting would leave float32
rounding error in W, and the adapter's fingerprint of the base would no longer match).

This module works on Modules only (no files): saving and loading adapters lives in
``minillm.checkpoints.adapter``.
"""

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

from minillm import backend
from minillm import functional as F
from minillm.errors import ConfigError
from minillm.nn.layers import Linear
from minillm.nn.module import Module, Parameter
from minillm.nn.quant import QuantLinear
from minillm.ops.quant import quant_linear

# the Linear layers of a block, by the names the CLI accepts: GPT's (attn.c_attn, ...) and
# Llama's (self_attn.q_proj, ..., mlp.down_proj); a group lists both families' layers (a name
# that the model lacks matches nothing)
LLAMA_TARGETS = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj",
}
TARGET_GROUPS = {
    "attn": ("attn.c_attn", "attn.c_proj") + tuple(LLAMA_TARGETS[t] for t in "qkvo"),
    "mlp": ("mlp.c_fc", "mlp.c_proj") + tuple(LLAMA_TARGETS[t] for t in ("gate", "up", "down")),
}
TARGET_GROUPS["all"] = TARGET_GROUPS["attn"] + TARGET_GROUPS["mlp"]
TARGET_GROUPS.update({k: (v,) for k, v in LLAMA_TARGETS.items()})
LORA_PARAM_NAMES = ("lora_A", "lora_B")


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple = TARGET_GROUPS["all"]

    def __post_init__(self):
        self.targets = resolve_targets(self.targets)
        if int(self.rank) < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {self.rank}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        self.rank, self.alpha, self.dropout = int(self.rank), float(self.alpha), float(self.dropout)

    def to_dict(self):
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


def resolve_targets(targets):
    """ "attn" | "mlp" | "all" | "attn,mlp" | ("attn.c_attn", ...) -> a tuple of module-name
    suffixes. A group name expands to its Linear layers; anything else is taken as a suffix."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    out = []
    for t in targets:
        for s in TARGET_GROUPS.get(t, (t,)):
            if s not in out:
                out.append(s)
    if not out:
        raise ConfigError("LoRA needs at least one target layer (e.g. 'attn', 'mlp' or 'all')")
    return tuple(out)


class LoRALinear(Module):
    """A Linear layer with a trainable low-rank update; see the module docstring.

    The LoRALinear takes over the base layer's own ``weight`` and ``bias`` Parameters (the same
    objects, frozen), so a model's state_dict keeps the base names (``...c_attn.weight``) and
    gains ``...c_attn.lora_A`` / ``...c_attn.lora_B``.
    """

    def __init__(self, base, rank=8, alpha=16.0, dropout=0.0):
        super().__init__()
        if not isinstance(base, (Linear, QuantLinear)):
            raise ConfigError(f"LoRA adapts Linear layers, not {type(base).__name__}")
        if int(rank) < 1:
            raise ConfigError(f"LoRA rank must be a positive integer, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.dropout_p = int(rank), float(alpha), float(dropout)
        self.scaling = self.alpha / self.rank
        # a quantized base keeps its QuantWeight (out, in), never a Parameter
        self.quant_base = base.weight if isinstance(base, QuantLinear) else None
        if self.quant_base is None:
            self.weight = base.weight.requires_grad_(False)  # (out, in), frozen
        else:
            self.weight = base.weight
        self.bias = base.bias.requires_grad_(False) if base.bias is not None else None
        if self.quant_base is None:
            like, device = self.weight.data, backend.device_of(self.weight.data)
        else:
            like, device = np.zeros(0, np.float32), "cpu"
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform(a=sqrt(5)), as PyTorch/PEFT
        a = backend.rng().uniform(-bound, bound, size=(self.rank, self.in_features))
        self.lora_A = Parameter(backend.to_device(a.astype(like.dtype), device))  # (r, in)
        self.lora_B = Parameter(
            backend.to_device(np.zeros((self.out_features, self.rank), like.dtype), device)
        )
        self.merged = False
        self._weight_before_merge = None

    def _base(self, x):  # x W^T with the base weight as it is now (blocks, or float)
        if self.quant_base is not None and not self.merged:
            return quant_linear(x, self.weight)
        return F.linear(x, self.weight)

    def forward(self, x):  # x: (..., in)
        y = self._base(x)
        return self._update(x, y if self.bias is None else y + self.bias)

    def project(self, x):
        """x W^T plus the low-rank update, without the bias (as Linear.project)."""
        return self._update(x, self._base(x))

    def _update(self, x, y):  # y: (..., out), the base layer's output
        if self.merged:
            return y  # the update is already inside weight
        h = F.dropout(x, self.dropout_p, training=self.training)
        delta = F.linear(F.linear(h, self.lora_A), self.lora_B)  # (..., r) -> (..., out)
        return y + delta * self.scaling

    def delta_weight(self):
        """B A * alpha/r: (out, in), the update as a dense matrix (an array, not a Tensor)."""
        dtype = self.lora_A.data.dtype
        return (self.lora_B.data @ self.lora_A.data) * dtype.type(self.scaling)

    def merge(self):
        """Fold the update into the base weight; forward then uses only the base Linear.
        A quantized base becomes a float32 (out, in) Parameter (dequantized + update)."""
        if not self.merged and self.quant_base is not None:
            w = self.quant_base.dequantize() + backend.to_numpy(self.delta_weight())
            self.weight = Parameter(w.astype(np.float32), requires_grad=False)
            self.merged = True
        elif not self.merged:
            self._weight_before_merge = self.weight.data.copy()
            self.weight.data = self.weight.data + self.delta_weight()
            self.merged = True
        return self

    def unmerge(self):
        """Undo ``merge``: restore the base weight bit-identically from the copy."""
        if self.merged and self.quant_base is not None:
            self.weight = self.quant_base
            self.merged = False
        elif self.merged:
            self.weight.data = self._weight_before_merge
            self._weight_before_merge = None
            self.merged = False
        return self

    def base_weight(self):
        """The base weight array as it was before any merge (what the adapter was trained on);
        a QuantWeight for a quantized base."""
        if self.quant_base is not None:
            return self.quant_base
        return self._weight_before_merge if self.merged else self.weight.data

    def extra_repr(self):
        quant = "" if self.quant_base is None else f"{self.quant_base.format.name}, "
        return (
            f"{self.in_features}, {self.out_features}, {quant}bias={self.bias is not None}, "
            f"rank={self.rank}, alpha={self.alpha:g}, merged={self.merged}"
        )


def lora_layers(model):
    """[(name, LoRALinear), ...] in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def apply_lora(model, rank=8, alpha=16.0, dropout=0.0, targets="all"):
    """Replace every Linear whose name ends with a target suffix by a LoRALinear, in place, and
    freeze every other parameter. Returns the names of the adapted layers.

    ``targets``: "attn", "mlp", "all", a comma list of those, or module-name suffixes such as
    ("attn.c_attn", "mlp.c_fc"). Calling it on a model that already has LoRA layers is an error.
    """
    suffixes = resolve_targets(targets)
    if lora_layers(model):
        raise ConfigError("this model already has LoRA layers")
    model.requires_grad_(False)
    replaced = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent._modules.items()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) in (Linear, QuantLinear) and any(full == s or full.endswith("." + s) for s in suffixes):
                lora = LoRALinear(child, rank, alpha, dropout)
                lora.train(child.training)
                # replace in place, keeping the parent's module order (and so parameter order)
                parent._modules[child_name] = lora
                object.__setattr__(parent, child_name, lora)
                replaced.append(full)
    if not replaced:
        raise ConfigError(
            f"no Linear layer of the model matches the LoRA targets {', '.join(suffixes)}"
        )
    return replaced


def merge_lora(model):
    for _, m in lora_layers(model):
        m.merge()
    return model


def unmerge_lora(model):
    for _, m in lora_layers(model):
        m.unmerge()
    return model


def is_lora_param(name):
    return name.rsplit(".", 1)[-1] in LORA_PARAM_NAMES


def lora_state_dict(model):
    """The adapter's tensors: every LoRA A and B, plus any other parameter that is trainable
    (e.g. a classification head trained next to the adapters). name -> array."""
    return {n: p.data for n, p in model.named_parameters() if is_lora_param(n) or p.requires_grad}


def base_fingerprint(model, exclude=()):
    """sha256 over the names, shapes and float32 bytes of the base parameters (everything that
    is not LoRA and not in ``exclude``), using the pre-merge weights of merged layers, then over
    the names, formats and block bytes of every quantized weight. Two models have the same
    fingerprint exactly when an adapter trained on one fits the other."""
    from minillm.nn.quant import named_quant_weights

    merged = {f"{n}.weight": m for n, m in lora_layers(model) if m.merged}
    quant = dict(named_quant_weights(model))
    quant.update({f"{n}.weight": m.quant_base for n, m in lora_layers(model)
                  if m.quant_base is not None})
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if is_lora_param(name) or name in exclude or name in quant:
            continue
        arr = merged[name].base_weight() if name in merged else p.data
        arr = np.ascontiguousarray(backend.to_numpy(arr), dtype="<f4")
        h.update(f"{name}:{arr.shape};".encode())
        h.update(arr.tobytes())
    for name in sorted(quant):
        qw = quant[name]
        h.update(f"{name}:{qw.shape}:{qw.format.name};".encode())
        h.update(np.ascontiguousarray(qw.row_blocks).tobytes())  # the file's layout
    return h.hexdigest()
