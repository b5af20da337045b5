"""Vendor and standard ECG formats: GE MUSE, Philips Sierra, HL7 aECG, SCP-ECG, DICOM, Contec ECG90A.

Entry point for the dispatcher: `sniff(path, head)` says whether a file is one of these formats and
`read(path)` returns an `ECGRecord` in millivolts. The XML formats and SCP-ECG are decoded by
ecgdatakit; this module picks the rhythm (full-length) waveform, applies the scale the file states,
keeps the exact sampling rate, and turns every failure into one `ECGReadError` sentence. DICOM and
the Contec raw format live in `dicom.py` and `contec.py`; the cart's own measurements and
interpretation statements are read by `device_report.py`.

Patient data: ecgdatakit reads names, IDs and birth dates into its own record; none of it is copied
into ours, and library exception texts and warnings (which may quote file content or full paths)
are never passed on.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ECGReadError
from . import contec, device_report, dicom
from .record import DeviceReport, ECGRecord, check_file_size, decoder_warnings_silenced

MAX_XML_BYTES = 100 * 1024 * 1024  # a 10 s 12-lead document is well under 1 MB
MAX_SCP_BYTES = 64 * 1024 * 1024
HEAD_BYTES = 4096

# Millivolts per unit, for the voltage units the decoders report.
_MV_PER_UNIT = {"nV": 1e-6, "uV": 1e-3, "mV": 1.0, "V": 1e3}
_UNIT_ALIASES = {
    "nv": "nV", "nanovolt": "nV", "nanovolts": "nV",
    "uv": "uV", "µv": "uV", "μv": "uV", "microvolt": "uV", "microvolts": "uV",
    "mv": "mV", "millivolt": "mV", "millivolts": "mV",
    "v": "V", "volt": "V", "volts": "V",
}

# Leads of one record may differ in length by this fraction at most (trimmed to the shortest).
_MAX_LENGTH_MISMATCH = 0.02


def _voltage_unit(text: str) -> str | None:
    return _UNIT_ALIASES.get(text.strip().lower()) if text else None


# --------------------------------------------------------------------------------------------
# XML safety
# --------------------------------------------------------------------------------------------

_ENTITY_MARKERS = tuple(m for text in ("<!ENTITY",) for m in (
    text.encode("utf-8"), text.encode("utf-16-le"), text.encode("utf-16-be")))
_DOCTYPE_MARKERS = tuple(m for text in ("<!DOCTYPE",) for m in (
    text.encode("utf-8"), text.encode("utf-16-le"), text.encode("utf-16-be")))


def _xml_text_for_scan(raw: bytes) -> str:
    """The document as text, good enough to find markup (not to parse it)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16", errors="replace")
    if raw[:2] == b"<\x00":
        return raw.decode("utf-16-le", errors="replace")
    if raw[:2] == b"\x00<":
        return raw.decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")  # every ASCII-compatible encoding keeps markup readable


def check_xml_safe(raw: bytes, name: str) -> None:
    """Refuse XML that declares entities (entity expansion, external entities) or is not XML.

    A DOCTYPE that only names an external DTD (MUSE: `<!DOCTYPE RestingECG SYSTEM "restecg.dtd">`)
    is harmless, since no DTD is ever fetched; an internal subset (`[...]`) is where entity
    declarations live, and no ECG format needs one. ecgdatakit parses with defusedxml and
    xmltodict(disable_entities=True) as a second line of defence.
    """
    if any(marker in raw for marker in _ENTITY_MARKERS):
        raise ECGReadError(f"{name}: the XML document declares entities, which are refused for safety.")
    if any(marker in raw for marker in _DOCTYPE_MARKERS):
        text = _xml_text_for_scan(raw[:1_000_000])
        match = re.search(r"<!DOCTYPE[^>\[]*(\[)?", text)
        if match and match.group(1):
            raise ECGReadError(f"{name}: the XML document has an inline DTD, which is refused for safety.")
        if "<!ENTITY" in text:
            raise ECGReadError(f"{name}: the XML document declares entities, which are refused for safety.")


# --------------------------------------------------------------------------------------------
# Formats decoded by ecgdatakit
# --------------------------------------------------------------------------------------------


