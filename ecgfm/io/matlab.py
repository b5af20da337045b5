"""MATLAB .mat files that are not WFDB signal files.

Recognised layouts:
- CODE-15% as distributed with ECG-FM: `feats` (12 x N, mV) with `org_sample_rate` /
  `curr_sample_rate`; lead order I, II, III, aVR, aVL, aVF, V1-V6.
- CPSC 2018: a struct `ECG` with `data` (12 x N, mV), `sex` and `age` (never kept); no rate in
  the file: 500 Hz as documented by the dataset, with a warning, unless the caller gives one.
- Generic: a numeric array named signal/ecg/data/... with optional fs/leads/units variables.
A PhysioNet challenge `val` matrix without its .hea header cannot be scaled, so it is refused
with a request for the header. MATLAB v7.3 (HDF5) files are read with h5py when it is installed.
"""
from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import ECGReadError
from .leads import Channel, RawRecord, names_for_unnamed, voltage_scale
from .numpy_format import orient
from .record import MAX_VALUES, STANDARD_LEADS, decoder_warnings_silenced, read_error

CPSC2018_FS = 500.0
_SIGNAL_KEYS = ("feats", "signal", "signals", "ecg", "data", "x", "sig", "waveform", "p_signal")
_RATE_KEYS = ("curr_sample_rate", "org_sample_rate", "fs", "sampling_rate", "sample_rate",
              "sampling_frequency", "sfreq", "srate", "freq", "frequency", "fs_hz")
_LEAD_KEYS = ("leads", "lead_names", "labels", "channels", "sig_name", "ch_names", "channel_names")
MAX_MAT_BYTES = 400_000_000


def _scalar(value) -> float | None:
    try:
        if np.iscomplexobj(value):  # not a rate (and casting it would warn)
            return None
        arr = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return None
    return float(arr[0]) if arr.size == 1 else None


def _names(value) -> list[str] | None:
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        items = arr.ravel().tolist()
    elif arr.dtype == object:
        items = [np.asarray(v).ravel()[0] if np.asarray(v).size else "" for v in arr.ravel()]
    else:
        return None
    names = [str(v).strip() for v in items]
    if len(names) == 1 and len(names[0].split()) > 1:
        names = names[0].split()
    return names


# MAT v5 element types: the numeric ones scipy can decode, and the two that hold arrays.
_MI_NUMERIC = {1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 16, 17, 18}
_MI_INT32S = {5, 6}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_CELL, _MX_STRUCT, _MX_OBJECT, _MX_CHAR, _MX_SPARSE = 1, 2, 3, 4, 5
_MX_NUMERIC = range(6, 16)


class _BadMat(Exception):
    pass


