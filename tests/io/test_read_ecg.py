"""The dispatcher: grouping uploads into records, vendor hand-off, options, central rules."""
from __future__ import annotations


import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg, read_ecgs
from ecgfm.io.record import STANDARD_LEADS, ECGRecord


def _wfdb(folder, name, n_leads=12, fs=500, seconds=5):
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([np.sin(2 * np.pi * t + k) for k in range(n_leads)]).T
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n_leads, sig_name=list(STANDARD_LEADS)[:n_leads],
                p_signal=signal, fmt=["16"] * n_leads, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def test_several_records_each_named_after_its_file(tmp_path):
    a = _wfdb(tmp_path, "a")
    b = _wfdb(tmp_path, "b")
    np.save(tmp_path / "c.npy", np.zeros((12, 100)) + np.arange(100))
    records = read_ecgs([*a, tmp_path / "c.npy", *b], fs=500)
    assert [r.name for r in records] == ["a.hea", "b.hea", "c.npy"]
    with pytest.raises(ECGReadError, match="3 records"):
        read_ecg([*a, *b, tmp_path / "c.npy"], fs=500)


def test_folder_input(tmp_path):
    _wfdb(tmp_path, "rec")
    assert read_ecg(tmp_path).name == "rec.hea"


def test_companion_without_header(tmp_path):
    files = _wfdb(tmp_path, "lonely")
    with pytest.raises(ECGReadError, match=r"lonely.dat.*\.hea header"):
        read_ecgs(files[1])


def test_annotation_alone_and_alongside(tmp_path):
    files = _wfdb(tmp_path, "ann")
    wfdb.wrann("ann", "atr", np.array([10, 20]), symbol=["N", "N"], write_dir=str(tmp_path))
    wfdb.wrann("ann", "qrs", np.array([10, 20]), symbol=["N", "N"], write_dir=str(tmp_path))
    assert len(read_ecgs([*files, tmp_path / "ann.atr", tmp_path / "ann.qrs"])) == 1
    with pytest.raises(ECGReadError, match="ann.atr.*annotation"):
        read_ecgs(tmp_path / "ann.atr")


def test_a_header_alone_finds_its_signal_file_beside_it(tmp_path):
    header, _ = _wfdb(tmp_path, "alone")
    record = read_ecg(header)
    assert record.name == "alone.hea" and record.leads == list(STANDARD_LEADS)
    np.testing.assert_allclose(record.signal[1], np.sin(2 * np.pi * np.arange(2500) / 500 + 1), atol=1e-3)


def test_unknown_binary_is_not_recognised(tmp_path):
    path = tmp_path / "ecg.xml"
    path.write_text("<?xml version='1.0'?><SomethingElse></SomethingElse>")
    with pytest.raises(ECGReadError, match="ecg.xml.*not recognised"):
        read_ecg(path)


def test_vendor_records_get_the_central_rules(tmp_path, monkeypatch):
    names = ["Lead I (Einthoven)", "Lead II", "Lead V1", "Lead V2", "Lead V3", "Lead V4", "Lead V5",
             "Lead V6", "Lead V4R"]
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 0.3, (9, 5000)).astype(np.float32)
    signal[2, 100:110] = np.nan

    def sniff(path, head):
        return head.startswith(b"FAKE")

    def read(path):
        return ECGRecord(name=path.name, signal=signal, fs=500.0, leads=names, format="fake",
                         units="uV", warnings=["vendor note"])

    from ecgfm.io import vendor
    monkeypatch.setattr(vendor, "sniff", sniff)
    monkeypatch.setattr(vendor, "read", read)
    path = tmp_path / "x.scp"
    path.write_bytes(b"FAKE data")
    rec = read_ecg(path, start_s=2, duration_s=5)
    assert rec.leads == list(STANDARD_LEADS) and list(rec.extra_leads) == ["Lead V4R"]
    assert rec.units == "uV" and rec.format == "fake" and "vendor note" in rec.warnings
    assert rec.derived_leads == ["III", "aVR", "aVL", "aVF"]
    assert rec.start_s == 2 and rec.signal.shape == (12, 2500)
    np.testing.assert_allclose(rec.signal[0], signal[0, 1000:3500])
    # unknown extension: the vendor sniffer is asked too
    other = tmp_path / "x.bin"
    other.write_bytes(b"FAKE data")
    assert read_ecg(other).leads == list(STANDARD_LEADS)


@pytest.mark.parametrize("fs", [0, -250, 50, 1e6, float("nan")])
def test_sampling_rate_out_of_range(tmp_path, fs):
    np.save(tmp_path / "x.npy", np.zeros((12, 1000)))
    with pytest.raises(ECGReadError, match="x.npy.*sampling rate"):
        read_ecg(tmp_path / "x.npy", fs=fs)


def test_the_files_own_rate_wins_over_the_given_one(tmp_path):
    files = _wfdb(tmp_path, "own")
    rec = read_ecg(files, fs=250)
    assert rec.fs == 500 and any("250 Hz given was not used" in w for w in rec.warnings)
    assert not any("not used" in w for w in read_ecg(files, fs=500).warnings)
    np.savez(tmp_path / "z.npz", signal=np.zeros((12, 1000)) + np.arange(1000), fs=400)
    assert read_ecg(tmp_path / "z.npz", fs=250).fs == 400


def test_header_rate_out_of_range(tmp_path):
    files = _wfdb(tmp_path, "slow", fs=50, seconds=20)
    with pytest.raises(ECGReadError, match="slow.hea.*50 Hz is outside"):
        read_ecg(files)


def test_non_integer_rate_kept(tmp_path):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(12, 6000)))
    assert read_ecg(tmp_path / "f.npy", fs=599.88).fs == pytest.approx(599.88)


def test_bad_window(tmp_path):
    files = _wfdb(tmp_path, "w")
    with pytest.raises(ECGReadError, match="w.hea"):
        read_ecg(files, start_s=-1)
    with pytest.raises(ECGReadError, match="w.hea"):
        read_ecg(files, duration_s=0)
    with pytest.raises(ECGReadError, match="w.hea.*after the end"):
        read_ecg(files, start_s=60)


def test_text_with_unknown_extension_and_missing_file(tmp_path):
    path = tmp_path / "export.ecgdata"
    path.write_text("\n".join(f"{np.sin(i / 20):.4f}" for i in range(2000)))
    assert read_ecg(path, fs=500).leads == ["ECG"]
    with pytest.raises(ECGReadError, match="nope.csv.*does not exist"):
        read_ecg(tmp_path / "nope.csv")


def test_implausible_amplitude_warned(tmp_path):
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(0, 30, (12, 1000)))
    rec = read_ecg(tmp_path / "big.npy", fs=500)
    assert any("implausibly large" in w for w in rec.warnings)
