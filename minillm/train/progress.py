"""What a training run prints about its progress besides the bar (pretrain's loop uses these).

    plain_every(cfg)      with the bar off (stderr not a terminal: a log file, a pipe), a plain
                          line every this many steps: about twenty lines a run, not bar frames
    will_compile(cfg)     whether the first step stops to compile the Numba kernels (Numba's
                          on-disk cache does not hold them yet), to say so before it
"""

from pathlib import Path

PLAIN_LINES_PER_RUN = 20


def plain_every(cfg):
    """Steps between two plain progress lines: a multiple of ``log_interval`` (the steps that
    have a log record), about max_iters / 20."""
    k = max(1, round(cfg.max_iters / PLAIN_LINES_PER_RUN / cfg.log_interval))
    return k * cfg.log_interval


def plain_line(it, cfg, rec):
    """One progress line for the log record ``rec`` of step ``it``."""
    return (f"step {it}/{cfg.max_iters}: loss {rec['loss']:.4f}, lr {rec['lr']:.2e}, "
            f"{rec['tok_per_s']:,.0f} tokens/s")


def kernels_compiled():
    """True when Numba's cache already holds compiled CPU kernels (layer norm's, which every
    step runs, stand for all), False when it holds none, None when this cannot be told (no
    Numba, or a Numba whose cache is laid out otherwise)."""
    try:
        from minillm.kernels.cpu import layernorm

        folder = Path(layernorm.layernorm_forward_v1._cache.cache_path)
    except (ImportError, AttributeError):
        return None
    return any(folder.glob("layernorm.*.nbi"))  # Numba's index file, one per cached function


def will_compile(cfg):
    """True when this run's first step will compile Numba kernels: CPU, Numba kernels (mode
    auto or numba, Numba installed) and a cache that does not hold them (or cannot be read)."""
    from minillm.kernels import registry

    if cfg.device != "cpu" or registry.get_mode() == "reference" or not registry.numba_available():
        return False
    return not kernels_compiled()
