"""NumPy arrays: .npy ([leads, samples] or [samples, leads], rate from the caller) and .npz.

An .npz may carry, besides the signal (key signal, ecg, data, x, sig, val, feats or its only
array), the rate (fs, sampling_rate, sample_rate, sfreq, freq, frequency, org_sample_rate), the
lead names (leads, lead_names, labels, channels, sig_name, ch_names) and a unit (units, unit).
Pickled objects are never loaded. Array sizes are checked from the headers before reading.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import ECGReadError
from .leads import Channel, RawRecord, names_for_unnamed, voltage_scale
from .record import MAX_VALUES, read_error

_SIGNAL_KEYS = ("signal", "signals", "ecg", "data", "x", "sig", "val", "feats", "waveform", "p_signal")
_RATE_KEYS = ("fs", "sampling_rate", "sample_rate", "sampling_frequency", "sfreq", "srate", "freq",
              "frequency", "org_sample_rate", "fs_hz")
_LEAD_KEYS = ("leads", "lead_names", "labels", "channels", "sig_name", "ch_names", "channel_names")
_UNIT_KEYS = ("units", "unit")


def orient(array: np.ndarray, fname: str, names: list[str] | None = None) -> np.ndarray:
    """[leads, samples] from a 1-D or 2-D array in either orientation."""
    if array.ndim == 1:
        return array[None, :]
    if array.ndim == 3 and 1 in array.shape:
        array = array.reshape([d for d in array.shape if d != 1] or [1])
        return orient(array, fname, names)
    if array.ndim != 2:
        raise read_error(fname, f"the array has shape {array.shape}; an ECG must be 1-D or 2-D "
                           "(leads x samples).")
    rows, cols = array.shape
    if names is not None and len(names) in (rows, cols) and rows != cols:
        return array if len(names) == rows else array.T
    return array if rows <= cols else array.T


def _as_names(value) -> list[str] | None:
    arr = np.asarray(value)
    if arr.dtype.kind not in "US":
        return None
    return [str(v.decode() if isinstance(v, bytes) else v).strip() for v in arr.ravel()]


def _channels(signal: np.ndarray, fname: str, fs: float | None, names, unit: str,
              warnings: list[str], names_given: bool = False) -> tuple[list[Channel], bool]:
    """The channels, and whether the file left them unnamed."""
    if signal.dtype.kind not in "biuf":
        raise read_error(fname, f"the array holds {signal.dtype} values, not numbers.")
    if signal.size > MAX_VALUES:
        raise read_error(fname, f"the array holds {signal.size} values, too many to read at once.")
    data = orient(np.asarray(signal), fname, names)
    if data.shape[1] == 0:
        raise read_error(fname, "the array holds no samples.")
    if fs is None:
        raise read_error(fname, "the file does not state its sampling rate; give the sampling rate (fs).")
    n = data.shape[0]
    unnamed = names is None or len(names) != n
    if unnamed:
        names, assumed = names_for_unnamed(fname, n, "rows", names_given)
        warnings.extend([assumed] if assumed else [])
    scale = voltage_scale(unit) if unit else None
    with np.errstate(invalid="ignore"):  # a signalling NaN warns as it widens; it stays missing
        rows = [data[i].astype(np.float64) for i in range(n)]
    return [Channel(name=names[i], data=rows[i], fs=float(fs), unit=unit,
                    scale=scale) for i in range(n)], unnamed


def read_npy(path: Path, *, fs: float | None = None, names_given: bool = False) -> RawRecord:
    fname = path.name
    try:
        with np.errstate(over="ignore"):  # a shape whose size overflows fails quietly here
            array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:  # noqa: BLE001
        raise read_error(fname, "this is not a readable NumPy .npy array.") from None
    warnings: list[str] = []
    channels, unnamed = _channels(array, fname, fs, None, "", warnings, names_given)
    return RawRecord(name=path.name, format="NumPy .npy", channels=channels, warnings=warnings,
                     extra={"fs_stated": False, "unnamed": unnamed})


def read_npz(path: Path, *, fs: float | None = None, names_given: bool = False) -> RawRecord:
    fname = path.name
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if len(zf.infolist()) > 100 or total > 8 * MAX_VALUES + 10_000_000:
                raise read_error(fname, "the .npz archive is too large to be an ECG.")
        archive = np.load(path, allow_pickle=False)
    except ECGReadError:
        raise
    except Exception:  # noqa: BLE001
        raise read_error(fname, "this is not a readable NumPy .npz archive.") from None
    with archive:
        keys = {k.lower(): k for k in archive.files}
        sig_key = next((keys[k] for k in _SIGNAL_KEYS if k in keys), None)
        if sig_key is None:
            numeric = [k for k in archive.files if archive[k].ndim >= 1 and archive[k].size > 16
                       and archive[k].dtype.kind in "biuf"]
            if len(numeric) != 1:
                raise read_error(fname, "the .npz archive has no array named signal, ecg or data, and "
                                   "not exactly one array that could be the signal.")
            sig_key = numeric[0]
        try:
            signal = archive[sig_key]
        except Exception:  # noqa: BLE001
            raise read_error(fname, f"the array '{sig_key}' cannot be read without unpickling objects.") from None
        rate = None
        rate_key = next((keys[k] for k in _RATE_KEYS if k in keys), None)
        if rate_key is not None:
            try:
                value = np.asarray(archive[rate_key]).ravel()[0]
                if np.iscomplexobj(value):  # not a rate (and casting it would warn)
                    raise TypeError(rate_key)
                rate = float(value)
            except Exception:  # noqa: BLE001
                raise read_error(fname, f"the sampling rate '{rate_key}' is not a number.") from None
        names = None
        lead_key = next((keys[k] for k in _LEAD_KEYS if k in keys), None)
        if lead_key is not None:
            try:
                names = _as_names(archive[lead_key])
            except Exception:  # noqa: BLE001
                names = None
        unit = ""
        unit_key = next((keys[k] for k in _UNIT_KEYS if k in keys), None)
        if unit_key is not None:
            units = _as_names(archive[unit_key]) or []
            if units and len(set(units)) == 1:
                unit = units[0]
    warnings: list[str] = []
    stated = rate is not None
    if not stated and fs is not None:
        rate = float(fs)
    channels, unnamed = _channels(signal, fname, rate, names, unit, warnings, names_given)
    return RawRecord(name=path.name, format="NumPy .npz", channels=channels, warnings=warnings,
                     extra={"fs_stated": stated, "unnamed": unnamed})
