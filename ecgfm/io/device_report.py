"""The recording device's own reading of an ECG, as the cart stored it in the file.

GE MUSE, Philips, HL7 aECG, SCP-ECG and DICOM files can carry the global measurements and the
interpretation statements of the cart's algorithm (GE 12SL, Philips, Mortara, Welch Allyn ...).
This module turns them into a `DeviceReport`, shown beside ECG-FM's output and used to compare our
own measurements with the cart's. It measures nothing itself and never judges which reading is
right; it does not read the waveform (the format readers in `vendor.py` and `dicom.py` do).

The same rules for every format:
- Only what the device wrote. What a reviewer edited or entered is left out: MUSE's current
  measurements and diagnosis when the original ones are stored, Philips values flagged as edited,
  HL7 annotation sets authored by a person, confirmed or overread statements (the machine ones,
  which the files keep beside them, are used).
- A value the device marks as not measured is absent, never a number: an empty or non-numeric
  field, SCP-ECG's 29997-29999 and 999 (axes), 0 or a negative rate or interval, anything far
  outside what the quantity can be. Units are converted to the keys' units; a value whose unit is
  not understood is absent.
- Axes are in degrees, given in -90..270 as GE's 12SL gives them and `ecgfm.measure` does, so that
  the two columns compare at a glance (a cart's -100 is 260).
- Statements keep the device's order and wording, with whitespace collapsed; a Philips statement
  and its reason are joined as "statement | reason". A line that can name a person ("Confirmed
  by", technician, physician, "Dr" ...) or that contains one of the file's own identifiers (patient
  name parts, IDs, birth date, names of staff) is dropped; the identifiers serve only for that
  comparison and are never kept.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Iterable

from .record import DeviceReport

# Largest value each measurement can take; above it (SCP-ECG's 29999, 0xFFFF ...) it is a code.
_LIMITS = {"heart_rate": 500.0, "atrial_rate": 1000.0, "rr": 10_000.0, "pr": 2000.0,
           "qrs": 2000.0, "qt": 2000.0, "qtc": 2000.0, "qtc_bazett": 2000.0,
           "qtc_fridericia": 2000.0}
_AXES = ("p_axis", "qrs_axis", "t_axis")
KEYS = (*_LIMITS, *_AXES)

MAX_STATEMENTS = 100
MAX_STATEMENT_CHARS = 500
# The warning a reader adds when the part of a file holding these cannot be read (the waveform was).
UNREADABLE = ("The measurements and statements the recording device stored in the file could not "
              "be read, so they are not shown.")

_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")

# Unit conversions to the keys' units (UCUM codes and the spellings carts use).
_TIME_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_RATE_BPM = {"/min": 1.0, "1/min": 1.0, "bpm": 1.0, "{beats}/min": 1.0, "{beat}/min": 1.0,
             "beats/min": 1.0}
_ANGLE_DEG = {"deg": 1.0, "degree": 1.0, "degrees": 1.0, "°": 1.0, "rad": 180.0 / math.pi}


# --------------------------------------------------------------------------------------------
# Values, statements, identifiers: the rules shared by every format
# --------------------------------------------------------------------------------------------


def _number(text) -> float | None:
    """A number written as plain digits (no 'nan', 'inf' or exponent), else None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    text = str(text or "").strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _measurement(key: str, value) -> float | None:
    """`value` as the key's quantity, or None when it is one of the formats' 'not measured' codes."""
    number = _number(value)
    if number is None or not math.isfinite(number):
        return None
    if key in _AXES:
        if abs(number) > 360.0:
            return None
        angle = math.fmod(number, 360.0) + 0.0  # never -0.0
        return angle - 360.0 if angle > 270.0 else angle + 360.0 if angle <= -90.0 else angle
    return number if 0.0 < number <= _LIMITS[key] else None


