"""Multi-head scaled dot-product attention on the CPU (Numba), forward and backward: the ladder.

Implements kernels/reference.py ``attention_forward`` / ``attention_backward`` (Vaswani et al.
2017):   s = scale q k^T (causal: -inf where key j > query position),  p = softmax(s),  o = p v,
saving lse = log sum_j exp(s_ij) per query row instead of p. The backward rebuilds p from lse:
p = exp(s - lse);  dv = p^T do;  dp = do v^T;  ds = p (dp - rowsum(do o));  dq = scale ds k;
dk = scale ds^T q  (rowsum(do o) = rowsum(p dp), and cheaper).

Shapes: q, o, do, dq: (B, H, Tq, D); k, v, dk, dv: (B, H, Tk, D); lse: (B, H, Tq); Tk >= Tq.
With ``causal`` query i sits at absolute position off + i, off = Tk - Tq, and sees keys
0..off + i (Tq < Tk is a KV-cache decode step, Tq == Tk training).

Versions, by file (speed-up vs the NumPy reference; small = B8 H6 T256 D64, tiny = B12 H4 T64
D32; how each was measured: benchmarks/README.md, "Attention"):

  flash.py
  v1  plain loops, one query row at a time, a Tk-long row of scores, math.exp, one thread.
      One thread: small fwd 0.4x, bwd 0.6x; tiny fwd 0.5x, bwd 0.8x.
  v2  prange over the B*H heads (one thread per head); forward with an online softmax (one
      pass over the keys per row, running max and sum, Milakov & Gimelshein 2018). Same as v1
      on one thread; its gain is the other cores.
  v3  FlashAttention blocks: BQ query rows share every loaded key block, K (and V) transposed
      once per head so q k^T is contiguous axpy rows, causal blocks above the diagonal skipped,
      a polynomial exp that vectorises. One thread: small fwd 1.5-2.2x, bwd 1.3-2.0x.
  v4  v3 with each block product's reduction unrolled by 4 (one accumulator load/store per
      four FMAs). One thread: small fwd 1.7-2.4x, bwd 1.3-1.9x; tiny fwd 2.0x, bwd 0.9-1.0x.
  blas_tiles.py
  v5  the block products go to the BLAS (single-threaded), Numba keeps only the causal softmax
      and the backward's p / ds pass over a cache-sized score tile; query blocks of 128 rows
      stop at the last key they can see. Reads strided views without copying. Two threads:
      small fwd 4.0x, bwd 2.1x, fwd+bwd 2.6x (v4 1.4x); tiny fwd+bwd 2.6x.
  micro.py
  v7  no BLAS: one head per thread from start to end, every product on matmul v5's
      register-blocked micro-kernel (kernels/cpu/_microkernel.py); q, do and the score tiles
      read in place through their strides, k and v packed once per head; query blocks of
      8 MR rows stop at the last key they may see. Two threads: small fwd 4.0x, bwd 2.9x,
      fwd+bwd 3.3x (v5 2.4x); tiny 1.6x. Fastest inside a training step.  (default but for
      decode steps)

  decode.py
  v8  decoding: a few query rows (one new token per head; with grouped-query attention the
      query heads of a group as rows) against a long key cache. v7 packed the whole cache per
      head for a product of a few rows, and B * Hkv heads (3 for SmolLM2) gave one thread
      nothing to do. v8 reads the cache in place (its strided view as one flat array, rows
      sliced so the loops vectorise) and splits each head's keys into chunks of 128 across
      threads, merging the chunks' softmax statistics (Flash-Decoding). Runs for at most 16
      query rows against as many keys or more; else v7. That includes a short prompt's own
      causal attention (a server's packed prompts of a few tokens, batched): there v7's
      packing and 12-row micro-kernel blocks cost several microseconds per head, and eight
      8-token prompts of SmolLM2 (8 x 9 heads a layer) spent 24 ms of a 115 ms prefill in
      attention, 3 with v8. SmolLM2's decode step at 600 cached
      keys (``bench_kernels.py --op attention_forward --shapes tiny``, 1x3x3x600x64: 3 heads
      of 3 grouped rows, the keys a view of a longer buffer), 2 threads: v8 2.4x the
      reference, v3/v4 1.4-1.5x, v7 0.76x (its packing copies the cache).
      (default; declines other inputs, which run v7)

  v8 with one chunk of keys per head (up to 128, a short context) writes each head's result
  directly: no partial buffers and no merge pass (a second parallel region). A server's
  8-row decode step (8x3x3 rows, about 70 keys each): 31 -> 24 us a call; eight 8-token
  prompts as one padded batch (8x9x9x64): 45 -> 32 us.

(There is no v6: v5 split over Python threads was fastest alone but gained nothing inside a
training step; its numbers are kept in benchmarks/README.md.)

Two more forward-only ops share this folder: ``attention_ragged_forward`` (decode.py, v8: a
server's decode step, batch row b over its first lengths[b] keys) and
``attention_varlen_forward`` (varlen.py, v1: short sequences packed end to end in one row, each
causal over its own keys and a prefix they share, grouped-query heads read in place: the
prompts a server prefills together). Eight 8-token prompts of SmolLM2, packed attention per
prefill (cache writes included): 7.9 -> 5.3 ms, the prefill 89 -> 88 ms (medians of 15
interleaved runs, Zen 4, 2 threads).

The table of rungs and defaults is ``LADDERS`` below. Tests: tests/kernels/test_ladders.py
(every rung vs the reference) and tests/kernels/test_cpu_attention.py (strided views, v5 tile
plans, v7 strides, finite differences of the reference). Benchmark:
``python benchmarks/bench_kernels.py --op attention``.
"""

