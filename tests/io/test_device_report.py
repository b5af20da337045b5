"""The recording device's measurements and statements (`ECGRecord.device_report`), checked on every
GE MUSE, Philips, HL7 aECG, SCP-ECG and DICOM sample of ../shared/ecg-samples against values this
test pulls from the raw files itself (ElementTree on the XML, struct on the SCP-ECG bytes, pydicom
on DICOM), and on files made here from those samples: values the device marks as not measured,
values a reviewer edited, and statements that name a person or quote the patient's identifiers.
"""
from __future__ import annotations

import binascii
import json
import math
import re
import struct
from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET

import ecgfm
from ecgfm.io.record import DeviceReport
from tests.conftest import SHARED

SAMPLES = SHARED / "ecg-samples"
KEYS = {"heart_rate", "atrial_rate", "rr", "pr", "qrs", "qt", "qtc", "qtc_bazett", "qtc_fridericia",
        "p_axis", "qrs_axis", "t_axis"}


def _files(folder: str, pattern: str) -> list[Path]:
    path = SAMPLES / folder
    return sorted(p for p in path.glob(pattern) if p.is_file()) if path.is_dir() else []


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent (a fresh clone without ../shared)")
    return path


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


MUSE = _files("ge-muse", "*.xml")
PHILIPS = _files("philips", "*.[xX][mM][lL]")
HL7 = _files("hl7-aecg", "*.xml")
SCP = _files("scp", "*.[sS][cC][pP]")
DICOM = _files("dicom", "*.dcm")
NO_SAMPLES = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent (a fresh clone "
                                                             "without ../shared)")


def _report(path: Path) -> DeviceReport:
    record = ecgfm.read_ecg(path)
    assert record.summary()["device_report"] == (
        record.device_report.to_dict() if record.device_report else None)
    json.dumps(record.summary())  # JSON-serialisable
    return record.device_report


def _assert_measurements(report: DeviceReport, expected: dict) -> None:
    assert set(report.measurements) <= KEYS
    assert set(report.measurements) == set(expected), (report.measurements, expected)
    for key, value in expected.items():
        assert math.isclose(report.measurements[key], value, abs_tol=1e-6), key


def _number(text) -> float | None:
    text = (text or "").strip()
    return float(text) if re.fullmatch(r"[+-]?\d+(\.\d+)?", text) else None


# --- GE MUSE ----------------------------------------------------------------------------------

MUSE_TAGS = {"VentricularRate": "heart_rate", "AtrialRate": "atrial_rate", "PRInterval": "pr",
             "QRSDuration": "qrs", "QTInterval": "qt", "QTcFrederica": "qtc_fridericia",
             "PAxis": "p_axis", "RAxis": "qrs_axis", "TAxis": "t_axis"}


@NO_SAMPLES
@pytest.mark.parametrize("path", MUSE, ids=_ids(MUSE))
def test_muse_samples_give_the_original_12sl_measurements(path):
    root = SafeET.fromstring(path.read_bytes())
    original = root.find("OriginalRestingECGMeasurements")
    stored = {child.tag: _number(child.text) for child in original}
    expected = {key: stored[tag] for tag, key in MUSE_TAGS.items() if stored.get(tag)}
    expected["rr"] = _number(root.findtext("QRSTimesTypes/GlobalRR"))
    # GE documents QTCorrected as Bazett's; in both samples it agrees with Bazett's formula on
    # the file's own QT and rate (e.g. 452 ms * sqrt(48/60) = 404 ms against 403 stored).
    qtc, qt, rate = stored["QTCorrected"], stored["QTInterval"], stored["VentricularRate"]
    assert abs(qt * math.sqrt(rate / 60) - qtc) < 3
    expected["qtc_bazett"] = qtc
    report = _report(path)
    assert report.source == "GE MUSE (12SL)"
    _assert_measurements(report, expected)
    assert root.find("Diagnosis") is None and root.find("OriginalDiagnosis") is None
    assert report.statements == ()


