"""The process settings the CLI and the app make at start: freed memory goes back to the system."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A heap grown by large buffers in a thread, then freed: with glibc's default the threshold rises
# after the first large free and the buffers stay in the heap; with the fixed threshold they go back.
PROGRAM = """
import os, sys, threading
from ecgfm.runtime import return_freed_memory
if sys.argv[1] in ("set", "server"):
    return_freed_memory()
if sys.argv[1] == "one-shot":
    return_freed_memory(one_shot=True)
import numpy as np
from ecgfm.runtime import trim_heap

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def work():
    np.ones(4 * 2**20 // 8)  # one large free raises glibc's threshold (by default)
    held = [np.ones(2**20 // 8 - 64) for _ in range(300)]  # 300 MB in 1 MB buffers
    del held
    if sys.argv[1] == "set":
        trim_heap()

before = rss_mb()
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(round(rss_mb() - before), os.environ.get("MKL_DISABLE_FAST_MM"))
"""


def run(mode: str, **env) -> tuple[float, str]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         cwd=REPO, env={"PATH": "/usr/bin:/bin", **env})
    kept, mkl = out.stdout.split()
    return float(kept), mkl


def _glibc_only():
    if not sys.platform.startswith("linux"):
        import pytest
        pytest.skip("glibc's allocator only")


def test_freed_buffers_go_back_to_the_system():
    _glibc_only()
    kept, mkl = run("set")
    assert kept < 30 and mkl == "1"  # of 300 MB freed; glibc's default keeps ~130 MB of it here


def test_a_one_shot_process_returns_freed_buffers_without_trimming():
    _glibc_only()
    kept, mkl = run("one-shot")
    assert kept < 30 and mkl == "1"


def test_a_long_running_process_keeps_glibcs_dynamic_threshold():
    """Its forwards stay fast (buffers reused from the heap); it trims between requests instead."""
    _glibc_only()
    kept, _ = run("server")
    assert kept > 60


def test_a_users_own_setting_stays():
    _, mkl = run("set", MKL_DISABLE_FAST_MM="0")
    assert mkl == "0"
