"""Every version of a kernel vs kernels/reference.py, driven by the op's ladder (LADDERS).

    python benchmarks/bench_kernels.py --op softmax                 # CPU, every version
    python benchmarks/bench_kernels.py --op attention --versions 5,7
    python benchmarks/bench_kernels.py --op layernorm --device cuda # the CUDA ladder (CuPy)
    python benchmarks/bench_kernels.py --op all --shapes check      # every op at tiny sizes

``--op`` takes a family (softmax, log_softmax, cross_entropy, layernorm, gelu, bias_gelu,
attention, adamw, matmul) or one kernel name (``softmax_backward``). For each kernel, shape and
version the script builds the inputs, runs the reference and the version on copies of them,
refuses to time a version whose outputs differ from the reference's (an AssertionError names
it), then times both (the fastest of many single calls after a warm-up: JIT and NVRTC compile
excluded; benchmarks/_cpu_bench.py) and prints ms, GB/s (inputs read once, outputs written
once) or GFLOP/s (matmul, attention), and the speed-up over the reference. Versions a rung's
``fits`` refuses for an input are skipped with the reason. report.py prints ``rows()``: the
default versions of every op. Shapes: "tiny" and "small" are the Shakespeare configs (B*T =
768 / 2048 rows, C = 128 / 384), "check" a few rows only, to see that the script runs.
"""

import argparse  # noqa: I001  (minillm before numpy, below)
import sys
import time

import minillm  # noqa: F401  (first: minillm/_env.py's settings apply only before NumPy loads)
import numpy as np

from _cpu_bench import assert_close, best_ms
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
    "adamw": ("adamw_step",),
    "matmul": ("matmul",),
}

# Shapes per family and size set: (N, C) rows, (B, H, T, D) attention, (M, K, N) matmul,
# (n,) parameters for AdamW (all parameters of the small GPT as one buffer, one MLP weight).
SHAPES = {
    "check": {"rows": [(33, 65)], "vocab": [(33, 65)], "wide": [(33, 130)],
              "attention": [(1, 2, 37, 16)], "matmul": [(33, 17, 65)], "adamw": [(4097,)]},
    "tiny": {"rows": [(768, 128)], "vocab": [(768, 65)], "wide": [(768, 512)],
             "attention": [(12, 4, 64, 32)], "matmul": [(768, 128, 512)],
             "adamw": [(1536 * 384,)]},
    "small": {"rows": [(2048, 384)], "vocab": [(2048, 65), (2048, 2048)], "wide": [(2048, 1536)],
              "attention": [(8, 6, 256, 64)], "matmul": [(2048, 384, 1152)],
              "adamw": [(10_750_000,)]},
}
KIND = {"softmax": "vocab", "log_softmax": "vocab", "cross_entropy": "vocab", "layernorm": "rows",
        "gelu": "wide", "bias_gelu": "wide", "attention": "attention", "adamw": "adamw",
        "matmul": "matmul"}


# --------------------------------------------------------------------------- inputs
def _x(rng, shape, dt, scale=1.0, shift=0.0):
    return (scale * rng.standard_normal(shape) + shift).astype(dt)


def make(op, shape, dt, seed=0):
    """The arguments of kernel ``op`` as kernels/reference.py takes them, at ``shape``."""
    rng = np.random.default_rng(seed)
    if op == "matmul":
        M, K, N = shape
        return _x(rng, (M, K), dt), _x(rng, (K, N), dt)
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
    N, C = shape
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
    if op.startswith("attention"):
        B, H, T, D = shape  # causal: T (T + 1) / 2 visible pairs; fwd 2 products, bwd 5
        return (4 if op.endswith("forward") else 10) * B * H * (T * (T + 1) // 2) * D
    return None


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
    for shape in SHAPES[shapes][KIND[_family(op)]]:
        host_args = make(op, shape, dtype)
        args = dev.put(host_args)
        want = _outputs(op, ref, host_args, Device("cpu"))
        ref_ms = best_ms(dev.timed(lambda a=args: ref(*dev.copy(a))), min_time=min_time)
        nbytes = sum(a.nbytes for a in host_args if isinstance(a, np.ndarray))
        nbytes += sum(np.asarray(w).nbytes for w in (want if isinstance(want, list) else [want])
                      if w is not None)
        for v in versions or lad.versions:
            rung = lad.rung(v)
            reason = rung.reason_not(*args)
            if reason is not None:
                print(f"skipped {op} v{v} at {shape}: {reason}", file=sys.stderr)
                continue
            assert_close(_outputs(op, rung.run, args, dev), want, f"{op} v{v} {shape}")
            ms = best_ms(dev.timed(lambda r=rung, a=args: r.run(*dev.copy(a))), min_time=min_time)
            f = flops(op, shape)
            rows.append({"op": op, "version": v, "shape": "x".join(map(str, shape)),
                         "ref_ms": ref_ms, "ms": ms, "speedup": ref_ms / ms,
                         "gbs": nbytes / ms / 1e6, "gflops": f / ms / 1e6 if f else None})
    return rows


def _family(op):
    return next(f for f, ops in FAMILIES.items() if op in ops)


def print_rows(rows, title):
    print(f"\n{title}")
    print(f"{'op':24s} {'ver':>3s} {'shape':>16s} {'ref ms':>9s} {'ms':>9s} {'GB/s':>7s} "
          f"{'GFLOP/s':>8s} {'x ref':>7s}")
    for r in rows:
        gf = f"{r['gflops']:8.1f}" if r["gflops"] else f"{'':8s}"
        print(f"{r['op']:24s} {r['version']:>3} {r['shape']:>16s} {r['ref_ms']:9.3f} "
              f"{r['ms']:9.3f} {r['gbs']:7.1f} {gf} {r['speedup']:6.2f}x")


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
    print_rows(out, f"{args.op} on {args.device}, {args.dtype}, shapes {args.shapes} "
                    f"({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
