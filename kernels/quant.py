"""GGML block formats: how GGUF files store weights, and their dequantization (pure NumPy).

A quantized row of K weights is K / B blocks of B weights each; a block is a few bytes of scale
(float16 ``d``, sometimes a float16 offset ``m``) followed by the packed integer codes. Layouts
(bytes per block, bits per weight), as ggml defines them in ggml-common.h:

  F32    1 weight,  4 bytes                       w = the float32 itself               (32 bpw)
  F16    1 weight,  2 bytes                       w = the float16 itself               (16 bpw)
  BF16   1 weight,  2 bytes                       w = the top 16 bits of a float32     (16 bpw)
  Q8_0  32 weights, d (f16) + 32 int8 q           w = d * q                            (8.5 bpw)
  Q4_0  32 weights, d (f16) + 16 bytes of nibbles w = d * (q - 8),  q in 0..15         (4.5 bpw)
  Q4_1  32 weights, d, m (f16) + 16 bytes         w = d * q + m,    q in 0..15         (5.0 bpw)
  Q5_0  32 weights, d (f16) + qh (u32) + 16 bytes w = d * (q - 16), q in 0..31         (5.5 bpw)
  Q5_1  32 weights, d, m (f16) + qh + 16 bytes    w = d * q + m,    q in 0..31         (6.0 bpw)

Nibble order in the 4/5-bit formats: byte j of the 16 holds weight j in its low nibble and weight
j + 16 in its high nibble; bit j of qh is the fifth bit of weight j. The K-quants (Q2_K..Q6_K,
256-weight super-blocks with 6-bit sub-scales) are dequantized through the ``gguf`` package's
NumPy code (imported only for them); there is no product kernel for them, so a model holding
them is dequantized to float32 or requantized to Q8_0 when loaded.

``QuantWeight`` holds one quantized matrix (out, in) as its raw blocks, one row of bytes per
output row, so that rows can be sliced (an embedding lookup dequantizes only the rows it uses).
The quantizers (Q8_0, Q4_0, Q4_1, F16, BF16) follow ggml's reference rounding; they serve
``--dtype q8_0`` on a float model, tests and export.
"""

from dataclasses import dataclass

import numpy as np

# GGML type ids (ggml.h, enum ggml_type), the numbers a GGUF tensor header carries.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
BF16 = 30


@dataclass(frozen=True)
class BlockFormat:
    name: str
    type_id: int
    block_size: int  # weights per block
    type_size: int  # bytes per block

    @property
    def bits_per_weight(self):
        return 8.0 * self.type_size / self.block_size


_FORMATS = (
    BlockFormat("F32", F32, 1, 4), BlockFormat("F16", F16, 1, 2), BlockFormat("BF16", BF16, 1, 2),
    BlockFormat("Q8_0", Q8_0, 32, 34), BlockFormat("Q4_0", Q4_0, 32, 18),
    BlockFormat("Q4_1", Q4_1, 32, 20), BlockFormat("Q5_0", Q5_0, 32, 22),
    BlockFormat("Q5_1", Q5_1, 32, 24),
    BlockFormat("Q2_K", Q2_K, 256, 84), BlockFormat("Q3_K", Q3_K, 256, 110),
    BlockFormat("Q4_K", Q4_K, 256, 144), BlockFormat("Q5_K", Q5_K, 256, 176),
    BlockFormat("Q6_K", Q6_K, 256, 210),
)
FORMATS = {f.type_id: f for f in _FORMATS}  # type id -> BlockFormat: every type read here
BY_NAME = {f.name: f for f in _FORMATS}
K_QUANTS = (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)  # dequantized by the gguf package
MATMUL_TYPES = (Q8_0, Q4_0, Q4_1)  # formats with dequantize-in-the-product kernels
QUANTIZE_TYPES = (F32, F16, BF16, Q8_0, Q4_0, Q4_1)


def block_format(qtype):
    """The BlockFormat of a type id or name ("Q4_1"); ValueError naming the supported ones."""
    f = BY_NAME.get(qtype.upper()) if isinstance(qtype, str) else FORMATS.get(int(qtype))
    if f is None:
        raise ValueError(f"tensor type {qtype!r} is not supported; supported types: "
                         f"{', '.join(BY_NAME)}")
    return f


def row_bytes(qtype, n):
    """Bytes of one row of n weights (n must be a whole number of blocks)."""
    f = block_format(qtype)
    if n % f.block_size:
        raise ValueError(f"a {f.name} row holds a multiple of {f.block_size} weights, not {n}")
    return n // f.block_size * f.type_size


