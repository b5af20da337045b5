"""Settings of the process that runs ECG-FM, made once at its start by the CLI and the app.

What a small machine pays for is its peak memory, and a server's must not creep up: glibc raises its
mmap threshold after the first large free and then keeps large freed buffers in its heap, per
thread; `trim_heap` hands their pages back. MKL keeps its matrix-product buffers unless told not
to, before torch first multiplies. No number changes. Settings a user made
in the environment stay as they are. Nothing here imports torch.
"""
from __future__ import annotations

import ctypes
import os


def return_freed_memory() -> None:
    """MKL's buffer cache off. glibc's mmap threshold is left dynamic: fixed at 128 KiB it maps every
    activation buffer afresh on each forward (~40 % slower for ~14 MB less at the peak); a server
    trims the heap after each request instead (`trim_heap`)."""
    os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")


def trim_heap() -> None:
    """Hand the free pages of every glibc arena back to the system now (a few ms): a server calls it
    after each request, whose reading and drawing freed memory in threads that come and go."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
