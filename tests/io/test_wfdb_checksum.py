"""WFDB header checksums: a whole record read is checked against them, a window is not.

Records are written here with wfdb, then one stored sample is changed in the signal file's bytes.
A mismatch is one warning naming the leads; the record is still read.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import wfdb

from ecgfm.io import read_ecg, wfdb_format

LEADS = ["I", "II", "V5"]


def _write(folder, name="ck", fmt="16", n=2000, leads=LEADS, signal=None):
    rng = np.random.default_rng(7)
    if signal is None:  # noise, so that no checksum is 0 by the symmetry of a sine
        signal = rng.normal(0, 0.5, (n, len(leads)))
    wfdb.wrsamp(name, fs=500, units=["mV"] * len(leads), sig_name=list(leads), p_signal=signal,
                fmt=[fmt] * len(leads), write_dir=str(folder))
    return folder / f"{name}.hea", folder / f"{name}.dat"


def _bump16(dat, frame, signal, n_sig=len(LEADS), delta=1):
    """Add `delta` to one stored sample of a format-16 file (little-endian int16 frames)."""
    data = np.frombuffer(dat.read_bytes(), dtype="<i2").copy()
    data[frame * n_sig + signal] += delta
    dat.write_bytes(data.tobytes())


def _checksum_warnings(rec):
    return [w for w in rec.warnings if "checksum" in w]


def test_stated_checksums_are_present(tmp_path):
    hea, _ = _write(tmp_path)
    assert all(c is not None for c in wfdb.rdheader(str(tmp_path / "ck")).checksum)
    assert len(hea.read_text().splitlines()[1].split()) >= 8


@pytest.mark.parametrize("fmt", ["16", "212"])
def test_untouched_record_has_no_checksum_warning(tmp_path, fmt):
    rec = read_ecg(list(_write(tmp_path, fmt=fmt)))
    assert _checksum_warnings(rec) == []


def test_one_changed_sample_names_its_lead(tmp_path):
    hea, dat = _write(tmp_path)
    _bump16(dat, frame=1234, signal=LEADS.index("II"))
    rec = read_ecg([hea, dat])
    assert _checksum_warnings(rec) == [
        "The header's checksum does not match the samples of lead II; the file may be corrupt "
        "or edited."]
    assert "II" in rec.leads and rec.signal.shape[1] == 2000  # still read, not refused


def test_two_changed_leads_are_named_together_in_one_warning(tmp_path):
    hea, dat = _write(tmp_path)
    _bump16(dat, frame=5, signal=LEADS.index("II"), delta=-3)
    _bump16(dat, frame=1999, signal=LEADS.index("V5"), delta=100)
    rec = read_ecg([hea, dat])
    assert _checksum_warnings(rec) == [
        "The header's checksums do not match the samples of leads II, V5; the file may be "
        "corrupt or edited."]


def test_a_change_that_keeps_the_sum_modulo_65536_is_not_seen(tmp_path):
    # The checksum is 16 bits wide: the WFDB library compares modulo 65536, and so does the reader.
    hea, dat = _write(tmp_path)
    _bump16(dat, frame=10, signal=0, delta=5)
    _bump16(dat, frame=11, signal=0, delta=-5)
    assert _checksum_warnings(read_ecg([hea, dat])) == []


def test_format_212_changed_byte(tmp_path):
    hea, dat = _write(tmp_path, fmt="212", leads=["I", "II"])
    data = bytearray(dat.read_bytes())
    data[3 * 700] ^= 0x04  # first byte of frame 700: low bits of signal I's sample
    dat.write_bytes(bytes(data))
    assert _checksum_warnings(read_ecg([hea, dat])) == [
        "The header's checksum does not match the samples of lead I; the file may be corrupt "
        "or edited."]


def test_header_without_checksums_says_nothing(tmp_path):
    hea, dat = _write(tmp_path)
    lines = hea.read_text().splitlines()
    # keep file, format, gain/units and resolution; drop zero, initial value, checksum, block size
    stripped = [lines[0]] + [" ".join(line.split()[:4]) for line in lines[1:]]
    hea.write_text("\n".join(stripped) + "\n")
    assert all(c is None for c in wfdb.rdheader(str(tmp_path / "ck")).checksum)
    _bump16(dat, frame=3, signal=1, delta=50)
    rec = read_ecg([hea, dat])
    assert _checksum_warnings(rec) == [] and rec.signal.shape[1] == 2000


def test_checksum_of_only_some_signals_checks_those(tmp_path):
    hea, dat = _write(tmp_path)
    lines = hea.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:4])  # lead II states no checksum
    hea.write_text("\n".join(lines) + "\n")
    _bump16(dat, frame=3, signal=1, delta=50)  # II: unchecked
    assert _checksum_warnings(read_ecg([hea, dat])) == []
    _bump16(dat, frame=3, signal=2, delta=50)  # V5: checked
    assert "lead V5;" in _checksum_warnings(read_ecg([hea, dat]))[0]


def test_negative_and_wrapped_checksums_in_the_header_match(tmp_path):
    # The WFDB library writes the checksum as a signed 16-bit number; the same sum may be written
    # as its value modulo 65536. Both must match.
    hea, dat = _write(tmp_path, leads=["II"])
    lines = hea.read_text().splitlines()
    fields = lines[1].split()
    stated = int(fields[6])
    fields[6] = str(stated - 65536 if stated >= 32768 else stated + 65536)
    lines[1] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")
    assert _checksum_warnings(read_ecg([hea, dat])) == []


def test_invalid_samples_count_either_as_stored_or_as_the_wfdb_library_sums_them(tmp_path):
    signal = np.random.default_rng(1).normal(0, 0.5, (1000, 1))
    signal[100:110, 0] = np.nan  # stored as -2048, the format-212 invalid-sample code
    hea, dat = _write(tmp_path, fmt="212", leads=["II"], signal=signal)
    lines = hea.read_text().splitlines()
    fields = lines[1].split()
    as_stored = int(fields[6])
    assert _checksum_warnings(read_ecg([hea, dat])) == []
    # The WFDB library sums an invalid sample as WFDB_INVALID_SAMPLE (-32768).
    fields[6] = str((as_stored + 10 * (-32768 + 2048)) % 65536)
    lines[1] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")
    assert _checksum_warnings(read_ecg([hea, dat])) == []
    fields[6] = str((as_stored + 1) % 65536)
    lines[1] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")
    assert len(_checksum_warnings(read_ecg([hea, dat]))) == 1


def test_multi_frequency_record_is_checked_on_every_sample(tmp_path):
    rng = np.random.default_rng(3)
    record = wfdb.Record(record_name="mf", fs=500, n_sig=2, sig_name=["I", "II"],
                         units=["mV", "mV"], fmt=["16", "16"], samps_per_frame=[2, 1],
                         e_p_signal=[rng.normal(0, 0.5, 2000), rng.normal(0, 0.5, 1000)],
                         adc_gain=[200.0, 200.0], baseline=[0, 0], sig_len=1000)
    record.adc(expanded=True, inplace=True)
    record.set_defaults()
    record.checksum = record.calc_checksum(expanded=True)
    record.init_value = [int(s[0]) for s in record.e_d_signal]
    record.wrsamp(expanded=True, write_dir=str(tmp_path))
    hea, dat = tmp_path / "mf.hea", tmp_path / "mf.dat"
    assert _checksum_warnings(read_ecg([hea, dat])) == []
    data = np.frombuffer(dat.read_bytes(), dtype="<i2").copy()
    data[3 * 400 + 1] += 7  # frame 400: I, I, II -> the second sample of I
    dat.write_bytes(data.tobytes())
    assert _checksum_warnings(read_ecg([hea, dat])) == [
        "The header's checksum does not match the samples of lead I; the file may be corrupt "
        "or edited."]


def test_window_is_not_checked(tmp_path, monkeypatch):
    hea, dat = _write(tmp_path)
    _bump16(dat, frame=1234, signal=1)
    calls = []
    real = wfdb_format._read_frames

    def spy(path, fmt, byte_offset, n_sig, first, last):
        calls.append((first, last))
        return real(path, fmt, byte_offset, n_sig, first, last)

    monkeypatch.setattr(wfdb_format, "_read_frames", spy)
    rec = read_ecg([hea, dat], start_s=1, duration_s=2)
    assert _checksum_warnings(rec) == []
    assert calls == [(500, 1500)]  # the window alone
    # a window that happens to cover the whole record is the whole record: checked
    assert len(_checksum_warnings(read_ecg([hea, dat], start_s=0, duration_s=60))) == 1


def test_window_of_a_huge_record_reads_no_more_than_the_window(tmp_path):
    hea, dat = tmp_path / "big.hea", tmp_path / "big.dat"
    with open(dat, "wb") as f:  # sparse 200 MB: 100 M zero samples of one signal
        f.truncate(200_000_000)
    hea.write_text("big 1 500 100000000\nbig.dat 16 200/mV 16 0 0 12345 0 II\n")
    tracemalloc.start()
    try:
        rec = read_ecg([hea, dat], start_s=1000, duration_s=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rec.signal.shape == (1, 5000) and _checksum_warnings(rec) == []
    assert peak < 20_000_000