# --------------------------------------------------------------------------- dequantize
def _f16(b, at):
    # b: (nb, type_size) uint8 blocks -> (nb, 1) float32 of the float16 at byte offset `at`
    return np.ascontiguousarray(b[:, at:at + 2]).view(np.float16).astype(np.float32)


def _nibbles(qs):
    # qs: (nb, 16) packed bytes -> (nb, 32) codes 0..15, weight j low nibble, j + 16 high
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _fifth_bits(qh):
    # qh: (nb, 4) bytes of a little-endian uint32 -> (nb, 32) bit j of it, as uint8 0 or 16
    bits = np.unpackbits(qh, axis=1, bitorder="little")  # (nb, 32), bit j of byte j // 8
    return bits << 4


def _dequantize_blocks(b, qtype):
    """b: (nb, type_size) uint8 -> (nb, block_size) float32."""
    if qtype == Q8_0:
        return _f16(b, 0) * b[:, 2:].view(np.int8).astype(np.float32)
    if qtype == Q4_0:
        return _f16(b, 0) * (_nibbles(b[:, 2:]).astype(np.float32) - np.float32(8))
    if qtype == Q4_1:
        return _f16(b, 0) * _nibbles(b[:, 4:]).astype(np.float32) + _f16(b, 2)
    if qtype == Q5_0:
        q = _nibbles(b[:, 6:]) | _fifth_bits(b[:, 2:6])
        return _f16(b, 0) * (q.astype(np.float32) - np.float32(16))
    if qtype == Q5_1:
        q = _nibbles(b[:, 8:]) | _fifth_bits(b[:, 4:8])
        return _f16(b, 0) * q.astype(np.float32) + _f16(b, 2)
    raise AssertionError(qtype)


def dequantize(raw, qtype, shape):
    """Raw GGML bytes of a tensor -> float32 array of ``shape`` (innermost axis last, the NumPy
    order: a GGUF (in, out) listing is ``shape=(out, in)``)."""
    f = block_format(qtype)
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    if shape and shape[-1] % f.block_size:
        raise ValueError(f"a {f.name} tensor's rows hold a multiple of {f.block_size} weights, "
                         f"not {shape[-1]}")
    nbytes = n // f.block_size * f.type_size
    raw = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    if raw.size != nbytes:
        raise ValueError(f"{f.name} tensor of shape {shape} needs {nbytes} bytes, got {raw.size}")
    if f.type_id == F32:
        return raw.view(np.float32).reshape(shape).copy()
    if f.type_id == F16:
        return raw.view(np.float16).astype(np.float32).reshape(shape)
    if f.type_id == BF16:
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if f.type_id in K_QUANTS:
        from gguf import quants  # the package's NumPy dequantizers; not used for other types

        return np.asarray(quants.dequantize(raw.reshape(-1, f.type_size), f.type_id),
                          dtype=np.float32).reshape(shape)
    return _dequantize_blocks(raw.reshape(-1, f.type_size), f.type_id).reshape(shape)


# --------------------------------------------------------------------------- quantize
def _round_away(x):
    # C's roundf: halves away from zero (np.round rounds them to even)
    # (floor(|x| + 0.5) would round 0.49999997 up in float32)
    a = np.abs(x)
    f = np.floor(a)
    return np.sign(x) * (f + (a - f >= np.float32(0.5)))


def _inverse(d):
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _pack_nibbles(q):
    # q: (nb, 32) codes 0..15 -> (nb, 16) bytes, weight j low, j + 16 high
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def _f16_bytes(v):
    return v.astype(np.float16).view(np.uint8)  # (nb, 1) float32 -> (nb, 2) bytes


def _quantize_blocks(x, qtype):
    """x: (nb, 32) float32 -> (nb, type_size) uint8, ggml's reference quantizers."""
    if qtype == Q8_0:
        d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)  # (nb, 1)
        q = _round_away(x * _inverse(d)).astype(np.int8).view(np.uint8)
        return np.concatenate([_f16_bytes(d), q], axis=1)
    if qtype == Q4_0:
        # the signed value of largest magnitude maps to code 0 (-8 d), so d may be negative
        vmax = np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)
        d = vmax / np.float32(-8)
        q = np.trunc(x * _inverse(d) + np.float32(8.5)).astype(np.int32).clip(0, 15)
        return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)
    if qtype == Q4_1:
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        d = (hi - lo) / np.float32(15)
        q = np.trunc((x - lo) * _inverse(d) + np.float32(0.5)).astype(np.int32).clip(0, 15)
        return np.concatenate([_f16_bytes(d), _f16_bytes(lo), _pack_nibbles(q)], axis=1)
    raise AssertionError(qtype)


