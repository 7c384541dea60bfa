"""Inputs for every kernel of kernels/reference.py, for the tests that treat all ops alike
(tests/kernels/test_ladders.py).

``CASES[op]`` is a list of ``(label, make)``: ``make(rng, dtype)`` returns the arguments of the
kernel, exactly as kernels/reference.py takes them. Sizes are odd: no multiple of a tile, block,
unroll or vector width. Backward inputs are built from the reference forward. ``call(op, fn,
args)`` runs a kernel and returns its outputs as a list of arrays (adamw_step, which works in
place, runs several steps and returns p, m, v). ``extra_atol(op, args, i)`` is the absolute
slack output i needs beyond rounding of its own size (layer norm's dx: see there).
"""

import zlib

import numpy as np

from minillm.kernels import quant as Q
from minillm.kernels import reference as R

ROWS = [(N, C) for N in (1, 7, 33) for C in (1, 5, 65, 257)]


def _x(rng, shape, dtype, scale=3.0, shift=0.0):
    return (scale * rng.standard_normal(shape) + shift).astype(dtype)


# --------------------------------------------------------------------------- softmax family
def _softmax_fwd(N, C):
    return lambda rng, dt: (_x(rng, (N, C), dt, 4.0),)


def _softmax_bwd(fwd):
    def build(N, C):
        def make(rng, dt):
            y = getattr(R, fwd)(_x(rng, (N, C), dt, 4.0))
            return _x(rng, (N, C), dt, 1.0), y
        return make
    return build