def _check_v5(data: bytes) -> None:
    """Walk a MAT v5 file's elements the way scipy's reader will, refusing (`_BadMat`) any element
    of a type scipy cannot decode or reaching past its parent.

    scipy (1.17) indexes a C table with the type code of a numeric element without checking it,
    so a single damaged byte crashes the whole process (scipy PR 25349); this walk runs first.
    """
    order = "<" if data[126:128] == b"IM" else ">"  # as scipy decides it

    def element(buf: bytes, pos: int, end: int) -> tuple[int, bytes, int]:
        if pos + 8 > end:
            raise _BadMat
        first, second = struct.unpack_from(order + "II", buf, pos)
        if first >> 16:  # small data element: type and size in 4 bytes, data in the next 4
            if first >> 16 > 4:
                raise _BadMat
            return first & 0xFFFF, buf[pos + 4:pos + 4 + (first >> 16)], pos + 8
        stop = pos + 8 + second
        if stop > end:
            raise _BadMat
        return first, buf[pos + 8:stop], min(end, stop + (-second) % 8)

    def int32s(buf: bytes, pos: int, end: int) -> tuple[tuple, int]:
        code, payload, pos = element(buf, pos, end)
        if code not in _MI_INT32S or len(payload) % 4:
            raise _BadMat
        return struct.unpack(order + f"{len(payload) // 4}i", payload), pos

    def numeric(buf: bytes, pos: int, end: int) -> int:
        code, _, pos = element(buf, pos, end)
        if code not in _MI_NUMERIC:
            raise _BadMat
        return pos

    def matrix(buf: bytes, pos: int, end: int) -> int:
        code, payload, after = element(buf, pos, end)
        if code != _MI_MATRIX:
            raise _BadMat
        if payload:
            array(payload)
        return after

    def array(buf: bytes) -> None:
        end = len(buf)
        flags, pos = int32s(buf, 0, end)
        dims, pos = int32s(buf, pos, end)
        pos = numeric(buf, pos, end)  # the name
        if not flags or any(d < 0 for d in dims):
            raise _BadMat
        mclass, is_complex = flags[0] & 0xFF, bool(flags[0] & 0x800)
        count = math.prod(dims)
        if mclass in _MX_NUMERIC or mclass == _MX_CHAR:
            for _ in range(2 if is_complex and mclass != _MX_CHAR else 1):
                pos = numeric(buf, pos, end)
        elif mclass == _MX_SPARSE:
            for _ in range(4 if is_complex else 3):
                pos = numeric(buf, pos, end)
        elif mclass == _MX_CELL:
            for _ in range(count):
                pos = matrix(buf, pos, end)
        elif mclass in (_MX_STRUCT, _MX_OBJECT):
            if mclass == _MX_OBJECT:
                pos = numeric(buf, pos, end)  # the class name
            length, pos = int32s(buf, pos, end)
            code, names, pos = element(buf, pos, end)
            if len(length) != 1 or length[0] <= 0 or code not in _MI_NUMERIC:
                raise _BadMat
            for _ in range(count * (len(names) // length[0])):
                pos = matrix(buf, pos, end)
        else:  # function handles, opaque objects: never an ECG
            raise _BadMat

    pos = 128
    while pos < len(data):
        code, payload, after = element(data, pos, len(data))
        if code == _MI_COMPRESSED:
            inflater = zlib.decompressobj()
            try:
                inner = inflater.decompress(payload, 8 * MAX_VALUES + 1_000_000)
            except zlib.error:
                raise _BadMat from None
            if inflater.unconsumed_tail:
                raise _BadMat
            matrix(inner, 0, len(inner))
        elif code == _MI_MATRIX and after == pos + 8 + len(payload) + (-len(payload)) % 8:
            if payload:
                array(payload)
        else:
            raise _BadMat
        pos += 8 + len(payload)  # scipy goes on right after a variable, padded or not


def _read_as_v5(data: bytes) -> bool:
    """Whether scipy will read `data` as MAT v5, decided as scipy decides it (whatever the text
    at the start says): no zero in the first 4 bytes, major version 1 at offset 124 or 125."""
    if len(data) < 128 or 0 in data[:4]:
        return False
    version = data[124:128]
    return version[1 if version[2] == ord("I") else 0] == 1


def _load(path: Path) -> dict:
    import scipy.io as sio

    fname = path.name
    try:
        data = path.read_bytes()
    except OSError:
        raise read_error(fname, "the file cannot be opened.") from None
    if _read_as_v5(data):
        try:
            _check_v5(data)
        except (_BadMat, struct.error, ValueError, OverflowError):
            raise read_error(fname, "this MATLAB .mat file is damaged (its contents do not hold "
                               "together), so it cannot be read.") from None
    # scipy is given the bytes, not the file: it reads each variable with read(n), n taken from
    # the file, and a buffered file allocates n bytes first (1.6 GB for a damaged v4 header).
    # scipy's warnings quote variable names and header text from the file: never passed on.
    try:
        with decoder_warnings_silenced():
            info = sio.whosmat(io.BytesIO(data))
    except NotImplementedError:
        return _load_v73(path)
    except Exception:  # noqa: BLE001
        raise read_error(fname, "this is not a readable MATLAB .mat file.") from None
    for _name, shape, _cls in info:
        if int(np.prod(shape, dtype=np.float64)) > MAX_VALUES:
            shown = "".join(ch if ch.isprintable() else "?" for ch in str(_name))[:40]
            raise read_error(fname, f"the variable '{shown}' holds {int(np.prod(shape, dtype=np.float64))} "
                               "values, too many to be an ECG.")
    try:
        with decoder_warnings_silenced():
            return sio.loadmat(io.BytesIO(data), squeeze_me=False, struct_as_record=True)
    except Exception:  # noqa: BLE001
        raise read_error(fname, "this MATLAB .mat file is corrupt or truncated.") from None


def _load_v73(path: Path) -> dict:
    fname = path.name
    try:
        import h5py
    except ImportError:
        raise read_error(fname, "this is a MATLAB v7.3 file, which needs h5py; save it with "
                           "save(..., '-v7') instead.") from None
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for key, item in f.items():
                if isinstance(item, h5py.Dataset) and item.dtype.kind in "biuf":
                    if item.size > MAX_VALUES:
                        raise read_error(fname, f"the variable '{key}' is too large to be an ECG.")
                    out[key] = np.asarray(item).T  # HDF5 stores MATLAB arrays transposed
    except ECGReadError:
        raise
    except Exception:  # noqa: BLE001
        raise read_error(fname, "this MATLAB v7.3 file cannot be read.") from None
    return out


MATLAB, CODE15, CPSC2018 = "MATLAB", "MATLAB (CODE-15%)", "MATLAB (CPSC 2018)"


def read(path: Path, *, fs: float | None = None, names_given: bool = False) -> RawRecord:
    """`names_given`: the caller names the leads, so a file without names needs no assumption."""
    fname = path.name
    if path.stat().st_size > MAX_MAT_BYTES:
        raise read_error(fname, "the .mat file is too large to be an ECG.")
    content = {k: v for k, v in _load(path).items() if not k.startswith("__")}
    keys = {k.lower(): k for k in content}
    warnings: list[str] = []
    fmt = MATLAB
    names = None
    rate = None
    unit = ""

    if "ecg" in keys and getattr(content[keys["ecg"]], "dtype", None) is not None \
            and content[keys["ecg"]].dtype.names and "data" in content[keys["ecg"]].dtype.names:
        # CPSC 2018: struct ECG with data (and sex/age, deliberately ignored).
        struct = content[keys["ecg"]].ravel()[0]
        signal = np.asarray(struct["data"])
        fmt = CPSC2018
        if signal.ndim == 2 and 12 in signal.shape:
            names = list(STANDARD_LEADS)
        if fs is None:
            rate = CPSC2018_FS
            warnings.append("The file does not store its sampling rate; 500 Hz was assumed, "
                            "as documented for CPSC 2018 recordings.")
    elif "val" in keys and not any(k in keys for k in _SIGNAL_KEYS):
        raise read_error(fname, "this is a PhysioNet signal file ('val' in ADC units); give its .hea "
                           "header with it.")
    else:
        sig_key = next((keys[k] for k in _SIGNAL_KEYS if k in keys), None)
        if sig_key is None:
            numeric = [k for k, v in content.items() if isinstance(v, np.ndarray)
                       and v.dtype.kind in "biuf" and v.size > 16]
            if len(numeric) != 1:
                raise read_error(fname, "found no variable holding an ECG (such as feats, signal, ecg "
                                   "or data) in the .mat file.")
            sig_key = numeric[0]
        signal = np.asarray(content[sig_key])
        if sig_key.lower() == "feats":
            fmt = CODE15
            if signal.ndim == 2 and 12 in signal.shape:
                names = list(STANDARD_LEADS)
        for key in _RATE_KEYS:
            if key in keys:
                rate = _scalar(content[keys[key]])
                if rate is not None:
                    break
        if fmt == CODE15 and "curr_sample_size" in keys and "curr_sample_rate" in keys:
            n_curr = _scalar(content[keys["curr_sample_size"]])
            if n_curr is not None and int(n_curr) not in signal.shape and "org_sample_rate" in keys:
                rate = _scalar(content[keys["org_sample_rate"]])
        lead_key = next((keys[k] for k in _LEAD_KEYS if k in keys), None)
        if lead_key is not None:
            names = _names(content[lead_key]) or names
        unit_key = keys.get("units") or keys.get("unit")
        if unit_key is not None:
            units = _names(content[unit_key]) or []
            if units and len(set(units)) == 1:
                unit = units[0]
    if signal.dtype.kind not in "biuf":
        raise read_error(fname, "the ECG variable does not hold numbers.")
    stated = rate is not None and fmt != CPSC2018
    if not stated and fs is not None:
        rate = float(fs)
    if rate is None:
        raise read_error(fname, "the file does not state its sampling rate; give the sampling rate (fs).")
    with np.errstate(invalid="ignore"):  # a signalling NaN warns as it widens; it stays missing
        data = orient(signal.astype(np.float64, copy=False), fname, names)
    if data.shape[1] == 0:
        raise read_error(fname, "the ECG variable holds no samples.")
    n = data.shape[0]
    unnamed = names is None or len(names) != n
    if unnamed:
        names, assumed = names_for_unnamed(fname, n, "signals", names_given)
        warnings.extend([assumed] if assumed else [])
    scale = voltage_scale(unit) if unit else None
    if not unit and fmt in (CODE15, CPSC2018):
        unit, scale = "mV (dataset documentation)", 1.0
    channels = [Channel(name=names[i], data=data[i], fs=rate, unit=unit, scale=scale)
                for i in range(n)]
    return RawRecord(name=path.name, format=fmt, channels=channels, warnings=warnings,
                     extra={"fs_stated": stated, "unnamed": unnamed})
