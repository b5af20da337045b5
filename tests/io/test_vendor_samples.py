"""Every vendor-format row of ../shared/ecg-samples/MANIFEST.csv, read and checked against the
manifest (leads, rate, duration, units) and against an independent decode where one exists."""
from __future__ import annotations

import base64
import csv
import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from defusedxml import ElementTree as SafeET

from ecgfm.errors import ECGReadError
from ecgfm.io import vendor
from tests.conftest import SHARED

FORMATS = {"dicom": "dicom", "ge-muse": "muse", "hl7-aecg": "hl7", "philips": "philips",
           "scp": "scp", "other": "contec"}
FORMAT_NAMES = {"dicom": "DICOM 12-lead ECG", "muse": "GE MUSE XML", "hl7": "HL7 aECG",
                "philips": "Philips Sierra XML", "scp": "SCP-ECG", "contec": "Contec ECG90A"}


def _rows() -> list[dict]:
    manifest = SHARED / "ecg-samples" / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["format"] in FORMATS]


ROWS = _rows()


def _have_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _norm(lead: str) -> str:
    """Lead names compared loosely: 'Lead I (Einthoven)' ~ 'I', 'AVR' ~ 'aVR'."""
    text = re.sub(r"\(.*?\)", "", lead).strip().lower()
    return text[5:].strip() if text.startswith("lead ") else text


@pytest.fixture(scope="module")
def records(samples_dir):
    out = {}
    for row in ROWS:
        if row["format"] == "dicom" and not _have_pydicom():
            continue  # DICOM needs pydicom; those rows skip
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # our reader lets no library warning out
            out[row["path"]] = vendor.read(samples_dir / row["path"])
    return out


@pytest.mark.parametrize("row", ROWS or [None], ids=[r["path"] for r in ROWS] or ["absent"])
def test_manifest_row(row, samples_dir, records):
    assert row is not None, "MANIFEST.csv has no vendor-format rows"
    path = samples_dir / row["path"]
    kind = FORMATS[row["format"]]
    if row["path"] not in records:
        pytest.skip("pydicom is not installed")
    assert vendor.detect(path, path.read_bytes()[:4096]) == kind
    rec = records[row["path"]]
    assert rec.name == path.name
    assert rec.format.startswith(FORMAT_NAMES[kind])
    assert rec.signal.dtype == np.float32 and rec.signal.ndim == 2

    stored = [lead for lead in rec.leads if lead not in rec.derived_leads]
    expected = row["leads"].split(";")
    assert len(stored) == int(row["n_leads"]) == len(expected)
    assert [_norm(x) for x in stored] == [_norm(x) for x in expected]

    assert rec.fs == pytest.approx(float(row["fs_hz"]), abs=0.01)
    duration = float(row["duration_s"])
    if kind == "philips":
        # the trailing 1 mV calibration pulse (0.4 s) is cut, and said so
        assert any("calibration pulse" in w for w in rec.warnings)
        assert duration - 0.5 <= rec.duration_s < duration
    else:
        assert rec.duration_s == pytest.approx(duration, abs=1.5 / rec.fs)

    units = row["units"]
    if kind == "contec":
        assert rec.units == "5 uV per unit" and "5 uV" in units
    elif kind in ("philips", "scp"):
        assert rec.units == units
    else:
        assert units.lower() in rec.units.lower()

    assert np.isfinite(rec.signal).all()
    assert np.abs(rec.signal).max() < 20  # millivolts, not microvolts or counts
    assert np.abs(rec.signal).max() > 0.2


def _limb_relations(rec) -> float:
    lead = {_norm(n): rec.signal[i].astype(np.float64) for i, n in enumerate(rec.leads)}
    i, ii = lead["i"], lead["ii"]
    return max(np.abs(lead["iii"] - (ii - i)).max(), np.abs(lead["avr"] + (i + ii) / 2).max(),
               np.abs(lead["avl"] - (i - ii / 2)).max(), np.abs(lead["avf"] - (ii - i / 2)).max())