def quantize(w, qtype):
    """float array (..., K) -> raw bytes (rows, bytes_per_row) uint8 in format ``qtype``."""
    f = block_format(qtype)
    if f.type_id not in QUANTIZE_TYPES:
        raise ValueError(f"quantizing to {f.name} is not supported; choose one of "
                         f"{', '.join(FORMATS[t].name for t in QUANTIZE_TYPES)}")
    w = np.asarray(w, dtype=np.float32)
    K = w.shape[-1] if w.ndim else 1
    rows = w.reshape(-1, K)
    if f.type_id == F32:
        return rows.copy().view(np.uint8)
    if f.type_id == F16:
        return rows.astype(np.float16).view(np.uint8)
    if f.type_id == BF16:
        n = rows.view(np.uint32).astype(np.uint64)
        nan = (n & 0x7FFFFFFF) > 0x7F800000
        n = np.where(nan, (n & 0xFFFF0000) | (64 << 16), n + 0x7FFF + ((n >> 16) & 1))
        return (n >> 16).astype(np.uint16).view(np.uint8)  # round to nearest even; quiet NaNs
    if K % f.block_size:
        raise ValueError(f"a {f.name} row holds a multiple of {f.block_size} weights, not {K}")
    blocks = _quantize_blocks(rows.reshape(-1, f.block_size), f.type_id)
    return blocks.reshape(rows.shape[0], -1)


# --------------------------------------------------------------------------- row groups
# The decode layout. A matrix-vector product over GGUF's rows dots one row at a time, and every
# 32 weights bring their own scale, so SIMD lanes see a 16- or 32-wide block and must be summed
# across (a horizontal sum per block). Interleaving GROUP rows puts the same weight of GROUP rows
# side by side: byte j of a block is a vector of GROUP rows, multiplied by one broadcast x[k], and
# the lanes are only ever added lane-wise (kernels/cpu/qmatmul.py v6). The same bytes, permuted:
# for each group g of GROUP rows and each block b, the GROUP scales d (2 bytes each), for Q4_1
# the GROUP offsets m, then code byte j of rows 0..GROUP-1, for every j; Q8_0's signed codes are
# stored plus 128 (their sign bit flipped), so that the kernel converts unsigned bytes and takes
# the 128 back once per block. Stored in an array of the same (O, bytes per row) shape as the
# rows layout, so sizes and checks stay the same.
GROUP = 32


def _group_parts(qtype):
    """(header bytes, code bytes) of one block of the format."""
    f = FORMATS[qtype]
    h = 4 if qtype == Q4_1 else 2
    return h, f.type_size - h


def to_groups(blocks, qtype):
    """(O, bytes per row) in GGUF's row layout -> the same bytes in the row-group layout;
    O a multiple of GROUP."""
    O, rb = blocks.shape
    ts = FORMATS[qtype].type_size
    h, cb = _group_parts(qtype)
    G, nb = O // GROUP, rb // ts
    bl = blocks.reshape(G, GROUP, nb, ts).transpose(0, 2, 1, 3)  # (G, nb, R, ts)
    parts = [bl[..., i:i + 2].reshape(G, nb, 2 * GROUP) for i in range(0, h, 2)]  # d (and m)
    codes = bl[..., h:].transpose(0, 1, 3, 2).reshape(G, nb, cb * GROUP)  # (G, nb, cb R)
    parts.append(codes ^ np.uint8(0x80) if qtype == Q8_0 else codes)
    return np.concatenate(parts, axis=2).reshape(O, rb)


def from_groups(data, qtype):
    """The inverse of ``to_groups``: the row-group layout -> GGUF's row layout."""
    O, rb = data.shape
    ts = FORMATS[qtype].type_size
    h, cb = _group_parts(qtype)
    G, nb = O // GROUP, rb // ts
    gb = data.reshape(G, nb, GROUP * ts)
    out = np.empty((G, GROUP, nb, ts), dtype=np.uint8)
    for i in range(0, h, 2):
        out[..., i:i + 2] = gb[..., i * GROUP:(i + 2) * GROUP].reshape(G, nb, GROUP, 2) \
            .transpose(0, 2, 1, 3)
    out[..., h:] = gb[..., h * GROUP:].reshape(G, nb, cb, GROUP).transpose(0, 3, 1, 2)
    if qtype == Q8_0:
        out[..., h:] ^= np.uint8(0x80)
    return out.reshape(O, rb)


