"""Vendor and standard formats on small documents built here: values, scale, leads, rate, privacy,
and hostile input (entity expansion, external entities, truncation, garbage)."""
from __future__ import annotations

import base64
import dataclasses
import logging
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ecgfm.errors import ECGReadError
from ecgfm.io import contec, vendor

FAKE_LAST = "Zqfakename"
FAKE_FIRST = "Testyfirst"
FAKE_ID = "FAKEID7391"
FAKE_DOB = "19410317"
PRIVATE = (FAKE_LAST, FAKE_FIRST, FAKE_ID, FAKE_DOB, "1941-03-17")

TWELVE = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
EIGHT = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]


def _counts(n_leads: int, n: int, seed: int = 0) -> np.ndarray:
    """Integer sample codes with exact zeros and extremes in every lead."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3000, 3000, size=(n_leads, n)).astype(np.int16)
    x[:, :10] = 0
    x[:, 10] = 32767
    x[:, 11] = -32768
    x[:, n // 2] = 0
    return x


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.astype("<i2").tobytes()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Document builders
# --------------------------------------------------------------------------------------------


def muse_doc(rhythm: np.ndarray, leads=EIGHT, uv_per_bit="4.88", fs=500, doctype=True) -> bytes:
    def waveform(kind: str, data: np.ndarray) -> str:
        parts = [f"<Waveform><WaveformType>{kind}</WaveformType><WaveformStartTime>0</WaveformStartTime>"
                 f"<NumberofLeads>{len(leads)}</NumberofLeads><SampleType>CONTINUOUS_SAMPLES</SampleType>"
                 f"<SampleBase>{fs}</SampleBase><SampleExponent>0</SampleExponent>"]
        for name, lead in zip(leads, data):
            payload = lead.astype("<i2").tobytes()
            parts.append(
                f"<LeadData><LeadByteCountTotal>{len(payload)}</LeadByteCountTotal>"
                f"<LeadTimeOffset>0</LeadTimeOffset><LeadSampleCountTotal>{lead.size}</LeadSampleCountTotal>"
                f"<LeadAmplitudeUnitsPerBit>{uv_per_bit}</LeadAmplitudeUnitsPerBit>"
                f"<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits><LeadHighLimit>32767</LeadHighLimit>"
                f"<LeadLowLimit>-32768</LeadLowLimit><LeadID>{name}</LeadID>"
                f"<LeadOffsetFirstSample>0</LeadOffsetFirstSample><FirstSampleBaseline>0</FirstSampleBaseline>"
                f"<LeadSampleSize>2</LeadSampleSize><LeadOff>FALSE</LeadOff>"
                f"<LeadDataCRC32>{zlib.crc32(payload)}</LeadDataCRC32>"
                f"<WaveFormData>{base64.b64encode(payload).decode()}</WaveFormData></LeadData>")
        parts.append("</Waveform>")
        return "".join(parts)

    median = np.full((len(leads), 600), 1000, dtype=np.int16)  # must not be read
    text = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            + ('<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n' if doctype else "")
            + "<RestingECG><MuseInfo><MuseVersion>9.0.7</MuseVersion></MuseInfo>"
            f"<PatientDemographics><PatientID>{FAKE_ID}</PatientID><PatientAge>83</PatientAge>"
            f"<DateofBirth>03-17-1941</DateofBirth><Gender>MALE</Gender>"
            f"<PatientLastName>{FAKE_LAST}</PatientLastName><PatientFirstName>{FAKE_FIRST}</PatientFirstName>"
            "</PatientDemographics>"
            "<TestDemographics><AcquisitionDate>01-02-2020</AcquisitionDate>"
            "<AcquisitionTime>10:11:12</AcquisitionTime></TestDemographics>"
            + waveform("Median", median) + waveform("Rhythm", rhythm) + "</RestingECG>\n")
    return text.encode("iso-8859-1")


def hl7_doc(rhythm: np.ndarray, leads=("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "AVR", "AVL", "AVF"),
            scale="2.5", increment="0.002", prolog="") -> bytes:
    def sequence_set(data: np.ndarray, start: str) -> str:
        seqs = [f'<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
                f'<value xsi:type="GLIST_TS"><head value="{start}"/>'
                f'<increment value="{increment}" unit="s"/></value></sequence></component>']
        for name, lead in zip(leads, data):
            digits = " ".join(str(int(v)) for v in lead)
            seqs.append(f'<component><sequence><code code="MDC_ECG_LEAD_{name}" codeSystem="2.16.840.1.113883.6.24"/>'
                        f'<value xsi:type="SLIST_PQ"><origin value="0" unit="uV"/>'
                        f'<scale value="{scale}" unit="uV"/><digits>{digits}</digits></value></sequence></component>')
        return "<component><sequenceSet>" + "".join(seqs) + "</sequenceSet></component>"

    beat = np.full((len(leads), 300), 77, dtype=np.int16)  # must not be read
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n' + prolog
            + '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<id root="11111111-2222-3333-4444-555555555555"/>'
            '<code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
            '<effectiveTime><low value="20200102101112"/><high value="20200102101122"/></effectiveTime>'
            '<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>'
            f'<id root="2.16.840.1.113883.3.5" extension="{FAKE_ID}"/>'
            f'<subjectDemographicPerson><name><given>{FAKE_FIRST}</given><family>{FAKE_LAST}</family></name>'
            f'<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
            f'<birthTime value="{FAKE_DOB}"/></subjectDemographicPerson>'
            '</trialSubject></subject></subjectAssignment></componentOf></timepointEvent></componentOf>'
            '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
            '<effectiveTime><low value="20200102101112"/><high value="20200102101122"/></effectiveTime>'
            + sequence_set(rhythm, "20200102101112.000")
            + '<derivation><derivedSeries><code code="REPRESENTATIVE_BEAT" codeSystem="2.16.840.1.113883.5.4"/>'
            + sequence_set(beat, "20200102101112.000")
            + "</derivedSeries></derivation></series></component></AnnotatedECG>\n")
    return text.encode("utf-8")


def philips_doc(rhythm: np.ndarray, fs=500, resolution="5", version="1.03", utf16=False) -> bytes:
    n = rhythm.shape[1]
    text = ('<?xml version="1.0" encoding="%s"?>\n' % ("UTF-16" if utf16 else "UTF-8")
            + '<restingecgdata xmlns="http://www3.medical.philips.com">'
            f'<documentinfo><documentname>x.xml</documentname><documenttype>SierraECG</documenttype>'
            f'<documentversion>{version}</documentversion></documentinfo>'
            '<dataacquisition date="2020-01-02" time="10:11:12"><machine machineid="1">TestCart</machine>'
            f'<signalcharacteristics><samplingrate>{fs}</samplingrate><signalresolution>{resolution}</signalresolution>'
            '<acquisitiontype>STD-12</acquisitiontype><bitspersample>16</bitspersample>'
            '<signaloffset>0</signaloffset><signalsigned>True</signalsigned>'
            '<numberchannelsallocated>12</numberchannelsallocated><numberchannelsvalid>12</numberchannelsvalid>'
            '</signalcharacteristics></dataacquisition>'
            f'<patient><generalpatientdata><patientid>{FAKE_ID}</patientid>'
            f'<name><lastname>{FAKE_LAST}</lastname><firstname>{FAKE_FIRST}</firstname></name>'
            f'<age><dateofbirth>1941-03-17</dateofbirth></age><sex>Female</sex></generalpatientdata></patient>'
            f'<waveforms><parsedwaveforms durationperchannel="{n * 1000 // fs}" samplespersecond="{fs}" '
            f'leadlabels="{" ".join(TWELVE)}" numberofleads="12" dataencoding="Base64" '
            f'compression="Uncompressed">{_b64(rhythm.reshape(-1))}</parsedwaveforms></waveforms>'
            '</restingecgdata>\n')
    return text.encode("utf-16") if utf16 else text.encode("utf-8")


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(path: Path):
    head = path.read_bytes()[:4096]
    assert vendor.sniff(path, head), f"{path.name} not recognised"
    return vendor.read(path)


def _all_text(record) -> str:
    return "\n".join(repr(getattr(record, f.name)) for f in dataclasses.fields(record))


def _assert_one_sentence(message: str, name: str) -> None:
    assert name in message
    assert "\n" not in message and "Traceback" not in message
    assert message.endswith(".")
    assert str(Path.cwd()) not in message and "/tmp" not in message


# --------------------------------------------------------------------------------------------
# GE MUSE
# --------------------------------------------------------------------------------------------


def test_muse_values_scale_leads_rate(tmp_path):
    counts = _counts(8, 5000)
    rec = read(write(tmp_path, "muse.xml", muse_doc(counts)))
    assert rec.format == "GE MUSE XML"
    assert rec.leads == EIGHT
    assert rec.fs == 500.0
    assert rec.signal.shape == (8, 5000) and rec.signal.dtype == np.float32
    np.testing.assert_allclose(rec.signal, counts * 4.88 / 1000, rtol=1e-6, atol=1e-7)
    assert "4.88" in rec.units and "MICROVOLTS" in rec.units
    assert rec.name == "muse.xml"
    assert not rec.warnings


def test_muse_without_doctype_and_other_rate(tmp_path):
    counts = _counts(8, 2500, seed=1)
    rec = read(write(tmp_path, "m.xml", muse_doc(counts, fs=250, uv_per_bit="1", doctype=False)))
    assert rec.fs == 250.0 and rec.duration_s == pytest.approx(10.0)
    np.testing.assert_allclose(rec.signal, counts / 1000, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# HL7 aECG
# --------------------------------------------------------------------------------------------


def test_hl7_values_scale_leads_rate(tmp_path):
    counts = _counts(12, 1000, seed=2)
    rec = read(write(tmp_path, "aecg.xml", hl7_doc(counts)))
    assert rec.format == "HL7 aECG"
    assert [x.upper() for x in rec.leads] == ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6",
                                            "III", "AVR", "AVL", "AVF"]
    assert rec.fs == 500.0
    np.testing.assert_allclose(rec.signal, counts * 2.5 / 1000, rtol=1e-6, atol=1e-7)
    assert rec.units == "2.5 uV per unit"


def test_hl7_non_integer_rate_is_kept_exact(tmp_path):
    counts = _counts(12, 600, seed=3)
    rec = read(write(tmp_path, "aecg.xml", hl7_doc(counts, increment="0.001667")))
    assert rec.fs == pytest.approx(1 / 0.001667, rel=1e-9)


# --------------------------------------------------------------------------------------------
# Philips Sierra
# --------------------------------------------------------------------------------------------


def test_philips_values_scale_leads_rate(tmp_path):
    counts = _counts(12, 5000, seed=4)
    rec = read(write(tmp_path, "sierra.xml", philips_doc(counts)))
    assert rec.format == "Philips Sierra XML 1.03"
    assert rec.leads == TWELVE
    assert rec.fs == 500.0
    np.testing.assert_allclose(rec.signal, counts.astype(float) * 5 / 1000, rtol=1e-6, atol=1e-7)
    assert rec.units == "5 uV per unit"
    assert not rec.warnings


def test_philips_utf16_document(tmp_path):
    counts = _counts(12, 500, seed=5)
    rec = read(write(tmp_path, "sierra16.xml", philips_doc(counts, version="1.04", utf16=True)))
    assert rec.format == "Philips Sierra XML 1.04"
    np.testing.assert_allclose(rec.signal, counts.astype(float) * 5 / 1000, rtol=1e-6, atol=1e-7)


def test_philips_trailing_calibration_pulse_is_removed(tmp_path):
    counts = _counts(12, 5300, seed=6)
    pulse = np.zeros((12, 200), dtype=np.int16)
    pulse[:, 50:150] = 200  # 200 units x 5 uV = 1 mV
    rec = read(write(tmp_path, "cal.xml", philips_doc(np.concatenate([counts, pulse], axis=1))))
    assert rec.signal.shape == (12, 5300)
    np.testing.assert_allclose(rec.signal, counts.astype(float) * 5 / 1000, rtol=1e-6, atol=1e-7)
    assert any("calibration pulse" in w for w in rec.warnings)


def test_philips_ecg_ending_in_common_values_is_not_cut(tmp_path):
    counts = _counts(12, 5000, seed=7)
    counts[:, -300:] = 100  # identical on all leads but not a 0 / 1 mV pulse
    rec = read(write(tmp_path, "flat.xml", philips_doc(counts)))
    assert rec.signal.shape == (12, 5000)


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def dicom_file(path: Path, counts: np.ndarray, fs=500.0, sensitivity="2.5", baseline="0",
               correction="1", padding: bytes | None = b"\x00\x00", median_first=True) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.9.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"
    ds.PatientName = f"{FAKE_LAST}^{FAKE_FIRST}"
    ds.PatientID = FAKE_ID
    ds.PatientBirthDate = FAKE_DOB
    codes = [1, 2, 61, 62, 63, 64, 3, 4, 5, 6, 7, 8]
    meanings = ["Lead I (Einthoven)", "Lead II", "Lead III", "Lead aVR", "Lead aVL", "Lead aVF",
                "Lead V1", "Lead V2", "Lead V3", "Lead V4", "Lead V5", "Lead V6"]

    def group(label: str, data: np.ndarray) -> Dataset:
        g = Dataset()
        g.MultiplexGroupLabel = label
        g.WaveformOriginality = "ORIGINAL" if label == "RHYTHM" else "DERIVED"
        g.NumberOfWaveformChannels = data.shape[0]
        g.NumberOfWaveformSamples = data.shape[1]
        g.SamplingFrequency = str(fs)
        g.WaveformBitsAllocated = 16
        g.WaveformSampleInterpretation = "SS"
        if padding is not None:
            g.add_new(0x5400100A, "OW", padding)
        channels = []
        for i in range(data.shape[0]):
            ch = Dataset()
            src = Dataset()
            src.CodeValue = f"5.6.3-9-{codes[i]}"
            src.CodingSchemeDesignator = "SCPECG"
            src.CodeMeaning = meanings[i]
            ch.ChannelSourceSequence = [src]
            ch.ChannelSensitivity = sensitivity
            unit = Dataset()
            unit.CodeValue = "uV"
            unit.CodingSchemeDesignator = "UCUM"
            unit.CodeMeaning = "microvolt"
            ch.ChannelSensitivityUnitsSequence = [unit]
            ch.ChannelSensitivityCorrectionFactor = correction
            ch.ChannelBaseline = baseline
            ch.WaveformBitsStored = 16
            channels.append(ch)
        g.ChannelDefinitionSequence = channels
        g.WaveformData = np.ascontiguousarray(data.T.astype("<i2")).tobytes()
        return g

    median = np.full((counts.shape[0], 600), 555, dtype=np.int16)
    groups = [group("MEDIAN BEAT", median), group("RHYTHM", counts)]
    ds.WaveformSequence = groups if median_first else groups[::-1]
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_values_with_exact_zeros_equal_to_padding(tmp_path):
    counts = _counts(12, 5000, seed=8)
    assert (counts == 0).sum() > 12 * 10
    path = dicom_file(tmp_path / "ecg.dcm", counts)
    rec = read(path)
    assert rec.format == "DICOM 12-lead ECG"
    assert rec.fs == 500.0
    assert rec.leads[0] == "Lead I (Einthoven)" and rec.leads[6] == "Lead V1" and len(rec.leads) == 12
    assert not np.isnan(rec.signal).any()
    np.testing.assert_allclose(rec.signal, counts * 2.5 / 1000, rtol=1e-6, atol=1e-7)
    assert rec.units == "2.5 uV per unit"
    # independent reference: pydicom's own calibrated array for the same group
    import pydicom
    ds = pydicom.dcmread(path)
    reference = ds.waveform_array(1).T / 1000.0
    np.testing.assert_allclose(rec.signal, reference, rtol=1e-6, atol=1e-7)


def test_dicom_correction_factor_and_baseline(tmp_path):
    counts = _counts(12, 1000, seed=9)
    path = dicom_file(tmp_path / "c.dcm", counts, sensitivity="1.25", correction="2", baseline="10",
                      padding=None, median_first=False)
    rec = read(path)
    np.testing.assert_allclose(rec.signal, (counts * 2.5 + 10) / 1000, rtol=1e-6, atol=1e-6)


def test_dicom_without_waveform_is_refused(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = FAKE_LAST
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ECGReadError) as err:
        read(path)
    _assert_one_sentence(str(err.value), "image.dcm")
    assert FAKE_LAST not in str(err.value)


# --------------------------------------------------------------------------------------------
# Contec ECG90A
# --------------------------------------------------------------------------------------------


def contec_bytes(frames: np.ndarray, end_marker: bool = False) -> bytes:
    header = (b"0000042\x00" + b"\x00\x00" + b"2021-05-06 07:08:09\x00" + b"\x00\x00"
              + FAKE_LAST[:8].encode() + bytes([1, 83, 70]))
    assert len(header) == 43
    body = frames.astype("<u2").tobytes()
    if end_marker:
        body += bytes(16)
    return header + body + bytes(37)


def test_contec_values_leads_rate(tmp_path):
    rng = np.random.default_rng(10)
    frames = rng.integers(1800, 2300, size=(1600, 8)).astype(np.uint16)
    frames[5, 3] = 0x6800  # unavailable sample
    rec = read(write(tmp_path, "0000042.ECG", contec_bytes(frames, end_marker=True)))
    assert rec.format == "Contec ECG90A"
    assert rec.fs == 800.0
    assert rec.leads == ["II", "III", "V1", "V2", "V3", "V4", "V5", "V6", "I"]
    assert rec.derived_leads == ["I"]
    assert rec.signal.shape == (9, 1600)
    expected = (frames.T.astype(float) - 2048) * 0.005
    expected[3, 5] = np.nan
    np.testing.assert_allclose(rec.signal[:8], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rec.signal[8], expected[0] - expected[1], atol=1e-6)
    assert any("unavailable" in w for w in rec.warnings)
    assert rec.units == "5 uV per unit"


def test_contec_sniff_needs_header_and_whole_frames(tmp_path):
    frames = np.full((100, 8), 2048, dtype=np.uint16)
    data = contec_bytes(frames)
    good = write(tmp_path, "a.ECG", data)
    assert contec.sniff(good, data[:4096])
    odd = write(tmp_path, "b.ECG", data[:-3])
    assert not vendor.sniff(odd, data[:4096])
    with pytest.raises(ECGReadError) as err:
        contec.read(odd)
    _assert_one_sentence(str(err.value), "b.ECG")
    ishne = write(tmp_path, "c.ecg", b"ISHNE1.0" + bytes(600))
    assert not vendor.sniff(ishne, ishne.read_bytes())


# --------------------------------------------------------------------------------------------
# Patient data never leaves the file
# --------------------------------------------------------------------------------------------


def _private_documents(tmp_path: Path) -> list[Path]:
    paths = [write(tmp_path, "p_muse.xml", muse_doc(_counts(8, 1000))),
             write(tmp_path, "p_hl7.xml", hl7_doc(_counts(12, 500))),
             write(tmp_path, "p_philips.xml", philips_doc(_counts(12, 500))),
             write(tmp_path, "p_contec.ECG", contec_bytes(np.full((800, 8), 2048, np.uint16)))]
    try:
        import pydicom  # noqa: F401
        paths.append(dicom_file(tmp_path / "p_dicom.dcm", _counts(12, 500)))
    except ImportError:
        pass
    return paths


def test_patient_data_absent_from_record_warnings_and_logs(tmp_path, caplog):
    for path in _private_documents(tmp_path):
        raw = path.read_bytes()
        assert FAKE_LAST.encode() in raw or FAKE_LAST.encode("utf-16-le") in raw or FAKE_LAST[:8].encode() in raw
        caplog.clear()
        with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec = read(path)
        text = _all_text(rec) + "\n".join(str(w.message) for w in caught) + caplog.text
        for secret in PRIVATE + (FAKE_LAST[:8],):
            assert secret not in text, f"{secret} leaked from {path.name}"


def test_patient_data_absent_from_error_messages(tmp_path):
    for path in _private_documents(tmp_path):
        raw = path.read_bytes()
        # keep the header (and the patient section) but cut the waveform
        for cut in (len(raw) // 2, len(raw) - 40):
            broken = write(tmp_path, "broken_" + path.name, raw[:cut])
            with pytest.raises(ECGReadError) as err:
                vendor.read(broken)
            message = str(err.value)
            _assert_one_sentence(message, broken.name)
            for secret in PRIVATE + (FAKE_LAST[:8],):
                assert secret not in message


# --------------------------------------------------------------------------------------------
# Hostile input
# --------------------------------------------------------------------------------------------

BILLION_LAUGHS = ('<!DOCTYPE AnnotatedECG [<!ENTITY lol "lol">'
                  + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">'
                            for i in range(1, 10))
                  + "]>\n")


def test_billion_laughs_is_refused(tmp_path):
    doc = hl7_doc(_counts(12, 100), prolog=BILLION_LAUGHS)
    doc = doc.replace(b"<digits>0 ", b"<digits>&lol9; 0 ", 1)
    path = write(tmp_path, "laughs.xml", doc)
    with pytest.raises(ECGReadError) as err:
        read(path)
    _assert_one_sentence(str(err.value), "laughs.xml")
    assert "entit" in str(err.value)


def test_billion_laughs_in_utf16_is_refused(tmp_path):
    doc = hl7_doc(_counts(12, 100), prolog=BILLION_LAUGHS).decode().replace("UTF-8", "UTF-16")
    path = write(tmp_path, "laughs16.xml", doc.encode("utf-16"))
    with pytest.raises(ECGReadError):
        read(path)


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-CONTENT")
    prolog = f'<!DOCTYPE RestingECG [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
    doc = muse_doc(_counts(8, 100), doctype=False).decode("iso-8859-1")
    doc = doc.replace("?>\n", "?>\n" + prolog, 1).replace("<MuseVersion>9.0.7", "<MuseVersion>&xxe;", 1)
    path = write(tmp_path, "xxe.xml", doc.encode("iso-8859-1"))
    with pytest.raises(ECGReadError) as err:
        read(path)
    assert "TOPSECRET" not in str(err.value)


def test_parameter_entity_and_inline_dtd_are_refused(tmp_path):
    prolog = '<!DOCTYPE restingecgdata [<!ENTITY % ext SYSTEM "http://example.invalid/x.dtd"> %ext;]>\n'
    doc = philips_doc(_counts(12, 100)).decode().replace("?>\n", "?>\n" + prolog, 1)
    with pytest.raises(ECGReadError):
        read(write(tmp_path, "pe.xml", doc.encode()))
    inline = '<!DOCTYPE restingecgdata [<!ATTLIST restingecgdata lang CDATA "en">]>\n'
    doc = philips_doc(_counts(12, 100)).decode().replace("?>\n", "?>\n" + inline, 1)
    with pytest.raises(ECGReadError):
        read(write(tmp_path, "inline.xml", doc.encode()))


def test_external_dtd_reference_is_allowed_and_not_fetched(tmp_path):
    # MUSE's own DOCTYPE names an external DTD; it must read, and nothing is fetched
    doc = muse_doc(_counts(8, 100), doctype=False).decode("iso-8859-1").replace(
        "?>\n", '?>\n<!DOCTYPE RestingECG SYSTEM "http://example.invalid/restecg.dtd">\n', 1)
    rec = read(write(tmp_path, "ext.xml", doc.encode("iso-8859-1")))
    assert rec.signal.shape == (8, 100)


@pytest.mark.parametrize("build,name", [
    (lambda: muse_doc(_counts(8, 2000)), "t_muse.xml"),
    (lambda: hl7_doc(_counts(12, 1000)), "t_hl7.xml"),
    (lambda: philips_doc(_counts(12, 1000)), "t_philips.xml"),
])
def test_truncated_xml(tmp_path, build, name):
    data = build()
    for cut in (200, len(data) // 3, len(data) // 2, len(data) - 10):
        path = write(tmp_path, name, data[:cut])
        if not vendor.sniff(path, data[:cut][:4096]):
            continue
        with pytest.raises(ECGReadError) as err:
            vendor.read(path)
        _assert_one_sentence(str(err.value), name)


def test_truncated_dicom(tmp_path):
    path = dicom_file(tmp_path / "full.dcm", _counts(12, 2000))
    data = path.read_bytes()
    for cut in (140, 400, len(data) // 2, len(data) - 100, len(data) - 1):
        broken = write(tmp_path, "cut.dcm", data[:cut])
        with pytest.raises(ECGReadError) as err:
            vendor.read(broken)
        _assert_one_sentence(str(err.value), "cut.dcm")


@pytest.mark.parametrize("name", ["junk.xml", "junk.dcm", "junk.scp", "junk.SCP", "junk.ECG"])
def test_garbage_with_a_vendor_extension(tmp_path, name):
    rng = np.random.default_rng(11)
    path = write(tmp_path, name, rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert not vendor.sniff(path, path.read_bytes()[:4096])
    with pytest.raises(ECGReadError) as err:
        vendor.read(path)
    _assert_one_sentence(str(err.value), name)


def test_garbage_behind_a_valid_looking_start(tmp_path):
    rng = np.random.default_rng(12)
    junk = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    dcm = write(tmp_path, "fake.dcm", bytes(128) + b"DICM" + junk)
    xml = write(tmp_path, "fake.xml", b'<?xml version="1.0"?><RestingECG><Waveform>' + junk)
    for path in (dcm, xml):
        assert vendor.sniff(path, path.read_bytes()[:4096])
        with pytest.raises(ECGReadError) as err:
            vendor.read(path)
        _assert_one_sentence(str(err.value), path.name)


def test_empty_and_missing_files(tmp_path):
    empty = write(tmp_path, "empty.xml", b"")
    assert not vendor.sniff(empty, b"")
    with pytest.raises(ECGReadError):
        vendor.read(empty)
    with pytest.raises(ECGReadError) as err:
        vendor.read(tmp_path / "absent.xml")
    _assert_one_sentence(str(err.value), "absent.xml")


def test_sniff_never_raises(tmp_path):
    assert vendor.sniff(tmp_path / "absent.ECG", b"0000001\x00\x00\x002020-01-01 00:00:00\x00" + bytes(30)) is False
    assert vendor.sniff(tmp_path, b"") is False
    assert vendor.sniff(tmp_path / "x.xml", b"\xff\xfe" + b"\x00" * 7) is False


def test_xml_size_limit(tmp_path, monkeypatch):
    path = write(tmp_path, "big.xml", muse_doc(_counts(8, 1000)))
    monkeypatch.setattr(vendor, "MAX_XML_BYTES", 1000)
    with pytest.raises(ECGReadError) as err:
        vendor.read(path)
    _assert_one_sentence(str(err.value), "big.xml")
    assert "MB" in str(err.value)


def test_check_xml_safe_accepts_muse_doctype():
    vendor.check_xml_safe(b'<?xml version="1.0"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG/>', "a.xml")


def test_dicom_library_warnings_and_logs_do_not_escape(tmp_path, caplog):
    path = dicom_file(tmp_path / "w.dcm", _counts(12, 500))
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"x.2.840.10008.1.2.1\x00"))
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = vendor.read(path)
    assert rec.signal.shape == (12, 500)
    assert not caught
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    logging.getLogger("pydicom").warning("still logged outside our reads")
    assert [r for r in caplog.records if r.name == "pydicom"]
