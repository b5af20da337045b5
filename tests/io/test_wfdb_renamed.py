"""WFDB records whose files were renamed together (rec2.hea + rec2.dat, the header naming 100.dat)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg, read_ecgs

NOTE = "The header names the signal file 100.dat, which was not found; rec2.dat was read in its place."


def _signal(n=2000, fs=250.0):
    t = np.arange(n) / fs
    return np.stack([np.sin(2 * np.pi * 1.2 * t), 0.5 * np.cos(2 * np.pi * 1.2 * t)]).T


@pytest.fixture
def original(tmp_path):
    """Record 100 (MLII, V5, format 212) as PhysioNet would serve it, in its own folder."""
    src = tmp_path / "src"
    src.mkdir()
    wfdb.wrsamp("100", fs=250, units=["mV", "mV"], sig_name=["MLII", "V5"], p_signal=_signal(),
                fmt=["212", "212"], write_dir=str(src))
    return src


def _renamed(original, folder, stem="rec2", dat_suffix=".dat"):
    folder.mkdir(exist_ok=True)
    shutil.copy(original / "100.hea", folder / f"{stem}.hea")
    shutil.copy(original / "100.dat", folder / f"{stem}{dat_suffix}")
    return folder / f"{stem}.hea", folder / f"{stem}{dat_suffix}"


def test_renamed_pair_is_read_with_a_note(original, tmp_path):
    hea, dat = _renamed(original, tmp_path / "up")
    rec = read_ecg([hea, dat])
    assert rec.name == "rec2.hea" and rec.leads == ["II", "V5"] and rec.fs == 250
    np.testing.assert_allclose(rec.signal.T, _signal(), atol=0.01)
    assert rec.warnings[0] == NOTE
    reference = read_ecg(original / "100.hea")
    np.testing.assert_array_equal(rec.signal, reference.signal)
    assert NOTE not in reference.warnings
    # the same through a window, in another folder each (as Gradio stores them), and alone
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    split = [shutil.copy(hea, tmp_path / "a"), shutil.copy(dat, tmp_path / "b")]
    window = read_ecg(split, start_s=2, duration_s=3)
    np.testing.assert_allclose(window.signal.T, _signal()[500:1250], atol=0.01)
    assert NOTE in window.warnings
    assert read_ecg(hea).warnings[0] == NOTE  # the header alone, its renamed signal file beside it


def test_the_named_file_wins_when_it_is_there(original, tmp_path):
    hea, dat = _renamed(original, tmp_path / "up")
    shutil.copy(original / "100.dat", tmp_path / "up" / "100.dat")
    records = read_ecgs([hea, dat, tmp_path / "up" / "100.dat"], errors="return")
    assert len(records) == 2 and records[0].name == "rec2.hea"
    assert not any("in its place" in w for w in records[0].warnings)
    assert str(records[1]) == ("rec2.dat: the header rec2.hea does not name this signal file (it "
                               "names 100.dat), so it was not read.")


def test_remaining_failures_name_the_missing_signal_file(original, tmp_path):
    # another extension than the one the header names: not taken for it
    hea, other = _renamed(original, tmp_path / "ext", dat_suffix=".bin")
    with pytest.raises(ECGReadError) as info:
        read_ecg([hea, other])
    assert str(info.value) == ("rec2.hea: the signal file 100.dat is missing; give it together "
                               "with the header.")
    # two candidates: no guess, and one error (the header's), not a request for the header
    first = _renamed(original, tmp_path / "one")
    second = _renamed(original, tmp_path / "two")
    out = read_ecgs([first[0], first[1], second[1]], errors="return")
    assert [str(e) for e in out] == ["rec2.hea: the signal file 100.dat is missing; give it "
                                     "together with the header."]


def test_only_for_a_header_naming_one_signal_file(tmp_path):
    signal = np.random.default_rng(0).normal(0, 0.3, (1000, 4))
    wfdb.wrsamp("ptb", fs=500, units=["mV"] * 4, sig_name=["I", "II", "vx", "vy"], p_signal=signal,
                fmt=["16"] * 4, write_dir=str(tmp_path))
    lines = (tmp_path / "ptb.hea").read_text().splitlines()
    lines[3:5] = [line.replace("ptb.dat", "ptb.xyz") for line in lines[3:5]]
    up = tmp_path / "up"
    up.mkdir()
    (up / "r9.hea").write_text("\n".join(lines) + "\n")
    shutil.copy(tmp_path / "ptb.dat", up / "r9.dat")
    out = read_ecgs([up / "r9.hea", up / "r9.dat"], errors="return")
    assert [str(e) for e in out] == ["r9.hea: the signal files ptb.dat and ptb.xyz are missing; give "
                                     "them together with the header."]
    with pytest.raises(ECGReadError, match="^r9.hea: the signal files ptb.dat and ptb.xyz are"):
        read_ecgs([up / "r9.hea", up / "r9.dat"])