@NO_SAMPLES
def test_muse_prefers_the_measurements_as_acquired_to_edited_ones():
    # braveheart_example2 keeps QTCorrected 436 as acquired and 437 after editing
    path = _need(SAMPLES / "ge-muse" / "braveheart_example2.xml")
    root = SafeET.fromstring(path.read_bytes())
    current = root.findtext("RestingECGMeasurements/QTCorrected")
    original = root.findtext("OriginalRestingECGMeasurements/QTCorrected")
    assert current != original
    assert _report(path).measurements["qtc_bazett"] == float(original)


# --- Philips ----------------------------------------------------------------------------------

PHILIPS_TAGS = {"heartrate": "heart_rate", "atrialrate": "atrial_rate", "rrint": "rr", "print": "pr",
                "meanprint": "pr", "qrsdur": "qrs", "meanqrsdur": "qrs", "qtint": "qt",
                "meanqtint": "qt", "qtcb": "qtc_bazett", "qtcf": "qtc_fridericia", "meanqtc": "qtc",
                "pfrontaxis": "p_axis", "qrsfrontaxis": "qrs_axis", "tfrontaxis": "t_axis"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _philips_expected(raw: bytes) -> tuple[dict, list[str]]:
    root = SafeET.fromstring(raw)
    interp = next(el for el in root.iter() if _local(el.tag) == "interpretation")
    expected = {}
    for section in interp:
        if _local(section.tag) not in ("globalmeasurements", "interpretationmeasurements"):
            continue
        for child in section:
            key = PHILIPS_TAGS.get(_local(child.tag))
            value = _number(child.text)
            if key and value is not None and child.get("editedflag", "False") != "True":
                expected[key] = value
    lines = []
    for statement in (el for el in interp if _local(el.tag) == "statement"):
        parts = {_local(el.tag): " ".join((el.text or "").split()) for el in statement}
        left, right = parts.get("leftstatement", ""), parts.get("rightstatement", "")
        lines.append(f"{left} | {right}" if right else left)
    severity = next(el.text for el in interp if _local(el.tag) == "severity")
    lines.append(severity.strip(" -"))
    return expected, lines


@NO_SAMPLES
@pytest.mark.parametrize("path", PHILIPS, ids=_ids(PHILIPS))
def test_philips_samples_give_the_interpretation_measurements_and_statements(path):
    expected, lines = _philips_expected(path.read_bytes())
    report = _report(path)
    assert report.source.startswith("Philips")
    _assert_measurements(report, expected)
    assert list(report.statements) == lines
    assert len(lines) >= 3


# --- HL7 aECG ---------------------------------------------------------------------------------

HL7_CODES = {"MDC_ECG_TIME_PD_PR": "pr", "MDC_ECG_TIME_PD_QRS": "qrs", "MDC_ECG_TIME_PD_QT": "qt",
             "MDC_ECG_TIME_PD_QTc": "qtc", "MDC_ECG_ANGLE_P_FRONT": "p_axis",
             "MDC_ECG_ANGLE_QRS_FRONT": "qrs_axis", "MDC_ECG_ANGLE_T_FRONT": "t_axis"}
H = "{urn:hl7-org:v3}"


def _hl7_expected(raw: bytes) -> tuple[dict, list[str]]:
    """Global values: annotations of a device's set that are not inside a beat annotation."""
    root = SafeET.fromstring(raw)
    expected, lines = {}, []
    for aset in root.iter(f"{H}annotationSet"):
        if aset.find(f".//{H}author//{H}assignedPerson") is not None:
            continue  # a reviewer's set (the example's third set names no author: a device's)
        beats = {id(el) for beat in aset.iter(f"{H}annotation")
                 if beat.find(f"{H}code").get("code") == "MDC_ECG_BEAT"
                 for el in beat.iter(f"{H}annotation") if el is not beat}
        for annotation in aset.iter(f"{H}annotation"):
            code, value = annotation.find(f"{H}code").get("code"), annotation.find(f"{H}value")
            if id(annotation) in beats or value is None:
                continue
            if code in HL7_CODES:
                assert value.get("unit") in ("ms", "deg")
                expected.setdefault(HL7_CODES[code], float(value.get("value")))
            elif code == "MDC_ECG_RHY" and value.get("displayName") not in lines:
                lines.append(value.get("displayName"))
    return expected, lines


@NO_SAMPLES
@pytest.mark.parametrize("path", HL7, ids=_ids(HL7))
def test_hl7_samples_give_the_device_annotation_sets(path):
    expected, lines = _hl7_expected(path.read_bytes())
    assert expected["pr"] == 148 and lines == ["Sinus Rhythm"]  # the ballot example's values
    report = _report(path)
    assert report.source.startswith("HL7 aECG")
    _assert_measurements(report, expected)
    assert list(report.statements) == lines


@NO_SAMPLES
def test_hl7_annotations_of_a_person_are_not_the_devices(tmp_path):
    path = _need(SAMPLES / "hl7-aecg" / "hl7_example_aecg.xml")
    text = path.read_text(encoding="utf-8")
    person = text.index("Doctor John Brown")  # the author of the example's second annotation set
    start = text.rindex("<annotationSet>", 0, person)
    insert = text.index("<component>", person)
    planted = ('<component><annotation><code code="MDC_ECG_HEART_RATE" codeSystem="2.16.840.1.113883.6.24"/>'
               '<value xsi:type="PQ" value="99" unit="bpm"/></annotation></component>'
               '<component><annotation><code code="MDC_ECG_INTERPRETATION_STATEMENT" '
               'codeSystem="2.16.840.1.113883.6.24"/><value xsi:type="ST">Reviewer finding</value>'
               '</annotation></component>')
    assert start < person < insert < text.index("</annotationSet>", start)
    made = tmp_path / "reviewed_aecg.xml"
    made.write_text(text[:insert] + planted + text[insert:], encoding="utf-8")
    assert b"Reviewer finding" in made.read_bytes()
    report = _report(made)
    assert "heart_rate" not in report.measurements
    assert "Reviewer finding" not in report.statements
    assert report.measurements == _report(path).measurements


# --- SCP-ECG ----------------------------------------------------------------------------------


def _scp_sections(raw: bytes) -> dict[int, tuple[int, int]]:
    """Section id -> (offset of its 16-byte header, length), from the pointers of Section 0."""
    length = struct.unpack_from("<I", raw, 6 + 4)[0]
    sections = {}
    for pos in range(6 + 16, 6 + length, 10):
        sid, size, index = struct.unpack_from("<HII", raw, pos)
        if size:
            sections[sid] = (index - 1, size)
    return sections


def _scp_expected(raw: bytes) -> tuple[dict, list[str]]:
    sections = _scp_sections(raw)
    offset, size = sections[7]
    body = raw[offset + 16:offset + size]
    nblocks, nspikes, rr = body[0], body[1], struct.unpack_from("<H", body, 2)[0]
    p_on, p_off, qrs_on, qrs_off, t_off, p_axis, qrs_axis, t_axis = struct.unpack_from("<5H3h", body, 6)
    expected = {"pr": qrs_on - p_on, "qrs": qrs_off - qrs_on, "qt": t_off - qrs_on,
                "p_axis": p_axis, "qrs_axis": qrs_axis, "t_axis": t_axis}
    if rr < 29997:
        expected["rr"] = rr
    pos = 6 + 16 * nblocks + 10 * nspikes
    nqrs = struct.unpack_from("<H", body, pos)[0]
    vent, atrial, qtc, formula = struct.unpack_from("<3HB", body, pos + 2 + nqrs)
    if 0 < vent < 29997:
        expected["heart_rate"] = vent
    if 0 < atrial < 29997:
        expected["atrial_rate"] = atrial
    if 0 < qtc < 29997 and formula in (0, 1):
        expected["qtc_bazett" if formula == 1 else "qtc"] = qtc
    lines = []
    if 8 in sections:
        offset, size = sections[8]
        body = raw[offset + 16:offset + size]
        assert body[0] == 0  # the device's own statements (not confirmed, not overread)
        pos = 9
        for _ in range(body[8]):
            length = struct.unpack_from("<H", body, pos + 1)[0]
            text = body[pos + 3:pos + 3 + length].split(b"\x00")[0].decode("latin-1").strip()
            if text:
                lines.append(text)
            pos += 3 + length
    return expected, lines


@NO_SAMPLES
@pytest.mark.parametrize("path", SCP, ids=_ids(SCP))
def test_scp_samples_give_section_7_and_8(path):
    expected, lines = _scp_expected(path.read_bytes())
    report = _report(path)
    assert report.source.startswith("SCP-ECG")
    _assert_measurements(report, expected)
    assert list(report.statements) == lines


@NO_SAMPLES
def test_scp_intervals_agree_with_the_same_ecg_in_hl7():
    # The ECG Toolkit's Example.scp is the HL7 ballot example converted: the intervals derived
    # from its wave boundaries equal the ones the aECG stores as numbers.
    scp = _report(_need(SAMPLES / "scp" / "ecgtoolkit_Example.scp")).measurements
    hl7 = _report(_need(SAMPLES / "hl7-aecg" / "hl7_example_aecg.xml")).measurements
    assert scp == hl7


def _with_crcs(data: bytearray, section: tuple[int, int]) -> bytes:
    offset, size = section
    struct.pack_into("<H", data, offset, binascii.crc_hqx(bytes(data[offset + 2:offset + size]), 0xFFFF))
    struct.pack_into("<H", data, 0, binascii.crc_hqx(bytes(data[2:]), 0xFFFF))
    return bytes(data)


@NO_SAMPLES
@pytest.mark.parametrize("codes", [(29999, 29998, 29997), (0, 0xFFFF, 29999)])
def test_scp_not_measured_codes_are_absent(tmp_path, codes):
    path = _need(SAMPLES / "scp" / "scptools_ECG_20070321_110542.SCP")
    data = bytearray(path.read_bytes())
    sections = _scp_sections(bytes(data))
    body = sections[7][0] + 16
    a, b, c = codes
    struct.pack_into("<H", data, body + 2, a)  # RR
    struct.pack_into("<H", data, body + 6, b)  # P onset: no PR
    struct.pack_into("<H", data, body + 14, c)  # T offset: no QT
    struct.pack_into("<3h", data, body + 16, 999, -999, 999)  # axes not measured
    nqrs = struct.unpack_from("<H", data, body + 22)[0]
    struct.pack_into("<3H", data, body + 24 + nqrs, a, b, c)  # rates and QTc
    made = tmp_path / "sentinels.scp"
    made.write_bytes(_with_crcs(data, sections[7]))
    record = ecgfm.read_ecg(made)
    assert record.device_report.measurements == {"qrs": 88.0}
    assert not any("checksum" in w for w in record.warnings)


@NO_SAMPLES
def test_scp_statements_naming_people_are_dropped(tmp_path):
    path = _need(SAMPLES / "scp" / "scptools_ECG_20070321_110542.SCP")
    raw = path.read_bytes()
    # the file's own patient (Section 1, tags 0 and 1) is Peter Karlsson
    assert b"Karlsson" in raw[:400] and b"Peter" in raw[:400]
    data = bytearray(raw)
    for old, new in ((b" VK-hypertrofi", b"Karlsson Peter"), (b" sinusrytm\x00", b"Dr Nilsson\x00")):
        assert len(old) == len(new) and data.count(old) == 1
        data[data.index(old):data.index(old) + len(old)] = new
    made = tmp_path / "named.scp"
    made.write_bytes(_with_crcs(data, _scp_sections(raw)[8]))
    record = ecgfm.read_ecg(made)
    statements = record.device_report.statements
    assert "septal infarkt" in statements and len(statements) == 7
    shown = json.dumps(record.summary())
    for secret in ("Karlsson", "Peter", "Nilsson"):
        assert secret not in shown


# --- DICOM ------------------------------------------------------------------------------------

DICOM_MEANINGS = {"RR Interval": "rr", "PR Interval": "pr", "QRS Duration": "qrs",
                  "QT Interval": "qt", "QTc Interval": "qtc", "P Axis": "p_axis",
                  "QRS Axis": "qrs_axis", "T Axis": "t_axis"}


@NO_SAMPLES
@pytest.mark.parametrize("path", DICOM, ids=_ids(DICOM))
def test_dicom_samples_give_the_global_annotations(path):
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(path)
    expected, lines = {}, []
    for item in ds.WaveformAnnotationSequence:
        if "ReferencedSamplePositions" in item:
            continue
        if "UnformattedTextValue" in item:
            lines.append(item.UnformattedTextValue.strip())
        elif "NumericValue" in item:
            meaning = item.ConceptNameCodeSequence[0].CodeMeaning
            if meaning == "PP Interval":
                assert float(item.NumericValue) == 0  # not measured
                continue
            expected[DICOM_MEANINGS[meaning]] = float(item.NumericValue)
    report = _report(path)
    assert report.source.startswith("DICOM")
    _assert_measurements(report, expected)
    assert list(report.statements) == lines == ["RITMO SINUSALE", "ECG NORMALE"]


@NO_SAMPLES
def test_dicom_statements_and_values_that_must_not_show(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    path = _need(SAMPLES / "dicom" / "pydicom_waveform_ecg.dcm")
    ds = pydicom.dcmread(path)
    ds.PatientName = "Quorvath^Elspeth"
    ds.PatientID = "MRN55501234"
    ds.PatientBirthDate = "19510314"
    items = list(ds.WaveformAnnotationSequence)
    texts = [item for item in items if "UnformattedTextValue" in item]
    texts[0].UnformattedTextValue = "Confirmed by Halvorsen"
    texts[1].UnformattedTextValue = "ECG of Elspeth, 03/14/1951"
    extra = pydicom.Dataset()
    extra.ReferencedWaveformChannels = [1, 0]
    extra.AnnotationGroupNumber = 0
    extra.UnformattedTextValue = "patient MRN55501234 left axis"
    items.append(extra)
    pr = next(item for item in items if "ConceptNameCodeSequence" in item
              and item.ConceptNameCodeSequence[0].CodeMeaning == "PR Interval")
    pr.NumericValue = "29999"
    qt = next(item for item in items if "ConceptNameCodeSequence" in item
              and item.ConceptNameCodeSequence[0].CodeMeaning == "QT Interval")
    qt.MeasurementUnitsCodeSequence[0].CodeValue = "s"
    qt.NumericValue = "0.368"
    ds.WaveformAnnotationSequence = items
    made = tmp_path / "planted.dcm"
    ds.save_as(made)
    record = ecgfm.read_ecg(made)
    report = record.device_report
    assert report.statements == ()
    assert "pr" not in report.measurements
    assert math.isclose(report.measurements["qt"], 368.0)
    shown = json.dumps(record.summary())
    for secret in ("Halvorsen", "Elspeth", "Quorvath", "MRN55501234", "1951"):
        assert secret not in shown


# --- made GE MUSE and Philips files: sentinels, edits and people ------------------------------

FIRST, LAST, PATIENT_ID, BIRTH = "Elspeth", "Quorvath", "MRN55501234", "03-14-1951"
CONFIRMER = "Halvorsen"
SECRETS = (FIRST, LAST, PATIENT_ID, BIRTH, "1951", CONFIRMER, "Brindlemoor")


def _muse_statements(lines: list[str]) -> str:
    return "".join(f"<DiagnosisStatement><StmtFlag>ENDSLINE</StmtFlag><StmtText>{line}</StmtText>"
                   "</DiagnosisStatement>" for line in lines)


@NO_SAMPLES
def test_muse_statements_naming_people_are_dropped(tmp_path):
    path = _need(SAMPLES / "ge-muse" / "braveheart_example1.xml")
    text = path.read_bytes().decode("latin-1")
    lines = ["Sinus bradycardia", f"Confirmed by {CONFIRMER} (1234) on 5/6/2020 10:11:12",
             f"{FIRST} {LAST.upper()} was paced", "Technician: Brindlemoor",
             f"Patient ID {PATIENT_ID} on file", f"Born {BIRTH}", "Referred by: Dr. Ames",
             "Otherwise normal ECG", "Unconfirmed report"]
    planted = (f"<PatientDemographics><PatientID>{PATIENT_ID}</PatientID>"
               f"<PatientLastName>{LAST}</PatientLastName><PatientFirstName>{FIRST}</PatientFirstName>"
               f"<DateofBirth>{BIRTH}</DateofBirth></PatientDemographics>"
               f"<Diagnosis><Modality>RESTING</Modality>{_muse_statements(lines)}</Diagnosis>"
               f"<OriginalDiagnosis><Modality>RESTING</Modality>{_muse_statements(lines)}"
               "</OriginalDiagnosis>")
    made = tmp_path / "planted_muse.xml"
    made.write_bytes(text.replace("</MuseInfo>", "</MuseInfo>" + planted, 1).encode("latin-1"))
    record = ecgfm.read_ecg(made)
    assert record.device_report.statements == ("Sinus bradycardia", "Otherwise normal ECG",
                                               "Unconfirmed report")
    shown = json.dumps(record.summary()) + json.dumps(record.device_report.to_dict())
    for secret in SECRETS:
        assert secret.lower() not in shown.lower()


@NO_SAMPLES
def test_muse_machine_statements_beside_a_confirmed_diagnosis(tmp_path):
    path = _need(SAMPLES / "ge-muse" / "braveheart_example1.xml")
    text = path.read_bytes().decode("latin-1")
    planted = ("<TestDemographics><Status>CONFIRMED</Status></TestDemographics>"
               f"<Diagnosis><Modality>RESTING</Modality>"
               f"{_muse_statements(['Sinus bradycardia', 'Left axis deviation'])}</Diagnosis>"
               f"<OriginalDiagnosis><Modality>RESTING</Modality>"
               f"{_muse_statements(['Sinus bradycardia', 'Normal ECG'])}</OriginalDiagnosis>")
    made = tmp_path / "confirmed_muse.xml"
    made.write_bytes(text.replace("</MuseInfo>", "</MuseInfo>" + planted, 1).encode("latin-1"))
    assert _report(made).statements == ("Sinus bradycardia", "Normal ECG")


@NO_SAMPLES
@pytest.mark.parametrize("values, expected", [
    # empty, 0 and negative rates or intervals are 'not measured'; axes keep their sign and are
    # given in -90..270; an axis beyond a full turn is not one
    ({"VentricularRate": "", "PRInterval": "0", "QRSDuration": "-1", "QTInterval": "29999",
      "QTCorrected": "", "QTcFrederica": "abc", "PAxis": "-100", "RAxis": "-30", "TAxis": "999",
      "AtrialRate": "0"},
     {"p_axis": 260.0, "qrs_axis": -30.0}),
    # a QTc that is not Bazett's on the file's own QT and rate is a QTc of unstated formula
    ({"VentricularRate": "48", "QTInterval": "452", "QTCorrected": "431", "PRInterval": "",
      "QRSDuration": "", "QTcFrederica": "", "PAxis": "", "RAxis": "", "TAxis": "",
      "AtrialRate": ""},
     {"heart_rate": 48.0, "qt": 452.0, "qtc": 431.0}),
])
def test_muse_values_not_measured_are_absent(tmp_path, values, expected):
    path = _need(SAMPLES / "ge-muse" / "braveheart_example1.xml")
    text = path.read_bytes().decode("latin-1")
    for section in ("RestingECGMeasurements", "OriginalRestingECGMeasurements"):
        start, end = text.index(f"<{section}>"), text.index(f"</{section}>")
        part = text[start:end]
        for tag, value in values.items():
            part, n = re.subn(rf"<{tag}>[^<]*</{tag}>", f"<{tag}>{value}</{tag}>", part)
            assert n == 1
        text = text[:start] + part + text[end:]
    text = re.sub(r"<GlobalRR>[^<]*</GlobalRR>", "<GlobalRR></GlobalRR>", text)
    made = tmp_path / "sentinels_muse.xml"
    made.write_bytes(text.encode("latin-1"))
    assert _report(made).measurements == expected


@NO_SAMPLES
def test_a_file_without_the_devices_reading_has_none(tmp_path):
    path = _need(SAMPLES / "ge-muse" / "braveheart_example1.xml")
    text = path.read_bytes().decode("latin-1")
    for section in ("RestingECGMeasurements", "OriginalRestingECGMeasurements", "QRSTimesTypes"):
        text = re.sub(rf"<{section}>.*?</{section}>", "", text, flags=re.S)
    made = tmp_path / "bare_muse.xml"
    made.write_bytes(text.encode("latin-1"))
    record = ecgfm.read_ecg(made)
    assert record.device_report is None and record.summary()["device_report"] is None
    contec = _need(SAMPLES / "other" / "contec_ecg90a_0000053.ECG")
    assert ecgfm.read_ecg(contec).summary()["device_report"] is None


@NO_SAMPLES
def test_philips_edited_values_and_statements_naming_people(tmp_path):
    path = _need(SAMPLES / "philips" / "sierra_1_04_3191723_ZZDEMOPTONLY_orig.xml")
    text = path.read_bytes().decode("utf-16")
    text = text.replace("<lastname>ZZDEMOPTONLY</lastname>", f"<lastname>{LAST}</lastname>")
    text = text.replace("<firstname>ADULT</firstname>", f"<firstname>{FIRST}</firstname>")
    text = text.replace("<patientid>9999</patientid>", f"<patientid>{PATIENT_ID}</patientid>")
    text = text.replace('<heartrate editedflag="False">84</heartrate>',
                        '<heartrate editedflag="True">90</heartrate>')
    text = text.replace('<qtint editedflag="False">352</qtint>',
                        '<qtint editedflag="False">Failed</qtint>')
    planted = "".join(
        f"<statement editedflag=\"False\"><statementcode>X</statementcode><leftstatement>{left}"
        f"</leftstatement><rightstatement>{right}</rightstatement></statement>"
        for left, right in (("Confirmed by", f"Dr {CONFIRMER}"), (f"{LAST}, {FIRST}", "paced"),
                            ("Left axis deviation", f"ID: {PATIENT_ID}"), ("Borderline ECG", "")))
    anchor = "</interpretation>"
    assert text.count(anchor) == 1
    text = text.replace(anchor, planted + anchor)
    made = tmp_path / "planted_philips.xml"
    made.write_bytes(text.encode("utf-16"))
    record = ecgfm.read_ecg(made)
    report = record.device_report
    expected, _ = _philips_expected(made.read_bytes())
    assert "heart_rate" not in report.measurements and "qt" not in report.measurements
    _assert_measurements(report, expected)
    assert report.statements[-2:] == ("Borderline ECG", "ABNORMAL ECG")
    assert len(report.statements) == 5
    shown = json.dumps(record.summary())
    for secret in (FIRST, LAST, PATIENT_ID, CONFIRMER):
        assert secret not in shown


# --- the report follows the record ------------------------------------------------------------


@NO_SAMPLES
def test_window_and_lead_names_keep_the_report():
    path = _need(SAMPLES / "ge-muse" / "braveheart_example1.xml")
    record = ecgfm.read_ecg(path)
    assert record.device_report is not None
    assert record.window(1.0, 5.0).device_report == record.device_report
    assert ecgfm.read_ecg(path, start_s=2.0, duration_s=4.0).device_report == record.device_report
    named = ecgfm.read_ecg(path, leads=["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"])
    assert named.device_report == record.device_report
    assert named.summary()["device_report"] == record.device_report.to_dict()


def test_formats_without_a_device_report_say_none(tmp_path):
    csv = tmp_path / "plain.csv"
    csv.write_text("I,II\n" + "\n".join(f"{i % 7 * 0.1:.1f},{i % 5 * 0.1:.1f}" for i in range(3000)))
    record = ecgfm.read_ecg(csv, fs=500)
    assert record.device_report is None
    assert "device_report" in record.summary() and record.summary()["device_report"] is None



@NO_SAMPLES
def test_a_report_part_that_cannot_be_read_costs_only_the_report(monkeypatch):
    from ecgfm.io import device_report

    def broken(*args, **kwargs):
        raise RuntimeError("damaged")

    monkeypatch.setattr(device_report, "from_ecgdatakit", broken)
    monkeypatch.setattr(device_report, "from_dicom", broken)
    for path in (SAMPLES / "ge-muse" / "braveheart_example1.xml",
                 SAMPLES / "dicom" / "pydicom_waveform_ecg.dcm"):
        record = ecgfm.read_ecg(_need(path))
        assert record.device_report is None and record.signal.shape[0] == 12
        assert device_report.UNREADABLE in record.warnings