def _converted(key: str, value, unit: str) -> float | None:
    """A coded measurement (HL7 aECG, DICOM) in the key's unit; None for a unit not understood."""
    table = _ANGLE_DEG if key in _AXES else _RATE_BPM if key.endswith("rate") else _TIME_MS
    factor = table.get((unit or "").strip())
    number = _number(value)
    return None if factor is None or number is None else number * factor


_PERSON = re.compile(
    r"\b(?:confirmed|reviewed|over-?read|overread|referred|requested|ordered|interpreted|signed|"
    r"edited|approved|verified|read|acquired|recorded|performed|entered|reported|analy[sz]ed|"
    r"authenticated)\s+by\b"
    r"|\b(?:technician|tech|physician|operator|doctor|dr|md|nurse|cardiologist|overreader|"
    r"clinician|attending|referring|requesting|ordering)\b"
    r"|\b(?:name|id|mrn|dob)\s*:", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+")


def _date_forms(value) -> list[str]:
    """The ways a birth date is commonly written, so that any of them in a statement is caught."""
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        text = str(value or "").strip()
        digits = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text)  # DICOM DA, SCP/HL7 stamps
        try:
            value = date(*map(int, digits.groups())) if digits else None
        except ValueError:
            value = None
        if value is None:
            return [text] if len(text) >= 6 else []
    y, m, d = value.year, value.month, value.day
    month = value.strftime("%b")
    return [f"{y:04d}-{m:02d}-{d:02d}", f"{y:04d}{m:02d}{d:02d}", f"{m:02d}-{d:02d}-{y:04d}",
            f"{m:02d}/{d:02d}/{y:04d}", f"{d:02d}/{m:02d}/{y:04d}", f"{d:02d}.{m:02d}.{y:04d}",
            f"{d:02d}-{month}-{y:04d}", f"{d} {value.strftime('%B')} {y}"]


def _identifier_pattern(names: Iterable, ids: Iterable, birth_dates: Iterable) -> re.Pattern | None:
    """One pattern matching any of the file's identifiers: each part of a name (two letters or
    more) and each ID (three characters or more) as a whole word, a birth date in any common form.

    Names are split into their parts because a statement would rarely quote a full name as
    stored ("SMITH^JOHN"); IDs are not, since their parts are often short numbers that plain
    statements contain ("12").
    """
    words = {part.lower() for name in names for part in _WORD.findall(str(name or ""))
             if len(part) >= 2}
    words |= {str(i).strip().lower() for i in ids if len(str(i or "").strip()) >= 3}
    dates = {form.lower() for value in birth_dates if value for form in _date_forms(value)}
    alternatives = [rf"(?<![^\W_]){re.escape(w)}(?![^\W_])" for w in sorted(words)]
    alternatives += [re.escape(form) for form in sorted(dates)]
    return re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None


def _statements(lines: Iterable[str], identifiers: re.Pattern | None) -> tuple[str, ...]:
    """The device's statement lines as shown: printable, trimmed, without the lines that can
    carry a person; at most MAX_STATEMENTS of them."""
    kept: list[str] = []
    for line in lines:
        text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(line)).split())
        if not text or len(text) > MAX_STATEMENT_CHARS or _PERSON.search(text):
            continue
        if identifiers is not None and identifiers.search(text):
            continue
        kept.append(text)
        if len(kept) == MAX_STATEMENTS:
            break
    return tuple(kept)


def _source(family: str, model, identifiers: re.Pattern | None) -> str:
    """The algorithm family, with the device model when the file states a plain one."""
    model = " ".join(str(model or "").split())
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}", model) or (
            identifiers is not None and identifiers.search(model)):
        return family
    return f"{family}: {model}"


def _report(family: str, model, values: dict, lines: Iterable[str],
            identifiers: re.Pattern | None) -> DeviceReport | None:
    measurements = {}
    for key in KEYS:
        value = _measurement(key, values.get(key))
        if value is not None:
            measurements[key] = value
    statements = _statements(lines, identifiers)
    if not measurements and not statements:
        return None
    return DeviceReport(_source(family, model, identifiers), measurements, statements)


