"""WFDB records (PhysioNet): a .hea header with its signal files (.dat, .mat, .xyz ...).

Read through the `wfdb` package, after checking the header against the files on disk so that a
header claiming more samples than its files hold (truncated or hostile) fails before anything is
allocated. Only the requested window is read (`sampfrom`/`sampto`), so a 30-minute Holter does
not load entirely. Multi-segment records (a master header listing segment headers) and
multi-frequency records (signals with several samples per frame) are read at each signal's own
rate. Header comments (which may hold age, sex, medication) are never copied.

When the whole record is read, each signal's samples are summed and compared with the checksum its
header states; a mismatch is reported in one warning naming the leads, never refused. A window
cannot be checked against a whole-signal sum and is not: no file is read whole just for this.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from .leads import Channel, RawRecord, voltage_scale
from .record import MAX_VALUES, read_error

# Bits per stored sample, per WFDB storage format; compressed FLAC formats (5xx) have no fixed size.
_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12,
         "310": 32 / 3, "311": 32 / 3}
_COMPRESSED = {"508", "516", "524"}
# The stored code that marks an invalid (missing) sample, per format, as wfdb-python reads it back.
# The WFDB library sums such a sample as WFDB_INVALID_SAMPLE (-32768) when it writes a checksum.
_INVALID_CODE = {"8": -128, "16": -32768, "24": -2**23, "32": -2**31, "61": -32768, "80": -128,
                 "160": -32768, "212": -2048, "310": -512, "311": -512}
_WFDB_INVALID_SAMPLE = -32768
MAX_HEADER_BYTES = 1_000_000


def referenced_files(header_path: Path) -> tuple[list[str], list[str]]:
    """(signal files, segment record names) a .hea names, parsed leniently without wfdb.

    Used to group the given files into records before wfdb sees them; returns ([], []) for text
    that is not a WFDB header.
    """
    try:
        text = header_path.read_bytes()[:MAX_HEADER_BYTES].decode("latin-1")
    except OSError:
        return [], []
    lines = [ln.strip() for ln in re.split(r"\r\n|\r|\n", text)]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return [], []
    record_line = lines[0].split()
    if "/" in record_line[0]:  # multi-segment: "name/n_seg n_sig fs sig_len"
        try:
            n_seg = int(record_line[0].split("/")[1])
        except ValueError:
            return [], []
        segments = [ln.split()[0] for ln in lines[1:1 + n_seg] if ln.split()]
        return [], [s for s in segments if s != "~"]
    files = []
    for line in lines[1:]:
        name = line.split()[0]
        if name not in files and name != "~":
            files.append(name)
    return files, []


def single_signal_file(header_path: Path) -> str | None:
    """The one signal file a single-segment header names, when all its signals are stored there in
    a plain WFDB format (8, 16, 212 ...); None otherwise (several files, FLAC, multi-segment).

    Lets a record whose files were renamed together (rec2.hea + rec2.dat, while the header still
    names 100.dat) be read from the signal file given with it.
    """
    try:
        text = header_path.read_bytes()[:MAX_HEADER_BYTES].decode("latin-1")
    except OSError:
        return None
    lines = [ln.strip() for ln in re.split(r"\r\n|\r|\n", text)]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        return None
    record_line = lines[0].split()
    if "/" in record_line[0] or len(record_line) < 2:
        return None
    try:
        n_sig = int(record_line[1])
    except ValueError:
        return None
    signals = [ln.split() for ln in lines[1:1 + n_sig]]
    if n_sig < 1 or len(signals) != n_sig or any(len(tokens) < 2 for tokens in signals):
        return None
    names = {tokens[0] for tokens in signals}
    formats = {re.match(r"\d*", tokens[1]).group(0) for tokens in signals}
    if len(names) != 1 or "~" in names or not formats <= set(_BITS):
        return None
    return names.pop()


def looks_like_header(path: Path) -> bool:
    """True when the file starts like a WFDB header record line."""
    try:
        text = path.read_bytes()[:4096].decode("latin-1")
    except OSError:
        return False
    for line in re.split(r"\r\n|\r|\n", text):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        return bool(re.match(r"^[\w.\-~]+(/\d+)?\s+\d+(\s+[\d.]+(/[\d.]+)?(\([\d.\-]+\))?)?", line))
    return False


def _stated_rate(header_path: Path) -> str | None:
    """The sampling-rate field of the record line as written (wfdb falls back to 250 Hz silently
    when it cannot parse it, so it is checked here first); None when the line has no rate."""
    text = header_path.read_bytes()[:MAX_HEADER_BYTES].decode("latin-1")
    for line in re.split(r"\r\n|\r|\n", text):
        line = line.strip()
        if line and not line.startswith("#"):
            tokens = line.split()
            return tokens[2].split("/")[0] if len(tokens) > 2 else None
    return None


def _check_files(header, directory: Path, hea: str) -> int:
    """Check that every signal file exists and holds what the header says; return sig_len."""
    names = list(header.file_name or [])
    if not names:
        raise read_error(hea, "the header lists no signals.")
    # wfdb builds a list of n_sig channel numbers before reading: 99999999999 would exhaust memory
    if int(header.n_sig or 0) != len(names):
        raise read_error(hea, f"the header declares {_count(header.n_sig, 'signal')} but "
                         f"describes {len(names)}.")
    for name in dict.fromkeys(names):
        if "/" in name or "\\" in name or name in ("..", "."):
            raise read_error(hea, f"the header refers to a signal file outside its folder ({name}).")
    missing = [name for name in dict.fromkeys(names) if not (directory / name).is_file()]
    if len(missing) == 1:
        raise read_error(hea, f"the signal file {missing[0]} is missing; give it together with the "
                         "header.")
    if missing:
        raise read_error(hea, f"the signal files {', '.join(missing[:-1])} and {missing[-1]} are "
                         "missing; give them together with the header.")
    sig_len = header.sig_len
    lengths = []
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        fmt = str(header.fmt[idx[0]])
        if fmt in _COMPRESSED:
            continue
        if fmt not in _BITS:
            raise read_error(hea, f"WFDB storage format {fmt} is not supported.")
        spf = sum(int(header.samps_per_frame[i] or 1) for i in idx)
        offset = int(header.byte_offset[idx[0]] or 0)
        size = (directory / name).stat().st_size
        available = max(0, size - offset) * 8 // (_BITS[fmt] * spf) if spf else 0
        lengths.append(int(available))
        if sig_len is not None and available < sig_len:
            raise read_error(hea, f"the signal file {name} holds {available} samples per signal but the "
                             f"header declares {sig_len} (the file is truncated or the header is wrong).")
    if sig_len is None:
        if not lengths:
            raise read_error(hea, "the header gives no record length for its compressed signal file.")
        sig_len = min(lengths)
    return int(sig_len)


def _count(n, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _check_rate(fs, hea: str) -> float:
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        fs = float("nan")
    if not math.isfinite(fs) or fs <= 0:
        raise read_error(hea, f"the header gives a sampling rate of {fs:g} Hz, which is impossible.")
    return fs


def read(header_path: Path, *, start_s: float = 0.0, duration_s: float | None = None) -> RawRecord:
    """Read the WFDB record whose header is `header_path` (companions in the same folder)."""
    import wfdb

    hea = header_path.name
    directory = header_path.parent
    record_path = str(directory / header_path.stem)
    if header_path.stat().st_size > MAX_HEADER_BYTES:
        raise read_error(hea, "the header is too large to be a WFDB header.")
    stated = _stated_rate(header_path)
    if stated is not None:
        try:
            value = float(stated)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise read_error(hea, f"the header gives the sampling rate '{stated[:20]}', which is not a "
                             "positive number.")
    try:
        header = wfdb.rdheader(record_path)
    except Exception:  # noqa: BLE001 - wfdb raises many kinds; the user needs one sentence
        raise read_error(hea, "this is not a valid WFDB header.") from None

    fs = _check_rate(header.fs, hea)
    segmented = getattr(header, "seg_name", None) is not None
    if segmented:
        values_per_frame = 1
        most_signals = 0
        if int(header.n_seg or 0) != len(header.seg_name):  # wfdb makes a list of n_seg first
            raise read_error(hea, f"the header declares {_count(header.n_seg, 'segment')} but "
                             f"lists {len(header.seg_name)}.")
        for seg_name in header.seg_name:
            if seg_name == "~":
                continue
            if "/" in seg_name or "\\" in seg_name or seg_name in ("..", "."):
                raise read_error(hea, f"the header refers to a segment outside its folder ({seg_name}).")
            if not (directory / f"{seg_name}.hea").is_file():
                raise read_error(hea, f"the segment header {seg_name}.hea is missing; give all segment "
                                 "files together with the master header.")
            try:
                seg = wfdb.rdheader(str(directory / seg_name))
            except Exception:  # noqa: BLE001
                raise read_error(hea, f"the segment header {seg_name}.hea is not a valid WFDB header.") from None
            _check_rate(seg.fs, f"{seg_name}.hea")
            most_signals = max(most_signals, int(seg.n_sig or 0))
            if seg.file_name:
                _check_files(seg, directory, f"{seg_name}.hea")
                values_per_frame = max(values_per_frame,
                                       sum(int(s or 1) for s in seg.samps_per_frame))
        if int(header.n_sig or 0) > most_signals:
            raise read_error(hea, f"the header declares {_count(header.n_sig, 'signal')} but its "
                             f"segments hold at most {most_signals}.")
        sig_len = int(header.sig_len if header.sig_len is not None else sum(header.seg_len))
    else:
        sig_len = _check_files(header, directory, hea)
        values_per_frame = sum(int(s or 1) for s in header.samps_per_frame)
    if sig_len <= 0:
        raise read_error(hea, "the record holds no samples.")

    first = int(round(start_s * fs))
    if first >= sig_len:
        raise read_error(hea, f"the window starts at {start_s:g} s, after the end of the "
                         f"{sig_len / fs:.1f} s recording.")
    last = sig_len if duration_s is None else min(sig_len, first + max(1, int(round(duration_s * fs))))
    if (last - first) * values_per_frame > MAX_VALUES:
        raise read_error(hea, f"the recording is {sig_len / fs / 60:.0f} min long, too long to read at once; "
                         "choose a shorter window (start and duration).")

    multi_rate = segmented or values_per_frame > len(header.sig_name or [])
    warnings: list[str] = []
    try:
        if segmented:
            rec = wfdb.rdrecord(record_path, sampfrom=first, sampto=last, smooth_frames=False)
        else:
            # Digital samples first, so the checksums can be verified, then to physical units
            # exactly as rdrecord(physical=True) converts them.
            rec = wfdb.rdrecord(record_path, sampfrom=first, sampto=last,
                                smooth_frames=not multi_rate, physical=False)
            if first == 0 and header.sig_len is not None and last == int(header.sig_len):
                try:
                    warnings.extend(_checksum_warning(header, rec, multi_rate))
                except Exception:  # noqa: BLE001 - a check that cannot be made never refuses
                    pass
            rec.dac(expanded=multi_rate, return_res=64, inplace=True)
    except Exception:  # noqa: BLE001
        raise read_error(hea, "the signal files could not be decoded as the header describes them "
                         "(corrupt or truncated).") from None

    channels = []
    frame_fs = float(rec.fs)
    spf_read = [int(s or 1) for s in (rec.samps_per_frame or [1] * len(rec.sig_name))]
    for i, name in enumerate(rec.sig_name or []):
        if multi_rate:
            data = np.asarray(rec.e_p_signal[i], dtype=np.float64)
        else:
            data = np.asarray(rec.p_signal[:, i], dtype=np.float64)
        unit = (rec.units[i] if rec.units else None) or "mV"
        channels.append(Channel(name=str(name), data=data, fs=frame_fs * spf_read[i], unit=unit,
                                scale=voltage_scale(unit)))
    if not channels:
        raise read_error(hea, "the header lists no signals.")
    return RawRecord(name=header_path.name, format="WFDB", channels=channels, warnings=warnings,
                     windowed=True, start_s=first / fs, total_duration_s=sig_len / fs)


def _checksum_warning(header, rec, expanded: bool) -> list[str]:
    """The warning naming the signals whose samples do not sum to the checksum the header states
    (16-bit, so compared modulo 65536); nothing when they all match or the header states none.

    `rec` holds the whole record's digital samples in the header's signal order. An invalid-sample
    code counts either as read or as WFDB_INVALID_SAMPLE, the value the WFDB library sums.
    """
    stated = list(header.checksum or [])
    if not any(value is not None for value in stated):
        return []
    signals = rec.e_d_signal if expanded else [rec.d_signal[:, i] for i in range(rec.n_sig)]
    names = list(header.sig_name or [])
    bad = []
    for i, (value, samples) in enumerate(zip(stated, signals)):
        if value is None:
            continue
        samples = np.asarray(samples, dtype=np.int64)
        total = int(samples.sum())
        fmt = str(header.fmt[i])
        if fmt in _INVALID_CODE:
            invalid = int(np.count_nonzero(samples == _INVALID_CODE[fmt]))
            alternative = total + invalid * (_WFDB_INVALID_SAMPLE - _INVALID_CODE[fmt])
        else:
            alternative = total
        if (total - int(value)) % 65536 and (alternative - int(value)) % 65536:
            name = str(names[i]).strip() if i < len(names) and names[i] else ""
            bad.append(name[:40] or f"signal {i + 1}")
    if not bad:
        return []
    if len(bad) == 1:
        return [f"The header's checksum does not match the samples of lead {bad[0]}; the file may "
                "be corrupt or edited."]
    return [f"The header's checksums do not match the samples of leads {', '.join(bad)}; the file "
            "may be corrupt or edited."]
