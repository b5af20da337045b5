"""Settings of the process that runs ECG-FM, made once at its start by the CLI and the app.

What a small machine pays for is its peak memory, and a server's must not creep up: glibc raises its
mmap threshold after the first large free and then keeps large freed buffers in its heap, per
thread; `trim_heap` hands their pages back. MKL keeps its matrix-product buffers unless told not
to, before torch first multiplies. No number changes. Settings a user made in the environment
stay as they are. Nothing here imports torch.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
_ONE_SHOT_MMAP_THRESHOLD = 128 * 1024  # glibc's own initial value, kept instead of raised


def return_freed_memory(one_shot: bool = False) -> None:
    """MKL's buffer cache off, always.

    `one_shot`: a process that predicts and exits (`ecgfm predict`) also fixes glibc's mmap threshold
    at 128 KiB, so each freed buffer goes back to the system at once instead of waiting in the heap:
    its peak is ~12 MB lower (~2 %), and each forward ~0.1 s slower, as every large buffer is mapped
    afresh. A long-running process (the app, `ecgfm batch`) forwards again and again, so it keeps the
    dynamic threshold for speed; the app trims the heap between requests instead (`trim_heap`).
    """
    os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")
    if not one_shot or not sys.platform.startswith("linux") or _mmap_threshold_set_by_user():
        return
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _ONE_SHOT_MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc
        pass


def _mmap_threshold_set_by_user() -> bool:
    return ("MALLOC_MMAP_THRESHOLD_" in os.environ
            or "malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""))


def trim_heap() -> None:
    """Hand the free pages of every glibc arena back to the system now (a few ms): a server calls it
    after each request, whose reading and drawing freed memory in threads that come and go."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
