"""Every recording in ../shared/ecg-samples/MANIFEST.csv reads, and matches the manifest.

Generic over the manifest: one test per row that is a record (companion rows - signal,
annotation and segment files - point to their record's row and are read with it). Leads (after
canonical naming, dropping non-ECG channels, setting extra leads aside and deriving limb leads),
sampling rate, duration and units are checked against the row; values against an independent
reference read (wfdb.rdrecord, scipy, numpy, pyedflib with the documented scaling) where one
exists. Rows in formats whose reader is not in the tree yet are skipped with the reason.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from ecgfm.io import read_ecg
from ecgfm.io.record import STANDARD_LEADS
from tests.conftest import SHARED

MANIFEST = SHARED / "ecg-samples" / "MANIFEST.csv"
OWN_FORMATS = {"wfdb", "mat", "csv", "edf"}
VENDOR_FORMATS = {"ge-muse", "philips", "hl7-aecg", "dicom", "scp", "other"}
LONG_S = 600  # longer recordings are read as a 10 s window (the whole one once, below)
_COMPANION = re.compile(r"see the \.hea row|^segment header", re.I)


def _rows() -> list[dict]:
    if not MANIFEST.is_file():
        return []
    with open(MANIFEST, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if not _COMPANION.search(row["notes"])]


ROWS = _rows()


def _param(row: dict):
    marks = []
    if row["format"] not in OWN_FORMATS | VENDOR_FORMATS:
        marks.append(pytest.mark.xfail(reason=f"no reader for manifest format {row['format']!r}",
                                       strict=False))
    return pytest.param(row, id=row["path"], marks=marks)


# --- what the manifest implies, worked out independently of the reader --------------------------

_STANDARD = {lead.lower(): lead for lead in STANDARD_LEADS}
_MODIFIED = {"mlii": "II", "mli": "I", "mliii": "III"}
_EXTRA = {"vx", "vy", "vz", "v3r", "v4r", "v5r", "v7", "v8", "v9", "mcl1"}
_NON_ECG = {"abp", "pap", "pleth", "resp", "uc", "cvp", "spo2", "art"}


def _canonical(name: str) -> tuple[str, str]:
    key = re.sub(r"\(.*?\)", "", name).strip().lower()
    key = re.sub(r"^(lead|mdc_ecg_lead_)\s*", "", key).strip()
    if key in _STANDARD:
        return "standard", _STANDARD[key]
    if key in _MODIFIED:
        return "standard", _MODIFIED[key]
    if key in _EXTRA:
        return "extra", name
    if key in _NON_ECG:
        return "non-ECG", name
    return "unknown", name


def _empty_leads(notes: str) -> set[str]:
    return set(re.findall(r"lead (\S+) entirely missing", notes))


def _expected_leads(row: dict) -> tuple[set[str], int, set[str]]:
    """(standard leads after derivation, number of unknown-position leads, extra leads)."""
    names = [] if row["leads"].startswith("(") else row["leads"].split(";")
    empty = _empty_leads(row["notes"])
    standard, extra, unknown = set(), set(), 0
    for name in names:
        if name in empty:
            continue
        kind, canon = _canonical(name)
        if kind == "standard":
            standard.add(canon)
        elif kind == "extra":
            extra.add(canon)
        elif kind == "unknown":
            unknown += 1
    if not names:
        unknown = int(row["n_leads"])
    limb = standard & {"I", "II", "III"}
    if len(limb) >= 2:
        standard |= {"I", "II", "III", "aVR", "aVL", "aVF"}
    return standard, unknown, extra


def _expected_fs(row: dict) -> float:
    if "multi-frequency" in row["notes"]:
        rates = dict(re.findall(r"(\w+)=(\d+(?:\.\d+)?)Hz", row["notes"]))
        ecg = [float(r) for name, r in rates.items() if _canonical(name)[0] in ("standard", "unknown")]
        return max(ecg)
    return float(row["fs_hz"])


def _unit_family(text: str) -> set[str]:
    text = text.lower()
    family = set()
    if re.search(r"adc|count|per unit", text):
        family.add("counts")
    if re.search(r"\bmv\b|millivolt", text):
        family.add("mv")
    if re.search(r"\buv\b|µv|microvolt", text):
        family.add("uv")
    if re.search(r"\bnv\b|nanovolt", text):
        family.add("nv")
    return family


def _documented_scale(row: dict) -> float | None:
    """mV per stored value, from the manifest's units; None when the scaling is undocumented."""
    units = row["units"].lower()
    match = re.search(r"(\d+(?:\.\d+)?)\s*uv", units)
    if "adc" in units or "count" in units:
        return float(match.group(1)) / 1000 if match else None
    if "uv" in units:
        return 1e-3
    return 1.0


def _read_kwargs(row: dict) -> dict:
    kwargs = {}
    if row["format"] == "csv" and re.search(r"sampling rate not in file", row["notes"]):
        kwargs["fs"] = float(row["fs_hz"])  # the dataset documents it; the file does not say
    if float(row["duration_s"]) > LONG_S:
        kwargs.update(start_s=0.0, duration_s=10.0)
    return kwargs


def _files(samples_dir: Path, row: dict) -> list[Path]:
    path = samples_dir / row["path"]
    if row["format"] == "wfdb":  # a user uploads the record's folder: header, signals, annotations
        return sorted(p for p in path.parent.iterdir() if p.is_file())
    return [path]


# --- reference reads ------------------------------------------------------------------------------

