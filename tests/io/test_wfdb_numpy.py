"""Plain WFDB records decoded with numpy equal what the wfdb package reads from them.

Records are written with wfdb.wrsamp (and samples of ../shared/ecg-samples are read where present);
each is read both by `_read_plain` and by `_read_with_wfdb`, and every field of the two records
must agree: names, units, rates, window, warnings, and the physical values (NaN where wfdb gives
NaN). The header parser's defaults and its leniency for grouping files are checked too.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgfm.io import read_ecg, wfdb_format
from ecgfm.io.record import STANDARD_LEADS

FORMATS = ["16", "61", "80", "160", "212", "24", "32"]
SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "ecg-samples"
ROOT = Path(__file__).resolve().parents[2]


def _signal(n_sig: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 500
    signal = np.stack([0.3 * k + 0.8 * np.sin(2 * np.pi * 1.1 * t + k) + rng.normal(0, 0.05, n)
                       for k in range(n_sig)]).T
    signal[n // 3, 0] = np.nan  # stored as the format's invalid-sample code
    signal[n // 2: n // 2 + 3, n_sig - 1] = np.nan
    return signal


def _write(folder: Path, fmt: str, n_sig: int, n: int, name: str = "r") -> Path:
    """wfdb.wrsamp's record; formats 61 and 160, which it cannot write, converted from 16."""
    names = list(STANDARD_LEADS)[:n_sig]
    wfdb.wrsamp(name, fs=500, units=["mV"] * n_sig, sig_name=names, p_signal=_signal(n_sig, n),
                fmt=["16" if fmt in ("61", "160") else fmt] * n_sig, write_dir=str(folder))
    hea, dat = folder / f"{name}.hea", folder / f"{name}.dat"
    if fmt in ("61", "160"):
        samples = np.frombuffer(dat.read_bytes(), dtype="<i2")
        stored = samples.astype(">i2") if fmt == "61" else (samples.astype(np.int32) + 32768).astype("<u2")
        dat.write_bytes(stored.tobytes())
        hea.write_text(hea.read_text().replace(f"{name}.dat 16 ", f"{name}.dat {fmt} "))
    return hea


def _assert_same(hea: Path, start_s: float = 0.0, duration_s: float | None = None):
    header = wfdb_format.read_header(hea)
    assert wfdb_format._is_plain(header)
    ours = wfdb_format._read_plain(header, hea, start_s, duration_s)
    theirs = wfdb_format._read_with_wfdb(hea, start_s, duration_s)
    assert [c.name for c in ours.channels] == [c.name for c in theirs.channels]
    assert [(c.unit, c.scale, c.fs) for c in ours.channels] == [
        (c.unit, c.scale, c.fs) for c in theirs.channels]
    for mine, reference in zip(ours.channels, theirs.channels):
        assert mine.data.dtype == np.float64 and mine.data.shape == reference.data.shape
        np.testing.assert_array_equal(np.isnan(mine.data), np.isnan(reference.data))
        np.testing.assert_allclose(mine.data, reference.data, rtol=0, atol=1e-12)
    assert (ours.name, ours.format, ours.windowed) == (theirs.name, theirs.format, theirs.windowed)
    assert ours.start_s == theirs.start_s and ours.total_duration_s == theirs.total_duration_s
    assert ours.warnings == theirs.warnings
    return ours


