"""Settings of the process that runs ECG-FM, made once at its start by the CLI and the app.

What a small machine pays for is its peak memory, and a server's must not creep up: glibc raises its
mmap threshold after the first large free and then keeps large freed buffers (a convolution's
reordered weight, a batch's activations, a drawn page) in its heap, per thread; a fixed threshold
(its initial 128 KiB) hands them back to the system instead. MKL likewise keeps its matrix-product
buffers unless told not to, before torch first multiplies. No number changes. Settings a user made
in the environment stay as they are. Nothing here imports torch.
"""
from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory() -> None:
    os.environ.setdefault("MKL_DISABLE_FAST_MM", "1")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc
        pass


def trim_heap() -> None:
    """Hand the free pages of every glibc arena back to the system now (a few ms): a server calls it
    after each request, whose reading and drawing freed memory in threads that come and go."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