# --------------------------------------------------------------------------------------------
# Formats decoded by ecgdatakit (GE MUSE, Philips, HL7 aECG, SCP-ECG)
# --------------------------------------------------------------------------------------------


def from_ecgdatakit(kind: str, rec, raw: bytes | None) -> DeviceReport | None:
    """The device's report from ecgdatakit's record `rec` of a 'muse', 'philips', 'hl7' or 'scp'
    file and, for the XML formats, the document's bytes `raw` (already checked by
    `vendor.check_xml_safe`), parsed again here for what ecgdatakit does not keep: which values
    were edited, the QTc formula, the authors of HL7 annotation sets. None when the file stores
    nothing of the device's reading.
    """
    identifiers = _record_identifiers(rec)
    model = rec.recording.device.model
    if kind == "scp":
        return _report("SCP-ECG", model, _scp_values(rec), _machine_lines(rec), identifiers)
    from ecgdatakit.parsing.helpers.xml import parse_xml_root

    root = parse_xml_root(raw)
    if kind == "muse":
        return _report("GE MUSE (12SL)", model, _muse_values(root), _machine_lines(rec),
                       identifiers)
    if kind == "philips":
        return _report("Philips", model, _philips_values(root), _philips_lines(root, rec),
                       identifiers)
    if kind == "hl7":
        values, lines = _hl7_annotations(root)
        return _report("HL7 aECG", model, values, lines, identifiers)
    raise ValueError(kind)


def _record_identifiers(rec) -> re.Pattern | None:
    """The people ecgdatakit found in the file: the patient, technician, physicians, reviewer."""
    patient, recording, raw = rec.patient, rec.recording, rec.raw_metadata
    names = [patient.first_name, patient.last_name, raw.get("second_last_name"),
             recording.technician, recording.referring_physician,
             rec.interpretation.interpreter, raw.get("confirming_physician")]
    return _identifier_pattern(names, [patient.patient_id], [patient.birth_date])


def _machine_lines(rec) -> list[str]:
    """The device's statements as ecgdatakit separates them from a reviewer's: the statements
    themselves when the device made them, else the machine statements it kept beside."""
    interp = rec.interpretation
    if interp.source == "machine":
        return [f"{left} | {right}" if right else left for left, right in interp.statements]
    stored = rec.annotations.get("machine_interpretation", "")
    return stored.split("\n") if stored else []


def _muse_values(root) -> dict:
    """GE 12SL's measurements: the original ones (as acquired) when MUSE also keeps edited ones.

    QTCorrected is Bazett's by GE's documentation, but a MUSE system can be set to another
    formula and the file does not say which; it is called Bazett's only when it agrees with
    Bazett's formula applied to the file's own QT and ventricular rate (within their rounding to
    whole numbers), else a QTc of unstated formula. QTcFrederica is Fridericia's (GE's spelling).
    """
    section = next((s for s in (root.find("OriginalRestingECGMeasurements"),
                                root.find("RestingECGMeasurements")) if s is not None and len(s)),
                   None)
    stored = {} if section is None else {child.tag: (child.text or "").strip() for child in section}
    values = {"heart_rate": stored.get("VentricularRate"), "atrial_rate": stored.get("AtrialRate"),
              "pr": stored.get("PRInterval"), "qrs": stored.get("QRSDuration"),
              "qt": stored.get("QTInterval"), "qtc_fridericia": stored.get("QTcFrederica"),
              "p_axis": stored.get("PAxis"), "qrs_axis": stored.get("RAxis"),
              "t_axis": stored.get("TAxis"),
              "rr": (root.findtext("QRSTimesTypes/GlobalRR") or "").strip()}
    qtc = stored.get("QTCorrected")
    key = "qtc_bazett" if _agrees_with_bazett(qtc, values["qt"], values["heart_rate"]) else "qtc"
    values[key] = qtc
    return values


