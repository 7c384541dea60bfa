"""Launchers for kernels/cuda/crossentropy.cu: fused softmax + cross-entropy with ignore_index,
forward v1..v2 and backward v1..v2 (see its header).

The rungs have the signatures of kernels/reference.py ``cross_entropy_forward(logits, targets,
ignore_index)`` -> (loss, lse) and ``cross_entropy_backward(dloss, logits, lse, targets,
ignore_index)`` -> dlogits and take float32 (N, V) logits (targets are cast to int64); other
dtypes run the reference. The table is ``LADDERS``. Nothing here synchronises with the host: the loss and the
1/count scale are reduced on the device, and ``dloss`` may be a 0-d device array.
"""

from ..ladder import Ladder, Rung
from . import _compile as cc

FILE = "crossentropy.cu"
DEFINES = dict(CE_THREADS=512)
CONFIGS = [(FILE, DEFINES), (FILE, dict(CE_THREADS=256))]
_VERSIONS = {"cross_entropy_forward": (1, 2), "cross_entropy_backward": (1, 2)}  # in the .cu


def kernel_names(defines):
    return [f"{op}_v{v}" for op in _VERSIONS for v in _VERSIONS[op]] + [
        "cross_entropy_loss",
        "cross_entropy_scale",
    ]


def _fn(name, defines=None):
    return cc.function(FILE, name, defines or DEFINES)


def _fits(logits, targets):
    ok = (
        cc.is_cupy(logits)
        and logits.ndim == 2
        and cc.dtype_name(logits) == "float32"
        and targets.ndim == 1
        and targets.shape[0] == logits.shape[0]
    )
    return None if ok else f"{cc.dtype_name(logits)} logits of shape {logits.shape}"


def fits_forward(logits, targets, ignore_index=-100):
    """float32 (N, V) logits, (N,) targets"""
    return _fits(logits, targets)


def fits_backward(dloss, logits, lse, targets, ignore_index=-100):
    """float32 (N, V) logits and lse, (N,) targets"""
    return _fits(logits, targets) or (
        None if cc.dtype_name(lse) == "float32" else f"{cc.dtype_name(lse)} lse")


def _targets(targets):
    import cupy as cp

    return cp.ascontiguousarray(cp.asarray(targets).astype(cp.int64, copy=False))


def forward(version, logits, targets, ignore_index=-100):
    import cupy as cp

    logits, t = cc.contiguous(logits), _targets(targets)
    N, V = logits.shape
    T = DEFINES["CE_THREADS"]
    lse = cp.empty((N,), cp.float32)
    nll = cp.empty((N,), cp.float32)
    loss = cp.zeros((), cp.float32)
    if N == 0:
        return loss, lse
    args = (lse, nll, logits, t, N, V, int(ignore_index))
    if version == 1:
        cc.launch(_fn("cross_entropy_forward_v1"), cc.ceil_div(N, 128), 128, args)
    else:
        cc.launch(_fn("cross_entropy_forward_v2"), N, T, args)
    cc.launch(_fn("cross_entropy_loss"), 1, T, (loss, nll, t, N, int(ignore_index)))
    return loss, lse


def backward(version, dloss, logits, lse, targets, ignore_index=-100):
    import cupy as cp

    logits, t, lse = cc.contiguous(logits), _targets(targets), cc.contiguous(lse)
    N, V = logits.shape
    T = DEFINES["CE_THREADS"]
    dlogits = cp.empty_like(logits)
    if N == 0:
        return dlogits
    d = cp.asarray(dloss, dtype=cp.float32).reshape(1)
    scale = cp.empty((1,), cp.float32)
    cc.launch(_fn("cross_entropy_scale"), 1, T, (scale, d, t, N, int(ignore_index)))
    args = (dlogits, logits, lse, t, scale, N, V, int(ignore_index))
    if version == 1:
        cc.launch(_fn("cross_entropy_backward_v1"), cc.ceil_div(N, 128), 128, args)
    else:
        cc.launch(_fn("cross_entropy_backward_v2"), (N, cc.ceil_div(V, T)), T, args)
    return dlogits


def _forward_v(version):
    def fn(logits, targets, ignore_index=-100):
        return forward(version, logits, targets, ignore_index)
    fn.__name__ = f"cross_entropy_forward_v{version}"
    return fn


def _backward_v(version):
    def fn(dloss, logits, lse, targets, ignore_index=-100):
        return backward(version, dloss, logits, lse, targets, ignore_index)
    fn.__name__ = f"cross_entropy_backward_v{version}"
    return fn


LADDERS = (
    Ladder("cross_entropy_forward", "cuda", default=2, rungs=(
        Rung(1, _forward_v(1), "one thread per row", fits_forward),
        Rung(2, _forward_v(2), "one block per row, online max/sum", fits_forward),
    )),
    Ladder("cross_entropy_backward", "cuda", default=2, rungs=(
        Rung(1, _backward_v(1), "one thread per row", fits_backward),
        Rung(2, _backward_v(2), "a 2-D grid over rows and column blocks", fits_backward),
    )),
)
