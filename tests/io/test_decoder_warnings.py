"""Decoders' warnings are silenced one reader at a time: `warnings.catch_warnings` swaps one
process-wide filter list, and two readers interleaved (the app's request threads) would let one
reader's warnings out, quoting file text, or leave every warning silenced for good."""
from __future__ import annotations

import threading
import warnings

from ecgfm.io.record import decoder_warnings_silenced


def test_concurrent_readers_take_turns_and_the_filters_come_back():
    before = list(warnings.filters)
    inside, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with decoder_warnings_silenced():
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        inside.wait(5)
        with decoder_warnings_silenced():
            order.append("second in")
            with warnings.catch_warnings(record=True) as caught:  # inside: silenced
                warnings.warn("a value from the file")
            order.append(f"second saw {len(caught)}")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert order == ["first in", "first out", "second in", "second saw 0"]
    assert warnings.filters == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with decoder_warnings_silenced():
            warnings.warn("header text of a file")
    assert caught == []
