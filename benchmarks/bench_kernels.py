"""Every version of a kernel vs kernels/reference.py, driven by the op's ladder (LADDERS).

    python benchmarks/bench_kernels.py --op softmax                 # CPU, every version
    python benchmarks/bench_kernels.py --op attention --versions 5,7
    python benchmarks/bench_kernels.py --op layernorm --device cuda # the CUDA ladder (CuPy)
    python benchmarks/bench_kernels.py --op all --shapes check      # every op at tiny sizes

``--op`` takes a family (softmax, log_softmax, cross_entropy, layernorm, gelu, bias_gelu,
attention, adamw, matmul, rms_norm, rope, swiglu, qmatmul) or one kernel name
(``softmax_backward``). For each kernel, shape and
version the script builds the inputs, runs the reference and the version on copies of them,
refuses to time a version whose outputs differ from the reference's (an AssertionError names
it), then times both (the fastest of many single calls after a warm-up: JIT and NVRTC compile
excluded; benchmarks/_cpu_bench.py) and prints ms, GB/s (inputs read once, outputs written
once) or GFLOP/s (matmul, attention), and the speed-up over the reference. Versions a rung's
``fits`` refuses for an input are skipped with the reason. report.py prints ``rows()``: the
default versions of every op. Shapes: "tiny" and "small" are the Shakespeare configs (B*T =
768 / 2048 rows, C = 128 / 384), "check" a few rows only, to see that the script runs.

The Llama ops take SmolLM2-135M's shapes (C = 576, 9 query and 3 key/value heads of D = 64,
F = 1536, vocabulary 49152): rms_norm, rope (both pair layouts) and swiglu prefilling 64
("tiny") or 512 ("small") tokens. qmatmul (y = x W^T, W in GGML blocks) runs every product of
the model, q/o (576, 576), gate/up (1536, 576), down (576, 1536) and the tied head (49152, 576),
in Q4_1 and Q8_0, at N = 1 row (decoding one token: each weight read once, so the bound is W's
bytes over the memory bandwidth) and N = 512 (a prompt: compute-bound, see GFLOP/s). Its GB/s
counts W's bytes only, and the table adds them as a fraction of a parallel read of memory
measured in the same run (_cpu_bench.read_bandwidth_gbs). Its GEMM rungs decline fewer than
GEMM_MIN_ROWS rows (kernels/cpu/qmatmul.py): that rule is what this measures, so they are timed
there too.
"""

import argparse  # noqa: I001  (minillm before numpy, below)
import sys
import time

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)
import numpy as np

from _cpu_bench import assert_close, best_ms, read_bandwidth_gbs
from minillm.kernels import quant as Q
from minillm.kernels import reference as R
from minillm.kernels import registry

FAMILIES = {
    "softmax": ("softmax_forward", "softmax_backward"),
    "log_softmax": ("log_softmax_forward", "log_softmax_backward"),
    "cross_entropy": ("cross_entropy_forward", "cross_entropy_backward"),
    "layernorm": ("layernorm_forward", "layernorm_backward"),
    "gelu": ("gelu_forward", "gelu_backward"),
    "bias_gelu": ("bias_gelu_forward", "bias_gelu_backward"),
    "attention": ("attention_forward", "attention_backward"),
    "attention_ragged": ("attention_ragged_forward",),
    "attention_varlen": ("attention_varlen_forward",),
    "adamw": ("adamw_step",),
    "matmul": ("matmul",),
    "rms_norm": ("rms_norm_forward", "rms_norm_backward"),
    "rope": ("rope_forward", "rope_backward"),
    "swiglu": ("swiglu_forward", "swiglu_backward"),
    "qmatmul": ("qmatmul_forward", "qmatmul_backward_input", "qmatmul_q8_forward"),
}

