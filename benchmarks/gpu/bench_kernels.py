"""GPU kernel benchmark: check every CUDA kernel version against its reference, then time it.

    python benchmarks/gpu/bench_kernels.py                  # everything (a few minutes)
    python benchmarks/gpu/bench_kernels.py --only matmul,attention --runs 50

One run prints one table: kernel | version | shape | ms | TFLOP/s or GB/s | % of the vendor
baseline | % of the measured peak | check. Method:
  * validate first: each version runs once on the benchmark inputs and is compared with the
    reference (cuBLAS for matmul, kernels/reference.py on CuPy for the rest); a wrong kernel is
    reported as WRONG and never timed;
  * warm-up calls (NVRTC compile, cuBLAS heuristics, clocks), then >= --runs timed calls, each
    between two CUDA events on the current stream; the median is reported;
  * inputs rotate over enough copies to exceed 4x the L2 cache, so a call does not find its
    inputs in L2 left by the previous one;
  * peaks are measured in the same run: device-to-device copy bandwidth (cudaMemcpy D2D,
    bytes read + written), cuBLAS SGEMM / TF32 / FP16 throughput at 8192^3.
Vendor baselines: cuBLAS via cupy.matmul for matmul (TF32 through CuPy's compute-type
setting for v6), PyTorch (where it is installed, sharing the buffers through DLPack) for the
fused ops and SDPA for attention; for FP32 attention the unfused path (cuBLAS + softmax,
kernels/reference.py on CuPy) is the baseline, as in the issue's target.
Bytes and FLOPs are the minimum the op must do (each input read once, each output written
once; causal attention counts half the score matrix), written next to each case.
Without a GPU the script prints one line and exits.
"""

import argparse
import importlib
import math
import sys

import numpy as np


def need_gpu():
    try:
        import cupy as cp

        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # no cupy, no driver, no device
        sys.exit(
            f"bench_kernels: needs CuPy and an NVIDIA GPU ({type(e).__name__}: {e}); "
            "nothing measured"
        )
    if n < 1:
        sys.exit("bench_kernels: no CUDA device; nothing measured")
    return cp


def maybe_torch():
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except Exception:
        return None


K = lambda name: importlib.import_module(f"minillm.kernels.cuda.{name}")  # noqa: E731


def ladder_versions(module, op):
    """The versions of ``op`` in ``module.LADDERS`` (kernels/ladder.py), the table every
    benchmark and test reads."""
    return {lad.op: lad for lad in module.LADDERS}[op].versions


