"""Giving freed heap memory back to the operating system.

glibc's malloc keeps memory a program has freed inside its heap for later allocations, and
returns only what lies at the top. Loading a model frees much on the way (the GGUF metadata's
49,152 token strings and merges parsed into temporaries, the tokenizer's intermediate tables),
interleaved with what stays; without a trim that freed memory stays resident, about 45 MiB for
SmolLM2-135M, on top of the weights. ``trim()`` asks glibc to hand every whole free page back
(``malloc_trim(0)``, which since glibc 2.8 also releases free pages inside the heap). Elsewhere
(macOS, Windows, musl) it does nothing.
"""

import ctypes
import ctypes.util
import sys

_trim = None


def trim():
    """Return freed heap pages to the OS where the C library can (glibc); True if it did."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _trim = libc.malloc_trim
                _trim.argtypes, _trim.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):  # not glibc
                _trim = False
    return bool(_trim(0)) if _trim else False