# Shapes per family and size set: (N, C) rows, (B, H, T, D) attention, (M, K, N) matmul,
# (n,) parameters for AdamW (all parameters of the small GPT as one buffer, one MLP weight);
# (H, Hkv, D, sequences, length) packed sequences; Llama: (N, C) rows of the norm, (N, F) of
# the MLP gate, (B, H, T, D, layout) rope, and
# (N, O, K, format) qmatmul (x (N, K), W (O, K)).
_HALF, _PAIR = "halves", "pairs"  # rope's pair layouts: (x[i], x[i + D/2]) or (x[2i], x[2i+1])
_SMOL = [(576, 576), (1536, 576), (576, 1536), (49152, 576)]  # SmolLM2-135M's (O, K)
SHAPES = {
    "check": {"rows": [(33, 65)], "vocab": [(33, 65)], "wide": [(33, 130)],
              "attention": [(1, 2, 37, 16)], "matmul": [(33, 17, 65)], "adamw": [(4097,)],
              "attention_ragged": [(3, 2, 3, 37, 16)], "attention_varlen": [(6, 2, 16, 3, 7)],
              "llama_rows": [(33, 48)], "llama_mlp": [(33, 80)],
              "rope": [(1, 3, 37, 16, _HALF), (1, 3, 37, 16, _PAIR)],
              "qmatmul": [(n, 33, 96, f) for n in (1, 17) for f in ("q4_1", "q8_0")]},
    "tiny": {"rows": [(768, 128)], "vocab": [(768, 65)], "wide": [(768, 512)],
             "attention": [(12, 4, 64, 32)], "attention_decode": [(1, 3, 3, 600, 64)], "matmul": [(768, 128, 512)],
             "attention_ragged": [(8, 3, 3, 80, 64)], "attention_varlen": [(9, 3, 64, 8, 8)],
             "adamw": [(1536 * 384,)], "llama_rows": [(64, 576)], "llama_mlp": [(64, 1536)],
             "rope": [(1, 9, 64, 64, lay) for lay in (_HALF, _PAIR)],
             "qmatmul": [(n, o, k, f) for n in (1, 64) for o, k in _SMOL[:3]
                         for f in ("q4_1", "q8_0")]},
    "small": {"rows": [(2048, 384)], "vocab": [(2048, 65), (2048, 2048)], "wide": [(2048, 1536)],
              "attention": [(8, 6, 256, 64)], "attention_decode": [(1, 3, 3, 600, 64)], "matmul": [(2048, 384, 1152)],
              "attention_ragged": [(8, 3, 3, 80, 64), (8, 3, 3, 600, 64)],
              "attention_varlen": [(9, 3, 64, 8, 8), (9, 3, 64, 8, 64)],
              "adamw": [(10_750_000,)], "llama_rows": [(512, 576)], "llama_mlp": [(512, 1536)],
              "rope": [(1, h, 512, 64, lay) for h in (9, 3) for lay in (_HALF, _PAIR)],
              "qmatmul": [(n, o, k, f) for n in (1, 512) for o, k in _SMOL
                          for f in ("q4_1", "q8_0")]},
}
KIND = {"softmax": "vocab", "log_softmax": "vocab", "cross_entropy": "vocab", "layernorm": "rows",
        "gelu": "wide", "bias_gelu": "wide", "attention": "attention", "adamw": "adamw",
        "attention_ragged": "attention_ragged", "attention_varlen": "attention_varlen",
        "matmul": "matmul", "rms_norm": "llama_rows", "rope": "rope", "swiglu": "llama_mlp",
        "qmatmul": "qmatmul"}
PLAIN_LOOP_MAX = 1 << 22  # multiply-adds above which qmatmul's v1 (plain loops) is not timed


# --------------------------------------------------------------------------- inputs
def _x(rng, shape, dt, scale=1.0, shift=0.0):
    return (scale * rng.standard_normal(shape) + shift).astype(dt)