def _agrees_with_bazett(qtc, qt, rate) -> bool:
    qtc, qt, rate = (_measurement(k, v) for k, v in (("qtc", qtc), ("qt", qt), ("heart_rate", rate)))
    if qtc is None or qt is None or rate is None or rate <= 0.5:
        return False
    low = (qt - 0.5) * math.sqrt((rate - 0.5) / 60.0) - 1.0
    high = (qt + 0.5) * math.sqrt((rate + 0.5) / 60.0) + 1.0
    return low <= qtc <= high


# Philips tags of the interpretation's measurements: 1.04 `globalmeasurements`, 1.03
# `interpretationmeasurements` (mean* names; its meanqtc does not say its formula).
_PHILIPS_TAGS = {"heartrate": "heart_rate", "atrialrate": "atrial_rate", "rrint": "rr",
                 "print": "pr", "meanprint": "pr", "qrsdur": "qrs", "meanqrsdur": "qrs",
                 "qtint": "qt", "meanqtint": "qt", "qtcb": "qtc_bazett", "qtcf": "qtc_fridericia",
                 "meanqtc": "qtc", "pfrontaxis": "p_axis", "qrsfrontaxis": "qrs_axis",
                 "tfrontaxis": "t_axis"}


def _philips_interpretation(root):
    return root.find("interpretations/interpretation")


def _philips_values(root) -> dict:
    """The measurements of the (first) interpretation, those flagged as edited left out."""
    interp = _philips_interpretation(root)
    values: dict = {}
    if interp is None:
        return values
    for section in (interp.find("globalmeasurements"), interp.find("interpretationmeasurements")):
        if section is None:
            continue
        section_edited = section.get("editedflag", "").strip().lower() == "true"
        for child in section:
            key = _PHILIPS_TAGS.get(child.tag.lower())
            edited = child.get("editedflag")
            edited = section_edited if edited is None else edited.strip().lower() == "true"
            if key and not edited:
                values.setdefault(key, (child.text or "").strip())
    return values


def _philips_lines(root, rec) -> list[str]:
    """The device's statements, then its severity line ("- ABNORMAL ECG -" as "ABNORMAL ECG")
    when the statements are the device's own (a reviewer may have changed it otherwise)."""
    lines = _machine_lines(rec)
    interp = _philips_interpretation(root)
    if interp is not None and rec.interpretation.source == "machine":
        severity = (interp.findtext("severity") or "").strip(" -\t\r\n")
        if severity:
            lines.append(severity)
    return lines


# HL7 aECG annotation codes (ISO/IEEE 11073-10101 reference IDs), upper case.
_HL7_CODES = {
    "MDC_ECG_HEART_RATE": "heart_rate",
    "MDC_ECG_TIME_PD_RR": "rr", "MDC_ECG_TIME_PD_RR_GL": "rr",
    "MDC_ECG_TIME_PD_PR": "pr", "MDC_ECG_TIME_PD_PR_GL": "pr",
    "MDC_ECG_TIME_PD_QRS": "qrs", "MDC_ECG_TIME_PD_QRS_GL": "qrs",
    "MDC_ECG_TIME_PD_QT": "qt", "MDC_ECG_TIME_PD_QT_GL": "qt",
    "MDC_ECG_TIME_PD_QTC": "qtc", "MDC_ECG_TIME_PD_QTC_GL": "qtc",
    "MDC_ECG_TIME_PD_QTCB": "qtc_bazett", "MDC_ECG_TIME_PD_QTCF": "qtc_fridericia",
    "MDC_ECG_ANGLE_P_FRONT": "p_axis", "MDC_ECG_ANGLE_P_FRONT_GL": "p_axis",
    "MDC_ECG_ANGLE_QRS_FRONT": "qrs_axis", "MDC_ECG_ANGLE_QRS_FRONT_GL": "qrs_axis",
    "MDC_ECG_ANGLE_T_FRONT": "t_axis", "MDC_ECG_ANGLE_T_FRONT_GL": "t_axis",
}
_HL7_STATEMENTS = {"MDC_ECG_INTERPRETATION", "MDC_ECG_INTERPRETATION_STATEMENT",
                   "MDC_ECG_INTERPRETATION_SUMMARY", "MDC_ECG_RHY"}


