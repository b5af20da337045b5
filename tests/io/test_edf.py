"""EDF and BDF written here with pyedflib."""
from __future__ import annotations

import numpy as np
import pyedflib
import pytest
from pyedflib import highlevel

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg


def _write(path, signals, labels, dims, rates, pmin=-5000.0, pmax=5000.0, file_type=-1):
    headers = [highlevel.make_signal_header(lab, dimension=d, sample_frequency=r,
                                            physical_min=pmin, physical_max=pmax)
               for lab, d, r in zip(labels, dims, rates)]
    highlevel.write_edf(str(path), signals, headers, file_type=file_type)


def _ecg(n, seed=0):
    t = np.arange(n) / 500
    return np.sin(2 * np.pi * 1.1 * t) + np.random.default_rng(seed).normal(0, 0.05, n)


def test_units_labels_and_flat_channels(tmp_path):
    n = 500 * 10
    i, ii = _ecg(n, 1) * 1000, _ecg(n, 2) * 1000  # uV
    flat = np.full(n, 15.259)
    path = tmp_path / "r.edf"
    _write(path, [i, ii, flat], ["ECG I", "ECG II", "V1"], ["uV", "uV", "uV"], [500] * 3)
    rec = read_ecg(path)
    quantum = 10000 / 65535 / 1000  # mV per digital step
    assert rec.format == "EDF" and rec.fs == 500 and rec.units == "uV"
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1"]
    np.testing.assert_allclose(rec.signal[0], i / 1000, atol=quantum)
    v1 = rec.signal[rec.leads.index("V1")]
    assert np.ptp(v1) == 0 and v1[0] == pytest.approx(0.015259, abs=quantum)  # kept as is
    assert rec.total_duration_s == pytest.approx(10)


def test_per_channel_rates_and_non_ecg(tmp_path):
    n = 500 * 6
    ecg = _ecg(n) * 1000
    resp = np.sin(np.arange(25 * 6) / 5)
    path = tmp_path / "psg.edf"
    _write(path, [ecg, resp], ["ECG", "Resp chest"], ["uV", "mV"], [500, 25])
    rec = read_ecg(path)
    assert rec.leads == ["ECG"] and rec.fs == 500
    assert any("non-ECG" in w and "Resp chest" in w for w in rec.warnings)


def test_window(tmp_path):
    n = 500 * 20
    i = _ecg(n) * 1000
    path = tmp_path / "long.edf"
    _write(path, [i, i], ["I", "II"], ["uV", "uV"], [500, 500])
    rec = read_ecg(path, start_s=5, duration_s=4)
    assert rec.start_s == pytest.approx(5) and rec.signal.shape[1] == 2000
    np.testing.assert_allclose(rec.signal[0], i[2500:4500] / 1000, atol=2e-4)
    assert any("Used 5.0–9.0 s of the 20.0 s" in w for w in rec.warnings)


def test_bdf(tmp_path):
    n = 500 * 4
    ii = _ecg(n) * 1000
    path = tmp_path / "x.bdf"
    headers = [highlevel.make_signal_header("II", dimension="uV", sample_frequency=500,
                                            physical_min=-5000, physical_max=5000,
                                            digital_min=-8388608, digital_max=8388607)]
    highlevel.write_edf(str(path), [ii], headers, file_type=pyedflib.FILETYPE_BDFPLUS)
    rec = read_ecg(path)
    assert rec.format == "BDF" and rec.leads == ["II"]
    np.testing.assert_allclose(rec.signal[0], ii / 1000, atol=1e-5)


def test_truncated_edf(tmp_path):
    path = tmp_path / "t.edf"
    _write(path, [_ecg(5000) * 1000], ["II"], ["uV"], [500])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    with pytest.raises(ECGReadError, match="t.edf"):
        read_ecg(path)
