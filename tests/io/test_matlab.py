"""MATLAB .mat layouts: CODE-15% (feats), CPSC 2018 (struct ECG), generic arrays; written here."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg
from ecgfm.io.record import STANDARD_LEADS


def _ecg(n_leads=12, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.3, (n_leads, n))


def test_code15_feats(tmp_path):
    feats = _ecg(n=2934).astype(np.float32)
    path = tmp_path / "code_15_1.mat"
    sio.savemat(path, {"org_sample_rate": 400, "curr_sample_rate": 400, "org_sample_size": 2934,
                       "curr_sample_size": 2934, "feats": feats, "idx": 5})
    rec = read_ecg(path)
    assert rec.format == "MATLAB (CODE-15%)" and rec.fs == 400 and rec.leads == list(STANDARD_LEADS)
    np.testing.assert_array_equal(rec.signal, feats)
    assert rec.duration_s == pytest.approx(7.335) and rec.warnings == []


def test_cpsc2018_struct_default_rate_and_no_demographics(tmp_path):
    data = _ecg(n=5000)
    path = tmp_path / "A0001.mat"
    sio.savemat(path, {"ECG": {"sex": "Female", "age": 49, "data": data}})
    rec = read_ecg(path)
    assert rec.fs == 500 and rec.leads == list(STANDARD_LEADS) and rec.format == "MATLAB (CPSC 2018)"
    np.testing.assert_allclose(rec.signal, data, atol=1e-6)
    assert any("500 Hz was assumed" in w for w in rec.warnings)
    text = repr({k: v for k, v in vars(rec).items() if k not in ("signal",)})
    assert "Female" not in text and "49" not in text
    given = read_ecg(path, fs=250)
    assert given.fs == 250 and not any("assumed" in w for w in given.warnings)


def test_generic_array_with_rate_and_names(tmp_path):
    data = _ecg(3, 1000)
    path = tmp_path / "x.mat"
    sio.savemat(path, {"signal": data.T, "fs": 250.0, "leads": np.array(["I", "II", "V2"], dtype=object),
                       "units": "uV"})
    rec = read_ecg(path)
    assert rec.fs == 250 and rec.leads[:2] == ["I", "II"] and "V2" in rec.leads
    np.testing.assert_allclose(rec.signal[rec.leads.index("V2")], data[2] / 1000, atol=1e-7)
    assert rec.units == "uV"


def test_generic_without_rate_needs_fs(tmp_path):
    path = tmp_path / "norate.mat"
    sio.savemat(path, {"data": _ecg(12, 1000)})
    with pytest.raises(ECGReadError, match="norate.mat.*give the sampling rate"):
        read_ecg(path)
    rec = read_ecg(path, fs=500)
    assert rec.leads == list(STANDARD_LEADS) and any("assumed to be in the" in w for w in rec.warnings)


def test_physionet_val_without_header(tmp_path):
    path = tmp_path / "A02.mat"
    sio.savemat(path, {"val": (_ecg(12, 1000) * 1000).astype(np.int16)})
    with pytest.raises(ECGReadError, match="A02.mat.*\\.hea"):
        read_ecg(path)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "broken.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated" + b"\x00" * 10)
    with pytest.raises(ECGReadError, match="broken.mat"):
        read_ecg(path)