def _hl7_annotations(root) -> tuple[dict, list[str]]:
    """Global measurements and statements of the annotation sets a device authored.

    A set whose author is a person is a reviewer's. Measurements inside a beat annotation
    (one beat's values) or restricted to one lead are not global and are skipped; the rhythm
    annotation ("Sinus Rhythm") is the device's rhythm statement, kept once however many
    stretches of the recording it is given for.
    """
    values: dict = {}
    lines: dict[str, None] = {}  # an ordered set
    for aset in root.iter("annotationSet"):
        if aset.find("author//assignedPerson") is not None:
            continue
        for annotation in aset.findall("component/annotation"):
            _hl7_walk(annotation, values, lines)
    return values, list(lines)


def _hl7_walk(annotation, values: dict, lines: dict[str, None]) -> None:
    code_element = annotation.find("code")
    code = "" if code_element is None else (code_element.get("code") or "").upper()
    lead_bound = any("_ECG_LEAD_" in (c.get("code") or "").upper() for c in
                     annotation.findall("support/supportingROI/component/boundary/code"))
    if code == "MDC_ECG_BEAT" or lead_bound:
        return
    value = annotation.find("value")
    if value is not None and code in _HL7_CODES:
        key = _HL7_CODES[code]
        number = _converted(key, value.get("value"), value.get("unit", ""))
        if number is not None:
            values.setdefault(key, number)
    elif value is not None and code in _HL7_STATEMENTS:
        text = (value.get("displayName") or (value.text or "").strip()
                or (value.findtext("originalText") or "").strip())
        if text:
            lines.setdefault(text)
    for child in annotation.findall("component/annotation"):
        _hl7_walk(child, values, lines)


def _scp_values(rec) -> dict:
    """SCP-ECG section 7 as ecgdatakit decodes it.

    Section 7 stores the reference beat's wave boundaries, not intervals: PR, QRS and QT are
    their differences (QRS onset - P onset, QRS offset - QRS onset, T offset - QRS onset), as the
    standard defines them, when both boundaries are measured. The QTc is Bazett's when the formula
    byte says 1, of unstated formula when it says 0, and left out otherwise (Hodges, a
    manufacturer's own).
    """
    gm, raw = rec.measurements, rec.raw_metadata
    values = {"heart_rate": gm.heart_rate, "atrial_rate": raw.get("atrial_rate_bpm"),
              "rr": gm.rr_interval, "p_axis": gm.p_axis, "qrs_axis": gm.qrs_axis,
              "t_axis": gm.t_axis}
    if gm.qtc_bazett is not None:
        values["qtc_bazett"] = gm.qtc_bazett
    elif raw.get("qtc_formula_code") == 0:
        values["qtc"] = raw.get("qtc_ms")
    blocks = raw.get("measurement_blocks") or []
    if blocks:
        at = {name: value for name, value in blocks[0].items()
              if name.endswith(("onset", "offset")) and 0 < value < 29997}
        for key, (start, end) in {"pr": ("p_onset", "qrs_onset"),
                                  "qrs": ("qrs_onset", "qrs_offset"),
                                  "qt": ("qrs_onset", "t_offset")}.items():
            if start in at and end in at:
                values[key] = at[end] - at[start]
    return values


# --------------------------------------------------------------------------------------------
# DICOM Waveform Annotation Sequence
# --------------------------------------------------------------------------------------------

