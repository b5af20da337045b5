"""WFDB records (PhysioNet): a .hea header with its signal files (.dat, .mat, .xyz ...).

The header is parsed here, in one place (`read_header`), following the WFDB header format
(PhysioNet's header(5)). A plain record (one segment, one sample per frame, no skew, every signal
file in one of the formats 16, 61, 80, 160, 212, 24 or 32, a header every field of which parsed
exactly) is decoded here with numpy. Every other record (multi-segment, multi-frequency, FLAC,
skewed, format 8, 310 or 311, or a header this parser is unsure of) is read through the `wfdb`
package, which is imported only for those: it imports pandas and pyarrow, ~80 MB of memory.

Both ways, the header is first checked against the files on disk so that a header claiming more
samples than its files hold (truncated or hostile) fails before anything is allocated. Only the
requested window is read, so a 30-minute Holter does not load entirely. Multi-segment records (a
master header listing segment headers) and multi-frequency records (signals with several samples
per frame) are read at each signal's own rate. Header comments (which may hold age, sex,
medication) are never copied.

When the whole record is read, each signal's samples are summed and compared with the checksum its
header states; a mismatch is reported in one warning naming the leads, never refused. A window
cannot be checked against a whole-signal sum and is not: no file is read whole just for this.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
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
# Formats decoded here, and the numpy type of one stored sample for those aligned on bytes.
_PLAIN_FORMATS = {"16", "61", "80", "160", "212", "24", "32"}
_ALIGNED = {"16": "<i2", "61": ">i2", "32": "<i4", "80": "u1", "160": "<u2"}
MAX_HEADER_BYTES = 1_000_000

# Fields as header(5) writes them; a header line that does not match them exactly is not "exact".
_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_RECORD_NAME = re.compile(r"[-\w]+", re.ASCII)
_RATE = re.compile(rf"{_NUMBER}(?:/-?{_NUMBER}(?:\(-?{_NUMBER}\))?)?")
_FILE_NAME = re.compile(r"[-\w]*\.?\w*", re.ASCII)
_FORMAT = re.compile(r"(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?")
_GAIN = re.compile(rf"(-?{_NUMBER}(?:e[+-]?\d+)?)(?:\((-?\d+)\))?(?:/([\w^\-?%/]+))?", re.ASCII)
_TIME = re.compile(r"\d{1,2}(?::\d{1,2}){0,2}(?:\.\d{1,6})?")
_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{1,4}")
_UNSIGNED = re.compile(r"\d+")
_SIGNED = re.compile(r"-?\d+")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")


class HeaderError(ValueError):
    """The text has no record line a WFDB header could start with."""


@dataclass(frozen=True)
class SignalSpec:
    """One signal line. Fields the line does not give hold header(5)'s defaults: gain 200 ADC
    units per physical unit (also for a stated gain of 0), baseline = ADC zero (else 0), mV."""

    file_name: str
    fmt: str  # the digits the format field starts with ("" when the line has none)
    samps_per_frame: int = 1
    skew: int = 0
    byte_offset: int = 0
    adc_gain: float = 200.0
    baseline: int = 0
    units: str = "mV"
    adc_res: int | None = None
    adc_zero: int | None = None
    init_value: int | None = None
    checksum: int | None = None
    block_size: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Header:
    """A header's record line and its signal (or segment) lines; comments are not kept.

    Lines are read leniently so that the files a header names are known even when a field is
    malformed; `exact` says whether every line matched the header format, every field read as
    written (only then are the values of the numeric fields to be trusted).
    """

    record_name: str
    n_seg: int | None  # None for a single-segment record
    n_sig: int | None  # None when the record line gives no count
    fs: float  # 250 when the header states none; NaN when the stated rate is not a number
    rate_text: str | None  # the sampling-rate field as written (without counter frequency)
    sig_len: int | None
    signals: tuple[SignalSpec, ...]
    segments: tuple[str, ...]  # segment record names ("~" for a gap) of a multi-segment record
    exact: bool


def read_header(header_path: Path) -> Header:
    """The header of a .hea file (at most MAX_HEADER_BYTES of it are read)."""
    with open(header_path, "rb") as handle:
        return parse_header(handle.read(MAX_HEADER_BYTES).decode("latin-1"))


def parse_header(text: str) -> Header:
    """The header written in `text`; HeaderError when it has no record line, or a multi-segment
    record line whose segment count is not a number."""
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise HeaderError("no record line")
    # wfdb drops other bytes than ASCII and breaks lines at more characters: such lines are not
    # read here as it would read them
    exact = all(_PRINTABLE.fullmatch(line) for line in lines)
    tokens = lines[0].split()
    name, slash, seg_text = tokens[0].partition("/")
    if slash and not _UNSIGNED.fullmatch(seg_text):
        raise HeaderError("the segment count is not a number")
    n_seg = int(seg_text) if slash else None
    exact = exact and bool(_RECORD_NAME.fullmatch(name)) and 2 <= len(tokens) <= 6
    n_sig = int(tokens[1]) if len(tokens) > 1 and _UNSIGNED.fullmatch(tokens[1]) else None
    rate_text = tokens[2].split("/")[0] if len(tokens) > 2 else None
    fs = 250.0 if rate_text is None else _float(rate_text)
    if math.isfinite(fs) and round(fs, 8) == float(int(fs)):
        fs = float(int(fs))  # as wfdb rounds it
    exact = exact and n_sig is not None and (len(tokens) < 3 or bool(_RATE.fullmatch(tokens[2])))
    sig_len = int(tokens[3]) if len(tokens) > 3 and _UNSIGNED.fullmatch(tokens[3]) else None
    exact = exact and (len(tokens) < 4 or sig_len is not None)
    exact = exact and (len(tokens) < 5 or _time_is_valid(tokens[4]))
    exact = exact and (len(tokens) < 6 or _date_is_valid(tokens[5]))
    if n_seg is not None:
        segments = tuple(line.split()[0] for line in lines[1:1 + n_seg])
        return Header(name, n_seg, n_sig, fs, rate_text, sig_len, (), segments, exact)
    signals = []
    for line in lines[1:]:
        signal, line_exact = _parse_signal_line(line)
        signals.append(signal)
        exact = exact and line_exact
    return Header(name, None, n_sig, fs, rate_text, sig_len, tuple(signals), (), exact)


def _parse_signal_line(line: str) -> tuple[SignalSpec, bool]:
    """The signal a line describes, and whether every field of it matched the header format
    (a line that did not keeps its file name and format and the defaults for the rest)."""
    parts = line.split(maxsplit=8)
    fmt_match = re.match(r"\d*", parts[1]) if len(parts) > 1 else None
    lenient = SignalSpec(file_name=parts[0], fmt=fmt_match.group(0) if fmt_match else "")
    fields = [_FILE_NAME, _FORMAT, _GAIN, _UNSIGNED, _SIGNED, _SIGNED, _SIGNED, _UNSIGNED]
    matches = [pattern.fullmatch(part) for pattern, part in zip(fields, parts)]
    if len(parts) < 2 or not all(matches):
        return lenient, False
    fmt, spf, skew, offset = matches[1].groups()
    values = {"file_name": parts[0], "fmt": fmt, "samps_per_frame": int(spf or 1),
              "skew": int(skew or 0), "byte_offset": int(offset or 0)}
    numbers = [int(part) for part in parts[3:8]]
    for key, value in zip(("adc_res", "adc_zero", "init_value", "checksum", "block_size"), numbers):
        values[key] = value
    values["baseline"] = values.get("adc_zero", 0)
    if len(parts) > 2:
        gain, baseline, units = matches[2].groups()
        values["adc_gain"] = float(gain) or 200.0
        if baseline is not None:
            values["baseline"] = int(baseline)
        if units is not None:
            values["units"] = units
    if len(parts) > 8:
        values["description"] = parts[8].split("\t")[0]  # as wfdb reads it: up to a tab
    return SignalSpec(**values), True


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _time_is_valid(text: str) -> bool:
    """Whether a base time reads as HH:MM:SS (hours and minutes optional, fraction allowed)."""
    if not _TIME.fullmatch(text):
        return False
    layout = ["%S", "%M:%S", "%H:%M:%S"][text.count(":")] + (".%f" if "." in text else "")
    try:
        datetime.strptime(text, layout)
    except ValueError:
        return False
    return True


def _date_is_valid(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.strptime(text, "%d/%m/%Y")
    except ValueError:
        return False
    return True


def referenced_files(header_path: Path) -> tuple[list[str], list[str]]:
    """(signal files, segment record names) a .hea names.

    Used to group the given files into records before they are read; returns ([], []) for text
    that is not a WFDB header.
    """
    try:
        header = read_header(header_path)
    except (OSError, HeaderError):
        return [], []
    if header.n_seg is not None:
        return [], [name for name in header.segments if name != "~"]
    names = dict.fromkeys(signal.file_name for signal in header.signals)
    return [name for name in names if name != "~"], []


def single_signal_file(header_path: Path) -> str | None:
    """The one signal file a single-segment header names, when all its signals are stored there in
    a plain WFDB format (8, 16, 212 ...); None otherwise (several files, FLAC, multi-segment).

    Lets a record whose files were renamed together (rec2.hea + rec2.dat, while the header still
    names 100.dat) be read from the signal file given with it.
    """
    try:
        header = read_header(header_path)
    except (OSError, HeaderError):
        return None
    if header.n_seg is not None or not header.n_sig or len(header.signals) != header.n_sig:
        return None
    names = {signal.file_name for signal in header.signals}
    if len(names) != 1 or "~" in names or not {s.fmt for s in header.signals} <= set(_BITS):
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


def _check_files(signals: list[SignalSpec], n_sig, sig_len: int | None, directory: Path,
                 hea: str) -> int:
    """Check that every signal file exists and holds what the header says; return sig_len."""
    names = [signal.file_name for signal in signals]
    if not names:
        raise read_error(hea, "the header lists no signals.")
    # wfdb builds a list of n_sig channel numbers before reading: 99999999999 would exhaust memory
    if int(n_sig or 0) != len(names):
        raise read_error(hea, f"the header declares {_count(n_sig, 'signal')} but "
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
    lengths = []
    for name in dict.fromkeys(names):
        stored = [signal for signal in signals if signal.file_name == name]
        fmt = stored[0].fmt
        if fmt in _COMPRESSED:
            continue
        if fmt not in _BITS:
            raise read_error(hea, f"WFDB storage format {fmt} is not supported.")
        spf = sum(signal.samps_per_frame for signal in stored)
        size = (directory / name).stat().st_size
        available = max(0, size - stored[0].byte_offset) * 8 // (_BITS[fmt] * spf) if spf else 0
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


def _window(fs: float, sig_len: int, values_per_frame: int, start_s: float,
            duration_s: float | None, hea: str) -> tuple[int, int]:
    """The frames [first, last) to read, refusing a window past the end or too large to hold."""
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
    return first, last


def read(header_path: Path, *, start_s: float = 0.0, duration_s: float | None = None) -> RawRecord:
    """Read the WFDB record whose header is `header_path` (companions in the same folder)."""
    hea = header_path.name
    if header_path.stat().st_size > MAX_HEADER_BYTES:
        raise read_error(hea, "the header is too large to be a WFDB header.")
    try:
        header = read_header(header_path)
    except HeaderError:
        raise read_error(hea, "this is not a valid WFDB header.") from None
    # wfdb falls back to 250 Hz silently when it cannot parse the rate, so it is checked here
    if header.rate_text is not None and not (math.isfinite(header.fs) and header.fs > 0):
        raise read_error(hea, f"the header gives the sampling rate '{header.rate_text[:20]}', which "
                         "is not a positive number.")
    if _is_plain(header):
        return _read_plain(header, header_path, start_s, duration_s)
    return _read_with_wfdb(header_path, start_s, duration_s)


def _is_plain(header: Header) -> bool:
    """Whether the record is one `_read_plain` decodes: one segment, one sample per frame, no
    skew, and each signal file in one format decoded here from one byte offset."""
    if not header.exact or header.n_seg is not None or not header.signals:
        return False
    for signal in header.signals:
        if (signal.fmt not in _PLAIN_FORMATS or signal.samps_per_frame != 1 or signal.skew
                or signal.file_name == "~"):
            return False
    layouts = {(s.file_name, s.fmt, s.byte_offset) for s in header.signals}
    return len(layouts) == len({s.file_name for s in header.signals})


def _read_plain(header: Header, header_path: Path, start_s: float,
                duration_s: float | None) -> RawRecord:
    """Decode a plain record's window with numpy, as wfdb would: digital samples, checksums over
    the whole record, then (d - baseline) / gain with invalid-sample codes as NaN."""
    hea = header_path.name
    directory = header_path.parent
    signals = list(header.signals)
    sig_len = _check_files(signals, header.n_sig, header.sig_len, directory, hea)
    fs = header.fs
    first, last = _window(fs, sig_len, len(signals), start_s, duration_s, hea)
    try:
        digital: list[np.ndarray] = [np.empty(0)] * len(signals)
        for name in dict.fromkeys(s.file_name for s in signals):
            index = [i for i, s in enumerate(signals) if s.file_name == name]
            spec = signals[index[0]]
            frames = _read_frames(directory / name, spec.fmt, spec.byte_offset, len(index),
                                  first, last)
            for column, i in enumerate(index):
                digital[i] = frames[:, column]
        warnings: list[str] = []
        if first == 0 and header.sig_len is not None and last == header.sig_len:
            warnings.extend(_checksum_warning([s.checksum for s in signals],
                                              [s.fmt for s in signals],
                                              [s.description for s in signals], digital))
        channels = []
        for number, (signal, samples) in enumerate(zip(signals, digital), start=1):
            physical = samples.astype(np.float64)
            physical -= signal.baseline
            physical /= signal.adc_gain
            physical[samples == _INVALID_CODE[signal.fmt]] = np.nan
            channels.append(Channel(name=_signal_name(signal.description, number), data=physical, fs=fs,
                                    unit=signal.units, scale=voltage_scale(signal.units)))
    except Exception:  # noqa: BLE001 - a file changed under us, or a value numpy refuses
        raise read_error(hea, "the signal files could not be decoded as the header describes them "
                         "(corrupt or truncated).") from None
    return RawRecord(name=hea, format="WFDB", channels=channels, warnings=warnings,
                     windowed=True, start_s=first / fs, total_duration_s=sig_len / fs)


def _read_frames(path: Path, fmt: str, byte_offset: int, n_sig: int, first: int,
                 last: int) -> np.ndarray:
    """The digital samples of frames [first, last) of a signal file holding `n_sig` signals, one
    sample per frame each, as an int array [frames, n_sig]; only those frames' bytes are read."""
    start, count = first * n_sig, (last - first) * n_sig  # in samples, all signals interleaved
    if fmt == "212":  # two 12-bit samples in three bytes: read from the pair holding `start`
        skip = start % 2
        pairs = (skip + count + 1) // 2
        stored = _read_bytes(path, byte_offset + (start - skip) // 2 * 3,
                             (3 * (skip + count) + 1) // 2)
        triples = np.zeros(pairs * 3, dtype=np.int16)
        triples[:stored.size] = stored
        triples = triples.reshape(-1, 3)
        samples = np.empty((pairs, 2), dtype=np.int16)
        samples[:, 0] = triples[:, 0] + ((triples[:, 1] & 0x0F) << 8)
        samples[:, 1] = triples[:, 2] + ((triples[:, 1] >> 4) << 8)
        samples = samples.reshape(-1)[skip:skip + count]
        samples[samples > 2047] -= 4096
    elif fmt == "24":  # three bytes, little-endian, two's complement
        stored = _read_bytes(path, byte_offset + start * 3, count * 3).reshape(-1, 3)
        samples = (stored[:, 0].astype(np.int32) | (stored[:, 1].astype(np.int32) << 8)
                   | (stored[:, 2].view(np.int8).astype(np.int32) << 16))
    else:
        dtype = np.dtype(_ALIGNED[fmt])
        stored = _read_bytes(path, byte_offset + start * dtype.itemsize, count * dtype.itemsize)
        samples = stored.view(dtype)
        if fmt == "80":  # offset binary
            samples = samples.astype(np.int16) - 128
        elif fmt == "160":
            samples = samples.astype(np.int32) - 32768
    return samples.reshape(-1, n_sig)


def _read_bytes(path: Path, offset: int, size: int) -> np.ndarray:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(size)
    if len(data) != size:
        raise EOFError(f"{path.name} ends before byte {offset + size}")
    return np.frombuffer(data, dtype=np.uint8)


def _read_with_wfdb(header_path: Path, start_s: float, duration_s: float | None) -> RawRecord:
    """Read any other record through wfdb (multi-segment, multi-frequency, FLAC, skew ...)."""
    import wfdb

    hea = header_path.name
    directory = header_path.parent
    record_path = str(directory / header_path.stem)
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
                _check_files(_wfdb_signals(seg), seg.n_sig, seg.sig_len, directory, f"{seg_name}.hea")
                values_per_frame = max(values_per_frame,
                                       sum(int(s or 1) for s in seg.samps_per_frame))
        if int(header.n_sig or 0) > most_signals:
            raise read_error(hea, f"the header declares {_count(header.n_sig, 'signal')} but its "
                             f"segments hold at most {most_signals}.")
        sig_len = int(header.sig_len if header.sig_len is not None else sum(header.seg_len))
    else:
        sig_len = _check_files(_wfdb_signals(header), header.n_sig, header.sig_len, directory, hea)
        values_per_frame = sum(int(s or 1) for s in header.samps_per_frame)
    first, last = _window(fs, sig_len, values_per_frame, start_s, duration_s, hea)

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
                signals = (rec.e_d_signal if multi_rate
                           else [rec.d_signal[:, i] for i in range(rec.n_sig)])
                try:
                    warnings.extend(_checksum_warning(list(header.checksum or []),
                                                      [str(f) for f in header.fmt],
                                                      list(header.sig_name or []), signals))
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
        channels.append(Channel(name=_signal_name(name, i + 1), data=data, fs=frame_fs * spf_read[i], unit=unit,
                                scale=voltage_scale(unit)))
    if not channels:
        raise read_error(hea, "the header lists no signals.")
    return RawRecord(name=header_path.name, format="WFDB", channels=channels, warnings=warnings,
                     windowed=True, start_s=first / fs, total_duration_s=sig_len / fs)


def _signal_name(description: str | None, number: int) -> str:
    """A signal line's description, or "signal N" when it has none (wfdb gives None)."""
    return str(description).strip() if description and str(description).strip() else f"signal {number}"


def _wfdb_signals(header) -> list[SignalSpec]:
    """The layout of a header as wfdb read it, for `_check_files`."""
    return [SignalSpec(file_name=str(name), fmt=str(fmt), samps_per_frame=int(spf or 1),
                       byte_offset=int(offset or 0))
            for name, fmt, spf, offset in zip(header.file_name or [], header.fmt or [],
                                              header.samps_per_frame or [], header.byte_offset or [])]


def _checksum_warning(stated: list, formats: list[str], names: list, signals: list) -> list[str]:
    """The warning naming the signals whose samples do not sum to the checksum the header states
    (16-bit, so compared modulo 65536); nothing when they all match or the header states none.

    `signals` holds the whole record's digital samples in the header's signal order. An
    invalid-sample code counts either as read or as WFDB_INVALID_SAMPLE, the value the WFDB
    library sums.
    """
    if not any(value is not None for value in stated):
        return []
    bad = []
    for i, (value, samples) in enumerate(zip(stated, signals)):
        if value is None:
            continue
        samples = np.asarray(samples, dtype=np.int64)
        total = int(samples.sum())
        fmt = formats[i]
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