def test_dicom_against_pydicom(samples_dir, records):
    pydicom = pytest.importorskip("pydicom")
    name = "dicom/pydicom_waveform_ecg.dcm"
    ds = pydicom.dcmread(samples_dir / name)
    rhythm = [i for i, g in enumerate(ds.WaveformSequence) if g.MultiplexGroupLabel == "RHYTHM"]
    reference = ds.waveform_array(rhythm[0]).T / 1000.0  # channel sensitivity unit is uV
    np.testing.assert_allclose(records[name].signal, reference, rtol=1e-6, atol=1e-7)
    assert _limb_relations(records[name]) < 0.002


def _muse_rhythm(path: Path) -> tuple[list[str], np.ndarray]:
    root = SafeET.fromstring(path.read_bytes())
    for wf in root.iter("Waveform"):
        if wf.findtext("WaveformType") == "Rhythm":
            names, leads = [], []
            for ld in wf.iter("LeadData"):
                counts = np.frombuffer(base64.b64decode(ld.findtext("WaveFormData")), "<i2")
                assert ld.findtext("LeadAmplitudeUnits") == "MICROVOLTS"
                names.append(ld.findtext("LeadID"))
                leads.append(counts * float(ld.findtext("LeadAmplitudeUnitsPerBit")) / 1000)
            return names, np.stack(leads)
    raise AssertionError("no rhythm")


@pytest.mark.parametrize("name", ["ge-muse/braveheart_example1.xml", "ge-muse/braveheart_example2.xml"])
def test_muse_against_own_decode(samples_dir, records, name):
    names, reference = _muse_rhythm(samples_dir / name)
    assert records[name].leads == names
    np.testing.assert_allclose(records[name].signal, reference, rtol=1e-6, atol=1e-7)


def _hl7_rhythm(path: Path) -> np.ndarray:
    ns = {"h": "urn:hl7-org:v3"}
    root = SafeET.fromstring(path.read_bytes())
    for series in root.iterfind(".//h:component/h:series", ns):
        if series.find("h:code", ns).get("code") != "RHYTHM":
            continue
        leads = []
        for seq in series.iterfind("h:component/h:sequenceSet/h:component/h:sequence", ns):
            if not seq.find("h:code", ns).get("code").startswith("MDC_ECG_LEAD_"):
                continue
            value = seq.find("h:value", ns)
            scale = value.find("h:scale", ns)
            assert scale.get("unit") == "uV"
            digits = np.array(value.findtext("h:digits", namespaces=ns).split(), dtype=np.float64)
            leads.append(digits * float(scale.get("value")) / 1000)
        return np.stack(leads)
    raise AssertionError("no rhythm")


def test_hl7_against_own_decode(samples_dir, records):
    name = "hl7-aecg/hl7_example_aecg.xml"
    np.testing.assert_allclose(records[name].signal, _hl7_rhythm(samples_dir / name), rtol=1e-6, atol=1e-7)
    assert _limb_relations(records[name]) < 0.002


def test_scp_example_matches_the_same_recording_in_hl7(records):
    # ECG Toolkit's Example.scp and Example.xml (HL7 aECG) hold the same recording, same lead order
    scp, hl7 = records["scp/ecgtoolkit_Example.scp"], records["hl7-aecg/hl7_example_aecg.xml"]
    assert [_norm(x) for x in scp.leads] == [_norm(x) for x in hl7.leads]
    np.testing.assert_allclose(scp.signal, hl7.signal, atol=1e-6)


@pytest.mark.parametrize("name", ["scp/scptools_ECG_20070321_110542.SCP", "scp/scptools_ECG_20170504_163507.SCP"])
def test_welch_allyn_scp_rate_and_scale(records, name):
    rec = records[name]
    assert rec.fs == pytest.approx(1e6 / 1667)  # 599.88 Hz, not 600
    assert rec.signal.shape == (8, 6000)
    steps = np.unique(np.round(rec.signal.astype(np.float64) / 0.00375, 3) % 1)
    assert set(steps) <= {0.0, 1.0}  # every value a whole number of 3750 nV units


