"""A KV cache with one length per row, for continuous batching.

``minillm.nn.KVCache`` keeps one ``length`` for the whole batch: every row has filled the same
positions. Requests that join a running batch have prompts of different lengths and started at
different steps, so here row i has filled positions 0..len_i-1 and a decode step writes the
new token's key and value at position len_i of its own row.

The attention modules need no change: they call ``append(layer, k, v)`` with the step's new keys
and values (B, H, 1, D) and attend over what it returns, (B, H, Tk, D) with Tk = max(len_i) + 1;
the step passes ``attention_mask`` (B, Tk), True at positions 0..len_i of row i (everything
past a row's own length is another row's length, stale or zero, and masked out), and
``position_ids`` (B, 1) = len_i, which GPT adds as its absolute position embedding and Llama
turns into rotary angles. ``length`` is max(len_i) over the step's rows: the models compare it
with their context window before running.

Rows in use are kept packed at the front (rows 0..B-1), so the arrays the attention reads are
views, never gathered copies: a request that leaves has its place taken by the last row.
Capacity (positions per row) grows in steps of ``GROW`` up to ``max_len``.
"""

import numpy as np

from minillm import backend

GROW = 256  # positions added at a time when a row outgrows the cache


class RaggedKVCache:
    """k[layer], v[layer]: (rows, Hkv, capacity, D); ``lengths`` (rows,) filled positions."""

    def __init__(self, n_layer, rows, n_kv_head, head_dim, max_len, dtype=np.float32,
                 like=None):
        self.xp = backend.array_module(like) if like is not None else np
        self.shape = (rows, n_kv_head, head_dim)
        self.n_layer, self.rows, self.max_len, self.dtype = n_layer, rows, max_len, dtype
        self.capacity = 0
        self.k, self.v = [], []
        self.lengths = np.zeros(rows, dtype=np.int64)  # (rows,) on the host
        self.batch = 0  # rows taking part in the current step: 0..batch-1
        self.ensure(min(GROW, max_len))

    @classmethod
    def for_model(cls, model, rows, max_len=None):
        """The ragged cache that fits ``model``: heads, head size, dtype and device are read
        off a one-position cache of the model's own kind."""
        probe = model.new_kv_cache(1, max_len=1)
        _, hkv, _, d = probe.k[0].shape
        return cls(len(probe.k), rows, hkv, d, max_len or model.config.block_size,
                   dtype=probe.k[0].dtype, like=probe.k[0])

    # -------------------------------------------------------------- the model's interface
    @property
    def length(self):
        """The longest filled row of the step: the models check it against their context."""
        return int(self.lengths[: self.batch].max()) if self.batch else 0

    def append(self, layer, k, v):
        """Write one new position per row, k, v: (B, Hkv, 1, D), at each row's own length;
        return keys and values (B, Hkv, max(len) + 1, D), views of the cache."""
        B, T = k.shape[0], k.shape[2]
        if B != self.batch or T != 1:
            raise ValueError(f"a ragged cache step takes ({self.batch}, H, 1, D) keys, "
                             f"got {tuple(k.shape)}")
        pos = self.lengths[:B]
        end = int(pos.max()) + 1
        if end > self.capacity:
            raise ValueError(f"ragged KV cache holds {self.capacity} positions; {end} requested")
        rows, at = self.xp.arange(B), self.xp.asarray(pos)
        self.k[layer][rows, :, at] = k[:, :, 0]  # (B, Hkv, D) into row b, position len_b
        self.v[layer][rows, :, at] = v[:, :, 0]
        return self.k[layer][:B, :, :end], self.v[layer][:B, :, :end]

    def advance(self, T):
        self.lengths[: self.batch] += T

    # -------------------------------------------------------------- the engine's interface
    def step_inputs(self, B):
        """Begin a decode step over rows 0..B-1; return (attention_mask (B, Tk) bool,
        position_ids (B, 1) int64) for it."""
        self.batch = B
        pos = self.lengths[:B]  # (B,)
        self.ensure(int(pos.max()) + 1)
        mask = np.arange(int(pos.max()) + 1)[None, :] <= pos[:, None]  # (B, Tk)
        return mask, pos[:, None].copy()  # (B, Tk), (B, 1)

    def ensure(self, n):
        """Room for n positions per row (grown in steps of GROW, kept filled parts)."""
        if n <= self.capacity:
            return
        if n > self.max_len:
            raise ValueError(f"ragged KV cache holds at most {self.max_len} positions; {n} "
                             f"requested")
        cap = min(self.max_len, max(n, self.capacity + GROW))
        R, H, D = self.shape
        for arrays in (self.k, self.v):
            for i in range(self.n_layer):
                new = self.xp.zeros((R, H, cap, D), dtype=self.dtype)
                if i < len(arrays):
                    new[:, :, : self.capacity] = arrays[i]
                    arrays[i] = new
                else:
                    arrays.append(new)
        self.capacity = cap

    def load_row(self, row, cache, n, src=0):
        """Copy the first n positions of row ``src`` of a ``KVCache`` (prefilled prompts) into
        ``row``."""
        self.ensure(n)
        for dst, a in zip(self.k + self.v, cache.k + cache.v):
            dst[row, :, :n] = a[src, :, :n]
        self.lengths[row] = n

    def move_row(self, src, dst):
        """Row ``src`` takes the place of row ``dst`` (which is given up): keeps rows packed."""
        if src != dst:
            n = int(self.lengths[src])
            for a in self.k + self.v:
                a[dst, :, :n] = a[src, :, :n]
            self.lengths[dst] = n
        self.lengths[src] = 0
