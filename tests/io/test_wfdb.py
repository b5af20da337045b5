"""WFDB records written here with wfdb.wrsamp (and by hand where wrsamp cannot), read back."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg, read_ecgs, wfdb_format
from ecgfm.io.record import STANDARD_LEADS


def _signal(n_leads: int, n: int, fs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    return np.stack([0.8 * np.sin(2 * np.pi * 1.2 * t + k) + rng.normal(0, 0.05, n)
                     for k in range(n_leads)]).T  # [samples, leads], mV


def _write(folder, name, signal, fs=500, names=None, units=None, fmt="16", **kw):
    names = names or list(STANDARD_LEADS)[: signal.shape[1]]
    wfdb.wrsamp(name, fs=fs, units=units or ["mV"] * len(names), sig_name=names, p_signal=signal,
                fmt=[fmt] * len(names), write_dir=str(folder), **kw)
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


@pytest.mark.parametrize("fmt", ["16", "212", "80", "24"])
def test_round_trip_within_quantisation(tmp_path, fmt):
    signal = _signal(12, 5000, 500)
    files = _write(tmp_path, "rt", signal, fmt=fmt)
    rec = read_ecg(files)
    ref = wfdb.rdrecord(str(tmp_path / "rt"))
    assert rec.leads == list(STANDARD_LEADS) and rec.fs == 500 and rec.format == "WFDB"
    assert rec.name == "rt.hea" and rec.units == "mV" and rec.signal.dtype == np.float32
    quantum = 1 / np.min(ref.adc_gain)
    np.testing.assert_allclose(rec.signal, signal.T, atol=quantum)
    np.testing.assert_allclose(rec.signal, ref.p_signal.T, atol=1e-5)
    assert rec.duration_s == pytest.approx(10.0) and rec.total_duration_s == pytest.approx(10.0)
    assert rec.warnings == []


def test_format_61_big_endian(tmp_path):
    signal = _signal(3, 1000, 500)
    files = _write(tmp_path, "be", signal, names=["I", "II", "V1"])
    data = np.frombuffer(files[1].read_bytes(), dtype="<i2").astype(">i2")
    files[1].write_bytes(data.tobytes())
    files[0].write_text(files[0].read_text().replace("be.dat 16", "be.dat 61"))
    rec = read_ecg(files)
    np.testing.assert_allclose(rec.signal[[0, 1, 6]], signal.T, atol=0.01)


def test_microvolts_are_converted(tmp_path):
    signal = _signal(2, 2000, 250) * 1000  # uV
    files = _write(tmp_path, "uv", signal, fs=250, names=["I", "II"], units=["uV", "uV"])
    rec = read_ecg(files)
    assert rec.units == "uV"
    np.testing.assert_allclose(rec.signal[:2], signal.T / 1000, atol=2e-3)
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    assert rec.derived_leads == ["III", "aVR", "aVL", "aVF"]


def test_window_reads_only_the_window(tmp_path, monkeypatch):
    signal = _signal(2, 360 * 60, 360)
    files = _write(tmp_path, "holter", signal, fs=360, names=["MLII", "V5"], fmt="212")
    calls = []
    real = wfdb_format._read_frames

    def spy(path, fmt, byte_offset, n_sig, first, last):
        calls.append((first, last))
        return real(path, fmt, byte_offset, n_sig, first, last)

    monkeypatch.setattr(wfdb_format, "_read_frames", spy)
    rec = read_ecg(files, start_s=20, duration_s=5)
    assert calls == [(20 * 360, 25 * 360)]
    assert rec.start_s == pytest.approx(20) and rec.duration_s == pytest.approx(5)
    assert rec.total_duration_s == pytest.approx(60)
    assert rec.leads == ["II", "V5"]
    assert any("modified limb lead" in w for w in rec.warnings)
    assert any("Used 20.0–25.0 s of the 60.0 s" in w for w in rec.warnings)
    assert not any("trained on 12-lead" in w for w in rec.warnings)  # said once, by the input adequacy
    np.testing.assert_allclose(rec.signal[0], signal[20 * 360:25 * 360, 0], atol=0.01)


def test_non_ecg_channels_dropped_and_comments_not_copied(tmp_path):
    ecg = _signal(1, 1000, 125)[:, 0]
    abp = 80 + 20 * np.sin(np.arange(1000) / 20)
    files = _write(tmp_path, "icu", np.stack([ecg, abp, ecg * 0.5], axis=1), fs=125,
                   names=["II", "ABP", "PLETH"], units=["mV", "mmHg", "NU"],
                   comments=["age: 81", "sex: female", "Diagnose: Myocardial infarction"])
    rec = read_ecg(files)
    assert rec.leads == ["II"]
    dropped = [w for w in rec.warnings if "non-ECG" in w]
    assert dropped and "ABP" in dropped[0] and "PLETH" in dropped[0]
    fields = {k: v for k, v in vars(rec).items() if k not in ("signal", "extra_leads")}
    text = " ".join(rec.warnings) + repr(fields)
    for secret in ("age", "81", "female", "Myocardial"):
        assert secret not in text


def test_invalid_samples_are_interpolated(tmp_path):
    signal = _signal(2, 1000, 500)
    d = np.round(signal * 200).astype(np.int16)
    d[100, 0] = -32768  # WFDB's invalid-sample marker for format 16
    d[500:503, 1] = -32768
    wfdb.wrsamp("nan", fs=500, units=["mV", "mV"], sig_name=["I", "II"], d_signal=d, fmt=["16", "16"],
                adc_gain=[200.0, 200.0], baseline=[0, 0], write_dir=str(tmp_path))
    rec = read_ecg([tmp_path / "nan.hea", tmp_path / "nan.dat"])
    assert np.isfinite(rec.signal).all()
    assert rec.signal[0, 100] == pytest.approx((d[99, 0] + d[101, 0]) / 400, abs=1e-6)
    assert any("linear interpolation" in w and "I (1)" in w and "II (3)" in w for w in rec.warnings)


def test_header_and_signal_in_different_folders(tmp_path):
    """Gradio puts every upload in its own temporary folder."""
    files = _write(tmp_path, "split", _signal(12, 1000, 500))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hea = shutil.move(str(files[0]), tmp_path / "a" / "split.hea")
    dat = shutil.move(str(files[1]), tmp_path / "b" / "split.dat")
    rec = read_ecg([dat, hea])
    assert rec.leads == list(STANDARD_LEADS) and rec.signal.shape == (12, 1000)


def test_annotations_alongside_are_ignored(tmp_path):
    files = _write(tmp_path, "ann", _signal(2, 3600, 360), fs=360, names=["MLII", "V1"], fmt="212")
    wfdb.wrann("ann", "atr", np.array([100, 500, 900]), symbol=["N", "N", "V"], write_dir=str(tmp_path))
    records = read_ecgs([*files, tmp_path / "ann.atr"])
    assert len(records) == 1 and records[0].leads == ["II", "V1"]


def test_multi_frequency_record_read_at_the_ecg_rate(tmp_path):
    fs_frame = 125
    ecg = _signal(2, 4 * 1000, 4 * fs_frame)
    resp = np.sin(np.arange(1000) / 50)
    wfdb.wrsamp("mf", fs=fs_frame, units=["mV", "mV", "NU"], sig_name=["I", "II", "RESP"],
                e_p_signal=[ecg[:, 0], ecg[:, 1], resp], samps_per_frame=[4, 4, 1],
                fmt=["16", "16", "16"], adc_gain=[1000.0, 1000.0, 1000.0], baseline=[0, 0, 0],
                write_dir=str(tmp_path))
    rec = read_ecg([tmp_path / "mf.hea", tmp_path / "mf.dat"])
    assert rec.fs == 500 and rec.signal.shape[1] == 4000
    np.testing.assert_allclose(rec.signal[:2], ecg.T, atol=1e-3)
    assert rec.total_duration_s == pytest.approx(8.0)
    window = read_ecg([tmp_path / "mf.hea", tmp_path / "mf.dat"], start_s=2, duration_s=1)
    np.testing.assert_allclose(window.signal[0], ecg[1000:1500, 0], atol=1e-3)


def test_multi_segment_record(tmp_path):
    a, b = _signal(2, 500, 250, seed=1), _signal(2, 750, 250, seed=2)
    _write(tmp_path, "seg_1", a, fs=250, names=["I", "II"])
    _write(tmp_path, "seg_2", b, fs=250, names=["I", "II"])
    (tmp_path / "multi.hea").write_text("multi/2 2 250 1250\nseg_1 500\nseg_2 750\n")
    files = sorted(tmp_path.iterdir())
    rec = read_ecg(files)
    assert rec.name == "multi.hea" and rec.total_duration_s == pytest.approx(5.0)
    np.testing.assert_allclose(rec.signal[:2], np.concatenate([a, b]).T, atol=0.01)
    window = read_ecg(files, start_s=1, duration_s=2)
    np.testing.assert_allclose(window.signal[:2], np.concatenate([a, b])[250:750].T, atol=0.01)


def test_signal_in_a_wfdb_mat_file(tmp_path):
    signal = _signal(12, 2500, 500)
    _write(tmp_path, "tmp", signal)
    data = (tmp_path / "tmp.dat").read_bytes()
    (tmp_path / "A0001.mat").write_bytes(b"MATLAB 5.0 MAT-file".ljust(24, b" ") + data)
    header = (tmp_path / "tmp.hea").read_text().replace("tmp.dat 16", "A0001.mat 16x1+24")
    (tmp_path / "A0001.hea").write_text(header.replace("tmp ", "A0001 ", 1))
    rec = read_ecg([tmp_path / "A0001.hea", tmp_path / "A0001.mat"])
    np.testing.assert_allclose(rec.signal, signal.T, atol=0.01)


def test_second_signal_file(tmp_path):
    signal = _signal(15, 1000, 1000)
    names = [n.lower() for n in STANDARD_LEADS] + ["vx", "vy", "vz"]
    wfdb.wrsamp("ptb", fs=1000, units=["mV"] * 15, sig_name=names, p_signal=signal, fmt=["16"] * 15,
                write_dir=str(tmp_path))
    header = (tmp_path / "ptb.hea").read_text().splitlines()
    header = header[:13] + [line.replace("ptb.dat", "ptb.xyz") for line in header[13:16]]
    ref = wfdb.rdrecord(str(tmp_path / "ptb"), physical=False)
    wfdb.wrsamp("tmp12", fs=1000, units=["mV"] * 12, sig_name=names[:12], d_signal=ref.d_signal[:, :12],
                fmt=["16"] * 12, adc_gain=ref.adc_gain[:12], baseline=ref.baseline[:12],
                write_dir=str(tmp_path))
    wfdb.wrsamp("tmp3", fs=1000, units=["mV"] * 3, sig_name=names[12:], d_signal=ref.d_signal[:, 12:],
                fmt=["16"] * 3, adc_gain=ref.adc_gain[12:], baseline=ref.baseline[12:],
                write_dir=str(tmp_path))
    (tmp_path / "tmp12.dat").replace(tmp_path / "ptb.dat")
    (tmp_path / "tmp3.dat").replace(tmp_path / "ptb.xyz")
    (tmp_path / "ptb.hea").write_text("\n".join(header) + "\n")
    rec = read_ecg([tmp_path / "ptb.hea", tmp_path / "ptb.dat", tmp_path / "ptb.xyz"])
    assert rec.leads == list(STANDARD_LEADS)
    assert list(rec.extra_leads) == ["vx", "vy", "vz"]
    np.testing.assert_allclose(rec.extra_leads["vz"], signal[:, 14], atol=0.01)
    np.testing.assert_allclose(rec.signal, signal[:, :12].T, atol=0.01)
    alone = tmp_path / "without-xyz"
    alone.mkdir()
    for name in ("ptb.hea", "ptb.dat"):
        (alone / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(ECGReadError, match="ptb.xyz is missing"):
        read_ecg([alone / "ptb.hea", alone / "ptb.dat"])