def _parser(kind: str):
    """The ecgdatakit parser class for `kind`, imported on first use."""
    if kind == "muse":
        from ecgdatakit.parsing.parsers.ge_muse_xml import GEMuseXMLParser
        return GEMuseXMLParser
    if kind == "philips":
        from ecgdatakit.parsing.parsers.sierra_xml import SierraXMLParser
        return SierraXMLParser
    if kind == "hl7":
        from ecgdatakit.parsing.parsers.hl7_aecg import HL7aECGParser
        return HL7aECGParser
    if kind == "scp":
        from ecgdatakit.parsing.parsers.scp_ecg import SCPECGParser
        return SCPECGParser
    raise ValueError(kind)


_FORMAT_NAMES = {"muse": "GE MUSE XML", "philips": "Philips Sierra XML", "hl7": "HL7 aECG",
                 "scp": "SCP-ECG", "dicom": "DICOM 12-lead ECG", "contec": "Contec ECG90A"}
_XML_KINDS = ("philips", "muse", "hl7")  # Philips first: the MUSE sniffer defers to it anyway


def _decode_with_ecgdatakit(path: Path, kind: str):
    """Run ecgdatakit's parser for `kind`; every failure becomes one ECGReadError sentence.

    Returns ecgdatakit's record and, for the XML formats, the document's bytes (checked by
    `check_xml_safe`), which `device_report` reads again.
    """
    from ecgdatakit.exceptions import UnsupportedFormatError

    name = path.name
    fmt = _FORMAT_NAMES[kind]
    raw = None
    if kind in _XML_KINDS:
        check_file_size(path, MAX_XML_BYTES, "XML")
        try:
            raw = path.read_bytes()
        except OSError:
            raise ECGReadError(f"{name}: the file cannot be read.") from None
        check_xml_safe(raw, name)
    else:
        check_file_size(path, MAX_SCP_BYTES, fmt)
        if kind == "scp" and not _scp_counts_fit(path.read_bytes()):
            raise ECGReadError(f"{name}: the SCP-ECG file declares more samples than it holds, "
                               "so it is damaged and its waveform cannot be decoded.")
    try:
        with decoder_warnings_silenced():
            return _parser(kind)().parse(path), raw
    except ECGReadError:
        raise
    except MemoryError:
        raise ECGReadError(f"{name}: the {fmt} file is too large to decode in memory.") from None
    except OSError:
        raise ECGReadError(f"{name}: the file cannot be read.") from None
    except UnsupportedFormatError:
        raise ECGReadError(f"{name}: the file uses a {fmt} variant that cannot be decoded.") from None
    except Exception:  # noqa: BLE001 - any decoder failure on a hostile or damaged file
        raise ECGReadError(f"{name}: the file is damaged, truncated or not valid {fmt}, "
                           "and its waveform cannot be decoded.") from None


def _scp_counts_fit(raw: bytes) -> bool:
    """Whether the sample counts an SCP-ECG file declares (the lead ranges of Section 3, the
    reference beat length of Sections 4 and 5) fit in the file at one bit per sample or more.

    ecgdatakit allocates each declared count before decoding: one damaged field would make it
    allocate up to 32 GB for a file of a few kB.
    """
    def u16(data: bytes, pos: int) -> int:
        return int.from_bytes(data[pos:pos + 2], "little")

    def u32(data: bytes, pos: int) -> int:
        return int.from_bytes(data[pos:pos + 4], "little")

    bodies = {}
    for pos in range(22, min(len(raw), 6 + u32(raw, 10)) - 9, 10):  # Section 0's pointers
        sid, length, index = u16(raw, pos), u32(raw, pos + 2), u32(raw, pos + 6)
        if sid in (3, 4, 5) and index and length >= 16:
            length = min(length, u32(raw, index - 1 + 4) or length)
            bodies[sid] = raw[index - 1 + 16:index - 1 + length]
    counts = []
    leads = bodies.get(3, b"")
    for i in range(leads[0] if leads else 0):
        counts.append(u32(leads, 6 + 9 * i) - u32(leads, 2 + 9 * i) + 1)
    interval = u16(bodies.get(5, b""), 2)
    if interval:
        counts.append(round(u16(bodies.get(4, b""), 0) * 1000 / interval))
    return all(count <= 8 * len(raw) for count in counts)