# --------------------------------------------------------------------------- cross-entropy
def _logits(rng, N, V, dt):
    logits = _x(rng, (N, V), dt, 4.0)
    logits[:, V // 2] += 30  # one dominant logit per row: the max is not the first chunk's
    t = rng.integers(0, V, N)
    t[::3] = -100  # ignored rows
    return logits, t


def _ce_fwd(N, V):
    def make(rng, dt):
        logits, t = _logits(rng, N, V, dt)
        return logits, t, -100
    return make


def _ce_bwd(N, V):
    def make(rng, dt):
        logits, t = _logits(rng, N, V, dt)
        _, lse = R.cross_entropy_forward(logits, t)
        return np.asarray(0.7, dtype=dt), logits, lse, t, -100
    return make


# --------------------------------------------------------------------------- layer norm
def _ln_affine(rng, C, dt, affine):
    w = (1 + 0.3 * rng.standard_normal(C)).astype(dt) if affine in ("wb", "w") else None
    b = (0.3 * rng.standard_normal(C)).astype(dt) if affine == "wb" else None
    return w, b


def _ln_fwd(affine):
    def build(N, C):
        def make(rng, dt):
            x = _x(rng, (N, C), dt, 2.0, 3.0)  # mean far from 0, as after a residual
            return (x, *_ln_affine(rng, C, dt, affine), 1e-5)
        return make
    return build


def _ln_bwd(affine):
    def build(N, C):
        def make(rng, dt):
            x = _x(rng, (N, C), dt, 2.0, 3.0)
            w, b = _ln_affine(rng, C, dt, affine)
            _, mean, rstd = R.layernorm_forward(x, w, b, 1e-5)
            return _x(rng, (N, C), dt, 1.0), x, w, mean, rstd
        return make
    return build


# --------------------------------------------------------------------------- GELU
def _gelu_x(rng, shape, dt):
    x = _x(rng, shape, dt)
    x.flat[: min(4, x.size)] = [-12.0, 12.0, 0.0, -4.5][: min(4, x.size)]  # tails and 0
    return x


def _gelu(op):
    def build(N, C):
        def make(rng, dt):
            x = _gelu_x(rng, (N, C), dt)
            b = _x(rng, (C,), dt, 0.5)
            dy = _x(rng, (N, C), dt, 1.0)
            return {"gelu_forward": (x,), "gelu_backward": (dy, x), "bias_gelu_forward": (x, b),
                    "bias_gelu_backward": (dy, x, b)}[op]
        return make
    return build


# --------------------------------------------------------------------------- attention
# (B, H, Tq, Tk, D, causal): Tq < Tk is a KV-cache step (causal offset Tk - Tq), Tq = 1 one
# decoded token; 131 and 129 cross v5's query blocks of 128, 70 v3's key blocks of 64; the
# last three are v8's decode steps (3 grouped query rows; causal rows 0-2 that see none of
# the third chunk of 128 keys; 16 rows); v8 also takes the first two (short prompts)
ATTENTION = [(1, 1, 1, 1, 5, True), (2, 3, 7, 7, 16, True), (1, 2, 33, 65, 33, True),
             (1, 1, 70, 70, 16, True), (2, 1, 65, 65, 5, False), (1, 2, 1, 33, 16, True),
             (1, 1, 17, 80, 33, False), (2, 2, 131, 131, 9, True), (1, 1, 129, 150, 7, True),
             (2, 3, 3, 301, 33, False), (1, 2, 5, 258, 64, True), (1, 1, 16, 17, 8, True)]


def _qkv(rng, shape, dt):
    B, H, Tq, Tk, D, causal = shape
    q = _x(rng, (B, H, Tq, D), dt, 1.0)
    k, v = _x(rng, (B, H, Tk, D), dt, 1.0), _x(rng, (B, H, Tk, D), dt, 1.0)
    return q, k, v, 1.0 / D**0.5, causal  # a Python float scale: np.float64 would promote


def _att_fwd(shape):
    return lambda rng, dt: _qkv(rng, shape, dt)


# (B, H, Tq, Tk, D) of a ragged decode step: SmolLM2's grouped rows (3 of 3 heads), keys
# across v8's chunks of 128, one row; each batch row's length drawn in 1..Tk, the last Tk
RAGGED = [(3, 2, 3, 37, 16), (2, 3, 1, 301, 33), (4, 1, 5, 129, 7), (1, 1, 1, 1, 5)]


def _att_ragged(shape):
    def make(rng, dt):
        B, H, Tq, Tk, D = shape
        q = _x(rng, (B, H, Tq, D), dt, 1.0)
        k, v = (_x(rng, (B, H, Tk + 9, D), dt, 1.0)[:, :, :Tk] for _ in range(2))  # views
        lengths = np.r_[rng.integers(1, Tk + 1, B - 1), Tk]
        return q, k, v, lengths, 1.0 / D**0.5
    return make


# (H, Hkv, D, [(length, prefix)]) of packed sequences: one with a shared prefix (the prefix
# its own sequence first, prefix 0), grouped heads, a one-position sequence, odd sizes
VARLEN = [(2, 2, 16, [(5, 0)]), (6, 2, 33, [(4, 0), (1, 4), (7, 4), (3, 4)]),
          (3, 1, 7, [(9, 0), (1, 0), (13, 0)]), (9, 3, 64, [(8, 0), (7, 0), (9, 0), (6, 0)])]


def _att_varlen(shape):
    def make(rng, dt):
        H, Hkv, D, seqs = shape
        lens = np.asarray([n for n, _ in seqs])
        ends = np.cumsum(lens)
        N = int(ends[-1])
        q = _x(rng, (H, N, D), dt, 1.0)
        k, v = (_x(rng, (Hkv, N, D), dt, 1.0) for _ in range(2))
        return q, k, v, ends - lens, ends, np.asarray([p for _, p in seqs]), 1.0 / D**0.5
    return make


def _att_bwd(shape):
    def make(rng, dt):
        q, k, v, scale, causal = _qkv(rng, shape, dt)
        o, lse = R.attention_forward(q, k, v, scale, causal)
        return _x(rng, q.shape, dt, 1.0), q, k, v, o, lse, scale, causal
    return make


# --------------------------------------------------------------------------- matmul, AdamW
MATMUL = [(1, 1, 1), (7, 5, 33), (65, 130, 17), (70, 3, 515), (13, 300, 37)]  # (M, K, N)


def _matmul(M, K, N):
    return lambda rng, dt: (_x(rng, (M, K), dt, 1.0), _x(rng, (K, N), dt, 1.0))


ADAMW = [(1,), (7,), (33, 5), (7, 65), (4097,), (3, 5, 257)]
ADAMW_STEPS = 5


def _adamw(shape):
    def make(rng, dt):
        p = _x(rng, shape, dt, 1.0)
        grads = [_x(rng, shape, dt, 1.0) for _ in range(ADAMW_STEPS)]
        return p, grads
    return make


def _adamw_call(fn, args):
    p, grads = args
    p = p.copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step, g in enumerate(grads, 1):
        fn(p, g, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1 * (step % 2), step)
    return [p, m, v]


# --------------------------------------------------------------------------- RMSNorm
def _rms_w(rng, C, dt):
    return (1 + 0.3 * rng.standard_normal(C)).astype(dt)


def _rms_fwd(N, C):
    return lambda rng, dt: (_x(rng, (N, C), dt, 2.0, 1.0), _rms_w(rng, C, dt), 1e-5)


def _rms_bwd(N, C):
    def make(rng, dt):
        x, w = _x(rng, (N, C), dt, 2.0, 1.0), _rms_w(rng, C, dt)
        _, rrms = R.rms_norm_forward(x, w, 1e-5)
        return _x(rng, (N, C), dt, 1.0), x, w, rrms
    return make


# --------------------------------------------------------------------------- rotary embeddings
# (B, H, T, D) with D even; positions: "p0" 0..T-1, "p17" from 17 (a KV-cache step), "rows" each
# row of the batch its own positions (left padding), cos/sin of shape (B, T, D/2)
ROPE = [(1, 1, 1, 2), (2, 3, 5, 6), (2, 3, 5, 64), (1, 2, 9, 34)]


def _rope(op, shape, positions, interleaved):
    def make(rng, dt):
        B, H, T, D = shape
        if positions == "rows":
            pos = 5 + np.arange(T)[None, :] + np.arange(B)[:, None] * 3
        else:
            pos = (17 if positions == "p17" else 0) + np.arange(T)
        cos, sin = R.rope_cos_sin(pos, D, 10000.0, dtype=dt)
        return _x(rng, shape, dt, 1.0), cos, sin, interleaved
    return make


def _rope_cases(op):
    return [(f"{'x'.join(map(str, s))}-{p}-{'pairs' if il else 'halves'}", _rope(op, s, p, il))
            for s in ROPE for p in ("p0", "p17", "rows") for il in (False, True)]


# --------------------------------------------------------------------------- SwiGLU
SWIGLU = [(1,), (7, 33), (3, 5, 80), (4100,), (2, 4097)]  # 4100, 4097: past v2's 4096 blocks


def _gate(rng, shape, dt):
    gate = _x(rng, shape, dt, 4.0)
    gate.reshape(-1)[:3] = [-120.0, 95.0, 0.0][: gate.size]  # past exp's range both ways
    return gate


def _swiglu(op, shape):
    def make(rng, dt):
        gate, up = _gate(rng, shape, dt), _x(rng, shape, dt, 1.0)
        return (gate, up) if op == "swiglu_forward" else (_x(rng, shape, dt, 1.0), gate, up)
    return make


# --------------------------------------------------------------------------- quantized products
# (N, O, K): K a multiple of the 32-weight block; on the row layout N = 1, 3 run the fused rungs,
# N = 17 the GEMM rungs (qmatmul's GEMM_MIN_ROWS; tests/kernels/test_cpu_qmatmul.py checks it);
# grouped weights run v6 at N = 1 and v7 above
QMATMUL = [(n, o, k) for n in (1, 3, 17) for o in (7, 33) for k in (64, 96)]
# the row-group layout (kernels/quant.py GROUP rows side by side): rows a multiple of 32
QMATMUL_GROUPED = [(n, 64, k) for n in (1, 3, 6, 17) for k in (64, 96)]  # v8: 4 rows a call
QFORMATS = (Q.Q8_0, Q.Q4_0, Q.Q4_1)


def quant_weight(shape, qtype, seed=0):
    """A QuantWeight of ``shape`` (O, K) in ``qtype`` from rows of different scales, with an
    all-zero block (scale 0) and a constant block (Q4_1's range 0)."""
    rng = np.random.default_rng(zlib.crc32(repr((shape, seed)).encode()))
    w = rng.standard_normal(shape) * rng.uniform(0.01, 2.0, (shape[0], 1))
    w[0, :32] = 0.0
    if shape[0] > 1:
        w[1, :32] = 0.75
    return Q.QuantWeight.from_float(w.astype(np.float32), qtype)


def _qmatmul(op, shape, qtype, grouped=False):
    def make(rng, dt):
        n, o, k = shape  # x (n, k) or dy (n, o), W (o, k)
        qw = quant_weight((o, k), qtype, 1 if op == "qmatmul_backward_input" else 0)
        qw = qw.to_groups() if grouped else qw
        return _x(rng, (n, o if op == "qmatmul_backward_input" else k), dt, 1.0), qw
    return make


def _qmatmul_cases(op):
    rows = [(f"{Q.FORMATS[t].name}-{'x'.join(map(str, s))}", _qmatmul(op, s, t))
            for t in QFORMATS for s in QMATMUL]
    return rows + [(f"{Q.FORMATS[t].name}-{'x'.join(map(str, s))}-grouped",
                    _qmatmul(op, s, t, grouped=True)) for t in QFORMATS for s in QMATMUL_GROUPED]


# --------------------------------------------------------------------------- the table
def _over_rows(build):
    return [(f"{N}x{C}", build(N, C)) for N, C in ROWS]


CASES = {
    "matmul": [(f"{M}x{K}x{N}", _matmul(M, K, N)) for M, K, N in MATMUL],
    "softmax_forward": _over_rows(_softmax_fwd),
    "softmax_backward": _over_rows(_softmax_bwd("softmax_forward")),
    "log_softmax_forward": _over_rows(_softmax_fwd),
    "log_softmax_backward": _over_rows(_softmax_bwd("log_softmax_forward")),
    "cross_entropy_forward": _over_rows(_ce_fwd),
    "cross_entropy_backward": _over_rows(_ce_bwd),
    "layernorm_forward": [(f"{label}-{a}", make) for a in ("wb", "w", "none")
                          for label, make in _over_rows(_ln_fwd(a))],
    "layernorm_backward": [(f"{label}-{a}", make) for a in ("wb", "w", "none")
                           for label, make in _over_rows(_ln_bwd(a))],
    "gelu_forward": _over_rows(_gelu("gelu_forward")),
    "gelu_backward": _over_rows(_gelu("gelu_backward")),
    "bias_gelu_forward": _over_rows(_gelu("bias_gelu_forward")),
    "bias_gelu_backward": _over_rows(_gelu("bias_gelu_backward")),
    "attention_forward": [(str(s), _att_fwd(s)) for s in ATTENTION],
    "attention_backward": [(str(s), _att_bwd(s)) for s in ATTENTION],
    "attention_ragged_forward": [(str(s), _att_ragged(s)) for s in RAGGED],
    "attention_varlen_forward": [(f"H{s[0]}-Hkv{s[1]}-D{s[2]}-{len(s[3])}seq", _att_varlen(s))
                                 for s in VARLEN],
    "adamw_step": [(str(s), _adamw(s)) for s in ADAMW],
    "rms_norm_forward": _over_rows(_rms_fwd),
    "rms_norm_backward": _over_rows(_rms_bwd),
    "rope_forward": _rope_cases("rope_forward"),
    "rope_backward": _rope_cases("rope_backward"),
    "swiglu_forward": [(str(s), _swiglu("swiglu_forward", s)) for s in SWIGLU],
    "swiglu_backward": [(str(s), _swiglu("swiglu_backward", s)) for s in SWIGLU],
    "qmatmul_forward": _qmatmul_cases("qmatmul_forward"),
    "qmatmul_backward_input": _qmatmul_cases("qmatmul_backward_input"),
    # v2 takes 8 rows a call: 17 rows are two calls of 8 and one of 1
    "qmatmul_q8_forward": _qmatmul_cases("qmatmul_q8_forward"),
}


# (float32, float64) relative tolerance per op; 1e-4 / 1e-10 for the others
RTOL = {"layernorm_forward": (2e-4, 1e-10), "layernorm_backward": (2e-4, 1e-10),
        "attention_forward": (1e-4, 1e-9), "attention_backward": (1e-4, 1e-9),
        "attention_ragged_forward": (1e-4, 1e-9), "attention_varlen_forward": (1e-4, 1e-9),
        "adamw_step": (1e-5, 1e-12)}


def rtol(op, dtype):
    return RTOL.get(op, (1e-4, 1e-10))[np.dtype(dtype) == np.float64]


def call(op, fn, args):
    """Run kernel ``fn`` (a rung or the reference) on fresh copies; outputs as a list."""
    if op == "adamw_step":
        return _adamw_call(fn, args)
    out = fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    return list(out) if isinstance(out, tuple) else [out]


def extra_atol(op, args, i):
    """Absolute slack for output i beyond its own rounding. Layer norm's dx: rounding of
    g - mean(g) is multiplied by rstd, which is 1/sqrt(eps) = 316 when C = 1 (var = 0)."""
    if op == "layernorm_backward" and i == 0:
        dy, x, w, _mean, rstd = args
        g = np.abs(dy * (w if w is not None else 1))
        return 4 * np.finfo(x.dtype).eps * float(rstd.max() * g.max()) if g.size else 0.0
    return 0.0
