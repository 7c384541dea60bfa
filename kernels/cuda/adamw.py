"""Launchers for kernels/cuda/adamw.cu: the fused in-place AdamW step, v1..v2 (see its header).

``adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)`` has the signature of
kernels/reference.py and updates p, m, v in place. The CUDA kernels take float32 buffers that
are contiguous (any shape, seen flat); anything else (another dtype, a strided view that cannot
be updated through a flat pointer) goes to the reference, which also updates in place.
"""

import math

from . import _compile as cc

FILE = "adamw.cu"
DEFINES = dict(AW_THREADS=256)
CONFIGS = [(FILE, DEFINES), (FILE, dict(AW_THREADS=512))]
VERSIONS = {"adamw_step": (1, 2)}
DEFAULT_VERSION = {"adamw_step": 2}


def kernel_names(defines):
    return ["adamw_step_v1", "adamw_step_v2"]


def fits(p, g, m, v):
    arrs = (p, g, m, v)
    return (
        all(cc.is_cupy(a) and cc.dtype_name(a) == "float32" and a.flags.c_contiguous for a in arrs)
        and len({a.shape for a in arrs}) == 1
        and p.size < 2**31
    )


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


def adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW update of p, m, v in place (``step`` counts from 1)."""
    if not fits(p, g, m, v):
        from .. import reference

        return reference.adamw_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
    run(DEFAULT_VERSION["adamw_step"], p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