def _ragged_lengths(B, Tk):
    """The key counts of a ragged decode step's B rows: from a quarter of Tk to all of it."""
    return np.linspace(max(1, Tk // 4), Tk, B).astype(np.int64)


def make(op, shape, dt, seed=0):
    """The arguments of kernel ``op`` as kernels/reference.py takes them, at ``shape``."""
    rng = np.random.default_rng(seed)
    if op == "matmul":
        M, K, N = shape
        return _x(rng, (M, K), dt), _x(rng, (K, N), dt)
    if op == "attention_forward" and len(shape) == 5:  # a decode step against a KV cache:
        B, H, Tq, Tk, D = shape  # Tq query rows, the cache's first Tk positions (a view)
        q = _x(rng, (B, H, Tq, D), dt)
        k, v = (_x(rng, (B, H, Tk + 64, D), dt)[:, :, :Tk] for _ in range(2))
        return q, k, v, 1.0 / D**0.5, False
    if op == "attention_ragged_forward":  # a server's decode step: rows of their own lengths
        B, H, Tq, Tk, D = shape
        q = _x(rng, (B, H, Tq, D), dt)
        k, v = (_x(rng, (B, H, Tk + 64, D), dt)[:, :, :Tk] for _ in range(2))
        return q, k, v, _ragged_lengths(B, Tk), 1.0 / D**0.5
    if op == "attention_varlen_forward":  # a server's prompts packed in one row
        H, Hkv, D, S, L = shape  # S sequences of L positions each, no shared prefix
        q = _x(rng, (H, S * L, D), dt)
        k, v = (_x(rng, (Hkv, S * L, D), dt) for _ in range(2))
        starts = np.arange(S) * L
        return q, k, v, starts, starts + L, np.zeros(S, dtype=np.int64), 1.0 / D**0.5
    if op.startswith("attention"):
        B, H, T, D = shape
        q, k, v = (_x(rng, (B, H, T, D), dt) for _ in range(3))
        scale = 1.0 / D**0.5
        if op == "attention_forward":
            return q, k, v, scale, True
        o, lse = R.attention_forward(q, k, v, scale, True)
        return _x(rng, q.shape, dt), q, k, v, o, lse, scale, True
    if op == "adamw_step":
        p, g = _x(rng, shape, dt), _x(rng, shape, dt)
        return p, g, np.zeros_like(p), np.zeros_like(p), 1e-3, 0.9, 0.95, 1e-8, 0.1, 3
    if op.startswith("rope"):
        B, H, T, D, layout = shape
        cos, sin = R.rope_cos_sin(np.arange(T), D, 100000.0, dtype=dt)
        return _x(rng, (B, H, T, D), dt), cos, sin, layout == _PAIR
    if op.startswith("qmatmul"):
        n, o, k, fmt = shape  # x (n, k) or dy (n, o), W (o, k)
        qw = Q.QuantWeight.from_float(_x(rng, (o, k), np.float32, 0.125), fmt)
        return _x(rng, (n, o if op == "qmatmul_backward_input" else k), dt), qw
    N, C = shape
    if op.startswith("rms_norm"):
        x, w = _x(rng, shape, dt, 1.0, 0.5), _x(rng, (C,), dt, 0.1, 1.0)
        if op.endswith("forward"):
            return x, w, 1e-5
        return _x(rng, shape, dt), x, w, R.rms_norm_forward(x, w, 1e-5)[1]
    if op.startswith("swiglu"):
        gate, up = _x(rng, shape, dt, 2.0), _x(rng, shape, dt, 2.0)
        return (gate, up) if op.endswith("forward") else (_x(rng, shape, dt, 2.0), gate, up)
    x = _x(rng, shape, dt, 3.0)
    if op.startswith("cross_entropy"):
        t = rng.integers(0, C, N)
        if op.endswith("forward"):
            return x, t, -100
        return np.asarray(1.0, dt), x, R.cross_entropy_forward(x, t)[1], t, -100
    if op.startswith("layernorm"):
        w, b = _x(rng, (C,), dt, 0.3, 1.0), _x(rng, (C,), dt, 0.3)
        if op.endswith("forward"):
            return x, w, b, 1e-5
        _, mean, rstd = R.layernorm_forward(x, w, b, 1e-5)
        return _x(rng, shape, dt), x, w, mean, rstd
    if op.startswith("bias_gelu"):
        b = _x(rng, (C,), dt, 0.5)
        return (x, b) if op.endswith("forward") else (_x(rng, shape, dt), x, b)
    if op == "gelu_forward" or op.endswith("softmax_forward"):
        return (x,)
    if op == "gelu_backward":
        return _x(rng, shape, dt), x
    return _x(rng, shape, dt), getattr(R, op.replace("backward", "forward"))(x)  # softmaxes


def flops(op, shape):
    """Useful FLOPs of one call, for the compute-bound kernels (else None: GB/s is shown)."""
    if op == "matmul":
        M, K, N = shape
        return 2 * M * N * K
    if op == "attention_forward" and len(shape) == 5:  # a decode step: every row sees all keys
        B, H, Tq, Tk, D = shape
        return 4 * B * H * Tq * Tk * D
    if op == "attention_ragged_forward":  # each row's queries against its own keys
        B, H, Tq, Tk, D = shape
        return 4 * H * Tq * D * int(_ragged_lengths(B, Tk).sum())
    if op == "attention_varlen_forward":  # each sequence causal over its own positions
        H, _, D, S, L = shape
        return 4 * H * D * S * (L * (L + 1) // 2)
    if op.startswith("attention"):
        B, H, T, D = shape  # causal: T (T + 1) / 2 visible pairs; fwd 2 products, bwd 5
        return (4 if op.endswith("forward") else 10) * B * H * (T * (T + 1) // 2) * D
    if op.startswith("qmatmul"):
        n, o, k, _ = shape
        return 2 * n * o * k
    return None


def label(shape):
    """'33x65', '1x9x512x64 pairs', '1x576x576 q4_1'."""
    dims = [str(s) for s in shape if not isinstance(s, str)]
    return " ".join(["x".join(dims)] + [s for s in shape if isinstance(s, str)])


def _size_rule(op, reason):
    """True for a rung's reason that is a choice by size, not a limit: qmatmul's GEMM rungs
    decline fewer than GEMM_MIN_ROWS rows but compute them right, and the rule is what the
    qmatmul benchmark measures, so those rungs are timed there too."""
    if not op.startswith("qmatmul") or reason is None:
        return False
    from minillm.kernels.cpu import qmatmul

    return reason == qmatmul.FEW_ROWS


# --------------------------------------------------------------------------- devices
class Device:
    """Moves inputs to the device, copies them, and waits for the device before a clock read."""

    def __init__(self, name):
        self.name = name
        if name == "cuda":
            import cupy as cp

            self.cp = cp

    def put(self, args):
        if self.name == "cpu":
            return args
        return tuple(self.cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args)

    def copy(self, args):
        return tuple(a.copy() if hasattr(a, "copy") and hasattr(a, "dtype") else a for a in args)

    def host(self, out):
        if isinstance(out, (tuple, list)):
            return [self.host(o) for o in out]
        return out if self.name == "cpu" or out is None else self.cp.asnumpy(out)

    def timed(self, fn):
        if self.name == "cpu":
            return fn
        sync = self.cp.cuda.Device().synchronize

        def run():
            fn()
            sync()
        return run


def _outputs(op, fn, args, dev):
    """Outputs of one call on copies of ``args`` (AdamW: the updated p, m, v)."""
    args = dev.copy(args)
    out = fn(*args)
    return dev.host(list(args[:4]) if op == "adamw_step" else out)


# --------------------------------------------------------------------------- one op
def bench(op, device="cpu", versions=None, shapes="small", dtype=np.float32, min_time=0.2):
    """Rows (op, version, shape, ref_ms, ms, speedup, gbs, gflops) for kernel ``op``."""
    lad = registry.ladder(op, device)
    if lad is None:
        raise SystemExit(f"{op} has no {device} ladder (only the reference runs there)")
    dev = Device(device)
    ref = getattr(R, op)
    rows = []
    shape_list = list(SHAPES[shapes][KIND[_family(op)]])
    if op == "attention_forward":  # (B, Hkv, rows, Tk, D): SmolLM2's grouped decode step
        shape_list += SHAPES[shapes].get("attention_decode", [])
    for shape in shape_list:
        host_args = make(op, shape, dtype)
        args = dev.put(host_args)
        want = _outputs(op, ref, host_args, Device("cpu"))
        ref_ms = best_ms(dev.timed(lambda a=args: ref(*dev.copy(a))), min_time=min_time)
        nbytes = sum(a.nbytes for a in host_args if isinstance(a, np.ndarray))
        nbytes += sum(np.asarray(w).nbytes for w in (want if isinstance(want, list) else [want])
                      if w is not None)
        if op.startswith("qmatmul"):  # the weight's bytes: what a decoded token waits for
            nbytes = host_args[1].nbytes
        for v in versions or lad.versions:
            rung = lad.rung(v)
            args = dev.put(host_args)
            reason = rung.reason_not(*args)
            if op.startswith("qmatmul") and reason is not None:
                # a rung for the other layout of the same bytes (v6 reads row groups) gets it
                qw = host_args[1]
                other = dev.put((host_args[0], qw.to_rows() if qw.grouped else qw.to_groups()))
                if rung.reason_not(*other) is None:
                    args, reason = other, None
            if op.startswith("qmatmul") and v == 1 and flops(op, shape) > 2 * PLAIN_LOOP_MAX:
                reason = "the plain loop takes seconds here and teaches nothing more"
            if reason is not None and not _size_rule(op, reason):
                print(f"skipped {op} v{v} at {label(shape)}: {reason}", file=sys.stderr)
                continue
            assert_close(_outputs(op, rung.run, args, dev), want, f"{op} v{v} {shape}")
            ms = best_ms(dev.timed(lambda r=rung, a=args: r.run(*dev.copy(a))), min_time=min_time)
            f = flops(op, shape)
            rows.append({"op": op, "version": v, "shape": label(shape),
                         "ref_ms": ref_ms, "ms": ms, "speedup": ref_ms / ms,
                         "gbs": nbytes / ms / 1e6, "gflops": f / ms / 1e6 if f else None})
    return rows


def _family(op):
    return next(f for f, ops in FAMILIES.items() if op in ops)


def print_rows(rows, title, read_gbs=None):
    """The table; with ``read_gbs`` (memory read bandwidth) a column of GB/s as its fraction."""
    print(f"\n{title}")
    if read_gbs:
        print(f"read bandwidth (parallel sum, same run): {read_gbs:.1f} GB/s")
    bw = f" {'of bw':>6s}" if read_gbs else ""
    print(f"{'op':24s} {'ver':>3s} {'shape':>20s} {'ref ms':>9s} {'ms':>9s} {'GB/s':>7s}{bw} "
          f"{'GFLOP/s':>8s} {'x ref':>7s}")
    for r in rows:
        gf = f"{r['gflops']:8.1f}" if r["gflops"] else f"{'':8s}"
        frac = f" {r['gbs'] / read_gbs:6.2f}" if read_gbs else ""
        print(f"{r['op']:24s} {r['version']:>3} {r['shape']:>20s} {r['ref_ms']:9.3f} "
              f"{r['ms']:9.3f} {r['gbs']:7.1f}{frac} {gf} {r['speedup']:6.2f}x")


def rows(all_versions=False, shapes="small"):
    """report.py: the default version of every CPU op (or every version) vs the reference."""
    out = []
    known = {op for ops in FAMILIES.values() for op in ops}
    for op in sorted(registry.ladders("cpu")):
        if op not in known:  # a new op: add it to FAMILIES, KIND and make() to benchmark it
            print(f"skipped {op}: no inputs in bench_kernels.py", file=sys.stderr)
            continue
        lad = registry.ladder(op)
        out += bench(op, versions=None if all_versions else [lad.default], shapes=shapes)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", required=True, help=f"all, {', '.join(FAMILIES)} or a kernel name")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--versions", help="comma-separated, e.g. 2,3 (default: every version)")
    p.add_argument("--shapes", choices=sorted(SHAPES), default="small")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--read-mib", type=int, default=512,
                   help="MiB read to measure the memory bandwidth qmatmul is compared with")
    args = p.parse_args(argv)
    if args.op == "all":
        ops = [op for f in FAMILIES.values() for op in f]
    elif args.op in FAMILIES:
        ops = list(FAMILIES[args.op])
    elif any(args.op in f for f in FAMILIES.values()):
        ops = [args.op]
    else:
        p.error(f"unknown op {args.op!r}; choose all, {', '.join(FAMILIES)} or a kernel name")
    versions = [int(v) for v in args.versions.split(",")] if args.versions else None
    t = time.perf_counter()
    out = []
    for op in ops:
        out += bench(op, args.device, versions, args.shapes, np.dtype(args.dtype),
                     min_time=0.02 if args.shapes == "check" else 0.2)
    read_gbs = None
    if args.device == "cpu" and any(op.startswith("qmatmul") for op in ops):
        read_gbs = read_bandwidth_gbs(8 if args.shapes == "check" else args.read_mib)
    print_rows(out, f"{args.op} on {args.device}, {args.dtype}, shapes {args.shapes} "
                    f"({time.perf_counter() - t:.0f} s)", read_gbs)


if __name__ == "__main__":
    main()