def test_philips_scale_from_calibration_pulse(samples_dir, records):
    """The documented 5 uV/unit: the decoded 1 mV calibration pulse is 200 units, and our signal
    is the raw units times 5 uV; the limb leads keep Einthoven's relations to within two units."""
    from ecgdatakit.parsing.parsers.sierra_xml import SierraXMLParser
    for name in [r["path"] for r in ROWS if r["format"] == "philips"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = SierraXMLParser().parse(samples_dir / name)
        counts = np.stack([np.asarray(lead.samples) for lead in raw.leads])
        assert counts.shape[1] == 5500
        assert set(np.unique(counts[:, -200:])) == {0.0, 200.0}
        assert all(lead.resolution == 5.0 and lead.resolution_unit == "uV" for lead in raw.leads)
        rec = records[name]
        np.testing.assert_allclose(rec.signal, counts[:, :rec.signal.shape[1]] * 0.005, atol=1e-6)
        assert _limb_relations(rec) <= 0.010 + 1e-6  # two units: the cart rounds each lead


def test_contec_against_own_decode(samples_dir, records):
    name = "other/contec_ecg90a_0000053.ECG"
    data = (samples_dir / name).read_bytes()
    frames = np.frombuffer(data[43:len(data) - 37], "<u2").reshape(-1, 8)
    rec = records[name]
    assert rec.signal.shape == (9, 29748)
    np.testing.assert_allclose(rec.signal[:8], (frames.T.astype(np.float64) - 2048) * 0.005, atol=1e-6)
    np.testing.assert_allclose(rec.signal[8], rec.signal[0] - rec.signal[1], atol=1e-6)


def test_no_patient_data_from_the_corpus(samples_dir, records):
    """Whatever identifiers ecgdatakit finds in these files (names, IDs, birth dates) stay out."""
    from ecgdatakit import FileParser
    checked = 0
    for row in ROWS:
        if row["path"] not in records:
            continue
        if FORMATS[row["format"]] == "contec":
            secrets = [(samples_dir / row["path"]).read_bytes()[32:40].split(b"\0")[0].decode("latin-1")]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                patient = FileParser.parse(samples_dir / row["path"]).patient
            secrets = [patient.first_name, patient.last_name, patient.patient_id]
            if patient.birth_date:
                secrets += [patient.birth_date.strftime("%Y-%m-%d"), patient.birth_date.strftime("%Y%m%d")]
        secrets = [s for s in secrets if s and len(s.strip()) >= 3]
        rec = records[row["path"]]
        # `name` is the file's basename by contract (one demo file is named after its fake patient)
        text = "\n".join(repr(getattr(rec, f.name)) for f in dataclasses.fields(rec) if f.name != "name")
        for secret in secrets:
            checked += 1
            assert secret not in text, f"patient data leaked from {row['path']}"
    assert checked >= 2  # the Welch Allyn placeholder name and personal number at least


@pytest.mark.parametrize("row", ROWS or [None], ids=[r["path"] for r in ROWS] or ["absent"])
def test_truncated_corpus_file(row, samples_dir, tmp_path):
    assert row is not None
    if row["format"] == "dicom" and not _have_pydicom():
        pytest.skip("pydicom is not installed")
    data = (samples_dir / row["path"]).read_bytes()
    name = Path(row["path"]).name
    for cut in (len(data) // 4, len(data) // 2, len(data) - 57):
        path = tmp_path / name
        path.write_bytes(data[:cut])
        if not vendor.sniff(path, data[:4096]):
            continue  # the dispatcher would not hand it to us
        with pytest.raises(ECGReadError) as err:
            vendor.read(path)
        message = str(err.value)
        assert name in message and "\n" not in message and message.endswith(".")
