"""DICOM ECG waveforms (12-lead, general and ambulatory ECG Waveform Storage), read with pydicom.

pydicom decodes the file; this module picks the rhythm multiplex group and applies each channel's
sensitivity, correction factor and baseline (PS3.3 C.10.9.1.4.2). ecgdatakit is not used here
because it turns every sample equal to the Waveform Padding Value (often 0) into NaN, which drops
real data; samples are taken as stored. The cart's measurements and statements (the Waveform
Annotation Sequence) are read by `device_report.from_dicom`.
"""
from __future__ import annotations

import io
import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import ECGReadError
from . import device_report
from .record import ECGRecord, check_file_size, decoder_warnings_silenced

FORMAT = "DICOM 12-lead ECG"
MAX_BYTES = 256 * 1024 * 1024

# SOP classes that hold ECG waveforms (12-lead, general, ambulatory).
_ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1": "DICOM 12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "DICOM general ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.3": "DICOM ambulatory ECG",
}
_MV_PER_UNIT = {"nV": 1e-6, "uV": 1e-3, "mV": 1.0, "V": 1e3}
_UNIT_ALIASES = {"nv": "nV", "nanovolt": "nV", "uv": "uV", "microvolt": "uV", "µv": "uV",
                 "mv": "mV", "millivolt": "mV", "v": "V", "volt": "V"}
# Sample interpretations decoded as plain integers (mu-law and A-law are not).
_INTEGER_TYPES = {(8, "SB"): "i1", (8, "UB"): "u1", (16, "SS"): "i2", (16, "US"): "u2",
                  (32, "SL"): "i4", (32, "UL"): "u4"}
# SCP-ECG lead codes, as carried in "MDC 2:n" / "SCPECG 5.6.3-9-n" channel source codes.
_SCP_LEADS = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
              10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y",
              18: "Z", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9",
              68: "V8R", 69: "V9R"}
_NOT_RHYTHM_WORDS = ("MEDIAN", "BEAT", "REPRESENTATIVE", "TEMPLATE", "AVERAGE")


_QUIET = threading.local()


