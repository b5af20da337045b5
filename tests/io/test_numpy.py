"""NumPy .npy and .npz, written here."""
from __future__ import annotations

import numpy as np
import pytest

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg
from ecgfm.io.record import STANDARD_LEADS


def _ecg(n_leads=12, n=5000, seed=0):
    return np.random.default_rng(seed).normal(0, 0.4, (n_leads, n)).astype(np.float32)


@pytest.mark.parametrize("transpose", [False, True])
def test_npy_either_orientation_needs_fs(tmp_path, transpose):
    data = _ecg()
    path = tmp_path / "x.npy"
    np.save(path, data.T if transpose else data)
    with pytest.raises(ECGReadError, match="x.npy.*give the sampling rate"):
        read_ecg(path)
    rec = read_ecg(path, fs=500)
    assert rec.leads == list(STANDARD_LEADS) and rec.fs == 500 and rec.format == "NumPy .npy"
    np.testing.assert_array_equal(rec.signal, data)
    assert any("standard order" in w for w in rec.warnings)


def test_npy_window(tmp_path):
    data = _ecg()
    np.save(tmp_path / "w.npy", data)
    rec = read_ecg(tmp_path / "w.npy", fs=500, start_s=2, duration_s=3)
    np.testing.assert_array_equal(rec.signal, data[:, 1000:2500])
    assert rec.start_s == 2 and rec.total_duration_s == pytest.approx(10)


def test_npz_with_rate_leads_and_units(tmp_path):
    data = _ecg(8) * 1000
    leads = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    np.savez(tmp_path / "e.npz", ecg=data, sampling_rate=np.array(250.0), leads=np.array(leads),
             units=np.array("uV"))
    rec = read_ecg(tmp_path / "e.npz")
    assert rec.fs == 250 and rec.leads == list(STANDARD_LEADS) and rec.format == "NumPy .npz"
    assert rec.derived_leads == ["III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(rec.signal[rec.leads.index("V3")], data[4] / 1000, rtol=1e-5)


def test_npz_without_rate_and_pickles_refused(tmp_path):
    np.savez(tmp_path / "n.npz", signal=_ecg(1, 1000))
    with pytest.raises(ECGReadError, match="n.npz.*give the sampling rate"):
        read_ecg(tmp_path / "n.npz")
    assert read_ecg(tmp_path / "n.npz", fs=500).leads == ["ECG"]
    np.savez(tmp_path / "p.npz", signal=np.array([{"a": 1}], dtype=object), fs=500)
    with pytest.raises(ECGReadError, match="p.npz"):
        read_ecg(tmp_path / "p.npz")


def test_npy_bad_shape(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((3, 4, 5)))
    with pytest.raises(ECGReadError, match="cube.npy.*shape"):
        read_ecg(tmp_path / "cube.npy", fs=500)