class Bench:
    def __init__(self, cp, runs, warmup):
        self.cp, self.runs, self.warmup = cp, runs, warmup
        self.l2 = int(cp.cuda.Device().attributes.get("L2CacheSize", 50 * 2**20))
        self.rows = []

    def copies(self, make, nbytes):
        """Enough independent input sets that rotating over them defeats the L2 cache."""
        n = int(min(8, max(1, math.ceil(4 * self.l2 / max(nbytes, 1)))))
        return [make(i) for i in range(n)]

    def time_ms(self, fn, sets):
        cp = self.cp
        for i in range(self.warmup):
            fn(*sets[i % len(sets)])
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        times = []
        for i in range(self.runs):
            args = sets[i % len(sets)]
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
        return float(np.median(times))

    def add(self, kernel, version, shape, ms, work, unit, vendor_ms=None, peak=None, check="ok"):
        """work: FLOPs (unit 'TFLOP/s') or bytes (unit 'GB/s'); peak in the same unit."""
        rate = None
        if ms is not None:
            rate = work / (ms * 1e-3) / (1e12 if unit == "TFLOP/s" else 1e9)
        self.rows.append(
            dict(
                kernel=kernel,
                version=str(version),
                shape=shape,
                ms=ms,
                rate=rate,
                unit=unit,
                vendor=(vendor_ms / ms * 100) if vendor_ms and ms else None,
                peak=(rate / peak * 100) if rate and peak else None,
                check=check,
            )
        )
        r = self.rows[-1]
        print(
            f"  {kernel:22s} {r['version']:10s} {shape:24s} "
            + (f"{ms:9.3f} ms" if ms is not None else "        -   ")
            + f"  {check}",
            flush=True,
        )

    def table(self):
        head = (
            f"{'kernel':22s} {'version':10s} {'shape':24s} {'ms':>9s} {'rate':>16s} "
            f"{'% vendor':>9s} {'% peak':>7s}  check"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            ms = f"{r['ms']:9.3f}" if r["ms"] is not None else f"{'-':>9s}"
            rate = f"{r['rate']:9.1f} {r['unit']:>6s}" if r["rate"] is not None else f"{'-':>16s}"
            ven = f"{r['vendor']:8.0f}%" if r["vendor"] is not None else f"{'-':>9s}"
            pk = f"{r['peak']:6.0f}%" if r["peak"] is not None else f"{'-':>7s}"
            lines.append(
                f"{r['kernel']:22s} {r['version']:10s} {r['shape']:24s} {ms} {rate} {ven} {pk}  "
                f"{r['check']}"
            )
        return "\n".join(lines)


def rel_err(cp, got, want):
    got, want = got.astype(cp.float64), want.astype(cp.float64)
    return float(cp.linalg.norm(got - want) / max(float(cp.linalg.norm(want)), 1e-30))


def checked(b, name, version, shape, got, want, tol):
    """True when got matches want; otherwise one WRONG row (the kernel is not timed)."""
    outs = got if isinstance(got, (tuple, list)) else (got,)
    refs = want if isinstance(want, (tuple, list)) else (want,)
    errs = [rel_err(b.cp, g, w) for g, w in zip(outs, refs) if w is not None]
    worst = max(errs) if errs else 0.0
    if not np.isfinite(worst) or worst > tol:
        b.add(name, version, shape, None, 0, "GB/s", check=f"WRONG (rel err {worst:.2e} > {tol})")
        return False
    return True


# --------------------------------------------------------------------------------- peaks
def measure_peaks(b):
    cp = b.cp
    nbytes = 1 << 30
    src, dst = cp.empty(nbytes, cp.uint8), cp.empty(nbytes, cp.uint8)
    src.fill(1)
    ms = b.time_ms(lambda: dst.data.copy_from_device_async(src.data, nbytes), [()])
    bw = 2 * nbytes / (ms * 1e-3) / 1e9  # read + write
    b.add("peak: D2D copy", "memcpy", "1 GiB", ms, 2 * nbytes, "GB/s")
    peaks = {"GB/s": bw}
    n = 8192
    for label, dtype, tf32 in (
        ("SGEMM", cp.float32, False),
        ("TF32", cp.float32, True),
        ("HGEMM", cp.float16, False),
    ):
        a = cp.random.standard_normal((n, n), dtype=cp.float32).astype(dtype)
        with tf32_mode(cp, tf32):
            ms = b.time_ms(lambda: a @ a, [()])
        flops = 2 * n**3
        peaks[label] = flops / (ms * 1e-3) / 1e12
        b.add(f"peak: cuBLAS {label}", "cuBLAS", f"{n}^3", ms, flops, "TFLOP/s")
    return peaks


class tf32_mode:
    """cupy.matmul on float32 with TF32 tensor cores inside the block (CuPy's compute type)."""

    def __init__(self, cp, on):
        self.on = on
        from cupy._core import _routines_linalg as L

        self.L = L

    def __enter__(self):
        if self.on:
            self.L.set_compute_type(np.float32, getattr(self.L, "COMPUTE_TYPE_TF32", 7))

    def __exit__(self, *exc):
        if self.on:
            self.L.set_compute_type(np.float32, getattr(self.L, "COMPUTE_TYPE_DEFAULT", 1))


# --------------------------------------------------------------------------------- matmul
def bench_matmul(b, peaks, torch):
    cp, KM = b.cp, K("matmul")
    M = N = Kd = 4096  # FLOPs = 2 M N K = 137.4 G
    shape = f"{M}x{Kd} @ {Kd}x{N}"

    def make(i):
        return (
            cp.random.standard_normal((M, Kd), dtype=cp.float32),
            cp.random.standard_normal((Kd, N), dtype=cp.float32),
        )

    sets = b.copies(make, 3 * M * N * 4)
    flops = 2 * M * N * Kd
    ref = sets[0][0] @ sets[0][1]
    cublas = b.time_ms(lambda a, c: a @ c, sets)
    b.add("matmul", "cuBLAS", shape, cublas, flops, "TFLOP/s", cublas, peaks["SGEMM"])
    with tf32_mode(cp, True):
        cublas_tf32 = b.time_ms(lambda a, c: a @ c, sets)
    b.add("matmul", "cuBLAS-TF32", shape, cublas_tf32, flops, "TFLOP/s", cublas_tf32, peaks["TF32"])
    for v in [v for v in ladder_versions(KM, "matmul") if v != 7]:  # 7 is cuBLAS, timed above
        tf32 = v in KM.TF32_VERSIONS
        fn = getattr(KM, f"matmul_v{v}")
        if not checked(b, "matmul", f"v{v}", shape, fn(*sets[0]), ref, 2e-3 if tf32 else 1e-5):
            continue
        ms = b.time_ms(fn, sets)
        b.add(
            "matmul",
            f"v{v}" + ("-TF32" if tf32 else ""),
            shape,
            ms,
            flops,
            "TFLOP/s",
            cublas_tf32 if tf32 else cublas,
            peaks["TF32" if tf32 else "SGEMM"],
        )
    # fused epilogue at the GPT-2 MLP shape: (B*T, C) @ (C, 4C) + bias, GELU
    M, Kd, N = 8192, 768, 3072
    shape = f"{M}x{Kd} @ {Kd}x{N}"

    def make_mlp(i):
        return (
            cp.random.standard_normal((M, Kd), dtype=cp.float32),
            cp.random.standard_normal((Kd, N), dtype=cp.float32),
            cp.random.standard_normal(N, dtype=cp.float32),
        )

    sets = b.copies(make_mlp, (M * Kd + Kd * N + M * N) * 4)
    flops = 2 * M * N * Kd
    bg = K("gelu").bias_gelu_forward
    unfused = lambda a, w, bias: bg(a @ w, bias)  # noqa: E731
    base = b.time_ms(unfused, sets)
    b.add("matmul+bias+gelu", "cuBLAS+gelu", shape, base, flops, "TFLOP/s", base, peaks["SGEMM"])
    ref = unfused(*sets[0])
    for v in KM.EPILOGUE_VERSIONS:
        tf32 = v in KM.TF32_VERSIONS
        fn = lambda a, w, bias, v=v: KM.matmul_bias_gelu(a, w, bias, version=v)  # noqa: E731
        if checked(
            b, "matmul+bias+gelu", f"v{v}", shape, fn(*sets[0]), ref, 2e-3 if tf32 else 1e-5
        ):
            ms = b.time_ms(fn, sets)
            b.add(
                "matmul+bias+gelu",
                f"v{v}" + ("-TF32" if tf32 else ""),
                shape,
                ms,
                flops,
                "TFLOP/s",
                base,
                peaks["TF32" if tf32 else "SGEMM"],
            )


# --------------------------------------------------------------------------------- row ops
def _rand(cp, shape, scale=1.0):
    return (scale * cp.random.standard_normal(shape, dtype=cp.float32)).astype(cp.float32)


def bench_layernorm(b, peaks, torch):
    cp, KL = b.cp, K("layernorm")
    from minillm.kernels import reference as R

    N, C = 8192, 768  # GPT-2 124M: B*T = 8 x 1024, C = 768
    shape = f"N={N} C={C}"
    sets = b.copies(
        lambda i: (_rand(cp, (N, C)), _rand(cp, C), _rand(cp, C), _rand(cp, (N, C))), 3 * N * C * 4
    )
    x, w, bb, dy = sets[0]
    ref = R.layernorm_forward(x, w, bb, 1e-5)
    fwd_bytes = 2 * N * C * 4  # read x, write y (mean/rstd/w/b are < 0.5%)
    bwd_bytes = 3 * N * C * 4  # read dy, x; write dx
    tv = None
    if torch is not None:
        t = [tuple(torch.from_dlpack(a) for a in s) for s in sets]
        tv = b.time_ms(
            lambda x, w, bb, dy: torch.ops.aten.native_layer_norm(x, [C], w, bb, 1e-5), t
        )
        b.add("layernorm_forward", "torch", shape, tv, fwd_bytes, "GB/s", tv, peaks["GB/s"])
    for v in ladder_versions(KL, "layernorm_forward"):
        fn = lambda x, w, bb, dy, v=v: KL.forward(v, x, w, bb, 1e-5)  # noqa: E731
        if checked(b, "layernorm_forward", f"v{v}", shape, fn(*sets[0]), ref, 1e-5):
            b.add(
                "layernorm_forward",
                f"v{v}",
                shape,
                b.time_ms(fn, sets),
                fwd_bytes,
                "GB/s",
                tv,
                peaks["GB/s"],
            )
    mean, rstd = ref[1], ref[2]
    refb = R.layernorm_backward(dy, x, w, mean, rstd)
    tv = None
    if torch is not None:
        tm, tr = torch.from_dlpack(mean).reshape(N, 1), torch.from_dlpack(rstd).reshape(N, 1)
        t = [tuple(torch.from_dlpack(a) for a in s) for s in sets]
        tv = b.time_ms(
            lambda x, w, bb, dy: torch.ops.aten.native_layer_norm_backward(
                dy, x, [C], tm, tr, w, bb, [True, True, True]
            ),
            t,
        )
        b.add("layernorm_backward", "torch", shape, tv, bwd_bytes, "GB/s", tv, peaks["GB/s"])
    for v in ladder_versions(KL, "layernorm_backward"):
        fn = lambda x, w, bb, dy, v=v: KL.backward(v, dy, x, w, mean, rstd)  # noqa: E731
        if checked(b, "layernorm_backward", f"v{v}", shape, fn(*sets[0]), refb, 1e-5):
            b.add(
                "layernorm_backward",
                f"v{v}",
                shape,
                b.time_ms(fn, sets),
                bwd_bytes,
                "GB/s",
                tv,
                peaks["GB/s"],
            )


def bench_softmax(b, peaks, torch):
    cp, KS = b.cp, K("softmax")
    from minillm.kernels import reference as R

    for N, V, versions in ((8192, 1024, (1, 2, 3)), (8192, 50304, (2, 3))):
        shape = f"N={N} V={V}"
        sets = b.copies(lambda i: (_rand(cp, (N, V), 4.0),), 2 * N * V * 4)
        ref = R.softmax_forward(sets[0][0])
        nbytes = 2 * N * V * 4  # read x, write y
        tv = None
        if torch is not None:
            t = [(torch.from_dlpack(s[0]),) for s in sets]
            tv = b.time_ms(lambda x: torch.softmax(x, -1), t)
            b.add("softmax_forward", "torch", shape, tv, nbytes, "GB/s", tv, peaks["GB/s"])
        for v in versions:
            fn = lambda x, v=v: KS.run("softmax_forward", v, x)  # noqa: E731
            if checked(b, "softmax_forward", f"v{v}", shape, fn(*sets[0]), ref, 1e-5):
                b.add(
                    "softmax_forward",
                    f"v{v}",
                    shape,
                    b.time_ms(fn, sets),
                    nbytes,
                    "GB/s",
                    tv,
                    peaks["GB/s"],
                )


def bench_crossentropy(b, peaks, torch):
    cp, KC = b.cp, K("crossentropy")
    from minillm.kernels import reference as R
    from minillm.kernels import registry

    N, V = 8192, 50304  # GPT-2 124M LM head: B*T = 8192 rows, padded vocabulary
    shape = f"N={N} V={V}"
    sets = b.copies(
        lambda i: (_rand(cp, (N, V), 3.0), cp.random.randint(0, V, N).astype(cp.int64)), N * V * 4
    )
    logits, t = sets[0]
    ref = R.cross_entropy_forward(logits, t, -100)
    fwd_bytes, bwd_bytes = N * V * 4, 2 * N * V * 4  # forward reads logits; backward reads + writes
    tv = None
    if torch is not None:
        tt = [(torch.from_dlpack(lg), torch.from_dlpack(y)) for lg, y in sets]
        tv = b.time_ms(lambda lg, y: torch.nn.functional.cross_entropy(lg, y), tt)
        b.add("cross_entropy_forward", "torch", shape, tv, fwd_bytes, "GB/s", tv, peaks["GB/s"])
    for v in ladder_versions(KC, "cross_entropy_forward"):
        fn = lambda lg, y, v=v: KC.forward(v, lg, y, -100)  # noqa: E731
        if checked(b, "cross_entropy_forward", f"v{v}", shape, fn(*sets[0]), ref, 1e-5):
            b.add(
                "cross_entropy_forward",
                f"v{v}",
                shape,
                b.time_ms(fn, sets),
                fwd_bytes,
                "GB/s",
                tv,
                peaks["GB/s"],
            )
    lse = ref[1]
    refb = R.cross_entropy_backward(1.0, logits, lse, t, -100)
    for v in ladder_versions(KC, "cross_entropy_backward"):
        fn = lambda lg, y, v=v: KC.backward(v, 1.0, lg, lse, y, -100)  # noqa: E731
        if checked(b, "cross_entropy_backward", f"v{v}", shape, fn(*sets[0]), refb, 1e-5):
            b.add(
                "cross_entropy_backward",
                f"v{v}",
                shape,
                b.time_ms(fn, sets),
                bwd_bytes,
                "GB/s",
                None,
                peaks["GB/s"],
            )
    if torch is not None:  # fused forward + backward against PyTorch's
        tt = [
            (torch.from_dlpack(lg).clone().requires_grad_(True), torch.from_dlpack(y))
            for lg, y in sets
        ]

        def torch_fb(lg, y):
            lg.grad = None
            torch.nn.functional.cross_entropy(lg, y).backward()

        tv = b.time_ms(torch_fb, tt)
        b.add("cross_entropy fwd+bwd", "torch", shape, tv, 3 * N * V * 4, "GB/s", tv, peaks["GB/s"])

        def ours(lg, y):
            loss, s = registry.get("cross_entropy_forward", lg)(lg, y, -100)
            return registry.get("cross_entropy_backward", lg)(1.0, lg, s, y, -100)

        b.add(
            "cross_entropy fwd+bwd",
            "default",
            shape,
            b.time_ms(ours, sets),
            3 * N * V * 4,
            "GB/s",
            tv,
            peaks["GB/s"],
        )


def bench_gelu(b, peaks, torch):
    cp, KG = b.cp, K("gelu")
    from minillm.kernels import reference as R

    N, C = 8192, 3072  # the MLP's hidden activation at GPT-2 124M shapes
    shape = f"N={N} C={C}"
    sets = b.copies(lambda i: (_rand(cp, (N, C)), _rand(cp, (N, C)), _rand(cp, C)), 3 * N * C * 4)
    x, dy, bias = sets[0]
    cases = [
        ("gelu_forward", lambda x, dy, bias: (x,), R.gelu_forward(x), 2),
        ("gelu_backward", lambda x, dy, bias: (dy, x), R.gelu_backward(dy, x), 3),
        ("bias_gelu_forward", lambda x, dy, bias: (x, bias), R.bias_gelu_forward(x, bias), 2),
        (
            "bias_gelu_backward",
            lambda x, dy, bias: (dy, x, bias),
            R.bias_gelu_backward(dy, x, bias),
            3,
        ),
    ]
    for op, args, ref, passes in cases:
        nbytes = passes * N * C * 4
        tv = None
        if torch is not None and op in ("gelu_forward", "gelu_backward"):
            t = [tuple(torch.from_dlpack(a) for a in s) for s in sets]
            if op == "gelu_forward":
                tv = b.time_ms(
                    lambda x, dy, bias: torch.nn.functional.gelu(x, approximate="tanh"), t
                )
            else:
                tv = b.time_ms(
                    lambda x, dy, bias: torch.ops.aten.gelu_backward(dy, x, approximate="tanh"), t
                )
            b.add(op, "torch", shape, tv, nbytes, "GB/s", tv, peaks["GB/s"])
        for v in ladder_versions(KG, op):
            fn = lambda x, dy, bias, v=v, op=op, args=args: KG.run(op, v, *args(x, dy, bias))  # noqa: E731
            if checked(b, op, f"v{v}", shape, fn(*sets[0]), ref, 1e-5):
                b.add(op, f"v{v}", shape, b.time_ms(fn, sets), nbytes, "GB/s", tv, peaks["GB/s"])


def bench_adamw(b, peaks, torch):
    cp, KA = b.cp, K("adamw")
    from minillm.kernels import reference as R

    n = 124_475_904  # GPT-2 124M parameters (vocab 50304), one flat buffer
    shape = f"n={n / 1e6:.1f}M"
    nbytes = 28 * n  # read p, g, m, v; write p, m, v (float32)
    make = lambda i: tuple(cp.abs(_rand(cp, n, 0.01)) for _ in range(4))  # noqa: E731
    sets = b.copies(make, 16 * n)
    hp = (1e-3, 0.9, 0.95, 1e-8, 0.1, 10)
    p, g, m, v = (a.copy() for a in sets[0])
    m, v = m * 0.1, cp.abs(v) * 1e-4
    want = [a.copy() for a in (p, m, v)]
    R.adamw_step(want[0], g, want[1], want[2], *hp)
    tv = None
    if torch is not None:
        tp = torch.nn.Parameter(torch.zeros(n, device="cuda"))
        tp.grad = torch.randn(n, device="cuda")
        try:
            opt = torch.optim.AdamW([tp], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
            tv = b.time_ms(opt.step, [()])
            b.add("adamw_step", "torch-fused", shape, tv, nbytes, "GB/s", tv, peaks["GB/s"])
        except Exception as e:  # an old PyTorch without fused AdamW
            print(f"  (torch fused AdamW unavailable: {e})")
    for ver in ladder_versions(KA, "adamw_step"):
        got = [a.copy() for a in (p, m, v)]
        KA.run(ver, got[0], g, got[1], got[2], *hp)
        if checked(b, "adamw_step", f"v{ver}", shape, got, want, 1e-5):
            fn = lambda p, g, m, v, ver=ver: KA.run(ver, p, g, m, v, *hp)  # noqa: E731
            b.add(
                "adamw_step",
                f"v{ver}",
                shape,
                b.time_ms(fn, sets),
                nbytes,
                "GB/s",
                tv,
                peaks["GB/s"],
            )


# --------------------------------------------------------------------------------- attention
def bench_attention(b, peaks, torch):
    cp, KT = b.cp, K("attention")
    from minillm.kernels import reference as R

    B, H, T, D = 16, 12, 1024, 64  # B*H = 192, GPT-2 124M heads
    scale = 1.0 / math.sqrt(D)
    shape = f"BH={B * H} T={T} D={D}"
    fwd_flops = 2 * 2 * B * H * T * T * D // 2  # q k^T and p v, causal half
    bwd_flops = 5 * 2 * B * H * T * T * D // 2  # s recomputed, dv, dp, dq, dk
    for dtype, version, tol in (("float32", 1, 1e-4), ("float16", 2, 1e-2), ("bfloat16", 2, 3e-2)):
        dt = cp.dtype(dtype) if dtype != "bfloat16" else _bf16(cp)
        if dt is None:
            print("  (no bfloat16 arrays in this CuPy: skipping bf16 attention)")
            continue
        nb = 4 * B * H * T * D * dt.itemsize
        sets = b.copies(lambda i: tuple(_rand(cp, (B, H, T, D)).astype(dt) for _ in range(4)), nb)
        q, k, v, do = sets[0]
        q32, k32, v32, do32 = (a.astype(cp.float32) for a in (q, k, v, do))
        ro, rl = R.attention_forward(q32, k32, v32, scale, True)
        peak = peaks["SGEMM"] if dtype == "float32" else peaks["HGEMM"]
        tag = f"v{version}-{dtype}"
        # baseline: the unfused path for FP32 (cuBLAS + softmax), PyTorch SDPA for 16-bit
        if dtype == "float32":
            base = b.time_ms(lambda q, k, v, do: R.attention_forward(q, k, v, scale, True), sets)
            b.add(
                "attention_forward", "unfused-fp32", shape, base, fwd_flops, "TFLOP/s", base, peak
            )
        elif torch is not None:
            t = [tuple(torch.from_dlpack(a) for a in s) for s in sets]
            sdpa = torch.nn.functional.scaled_dot_product_attention
            base = b.time_ms(lambda q, k, v, do: sdpa(q, k, v, is_causal=True), t)
            b.add(
                "attention_forward", f"sdpa-{dtype}", shape, base, fwd_flops, "TFLOP/s", base, peak
            )
        else:
            base = None
        fwd = lambda q, k, v, do: KT.forward(version, q, k, v, scale, True)  # noqa: E731
        o, lse = fwd(*sets[0])
        if not checked(b, "attention_forward", tag, shape, (o, lse), (ro, rl), tol):
            continue
        b.add(
            "attention_forward", tag, shape, b.time_ms(fwd, sets), fwd_flops, "TFLOP/s", base, peak
        )
        rdq, rdk, rdv = R.attention_backward(do32, q32, k32, v32, ro, rl, scale, True)
        bwd = lambda q, k, v, do: KT.backward(version, do, q, k, v, o, lse, scale, True)  # noqa: E731
        if not checked(b, "attention_backward", tag, shape, bwd(*sets[0]), (rdq, rdk, rdv), tol):
            continue
        b.add(
            "attention_backward", tag, shape, b.time_ms(bwd, sets), bwd_flops, "TFLOP/s", None, peak
        )
        if torch is not None and dtype != "float32":  # forward + backward against SDPA's
            t = [
                tuple(torch.from_dlpack(a).clone().requires_grad_(i < 3) for i, a in enumerate(s))
                for s in sets
            ]

            def sdpa_fb(q, k, v, do):
                q.grad = k.grad = v.grad = None
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).backward(
                    do
                )

            tv = b.time_ms(sdpa_fb, t)
            b.add(
                "attention fwd+bwd",
                f"sdpa-{dtype}",
                shape,
                tv,
                fwd_flops + bwd_flops,
                "TFLOP/s",
                tv,
                peak,
            )

            def ours_fb(q, k, v, do):
                o, lse = KT.forward(version, q, k, v, scale, True)
                return KT.backward(version, do, q, k, v, o, lse, scale, True)

            b.add(
                "attention fwd+bwd",
                tag,
                shape,
                b.time_ms(ours_fb, sets),
                fwd_flops + bwd_flops,
                "TFLOP/s",
                tv,
                peak,
            )


# --------------------------------------------------------------------------------- Llama ops
def _rungs(op):
    from minillm.kernels import registry

    return registry.ladder(op, "cuda").rungs


def _time_rungs(b, op, shape, sets, ref, nbytes, base_ms, peak, tol=1e-5):
    """Every rung of ``op`` (kernels/cuda LADDERS) on ``sets``: checked against ``ref``, timed."""
    for rung in _rungs(op):
        why = rung.reason_not(*sets[0])
        if why is not None:
            b.add(op, f"v{rung.version}", shape, None, 0, "GB/s", check=f"declines: {why}")
            continue
        if checked(b, op, f"v{rung.version}", shape, rung.run(*sets[0]), ref, tol):
            b.add(op, f"v{rung.version}", shape, b.time_ms(rung.run, sets), nbytes, "GB/s",
                  base_ms, peak)


def bench_llama(b, peaks, torch):
    """RMSNorm, RoPE and SwiGLU at SmolLM2-135M's widths over B*T = 8192 tokens."""
    cp = b.cp
    from minillm.kernels import reference as R

    N, C, F = 8192, 576, 1536  # tokens; SmolLM2-135M hidden and MLP widths
    shape = f"N={N} C={C}"
    sets = b.copies(lambda i: (_rand(cp, (N, C)), 1 + _rand(cp, C, 0.1), 1e-5), 2 * N * C * 4)
    ref = R.rms_norm_forward(*sets[0])
    tv = None
    if torch is not None and hasattr(torch.nn.functional, "rms_norm"):
        t = [(torch.from_dlpack(x), torch.from_dlpack(w)) for x, w, _ in sets]
        tv = b.time_ms(lambda x, w: torch.nn.functional.rms_norm(x, [C], w, 1e-5), t)
        b.add("rms_norm_forward", "torch", shape, tv, 2 * N * C * 4, "GB/s", tv, peaks["GB/s"])
    _time_rungs(b, "rms_norm_forward", shape, sets, ref, 2 * N * C * 4, tv, peaks["GB/s"])
    x, w, _ = sets[0]
    rr = ref[1]
    bsets = b.copies(lambda i: (_rand(cp, (N, C)), x, w, rr), 3 * N * C * 4)
    _time_rungs(b, "rms_norm_backward", shape, bsets, R.rms_norm_backward(*bsets[0]),
                3 * N * C * 4, None, peaks["GB/s"], 1e-4)

    B, H, T, D = 8, 9, 1024, 64  # q of SmolLM2-135M at B 8, T 1024
    shape = f"B={B} H={H} T={T} D={D}"
    cos, sin = (cp.asarray(a) for a in R.rope_cos_sin(np.arange(T), D, 100000.0))
    nbytes = 2 * B * H * T * D * 4  # read x, write y (the angles stay in L2)
    sets = b.copies(lambda i: (_rand(cp, (B, H, T, D)), cos, sin, False), nbytes)
    for op in ("rope_forward", "rope_backward"):
        _time_rungs(b, op, shape, sets, getattr(R, op)(*sets[0]), nbytes, None, peaks["GB/s"])

    shape = f"N={N} F={F}"
    sets = b.copies(lambda i: (_rand(cp, (N, F), 3.0), _rand(cp, (N, F))), 3 * N * F * 4)
    tv = None
    if torch is not None:
        t = [tuple(torch.from_dlpack(a) for a in s) for s in sets]
        tv = b.time_ms(lambda g, u: torch.nn.functional.silu(g) * u, t)
        b.add("swiglu_forward", "torch", shape, tv, 3 * N * F * 4, "GB/s", tv, peaks["GB/s"])
    _time_rungs(b, "swiglu_forward", shape, sets, R.swiglu_forward(*sets[0]), 3 * N * F * 4,
                tv, peaks["GB/s"])
    bsets = [(_rand(cp, (N, F)),) + s for s in sets]
    _time_rungs(b, "swiglu_backward", shape, bsets, R.swiglu_backward(*bsets[0]), 5 * N * F * 4,
                None, peaks["GB/s"])


def bench_qmatmul(b, peaks, torch):
    """Products with Q8_0/Q4_0/Q4_1 weights against cuBLAS on the dequantized float32 matrix:
    decoding (N = 1, SmolLM2's tied head 49152 x 576: bound by W's bytes) and a prompt (N = 512
    at the MLP's up projection 1536 x 576: bound by arithmetic)."""
    cp = b.cp
    from minillm.kernels import quant
    from minillm.kernels import reference as R

    for fmt in ("Q8_0", "Q4_0", "Q4_1"):
        for N, Mo, Kd in ((1, 49152, 576), (512, 1536, 576)):
            rng = np.random.default_rng(0)
            host = quant.QuantWeight.from_float(
                (0.05 * rng.standard_normal((Mo, Kd))).astype(np.float32), fmt)
            wbytes = host.blocks.nbytes
            nbytes = wbytes + 4 * N * (Kd + Mo)  # W's blocks, x and y once
            flops = 2 * N * Mo * Kd
            shape = f"{fmt} N={N} {Mo}x{Kd}"

            def make(i):  # called at once by b.copies: the loop's values
                qw = quant.QuantWeight(host.qtype, host.shape, cp.asarray(host.blocks))
                return _rand(cp, (N, Kd)), qw

            sets = b.copies(make, wbytes + 4 * N * Kd)
            x0, _ = sets[0]
            ref = cp.asarray(R.qmatmul_forward(cp.asnumpy(x0).astype(np.float64), host))
            wf = cp.asarray(host.dequantize())  # (Mo, K) float32: the cuBLAS baseline's matrix
            dense = [(x, wf) for x, _ in sets]
            base = b.time_ms(lambda x, w: x @ w.T, dense)
            unit, work = ("GB/s", nbytes) if N == 1 else ("TFLOP/s", flops)
            peak = peaks["GB/s"] if N == 1 else peaks["SGEMM"]
            b.add("qmatmul_forward", "cuBLAS-f32", shape, base,
                  (4 * Mo * Kd + 4 * N * (Kd + Mo)) if N == 1 else flops, unit, base, peak)
            for rung in _rungs("qmatmul_forward"):
                why = rung.reason_not(*sets[0])
                if why is not None:
                    b.add("qmatmul_forward", f"v{rung.version}", shape, None, 0, unit,
                          check=f"declines: {why}")
                    continue
                if checked(b, "qmatmul_forward", f"v{rung.version}", shape, rung.run(*sets[0]),
                           ref, 1e-5):
                    b.add("qmatmul_forward", f"v{rung.version}", shape, b.time_ms(rung.run, sets),
                          work, unit, base, peak)
            del wf, dense, sets


def _bf16(cp):
    try:
        import ml_dtypes

        dt = np.dtype(ml_dtypes.bfloat16)
        cp.zeros(4, cp.float32).astype(dt)
        return dt
    except Exception:
        return None


SUITES = {
    "matmul": bench_matmul,
    "layernorm": bench_layernorm,
    "softmax": bench_softmax,
    "crossentropy": bench_crossentropy,
    "gelu": bench_gelu,
    "adamw": bench_adamw,
    "attention": bench_attention,
    "llama": bench_llama,
    "qmatmul": bench_qmatmul,
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SUITES)}")
    ap.add_argument("--runs", type=int, default=25, help="timed calls per case (median; >= 20)")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    cp = need_gpu()
    names = [s for s in args.only.split(",") if s] or list(SUITES)
    unknown = [s for s in names if s not in SUITES]
    if unknown:
        sys.exit(f"bench_kernels: unknown suite(s) {unknown}; choose from {', '.join(SUITES)}")
    torch = maybe_torch()
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    print(
        f"device: {dev['name'].decode() if isinstance(dev['name'], bytes) else dev['name']}, "
        f"CuPy {cp.__version__}, PyTorch {torch.__version__ if torch else 'not installed'}"
    )
    b = Bench(cp, max(args.runs, 20), args.warmup)
    peaks = measure_peaks(b)
    for name in names:
        print(f"[{name}]", flush=True)
        SUITES[name](b, peaks, torch)
        cp.get_default_memory_pool().free_all_blocks()
    print()
    print(b.table())
    wrong = [f"{r['kernel']} {r['version']}" for r in b.rows if r["check"].startswith("WRONG")]
    timed = sum(r["ms"] is not None for r in b.rows)
    print(f"SUMMARY: {timed} timed, {len(wrong)} WRONG" + (f" ({', '.join(wrong)})" if wrong else ""))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