# Concept codes of global measurements: MDC (PS3.16 CID 3227/3228, ISO/IEEE 11073-10101), LOINC,
# and SCPECG codes (which name the SCP-ECG field; as written by Mortara carts). Other codes are
# recognised by their code meaning (`_DICOM_MEANINGS`).
_DICOM_CODES = {
    "2:16168": "rr", "2:15872": "pr", "2:16156": "qrs", "2:16160": "qt", "2:15876": "qtc",
    "2:16770": "heart_rate", "8867-4": "heart_rate",
    "8626-4": "p_axis", "9997-8": "qrs_axis", "8638-9": "t_axis",
    "5.10.2.1-3": "rr", "5.13.5-7": "pr", "5.13.5-9": "qrs", "5.13.5-11": "qt",
    "5.10.2.5-5": "qtc", "5.10.3-11": "p_axis", "5.10.3-13": "qrs_axis", "5.10.3-15": "t_axis",
}
_DICOM_MEANINGS = {
    "heart rate": "heart_rate", "ventricular heart rate": "heart_rate",
    "ventricular rate": "heart_rate", "atrial heart rate": "atrial_rate", "atrial rate": "atrial_rate",
    "rr interval": "rr", "pr interval": "pr", "qrs duration": "qrs", "qt interval": "qt",
    "qtc interval": "qtc", "p axis": "p_axis", "p wave axis": "p_axis", "qrs axis": "qrs_axis",
    "r wave axis": "qrs_axis", "t axis": "t_axis", "t wave axis": "t_axis",
}
_DICOM_IDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "AdmissionID")


def from_dicom(ds) -> DeviceReport | None:
    """The device's report from a DICOM ECG's Waveform Annotation Sequence (pydicom dataset).

    Global items only: an item referring to particular channels (a lead's value) or to sample
    positions or times (a fiducial point) is skipped. A QTc whose code meaning names Bazett's or
    Fridericia's formula is one of those; one naming another formula is left out.
    """
    names = [element.value for element in ds if element.VR == "PN"]
    ids = [value for keyword in _DICOM_IDS for value in _dicom_values(ds.get(keyword))]
    identifiers = _identifier_pattern(names, ids, [ds.get("PatientBirthDate")])
    values: dict = {}
    lines: list[str] = []
    for item in ds.get("WaveformAnnotationSequence") or []:
        if not _dicom_global(item):
            continue
        text = str(item.get("UnformattedTextValue") or "").strip()
        concept = _dicom_code(item, "ConceptCodeSequence")[1]
        if item.get("NumericValue") is not None:
            key = _dicom_key(*_dicom_code(item, "ConceptNameCodeSequence"))
            unit = _dicom_code(item, "MeasurementUnitsCodeSequence")[0]
            number = None if key is None else _converted(key, item.NumericValue, unit)
            if number is not None:
                values.setdefault(key, number)
        elif text or concept:
            lines.append(text or concept)
    return _report("DICOM", ds.get("ManufacturerModelName"), values, lines, identifiers)


def _dicom_values(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def _dicom_global(item) -> bool:
    if any(item.get(k) is not None for k in ("ReferencedSamplePositions", "ReferencedTimeOffsets",
                                             "ReferencedDateTime")):
        return False
    channels = [int(v) for v in _dicom_values(item.get("ReferencedWaveformChannels"))]
    return all(channel == 0 for channel in channels[1::2])  # (group, channel) pairs; 0: all


def _dicom_code(item, keyword: str) -> tuple[str, str]:
    """(code value, code meaning) of the first item of a code sequence, '' when absent."""
    seq = item.get(keyword)
    if not seq:
        return "", ""
    return str(seq[0].get("CodeValue") or "").strip(), str(seq[0].get("CodeMeaning") or "").strip()


def _dicom_key(code: str, meaning: str) -> str | None:
    lower = " ".join(meaning.lower().split())
    if "qtc" in lower and any(f in lower for f in ("hodges", "framingham")):
        return None
    if "qtc" in lower and "bazett" in lower:
        return "qtc_bazett"
    if "qtc" in lower and any(f in lower for f in ("fridericia", "fredericia", "frederica")):
        return "qtc_fridericia"
    return _DICOM_CODES.get(code) or _DICOM_MEANINGS.get(lower.removesuffix(" global"))
