"""Files holding only ECG leads outside the 12-lead ECG (MCL1, Frank X/Y/Z): readable, with no lead."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg
from ecgfm.io.record import ECGRecord


def _write(folder, name, names, units, fs=250, seconds=8):
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([(k + 1) * 0.3 * np.sin(2 * np.pi * 1.1 * t + k) for k in range(len(names))]).T
    wfdb.wrsamp(name, fs=fs, units=units, sig_name=names, p_signal=signal, fmt=["16"] * len(names),
                write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"], signal


def test_a_monitor_lead_alone(tmp_path):
    files, signal = _write(tmp_path, "monitor", ["MCL1"], ["mV"])
    rec = read_ecg(files)
    assert rec.leads == [] and rec.signal.shape == (0, 2000) and rec.signal.dtype == np.float32
    assert list(rec.extra_leads) == ["MCL1"]
    np.testing.assert_allclose(rec.extra_leads["MCL1"], signal[:, 0], atol=1e-3)
    assert rec.duration_s == pytest.approx(8.0) and rec.total_duration_s == pytest.approx(8.0)
    assert rec.warnings == ["The file holds no lead of the 12-lead ECG (only MCL1); it can be drawn, "
                            "but ECG-FM cannot read it."]
    summary = rec.summary()
    assert summary["leads"] == [] and summary["extra_leads"] == ["MCL1"]
    assert summary["duration_s"] == 8.0 and summary["window"] == {"start_s": 0.0, "end_s": 8.0}
    window = rec.window(2.0, 3.0)
    assert window.signal.shape == (0, 750) and window.extra_leads["MCL1"].shape == (750,)
    assert window.duration_s == pytest.approx(3.0) and window.total_duration_s == pytest.approx(8.0)
    np.testing.assert_allclose(window.extra_leads["MCL1"], signal[500:1250, 0], atol=1e-3)
    assert window.summary()["window"] == {"start_s": 2.0, "end_s": 5.0}


def test_frank_leads_in_microvolts_beside_a_non_ecg_channel(tmp_path):
    files, signal = _write(tmp_path, "frank", ["X", "Y", "Z", "RESP"], ["uV", "uV", "uV", "NU"])
    rec = read_ecg(files, start_s=1.0, duration_s=4.0)
    assert rec.leads == [] and list(rec.extra_leads) == ["X", "Y", "Z"]
    assert rec.signal.shape == (0, 1000) and rec.start_s == pytest.approx(1.0)
    np.testing.assert_allclose(rec.extra_leads["Z"], signal[250:1250, 2] / 1000, atol=1e-5)  # mV
    assert "Left out 1 non-ECG channel (RESP); ECG-FM reads only ECG leads." in rec.warnings
    assert ("The file holds no lead of the 12-lead ECG (only X, Y, Z); it can be drawn, but ECG-FM "
            "cannot read it.") in rec.warnings
    assert not any("results on fewer leads" in w or "kept aside" in w for w in rec.warnings)


def test_the_caller_may_name_a_lead_outside_the_twelve(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("\n".join(f"{np.sin(i / 25):.4f}" for i in range(2500)))
    rec = read_ecg(path, fs=250, leads=["MCL1"])
    assert rec.leads == [] and list(rec.extra_leads) == ["MCL1"] and rec.duration_s == 10.0
    assert rec.warnings[-1].startswith("The file holds no lead of the 12-lead ECG (only MCL1)")


def test_a_twelve_lead_record_still_keeps_extra_leads_aside(tmp_path):
    files, _ = _write(tmp_path, "mixed", ["II", "V4R"], ["mV", "mV"])
    rec = read_ecg(files)
    assert rec.leads == ["II"] and list(rec.extra_leads) == ["V4R"]
    assert any("V4R is not among the 12 leads" in w for w in rec.warnings)
    assert not any("no lead of the 12-lead ECG" in w for w in rec.warnings)


def test_record_without_standard_leads_takes_its_length_from_the_extra_leads():
    extra = {"vx": np.zeros(1500, np.float32), "vy": np.ones(1500, np.float32)}
    for signal in (np.empty(0), np.empty((0, 0)), np.zeros((0, 1500))):
        rec = ECGRecord(name="x", signal=signal, fs=500.0, leads=[], format="test", units="mV",
                        extra_leads=extra)
        assert rec.signal.shape == (0, 1500) and rec.duration_s == pytest.approx(3.0)
        assert rec.total_duration_s == pytest.approx(3.0)
    with pytest.raises(ECGReadError, match="^x: the extra leads have different lengths"):
        ECGRecord(name="x", signal=np.empty(0), fs=500.0, leads=[], format="test", units="mV",
                  extra_leads={"vx": np.zeros(10), "vy": np.zeros(12)})
    with pytest.raises(ECGReadError, match="shape"):  # leads and rows must still agree
        ECGRecord(name="x", signal=np.zeros((1, 10)), fs=500.0, leads=[], format="test", units="mV")