import numpy as np

from ...ladder import Ladder, Rung, dtype_fits
from .. import _serial
from .blas_tiles import attention_backward_v5, attention_forward_v5
from .decode import attention_forward_v8, attention_ragged_forward_v8
from .flash import (
    attention_backward_v1,
    attention_backward_v2,
    attention_backward_v3,
    attention_backward_v4,
    attention_forward_v1,
    attention_forward_v2,
    attention_forward_v3,
    attention_forward_v4,
)
from .micro import attention_backward_v7, attention_forward_v7
from .varlen import attention_varlen_forward_v1


def _prep(views, dtype, arrays):
    """Inputs in ``dtype``; contiguous unless the version reads strided views (``views``)."""
    if views:
        return [a if a.dtype == dtype else a.astype(dtype) for a in arrays]
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def _forward(kernel, views=False):
    """attention_forward(q, k, v, scale, causal) -> (o, lse), running ``kernel``."""
    def run(q, k, v, scale, causal=True):
        q, k, v = _prep(views, q.dtype, (q, k, v))
        o = np.empty_like(q)
        lse = np.empty(q.shape[:3], dtype=q.dtype)
        kernel(o, lse, q, k, v, q.dtype.type(scale), bool(causal))
        return o, lse
    return run


def _backward(kernel, views=False):
    """attention_backward(do, q, k, v, o, lse, scale, causal) -> (dq, dk, dv)."""
    def run(do, q, k, v, o, lse, scale, causal=True):
        do, q, k, v, o, lse = _prep(views, q.dtype, (do, q, k, v, o, lse))
        dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
        kernel(dq, dk, dv, do, q, k, v, o, lse, q.dtype.type(scale), bool(causal))
        return dq, dk, dv
    return run


FWD = dtype_fits(("float32", "float64"))  # q
DECODE_ROWS = 16  # query rows up to which a KV-cache step runs v8


def _decode_fits(q, k, v, scale, causal=True):
    """float32/64, at most 16 query rows against as many keys or more (a KV-cache step, a
    short prompt)"""
    reason = FWD(q)
    if reason is None and not (q.shape[2] <= DECODE_ROWS and k.shape[2] >= q.shape[2]):
        return f"{q.shape[2]} query rows against {k.shape[2]} keys"
    return reason


def _ragged(kernel):
    """attention_ragged_forward(q, k, v, lengths, scale) -> (o, lse), running ``kernel``."""
    def run(q, k, v, lengths, scale):
        q, k, v = _prep(True, q.dtype, (q, k, v))
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (q.shape[0],) or lengths.size and not (
                1 <= lengths.min() and lengths.max() <= k.shape[2]):
            raise ValueError(f"lengths must be {q.shape[0]} key counts in 1..{k.shape[2]}")
        o = np.empty_like(q)
        lse = np.empty(q.shape[:3], dtype=q.dtype)
        kernel(o, lse, q, k, v, lengths, q.dtype.type(scale))
        return o, lse
    return run