def _lead_to_mv(lead, name: str) -> tuple[np.ndarray, str]:
    """One ecgdatakit lead in millivolts, and the unit the file stores it in (for `units`)."""
    samples = np.asarray(lead.samples, dtype=np.float64)
    if lead.is_raw:
        unit = _voltage_unit(lead.resolution_unit)
        if unit is None or not lead.resolution:
            raise ECGReadError(f"{name}: lead {lead.label} does not state its amplitude scale in "
                               "volts, so it cannot be converted to millivolts.")
        physical = samples * float(lead.resolution) + float(lead.offset or 0.0)
        stored = f"{lead.adc_resolution or lead.resolution:g} {lead.adc_resolution_unit or unit} per unit"
    else:
        unit = _voltage_unit(lead.units)
        if unit is None:
            raise ECGReadError(f"{name}: lead {lead.label} is stored in a unit that is not a "
                               "voltage, so it cannot be converted to millivolts.")
        physical = samples
        stored = lead.adc_resolution_unit or lead.units
        if lead.adc_resolution:
            stored = f"{lead.adc_resolution:g} {stored} per unit"
    return physical * _MV_PER_UNIT[unit], stored


def _stack(leads: list[np.ndarray], name: str, warn: list[str]) -> np.ndarray:
    lengths = [len(x) for x in leads]
    shortest, longest = min(lengths), max(lengths)
    if shortest == 0:
        raise ECGReadError(f"{name}: the rhythm waveform holds no samples.")
    if shortest != longest:
        if (longest - shortest) > _MAX_LENGTH_MISMATCH * longest:
            raise ECGReadError(f"{name}: the leads have different lengths ({shortest} to {longest} "
                               "samples) and cannot be combined into one recording.")
        warn.append(f"Leads had slightly different lengths; all were cut to the shortest "
                    f"({shortest} samples).")
    return np.stack([x[:shortest] for x in leads]).astype(np.float32)


def _record_from_ecgdatakit(path: Path, kind: str, fs_exact: Callable | None = None) -> ECGRecord:
    name = path.name
    rec, raw = _decode_with_ecgdatakit(path, kind)
    leads = list(rec.leads)
    if not leads:
        raise ECGReadError(f"{name}: the file holds no rhythm (full-length) waveform.")
    rates = {int(lead.sampling_rate) for lead in leads}
    if len(rates) != 1:
        raise ECGReadError(f"{name}: the leads are sampled at different rates, which is not supported.")
    starts = {lead.annotations.get("start_sample", "1") for lead in leads}
    if len(starts) != 1:
        raise ECGReadError(f"{name}: the leads were not recorded simultaneously, so they cannot be "
                           "combined into one recording.")
    warn: list[str] = []
    converted, stored_units = [], []
    # An absurd scale (1e308 uV per unit) overflows to inf, which is then handled like any
    # unreadable sample; numpy's overflow warnings are not for the caller.
    with np.errstate(over="ignore", invalid="ignore"):
        for lead in leads:
            mv, stored = _lead_to_mv(lead, name)
            converted.append(mv)
            if stored not in stored_units:
                stored_units.append(stored)
        signal = _stack(converted, name, warn)
    labels = [str(lead.label) for lead in leads]
    missing = int(np.isnan(signal).sum())
    if missing:
        warn.append(f"{missing} samples are marked as missing in the file and are NaN.")
    fs = float(rates.pop())
    if fs_exact is not None:
        exact = fs_exact(rec)
        if exact:
            fs = float(exact)
    if kind == "philips":
        version = (rec.file_format.version or "").strip()
        fmt = f"Philips Sierra XML {version}" if re.fullmatch(r"[0-9.]{1,12}", version) else "Philips Sierra XML"
        signal, trimmed = _trim_calibration_pulse(signal, fs)
        if trimmed:
            warn.append(f"The 1 mV calibration pulse at the end of the rhythm was removed; "
                        f"{signal.shape[1] / fs:.2f} s of ECG remain.")
    else:
        fmt = _FORMAT_NAMES[kind]
    if rec.raw_metadata.get("checksum_valid") is False:
        warn.append("The file's checksum does not match its content; the waveform may be damaged.")
    return ECGRecord(name=name, signal=signal, fs=fs, leads=labels, format=fmt,
                     units="; ".join(stored_units), warnings=warn,
                     device_report=_device_report(kind, rec, raw, warn))