@pytest.mark.parametrize("n_sig", [1, 2, 12])
@pytest.mark.parametrize("fmt", FORMATS)
def test_numpy_path_equals_wfdb(tmp_path, fmt, n_sig):
    hea = _write(tmp_path, fmt, n_sig, 1001)  # odd: format 212 ends inside a byte triple
    whole = _assert_same(hea)
    assert len(whole.channels) == n_sig and whole.channels[0].data.size == 1001
    assert np.isnan(whole.channels[0].data[1001 // 3]) and whole.warnings == []
    for start_s, duration_s in [(0.0, 0.5), (0.002, 0.701), (0.999, 0.5), (1.0, 0.002)]:
        window = _assert_same(hea, start_s, duration_s)  # start, odd frames, middle, end
        assert window.start_s == pytest.approx(round(start_s * 500) / 500)


@pytest.mark.parametrize("fmt", FORMATS)
def test_checksum_warnings_equal(tmp_path, fmt):
    hea = _write(tmp_path, fmt, 3, 600)
    lines = hea.read_text().splitlines()
    for index in (1, 3):  # the first and the third signal state another checksum
        fields = lines[index].split()
        fields[6] = str(int(fields[6]) + 1)
        lines[index] = " ".join(fields)
    hea.write_text("\n".join(lines) + "\n")
    rec = _assert_same(hea)
    assert rec.warnings == ["The header's checksums do not match the samples of leads I, III; "
                            "the file may be corrupt or edited."]


def test_byte_offset_second_file_and_header_defaults(tmp_path):
    """A .mat-style offset, signals in two files, gain 0, baseline from the ADC zero, no units."""
    signal = _signal(4, 800)
    wfdb.wrsamp("a", fs=250, units=["mV"] * 2, sig_name=["I", "II"], p_signal=signal[:, :2],
                fmt=["16", "16"], write_dir=str(tmp_path))
    wfdb.wrsamp("b", fs=250, units=["mV"] * 2, sig_name=["V1", "V2"], p_signal=signal[:, 2:],
                fmt=["212", "212"], write_dir=str(tmp_path))
    (tmp_path / "r.dat").write_bytes(b"x" * 24 + (tmp_path / "a.dat").read_bytes())
    (tmp_path / "r.xyz").write_bytes((tmp_path / "b.dat").read_bytes())
    a = (tmp_path / "a.hea").read_text().splitlines()
    b = (tmp_path / "b.hea").read_text().splitlines()
    lines = ["r 4 250 800 10:20:30 01/02/2003",
             a[1].replace("a.dat 16", "r.dat 16+24"),
             "r.dat 16+24 0 16 7 0 0 0 II",  # gain 0 means 200; baseline is the ADC zero
             b[1].replace("b.dat", "r.xyz"),
             "r.xyz 212"]  # nothing but the format: gain 200, baseline 0, mV, no description
    (tmp_path / "r.hea").write_text("\n".join(lines) + "\n")
    header = wfdb_format.read_header(tmp_path / "r.hea")
    assert header.exact and header.fs == 250 and header.sig_len == 800
    second, fourth = header.signals[1], header.signals[3]
    assert (second.adc_gain, second.baseline, second.units, second.byte_offset) == (200.0, 7, "mV", 24)
    assert (fourth.adc_gain, fourth.baseline, fourth.units, fourth.description) == (200.0, 0, "mV", None)
    _assert_same(tmp_path / "r.hea")
    _assert_same(tmp_path / "r.hea", 1.0, 1.0)


def test_header_without_rate_or_length(tmp_path):
    hea = _write(tmp_path, "16", 2, 500)
    lines = hea.read_text().splitlines()
    hea.write_text("\n".join(["r 2"] + lines[1:]) + "\n")
    header = wfdb_format.read_header(hea)
    assert header.exact and header.fs == 250 and header.rate_text is None and header.sig_len is None
    # wfdb cannot read a window of a record whose length the header omits: the length is the file's
    rec = wfdb_format.read(hea, start_s=1, duration_s=0.5)
    reference = wfdb.rdrecord(str(tmp_path / "r"))
    np.testing.assert_allclose(rec.channels[1].data, reference.p_signal[250:375, 1], rtol=0, atol=1e-12)
    assert rec.total_duration_s == 2.0 and rec.channels[0].fs == 250


@pytest.mark.parametrize("line, exact", [
    ("r.dat 16 200/mV 16 0 0 0 0 I", True),
    ("r.dat 16x1:0+0 1e2(-3)/uV 12 0 0 0 0 lead I", True),
    ("r.dat 16 200mV 16 0 0 0 0 I", False),  # units without their slash
    ("r.dat 16 2E2/mV 16 0 0 0 0 I", False),  # wfdb reads "2" and units "E2"
    ("r.dat 16 200/mV I", False),  # a description where the resolution belongs
    ("r.dat 16 200/µV 16 0 0 0 0 I", False),  # wfdb drops what is not ASCII
    ("r.dat 16x 200/mV", False),
])
def test_exact_signal_lines(line, exact):
    header = wfdb_format.parse_header(f"r 1 500 10\n{line}\n")
    assert header.exact is exact
    assert header.signals[0].file_name == "r.dat" and header.signals[0].fmt == "16"


@pytest.mark.parametrize("record_line, exact", [
    ("r 1 500 10 8:26:04 26/10/1994", True),
    ("r 1 500/1000(0) 10", True),
    ("r 1 5e2 10", False),  # wfdb reads 5 Hz
    ("r 1 500 10 25:00:00", False),  # wfdb refuses the time
    ("r.1 1 500 10", False),
])
def test_exact_record_lines(record_line, exact):
    assert wfdb_format.parse_header(f"{record_line}\nr.dat 16\n").exact is exact


def test_lenient_header_still_names_its_files(tmp_path):
    hea = tmp_path / "r.hea"
    hea.write_text("# comment\nr 2 500 x\nr.dat 16 garbage\nr.xyz 16\nr.xyz 16\n")
    assert wfdb_format.referenced_files(hea) == (["r.dat", "r.xyz"], [])
    assert wfdb_format.single_signal_file(hea) is None
    hea.write_text("r 1 500 10\nother.dat 212 200 11 1024 0 0 0 II\n")
    assert wfdb_format.single_signal_file(hea) == "other.dat"
    hea.write_text("m/2 2 250 100\nseg_1 50\n~ 50\n")
    assert wfdb_format.referenced_files(hea) == ([], ["seg_1"])
    hea.write_text("m/x 2 250 100\nseg_1 50\n")
    assert wfdb_format.referenced_files(hea) == ([], [])
    assert not wfdb_format._is_plain(wfdb_format.parse_header("r 1 500 10\nr.dat 16x2\n"))


def test_plain_record_imports_neither_wfdb_nor_pandas(tmp_path):
    names = list(STANDARD_LEADS)
    wfdb.wrsamp("ecg", fs=500, units=["mV"] * 12, sig_name=names, p_signal=_signal(12, 5000),
                fmt=["16"] * 12, write_dir=str(tmp_path))
    code = ("import json, sys\nfrom ecgfm.io import read_ecgs\n"
            f"rec = read_ecgs([{str(tmp_path / 'ecg.hea')!r}, {str(tmp_path / 'ecg.dat')!r}])[0]\n"
            "print(json.dumps([rec.leads, rec.signal.shape[1], "
            "sorted(m for m in ('wfdb', 'pandas', 'pyarrow') if m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True)
    leads, n, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert leads == names and n == 5000 and imported == []


def test_multi_segment_record_still_reads_through_wfdb(tmp_path):
    a, b = np.nan_to_num(_signal(2, 500, seed=1)), np.nan_to_num(_signal(2, 750, seed=2))
    for name, part in (("seg_1", a), ("seg_2", b)):
        wfdb.wrsamp(name, fs=250, units=["mV"] * 2, sig_name=["I", "II"], p_signal=part,
                    fmt=["16", "16"], write_dir=str(tmp_path))
    (tmp_path / "multi.hea").write_text("multi/2 2 250 1250\nseg_1 500\nseg_2 750\n")
    assert not wfdb_format._is_plain(wfdb_format.read_header(tmp_path / "multi.hea"))
    rec = read_ecg(sorted(tmp_path.iterdir()))
    reference = wfdb.rdrecord(str(tmp_path / "multi"))
    np.testing.assert_allclose(rec.signal[:2], reference.p_signal.T, atol=1e-5)
    assert rec.total_duration_s == pytest.approx(5.0)


def _sample_headers() -> list[Path]:
    manifest = SAMPLES / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as handle:
        return [SAMPLES / row["path"] for row in csv.DictReader(handle)
                if row["format"] == "wfdb" and row["path"].endswith(".hea")]


@pytest.mark.parametrize("hea", _sample_headers() or [None], ids=lambda p: p.name if p else "none")
def test_shared_samples(hea):
    if hea is None:
        pytest.skip("../shared/ecg-samples/MANIFEST.csv is absent")
    if not wfdb_format._is_plain(wfdb_format.read_header(hea)):
        pytest.skip(f"{hea.name} is not a plain record (read through wfdb only)")
    whole = _assert_same(hea)
    total = whole.total_duration_s
    _assert_same(hea, total / 2, 2.0)
    _assert_same(hea, max(0.0, total - 1.5), 5.0)


@pytest.mark.parametrize("fmt", ["16", "8"])  # 16: decoded here; 8: read through wfdb
def test_signals_without_a_description_are_named_by_their_number(tmp_path, fmt):
    """A signal line may end before its description; such a signal is "signal N" (wfdb's None would
    reach the user as a lead called "None")."""
    stored = np.random.default_rng(1).integers(-20, 20, size=(1000, 3))  # format 8 stores differences
    (tmp_path / "r.dat").write_bytes(stored.astype("<i2" if fmt == "16" else "i1").tobytes())
    (tmp_path / "r.hea").write_text("r 3 500 1000\n" + "".join(f"r.dat {fmt} 200 16 0\n" for _ in range(3)))
    record = read_ecg([tmp_path / "r.hea", tmp_path / "r.dat"])
    assert [lead for lead in record.leads] == ["signal 1", "signal 2", "signal 3"]
    assert not any("None" in warning for warning in record.warnings)
