"""Hostile or broken input: one plain sentence naming the file, bounded memory, no crash."""
from __future__ import annotations

import tracemalloc
import zipfile

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg, read_ecgs
from ecgfm.io.record import STANDARD_LEADS


def _one_sentence(err: ECGReadError, fname: str) -> None:
    text = str(err)
    assert fname in text and "\n" not in text and "Traceback" not in text
    assert text.endswith(".") and text.count(". ") == 0


def _fails(paths, fname, match=None, **kw):
    with pytest.raises(ECGReadError) as info:
        read_ecgs(paths, **kw)
    _one_sentence(info.value, fname)
    if match:
        assert match in str(info.value), str(info.value)
    return str(info.value)


def _record(folder, name="r", n=5000):
    t = np.arange(n) / 500
    signal = np.stack([np.sin(2 * np.pi * t + k) for k in range(12)]).T
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=signal,
                fmt=["16"] * 12, write_dir=str(folder))
    return folder / f"{name}.hea", folder / f"{name}.dat"


def test_unknown_format(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    _fails(path, "photo.jpg", "not recognised")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    _fails(path, "empty.csv", "empty")


def test_truncated_dat(tmp_path):
    hea, dat = _record(tmp_path)
    dat.write_bytes(dat.read_bytes()[:5000])
    _fails([hea, dat], "r.hea", "truncated")


def test_header_whose_dat_is_missing(tmp_path):
    hea, dat = _record(tmp_path)
    dat.unlink()
    _fails(hea, "r.hea", "r.dat is missing")


def test_header_claiming_a_trillion_samples_does_not_allocate(tmp_path, monkeypatch):
    hea, dat = _record(tmp_path)
    text = hea.read_text().splitlines()
    text[0] = "r 12 500 1000000000000"
    hea.write_text("\n".join(text) + "\n")
    calls = []
    monkeypatch.setattr(wfdb, "rdrecord", lambda *a, **k: calls.append(k))
    tracemalloc.start()
    try:
        _fails([hea, dat], "r.hea", "truncated")
        _fails([hea, dat], "r.hea", start_s=0, duration_s=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert calls == [] and peak < 50_000_000


def test_header_with_huge_length_and_matching_claims_is_refused_without_window(tmp_path):
    hea = tmp_path / "big.hea"
    dat = tmp_path / "big.dat"
    with open(dat, "wb") as f:  # sparse 200 MB file: 100M samples of one signal
        f.truncate(200_000_000)
    hea.write_text("big 1 500 100000000\nbig.dat 16 200 16 0 0 0 0 II\n")
    _fails([hea, dat], "big.hea", "shorter window")
    rec = read_ecg([hea, dat], start_s=1000, duration_s=10)
    assert rec.signal.shape == (1, 5000) and rec.total_duration_s == pytest.approx(200_000)


def test_nan_only_signals(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((12, 1000), np.nan))
    _fails(tmp_path / "nan.npy", "nan.npy", "no valid samples", fs=500)
    (tmp_path / "nan.csv").write_text("I,II\n" + "nan,\n" * 100)
    _fails(tmp_path / "nan.csv", "nan.csv", fs=500)


@pytest.mark.parametrize("rate", ["0", "-500", "1e9", "nan"])
def test_impossible_header_rates(tmp_path, rate):
    hea, dat = _record(tmp_path)
    text = hea.read_text().splitlines()
    text[0] = f"r 12 {rate} 5000"
    hea.write_text("\n".join(text) + "\n")
    _fails([hea, dat], "r.hea")


@pytest.mark.parametrize("rate", ["0", "-2", "5", "200000"])
def test_impossible_text_rates(tmp_path, rate):
    path = tmp_path / "x.txt"
    path.write_text(f"# Sampling Rate (Hz):= {rate}\n" + "\n".join("0.1" for _ in range(100)))
    _fails(path, "x.txt")


def test_zip_bomb(tmp_path):
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"\x00" * 50_000_000)
    _fails(z, "bomb.zip", "zip bomb")


def test_zip_traversal_and_too_many(tmp_path):
    z = tmp_path / "up.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok/../../../x.csv", "1\n")
    _fails(z, "up.zip", "unsafe path")
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(500):
            zf.writestr(f"{i}.csv", "1\n")
    _fails(z, "many.zip", "500 files")


def test_garbage_with_ecg_extensions(tmp_path):
    for name in ("g.edf", "g.mat", "g.npy", "g.npz", "g.hea", "g.zip"):
        path = tmp_path / name
        path.write_bytes(b"\x00\x01 definitely not an ECG" * 3)
        _fails(path, name)


def test_header_pointing_outside_its_folder(tmp_path):
    hea, dat = _record(tmp_path)
    hea.write_text(hea.read_text().replace("r.dat", "../r.dat"))
    _fails([hea, dat], "r.hea")


def test_binary_noise_with_text_extension(tmp_path):
    path = tmp_path / "noise.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _fails(path, "noise.csv", fs=500)


def test_records_hold_no_identifiers(tmp_path):
    hea, dat = _record(tmp_path)
    hea.write_text(hea.read_text() + "# Name: Jane Roe\n# Age: 77\n# Sex: F\n")
    rec = read_ecg([hea, dat])
    text = repr({k: v for k, v in vars(rec).items() if k not in ("signal", "extra_leads")})
    assert "Jane" not in text and "77" not in text
