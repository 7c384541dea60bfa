"""Launchers for kernels/cuda/adamw.cu: the fused in-place AdamW step, v1..v2 (see its header).

The rungs have the signature of kernels/reference.py ``adamw_step(p, g, m, v, lr, beta1, beta2,
eps, weight_decay, step)`` and update p, m, v in place. They take float32 buffers that are
contiguous (any shape, seen flat); anything else (another dtype, a strided view that cannot be
updated through a flat pointer) runs the reference, which also updates in place. The table is
``LADDERS``.
"""

import math

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "adamw.cu"
DEFINES = dict(AW_THREADS=256)
CONFIGS = [(FILE, DEFINES), (FILE, dict(AW_THREADS=512))]


def kernel_names(defines):
    return ["adamw_step_v1", "adamw_step_v2"]


def fits(p, g, m, v, *hyper):
    """C-contiguous float32 p, g, m, v of one shape, under 2^31 elements"""
    arrs = (p, g, m, v)
    ok = (
        all(cc.is_cupy(a) and cc.dtype_name(a) == "float32" and a.flags.c_contiguous for a in arrs)
        and len({a.shape for a in arrs}) == 1
        and p.size < 2**31
    )
    return None if ok else f"{cc.dtype_name(p)} or strided buffers"


def run(version, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    import cupy as cp

    n = p.size
    if n == 0:
        return
    rbc1 = 1.0 / (1.0 - beta1**step)
    rsbc2 = 1.0 / math.sqrt(1.0 - beta2**step)
    scalars = [float(s) for s in (lr, beta1, beta2, eps, weight_decay, rbc1, rsbc2)]
    T = DEFINES["AW_THREADS"]
    fn = cc.function(FILE, f"adamw_step_v{version}", DEFINES)
    if version == 1:
        cc.launch(fn, cc.ceil_div(n, T), T, (p, g, m, v, n, *scalars))
    else:
        sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        blocks = max(1, min(cc.ceil_div(n, 4 * T), 8 * sms))
        cc.launch(fn, blocks, T, (p, g, m, v, n, *scalars, cc.aligned16(p, g, m, v)))


def _version(version):
    def fn(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        run(version, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
    fn.__name__ = f"adamw_step_v{version}"
    return fn


LADDERS = (
    Ladder("adamw_step", "cuda", default=2, rungs=(
        Rung(1, _version(1), "one thread per element", fits),
        Rung(2, _version(2), "grid-stride, float4 loads where aligned", fits),
    )),
)