def _reference(samples_dir: Path, row: dict, kwargs: dict, fs: float) -> list | None:
    """[(lead name as in the file, values in mV)], or None where there is no independent decode."""
    path = samples_dir / row["path"]
    n = None if "duration_s" not in kwargs else int(round(kwargs["duration_s"] * fs))
    fmt = row["format"]
    if fmt == "wfdb":
        import wfdb

        multi = "multi-frequency" in row["notes"] or "multi-segment" in row["notes"]
        frame_fs = float(row["fs_hz"])
        sampto = None if n is None else int(round(n * frame_fs / fs))
        rec = wfdb.rdrecord(str(path.with_suffix("")), sampto=sampto, smooth_frames=not multi)
        out = []
        for i, name in enumerate(rec.sig_name):
            scale = {"mv": 1.0, "uv": 1e-3}.get(rec.units[i].lower())
            if scale is not None:
                data = rec.e_p_signal[i] if multi else rec.p_signal[:, i]
                out.append((name, np.asarray(data) * scale))
        return out
    if fmt == "mat":
        import scipy.io as sio

        content = sio.loadmat(str(path))
        data = content["feats"] if "feats" in content else content["ECG"][0, 0]["data"]
        return [(lead, np.asarray(data[i], float)) for i, lead in enumerate(row["leads"].split(";"))]
    if fmt == "csv":
        text = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        table = np.array([[float(v) if v.strip() else np.nan for v in ln.split(",")] for ln in text])
        scale = _documented_scale(row)
        names = row["leads"].split(";") if not row["leads"].startswith("(") else ["ECG"]
        return [(name, table[:n, i] * (scale if scale is not None else np.nan))
                for i, name in enumerate(names)]
    if fmt == "edf":
        import pyedflib

        with pyedflib.EdfReader(str(path)) as reader:
            return [(reader.getLabel(i), reader.readSignal(i, 0, n) * (
                    1e-3 if reader.getPhysicalDimension(i).lower() == "uv" else 1.0))
                    for i in range(reader.signals_in_file)]
    return None


@pytest.mark.parametrize("row", [_param(r) for r in ROWS] or [pytest.param(None, id="absent")])
def test_manifest_record(row, samples_dir):
    if row is None:
        pytest.skip("MANIFEST.csv is absent")
    kwargs = _read_kwargs(row)
    rec = read_ecg(_files(samples_dir, row), **kwargs)

    standard, unknown, extra = _expected_leads(row)
    got_standard = [lead for lead in rec.leads if lead in STANDARD_LEADS]
    assert set(got_standard) == standard, rec.leads
    assert got_standard == [lead for lead in STANDARD_LEADS if lead in standard]  # standard order
    assert len(rec.leads) - len(got_standard) == unknown, rec.leads
    assert set(rec.extra_leads) == extra

    fs = _expected_fs(row)
    assert rec.fs == pytest.approx(fs, rel=1e-3)
    duration = float(row["duration_s"])
    if any("calibration pulse" in w and "removed" in w for w in rec.warnings):
        # a reader may cut a recognised calibration pulse off the end, and says so
        assert duration - 1.0 <= rec.total_duration_s <= duration + 2 / fs
    else:
        assert rec.total_duration_s == pytest.approx(duration, abs=2 / fs + 1e-3)
    if "duration_s" in kwargs:
        assert rec.duration_s == pytest.approx(kwargs["duration_s"], abs=1 / fs)
        assert any(w.startswith("Used 0.0–10.0 s") for w in rec.warnings)
    else:
        assert rec.duration_s == pytest.approx(rec.total_duration_s, abs=1 / fs)
    assert _unit_family(rec.units) & _unit_family(row["units"].replace("(implied)", "")), rec.units
    assert rec.signal.dtype == np.float32 and np.isfinite(rec.signal).all()
    assert len(rec.leads) < 3 or not rec.derived_leads or any("derived" in w for w in rec.warnings)

    reference = _reference(samples_dir, row, kwargs, fs)
    if reference is None:
        spans = np.ptp(rec.signal, axis=1)
        assert np.median(spans) < 20, "amplitudes are not plausible for mV"
        return
    unknown_leads = iter([lead for lead in rec.leads if lead not in STANDARD_LEADS])
    compared = 0
    for name, ref in reference:
        kind, canon = _canonical(name)
        if name in _empty_leads(row["notes"]) or kind in ("extra", "non-ECG"):
            continue
        if kind == "unknown":  # kept under its own name, in file order
            canon = next(unknown_leads)
        elif canon in rec.derived_leads:
            continue
        got = rec.signal[rec.leads.index(canon)].astype(np.float64)
        ref = np.asarray(ref, np.float64)[: got.size]
        assert got.size == ref.size
        if np.isnan(ref).all():  # scaling undocumented (raw counts): same shape, any linear scale
            raw = np.loadtxt(samples_dir / row["path"], comments="#")[: got.size]
            assert np.corrcoef(got, raw)[0, 1] > 0.99999
        else:
            ok = np.isfinite(ref)
            np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-5, atol=1e-5)
        compared += 1
    assert compared, "nothing was compared with the reference"


def test_whole_holter_record(samples_dir):
    """The 30-minute MIT-BIH record read whole, once (the other tests read a window)."""
    folder = samples_dir / "wfdb" / "mitdb_100"
    if not folder.is_dir():
        pytest.skip("MIT-BIH 100 is not in the samples")
    rec = read_ecg(sorted(folder.iterdir()))
    assert rec.leads == ["II", "V5"] and rec.signal.shape == (2, 650000)
    assert rec.total_duration_s == pytest.approx(1805.5556, abs=1e-3)
    later = read_ecg(sorted(folder.iterdir()), start_s=900, duration_s=10)
    np.testing.assert_allclose(later.signal, rec.signal[:, 900 * 360:910 * 360])
