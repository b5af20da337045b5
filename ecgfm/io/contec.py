"""Contec ECG90A raw recordings (`.ECG`), a small proprietary binary format.

Layout (from the recordings themselves and the ecg-contec tools that convert them):

- a 43-byte header: case number (8 bytes, ASCII digits, NUL-padded), 2 bytes, the recording time
  as 'YYYY-MM-DD HH:MM:SS' (20 bytes, NUL-terminated), 2 bytes, patient name (8 bytes), sex, age,
  weight (1 byte each). Only the layout is checked; none of it is read into the record.
- frames of 8 little-endian uint16 samples: II, III, V1, V2, V3, V4, V5, V6; a sample is
  (value - 2048) * 5 uV, the value 0x6800 marks an unavailable sample, and a frame of eight zeros
  ends the data;
- a 37-byte footer.

The rate is not stored; the ECG90A samples at 800 Hz. Lead I is not stored either: it is computed
as II - III (Einthoven), and listed in `derived_leads`, so that the limb leads can be derived from
I and II downstream like for any 8-lead file.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ECGReadError
from .record import ECGRecord, check_file_size

FORMAT = "Contec ECG90A"
FS = 800.0
HEADER = 43
FOOTER = 37
SERIES = ("II", "III", "V1", "V2", "V3", "V4", "V5", "V6")
ZERO = 2048
UV_PER_UNIT = 5.0
UNAVAILABLE = 0x6800
MAX_BYTES = 256 * 1024 * 1024

_FRAME = 2 * len(SERIES)
_CASE = re.compile(rb"[0-9]{1,8}\x00*")
_TIME = re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\x00")


def sniff(path: Path, head: bytes) -> bool:
    """The header's case number and timestamp, and a size of whole frames between header and footer."""
    if len(head) < HEADER or not _CASE.fullmatch(head[:8]) or not _TIME.fullmatch(head[10:30]):
        return False
    try:
        size = Path(path).stat().st_size
    except OSError:
        return False
    return size > HEADER + FOOTER and (size - HEADER - FOOTER) % _FRAME == 0


def read(path: Path) -> ECGRecord:
    path = Path(path)
    name = path.name
    check_file_size(path, MAX_BYTES, "Contec ECG90A")
    try:
        data = path.read_bytes()
    except OSError:
        raise ECGReadError(f"{name}: the file cannot be read.") from None
    if not sniff(path, data[:HEADER]):
        raise ECGReadError(f"{name}: the file is not a complete Contec ECG90A recording "
                           "(its header or size does not match the format).")
    frames = np.frombuffer(data[HEADER:len(data) - FOOTER], dtype="<u2").reshape(-1, len(SERIES))
    end = np.flatnonzero((frames == 0).all(axis=1))
    if end.size:
        frames = frames[:end[0]]
    if frames.shape[0] == 0:
        raise ECGReadError(f"{name}: the Contec ECG90A recording holds no samples.")
    unavailable = frames == UNAVAILABLE
    signal = (frames.T.astype(np.float64) - ZERO) * (UV_PER_UNIT / 1000.0)
    signal[unavailable.T] = np.nan
    warnings: list[str] = []
    empty = [lead for lead, flags in zip(SERIES, unavailable.T) if flags.all()]
    if empty:
        warnings.append(f"Leads {', '.join(empty)} hold no data in the file (all samples are "
                        "marked unavailable) and are NaN.")
    partial = int(unavailable.sum()) - len(empty) * frames.shape[0]
    if partial:
        warnings.append(f"{partial} samples are marked unavailable in the file and are NaN.")
    lead_i = signal[0] - signal[1]  # Einthoven: I = II - III
    warnings.append("Lead I is not stored in Contec ECG90A files and was derived from II and III.")
    return ECGRecord(name=name, signal=np.vstack([signal, lead_i[None, :]]), fs=FS,
                     leads=[*SERIES, "I"], format=FORMAT, units=f"{UV_PER_UNIT:g} uV per unit",
                     warnings=warnings, derived_leads=["I"])