class _DropWhileReading(logging.Filter):
    """Drops pydicom's log records in a thread that is inside `read`: pydicom logs every warning
    it issues, and a warning about an invalid value quotes the value (a patient name, an ID)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_QUIET, "active", False)


_FILTER = _DropWhileReading()


@contextmanager
def _quiet(pydicom):
    logger = logging.getLogger("pydicom")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    _QUIET.active = True
    try:
        with decoder_warnings_silenced():
            yield
    finally:
        _QUIET.active = False


def sniff(path: Path, head: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then 'DICM'."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def _unit(channel) -> str | None:
    seq = channel.get("ChannelSensitivityUnitsSequence")
    if not seq:
        return None
    item = seq[0]
    for text in (str(item.get("CodeValue", "") or ""), str(item.get("CodeMeaning", "") or "")):
        unit = _UNIT_ALIASES.get(text.strip().lower())
        if unit:
            return unit
    return None


def _label(channel, index: int) -> str:
    seq = channel.get("ChannelSourceSequence")
    if seq:
        item = seq[0]
        meaning = str(item.get("CodeMeaning", "") or "").strip()
        if meaning:
            return meaning
        code = str(item.get("CodeValue", "") or "").strip()
        tail = code.replace(":", "-").rsplit("-", 1)[-1]
        if tail.isdigit() and int(tail) in _SCP_LEADS:
            return _SCP_LEADS[int(tail)]
    label = str(channel.get("ChannelLabel", "") or "").strip()
    return label or f"Channel {index + 1}"


def _pick_group(groups, name: str) -> int:
    """Index of the rhythm multiplex group: labelled RHYTHM, else the longest non-median group."""
    labels = [str(g.get("MultiplexGroupLabel", "") or "").upper() for g in groups]
    for i, label in enumerate(labels):
        if "RHYTHM" in label:
            return i
    candidates = [i for i, label in enumerate(labels)
                  if not any(word in label for word in _NOT_RHYTHM_WORDS)]
    if not candidates:
        raise ECGReadError(f"{name}: the DICOM file holds only median beats, no rhythm waveform.")

    def duration(i: int) -> float:
        try:
            return int(groups[i].NumberOfWaveformSamples) / float(groups[i].SamplingFrequency)
        except Exception:  # noqa: BLE001
            return 0.0
    return max(candidates, key=duration)


def read(path: Path) -> ECGRecord:
    path = Path(path)
    name = path.name
    check_file_size(path, MAX_BYTES, "DICOM")
    try:
        import pydicom
    except ImportError:
        raise ECGReadError(f"{name}: reading DICOM files needs the pydicom package, "
                           "which is not installed.") from None
    with _quiet(pydicom):
        return _read(pydicom, path, name)


def _read(pydicom, path: Path, name: str) -> ECGRecord:
    try:
        # Parsed from memory: pydicom reads each element with fp.read(length), and a buffered file
        # allocates `length` bytes before reading, so one damaged length field (4 GB at most)
        # would allocate that much for a small file; BytesIO returns only what there is.
        ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
        sop = str(ds.get("SOPClassUID", "") or "")
        groups = ds.get("WaveformSequence")
    except Exception:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise ECGReadError(f"{name}: the file is damaged or truncated and cannot be read as DICOM.") from None
    if not groups:
        raise ECGReadError(f"{name}: the DICOM file holds no waveform (it is not a DICOM ECG).")
    if sop and sop not in _ECG_SOP_CLASSES:
        raise ECGReadError(f"{name}: the DICOM file holds a waveform that is not an ECG.")
    index = _pick_group(groups, name)
    try:
        return _read_group(ds, groups[index], name, _ECG_SOP_CLASSES.get(sop, FORMAT))
    except ECGReadError:
        raise
    except Exception:  # noqa: BLE001
        raise ECGReadError(f"{name}: the DICOM waveform is damaged or truncated and cannot be decoded.") from None


def _read_group(ds, group, name: str, fmt: str) -> ECGRecord:
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    bits = int(group.WaveformBitsAllocated)
    interpretation = str(group.get("WaveformSampleInterpretation", "") or "").upper()
    fs = float(group.SamplingFrequency)
    if n_channels <= 0 or n_samples <= 0:
        raise ECGReadError(f"{name}: the DICOM rhythm waveform holds no samples.")
    dtype = _INTEGER_TYPES.get((bits, interpretation))
    if dtype is None:
        raise ECGReadError(f"{name}: the DICOM waveform uses a sample encoding ({bits} bits, "
                           f"'{interpretation[:4]}') that is not supported.")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    big_endian = syntax == "1.2.840.10008.1.2.2"  # Explicit VR Big Endian (retired)
    dtype = np.dtype(dtype).newbyteorder(">" if big_endian else "<")
    data = bytes(group.WaveformData)
    expected = n_channels * n_samples * dtype.itemsize
    if len(data) < expected:
        raise ECGReadError(f"{name}: the DICOM waveform data is truncated ({len(data)} of "
                           f"{expected} bytes).")
    codes = np.frombuffer(data[:expected], dtype=dtype).reshape(n_samples, n_channels)
    channels = list(group.get("ChannelDefinitionSequence") or [])
    if len(channels) != n_channels:
        raise ECGReadError(f"{name}: the DICOM waveform defines {len(channels)} channels but "
                           f"stores {n_channels}.")
    signal = np.empty((n_channels, n_samples), dtype=np.float32)
    labels, units = [], []
    for i, ch in enumerate(channels):
        sensitivity = ch.get("ChannelSensitivity")
        unit = _unit(ch)
        if sensitivity is None or unit is None:
            raise ECGReadError(f"{name}: channel {i + 1} does not state its sensitivity in volts, "
                               "so it cannot be converted to millivolts.")
        correction = ch.get("ChannelSensitivityCorrectionFactor")
        baseline = ch.get("ChannelBaseline")
        scale = float(sensitivity) * (1.0 if correction is None else float(correction))
        offset = 0.0 if baseline is None else float(baseline)
        with np.errstate(over="ignore", invalid="ignore"):  # an absurd scale gives inf, refused later
            signal[i] = (codes[:, i].astype(np.float64) * scale + offset) * _MV_PER_UNIT[unit]
        labels.append(_label(ch, i))
        stored = f"{float(sensitivity):g} {unit} per unit"
        if stored not in units:
            units.append(stored)
    warn: list[str] = []  # the device's report, once the waveform is known to be readable
    try:
        report = device_report.from_dicom(ds)
    except Exception:  # noqa: BLE001 - a damaged annotation costs the report only, not the waveform
        report = None
        warn.append(device_report.UNREADABLE)
    return ECGRecord(name=name, signal=signal, fs=fs, leads=labels, format=fmt,
                     units="; ".join(units), warnings=warn, device_report=report)