def _varlen(kernel):
    """attention_varlen_forward(q, k, v, starts, ends, prefix, scale) -> (o, lse)."""
    def run(q, k, v, starts, ends, prefix, scale):
        q, k, v = _prep(False, q.dtype, (q, k, v))
        H, N, D = q.shape
        if k.shape != v.shape or k.shape[1:] != (N, D) or H % k.shape[0]:
            raise ValueError(f"k and v must be (Hkv, {N}, {D}) with Hkv dividing {H}, got "
                             f"{k.shape} and {v.shape}")
        seqs = [(int(a), int(b), int(p)) for a, b, p in zip(starts, ends, prefix)]
        if not len(seqs) == len(starts) == len(ends) == len(prefix) or not all(
                0 <= p <= a < b <= N for a, b, p in seqs):  # (Python ints: a few us, not 30)
            raise ValueError("sequences must be (start, end, prefix) with 0 <= prefix <= "
                             f"start < end <= {N}")
        starts, ends, prefix = np.asarray(list(zip(*seqs)), dtype=np.int64).reshape(3, -1)
        o = np.empty_like(q)
        lse = np.empty(q.shape[:2], dtype=q.dtype)
        kernel(o, lse, q, k, v, starts, ends, prefix, q.dtype.type(scale))
        return o, lse
    return run


BWD = dtype_fits(("float32", "float64"), arg=1)  # q (after do)
LADDERS = (
    Ladder("attention_forward", "cpu", default=8, also=(7,),
           about="softmax(scale q k^T) v, saves lse",
           rungs=(
        Rung(1, _forward(attention_forward_v1), "plain loops, one row at a time, one thread",
             FWD),
        Rung(2, _forward(attention_forward_v2), "prange over heads, online softmax", FWD),
        Rung(3, _forward(attention_forward_v3), "flash blocks, transposed K, fast_exp", FWD),
        Rung(4, _forward(attention_forward_v4), "v3 with the block products unrolled by 4", FWD),
        Rung(5, _serial.picks(_forward(attention_forward_v5, True)),
             "BLAS tile products, Numba softmax rows", FWD),
        Rung(7, _serial.picks(_forward(attention_forward_v7, True)),
             "no BLAS: one head per thread, products on the micro-kernel", FWD),
        Rung(8, _serial.picks(_forward(attention_forward_v8, True)),
             "decoding: keys split into chunks across threads, read in place, chunks merged",
             _decode_fits),
    )),
    Ladder("attention_backward", "cpu", default=7, about="dq, dk, dv from the saved lse",
           rungs=(
        Rung(1, _backward(attention_backward_v1), "plain loops, one row at a time, one thread",
             BWD),
        Rung(2, _backward(attention_backward_v2), "prange over heads", BWD),
        Rung(3, _backward(attention_backward_v3), "flash blocks, key blocks outer", BWD),
        Rung(4, _backward(attention_backward_v4), "v3 with the block products unrolled by 4",
             BWD),
        Rung(5, _serial.picks(_backward(attention_backward_v5, True)),
             "BLAS tile products, Numba p/ds rows", BWD),
        Rung(7, _serial.picks(_backward(attention_backward_v7, True)),
             "no BLAS: one head per thread, products on the micro-kernel", BWD),
    )),
    Ladder("attention_ragged_forward", "cpu", default=8,
           about="a decode step over rows of different lengths, each over its own keys",
           rungs=(
        Rung(8, _serial.picks(_ragged(attention_ragged_forward_v8)),
             "v8's chunks across threads, each row's keys up to its length", FWD),
    )),
    Ladder("attention_varlen_forward", "cpu", default=1,
           about="short sequences packed in one row, each causal over its own keys",
           rungs=(
        Rung(1, _serial.picks(_varlen(attention_varlen_forward_v1)),
             "a task per sequence and head, q, k, v read in place, one row at a time", FWD),
    )),
)