def _device_report(kind: str, rec, raw: bytes | None, warn: list[str]) -> DeviceReport | None:
    """The cart's measurements and statements; a part of the file that holds them but cannot be
    read costs them only (the waveform was read), which a warning says."""
    try:
        with decoder_warnings_silenced():
            return device_report.from_ecgdatakit(kind, rec, raw)
    except Exception:  # noqa: BLE001 - a damaged or unusual report part, never the waveform
        warn.append(device_report.UNREADABLE)
        return None


def _trim_calibration_pulse(signal: np.ndarray, fs: float) -> tuple[np.ndarray, bool]:
    """Cut the 1 mV calibration pulse Philips carts append to the rhythm (the last ~0.4 s).

    It is recognised, not assumed: a trailing stretch of 0.1 to 1 s in which every lead holds the
    same value at every sample, only 0 or 1 mV, with some 1 mV samples. Nothing else is cut.
    """
    if signal.shape[0] < 2:
        return signal, False
    same = np.all(signal == signal[0], axis=0)
    if not same[-1]:
        return signal, False
    differs = np.flatnonzero(~same)
    start = int(differs[-1]) + 1 if differs.size else 0
    tail = signal[0, start:]
    if not 0.1 * fs <= tail.size <= 1.0 * fs or start == 0:
        return signal, False
    at_zero = np.abs(tail) < 1e-6
    at_one = np.abs(tail - 1.0) < 1e-6
    if not np.all(at_zero | at_one) or not at_one.any():
        return signal, False
    return signal[:, :start], True


def _hl7_rate(rec) -> float | None:
    info = rec.raw_metadata.get("rhythm_time") or {}
    rate = info.get("sampling_rate_exact")
    return float(rate) if isinstance(rate, (int, float)) and rate > 0 else None


def _scp_rate(rec) -> float | None:
    # SCP-ECG stores the sample interval in whole microseconds: 1667 us is 599.88 Hz, not 600
    interval = rec.raw_metadata.get("rhythm_sample_interval_us")
    return 1e6 / interval if isinstance(interval, (int, float)) and interval > 0 else None


_READERS: dict[str, Callable[[Path], ECGRecord]] = {
    "muse": lambda p: _record_from_ecgdatakit(p, "muse"),
    "philips": lambda p: _record_from_ecgdatakit(p, "philips"),
    "hl7": lambda p: _record_from_ecgdatakit(p, "hl7", _hl7_rate),
    "scp": lambda p: _record_from_ecgdatakit(p, "scp", _scp_rate),
    "dicom": dicom.read,
    "contec": contec.read,
}


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def detect(path: Path, head: bytes) -> str | None:
    """Which of this module's formats the file is ('muse', 'philips', 'hl7', 'scp', 'dicom',
    'contec'), or None. Looks at the first bytes only; never raises."""
    try:
        path = Path(path)
        if dicom.sniff(path, head):
            return "dicom"
        for kind in (*_XML_KINDS, "scp"):
            if _parser(kind).can_parse(path, head):
                return kind
        if contec.sniff(path, head):
            return "contec"
    except Exception:  # noqa: BLE001 - sniffing must never raise
        return None
    return None


def sniff(path: Path, head: bytes) -> bool:
    """True if this module recognises the file from its first bytes (`head`, ~4 KB)."""
    return detect(path, head) is not None


def read(path: Path) -> ECGRecord:
    """Read a GE MUSE / Philips / HL7 aECG / SCP-ECG / DICOM / Contec ECG90A file, signal in mV."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        raise ECGReadError(f"{path.name}: the file cannot be opened.") from None
    kind = detect(path, head)
    if kind is None:
        raise ECGReadError(f"{path.name}: the file is not a GE MUSE, Philips, HL7 aECG, DICOM, "
                           "SCP-ECG or Contec ECG90A file.")
    return _READERS[kind](path)
