"""EDF, EDF+ and BDF (BioSemi) files through pyedflib.

Each channel keeps its own label, physical dimension (uV, mV ...) and sampling rate; only the
requested window is read. Constant (flat) channels are kept as they are: the preprocessing sets
constant leads to zero. Patient and recording header fields are never copied.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .leads import Channel, RawRecord, voltage_scale
from .record import MAX_VALUES, read_error


def looks_like_edf(head: bytes) -> bool:
    """EDF starts with '0' and seven spaces; BDF with 0xFF 'BIOSEMI'."""
    return head[:8] == b"0       " or head[:8] == b"\xffBIOSEMI"


def read(path: Path, *, start_s: float = 0.0, duration_s: float | None = None) -> RawRecord:
    import pyedflib

    fname = path.name
    try:
        reader = pyedflib.EdfReader(str(path))
    except Exception:  # noqa: BLE001 - pyedflib reports header problems as OSError with C text
        raise read_error(fname, "this is not a valid EDF/BDF file (corrupt, truncated or not EDF).") from None
    try:
        n_sig = reader.signals_in_file
        if n_sig == 0:
            raise read_error(fname, "the EDF file holds no signals.")
        total = float(reader.getFileDuration())
        rates = [float(r) for r in reader.getSampleFrequencies()]
        if any(not np.isfinite(r) or r <= 0 for r in rates):
            raise read_error(fname, "the EDF header gives an impossible sampling rate.")
        if total <= 0:
            raise read_error(fname, "the EDF file holds no samples.")
        if start_s >= total:
            raise read_error(fname, f"the window starts at {start_s:g} s, after the end of the "
                               f"{total:.1f} s recording.")
        n_samples = reader.getNSamples()
        channels = []
        values = 0
        first_start = None
        for i in range(n_sig):
            fs = rates[i]
            first = int(round(start_s * fs))
            count = int(n_samples[i]) - first
            if duration_s is not None:
                count = min(count, int(round(duration_s * fs)))
            count = max(count, 0)
            values += count
            if values > MAX_VALUES:
                raise read_error(fname, "the recording is too long to read at once; choose a shorter "
                                   "window (start and duration).")
            data = reader.readSignal(i, first, count) if count else np.zeros(0)
            unit = reader.getPhysicalDimension(i).strip()
            if first_start is None:
                first_start = first / fs
            channels.append(Channel(name=reader.getLabel(i).strip(), data=np.asarray(data, np.float64),
                                    fs=fs, unit=unit, scale=voltage_scale(unit) if unit else None))
        warnings: list[str] = []
        fmt = "BDF" if reader.filetype in (2, 3) else "EDF"
    finally:
        reader.close()
    return RawRecord(name=path.name, format=fmt, channels=channels, warnings=warnings, windowed=True,
                     start_s=first_start or 0.0, total_duration_s=total)