def _group_offsets(qtype, nb):
    """(GROUP, nb, type_size) positions, within one group's bytes, of each row's blocks as the
    row layout orders them (for gathering a few rows without converting the whole matrix)."""
    ts = FORMATS[qtype].type_size
    h, cb = _group_parts(qtype)
    r = np.arange(GROUP)[:, None, None]
    b = np.arange(nb)[None, :, None]
    i = np.arange(ts)[None, None, :]
    head = (i // 2) * 2 * GROUP + 2 * r + (i % 2)  # byte i of d (i < 2) or m (2 <= i < 4)
    code = h * GROUP + (i - h) * GROUP + r
    return b * GROUP * ts + np.where(i < h, head, code)


# --------------------------------------------------------------------------- QuantWeight
@dataclass(frozen=True, eq=False)
class QuantWeight:
    """A matrix W (out, in) kept in a GGML block format.

    blocks: (out, bytes_per_row) uint8. grouped False: GGUF's row layout, row o holding W[o, :]
    as in // block_size blocks. grouped True: the same bytes in the row-group layout
    (``to_groups``; out a multiple of GROUP), which the decode kernel reads.
    """

    qtype: int
    shape: tuple
    blocks: np.ndarray
    grouped: bool = False

    def __post_init__(self):
        f = block_format(self.qtype)
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 2:
            raise ValueError(f"a QuantWeight is a matrix (out, in), not shape {shape}")
        want = (shape[0], row_bytes(f.type_id, shape[1]))
        if self.blocks.dtype != np.uint8 or self.blocks.shape != want:
            raise ValueError(f"{f.name} weight {shape} needs blocks of shape {want} uint8, got "
                             f"{self.blocks.shape} {self.blocks.dtype}")
        if self.grouped and not self.groupable(f.type_id, shape):
            raise ValueError(f"a {f.name} weight {shape} cannot be held in row groups (Q8_0, "
                             f"Q4_0 or Q4_1 with a multiple of {GROUP} rows)")
        object.__setattr__(self, "qtype", f.type_id)
        object.__setattr__(self, "shape", shape)

    @staticmethod
    def groupable(qtype, shape):
        return qtype in MATMUL_TYPES and shape[0] % GROUP == 0

    @classmethod
    def from_float(cls, w, qtype):
        """Quantize a float matrix (out, in)."""
        w = np.asarray(w)
        return cls(block_format(qtype).type_id, w.shape, quantize(w, qtype))

    def to_groups(self):
        """This weight in the row-group layout (itself when it is, or cannot be, grouped)."""
        if self.grouped or not self.groupable(self.qtype, self.shape):
            return self
        return QuantWeight(self.qtype, self.shape, to_groups(self.blocks, self.qtype), True)

    def to_rows(self):
        """This weight in GGUF's row layout (itself when it is): what files and exports hold."""
        if not self.grouped:
            return self
        return QuantWeight(self.qtype, self.shape, from_groups(self.blocks, self.qtype))

    @property
    def row_blocks(self):
        """The blocks in GGUF's row layout (a converted copy when grouped)."""
        return self.to_rows().blocks

    @property
    def format(self):
        return FORMATS[self.qtype]

    @property
    def nbytes(self):
        return int(self.blocks.nbytes)

    @property
    def bits_per_weight(self):
        return self.format.bits_per_weight

    def dequantize(self):
        """W as float32 (out, in)."""
        return dequantize(self.row_blocks, self.qtype, self.shape)

    def rows(self, idx):
        """W[idx] as float32 (..., in), dequantizing only the rows asked for."""
        idx = np.asarray(idx)
        flat = idx.reshape(-1)
        if self.grouped:
            ts = self.format.type_size
            nb = self.blocks.shape[1] // ts
            offsets = _group_offsets(self.qtype, nb)  # (GROUP, nb, ts)
            g, r = np.divmod(flat, GROUP)
            where = g[:, None, None] * (GROUP * nb * ts) + offsets[r]  # (n, nb, ts)
            sub = self.blocks.reshape(-1)[where]  # (n, nb, ts) in the row layout's order
            if self.qtype == Q8_0:
                sub[..., 2:] ^= np.uint8(0x80)
            sub = sub.reshape(flat.size, -1)
        else:
            sub = self.blocks[flat]  # (n, bytes_per_row)
        return dequantize(sub, self.qtype, (sub.shape[0], self.shape[1])).reshape(
            idx.shape + (self.shape[1],))

    def __repr__(self):
        grouped = ", grouped" if self.grouped else ""
        return f"QuantWeight({self.format.name}, shape={self.shape}{grouped})"
