"""Delimited text: header rows, time columns, comment headers, empty columns, units."""
from __future__ import annotations

import numpy as np
import pytest

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg
from ecgfm.io.record import STANDARD_LEADS


def _ecg(n_leads, n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 500
    return np.stack([np.sin(2 * np.pi * t + k) + rng.normal(0, 0.05, n) for k in range(n_leads)])


def test_header_row_and_time_column(tmp_path):
    data = _ecg(3, 1000)
    t = np.arange(1000) / 500
    path = tmp_path / "rec.csv"
    rows = ["time,I,II,V1"] + [f"{t[i]:.4f},{data[0, i]:.5f},{data[1, i]:.5f},{data[2, i]:.5f}"
                                for i in range(1000)]
    path.write_text("\n".join(rows))
    rec = read_ecg(path)
    assert rec.fs == 500 and rec.format == "Delimited text" and rec.name == "rec.csv"
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1"]
    np.testing.assert_allclose(rec.signal[[0, 1, 6]], data, atol=1e-5)


def test_time_in_milliseconds_and_units_in_header(tmp_path):
    data = _ecg(2, 600)
    path = tmp_path / "ms.tsv"
    rows = ["Time (ms)\tII [uV]\tV5 [uV]"] + [f"{i * 4}\t{data[0, i] * 1000:.1f}\t{data[1, i] * 1000:.1f}"
                                               for i in range(600)]
    path.write_text("\n".join(rows))
    rec = read_ecg(path)
    assert rec.fs == 250 and rec.leads == ["II", "V5"] and rec.units == "uV"
    np.testing.assert_allclose(rec.signal, data, atol=1e-4)


def test_no_header_single_column_needs_rate(tmp_path):
    path = tmp_path / "one.csv"
    values = _ecg(1, 2000)[0] + 1.0
    path.write_text("\n".join(f"{v:.3f}" for v in values))
    with pytest.raises(ECGReadError, match="one.csv.*give the sampling rate"):
        read_ecg(path)
    rec = read_ecg(path, fs=250)
    assert rec.leads == ["ECG"] and rec.fs == 250 and rec.units == "mV (assumed)"
    np.testing.assert_allclose(rec.signal[0], values, atol=1e-3)
    assert any("position of lead ECG is not stated" in w for w in rec.warnings)


def test_contec_like_twelve_columns_counts_and_empty_leads(tmp_path):
    counts = np.round(_ecg(6, 3000) * 100).astype(int)
    path = tmp_path / "contec.csv"
    path.write_text("\n".join(",".join(str(v) for v in counts[:, i]) + ",,,,,," for i in range(3000)))
    rec = read_ecg(path, fs=800)
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(rec.signal, counts * 0.005, atol=1e-6)  # 200 units/mV = 5 uV/unit
    assert rec.units == "ADC counts (inferred)"
    assert any("standard order" in w for w in rec.warnings)
    assert any("V1, V2, V3, V4, V5, V6 hold no samples" in w for w in rec.warnings)
    assert any("raw ADC counts" in w for w in rec.warnings)


def test_biosppy_comment_header(tmp_path):
    values = 2048 + np.round(_ecg(1, 3000)[0] * 200)
    path = tmp_path / "ecg.txt"
    path.write_text("# Simple Text Format\n# Sampling Rate (Hz):= 1000.00\n# Resolution:= 12\n"
                    "# Labels:= ECG\n" + "\n".join(f"{v:.1f}" for v in values))
    rec = read_ecg(path)
    assert rec.fs == 1000 and rec.leads == ["ECG"] and rec.units == "ADC counts (inferred)"
    np.testing.assert_allclose(rec.signal[0], (values - 2048) / 200, atol=1e-6)
    assert any("mid-scale offset 2048" in w for w in rec.warnings)


def test_float_microvolts_inferred(tmp_path):
    data = _ecg(12, 1000) * 700.5
    path = tmp_path / "uv.csv"
    path.write_text(",".join(STANDARD_LEADS) + "\n"
                    + "\n".join(",".join(f"{v:.2f}" for v in data[:, i]) for i in range(1000)))
    rec = read_ecg(path, fs=500)
    assert rec.units == "uV (inferred)"
    np.testing.assert_allclose(rec.signal, data / 1000, atol=1e-5)
    assert any("microvolts" in w for w in rec.warnings)


def test_semicolon_and_index_column(tmp_path):
    data = _ecg(2, 500)
    path = tmp_path / "semi.csv"
    path.write_text("sample;I;II\n" + "\n".join(f"{i};{data[0, i]:.4f};{data[1, i]:.4f}" for i in range(500)))
    rec = read_ecg(path, fs=500)
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(rec.signal[:2], data, atol=1e-4)


def test_rate_from_file_differs_from_given(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("# Sampling Rate (Hz):= 1000\n" + "\n".join(f"{v:.3f}" for v in _ecg(1, 3000)[0]))
    rec = read_ecg(path, fs=500)
    assert rec.fs == 1000 and any("500 Hz given was not used" in w for w in rec.warnings)


def test_not_numbers(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello,world\nthis,is\nnot,an ecg\n")
    with pytest.raises(ECGReadError, match="notes.txt"):
        read_ecg(path, fs=500)


def test_unnamed_columns_other_than_1_or_12(tmp_path):
    path = tmp_path / "three.csv"
    path.write_text("\n".join("0.1,0.2,0.3" for _ in range(100)))
    with pytest.raises(ECGReadError, match="three.csv.*names no leads"):
        read_ecg(path, fs=500)


def test_quoted_fields_and_trailing_or_unnamed_columns(tmp_path):
    data = _ecg(2, 400)
    quoted = tmp_path / "q.csv"
    quoted.write_text('"I","II"\n' + "\n".join(f'"{data[0, i]:.4f}","{data[1, i]:.4f}",' for i in range(400)))
    rec = read_ecg(quoted, fs=500)
    assert rec.leads[:2] == ["I", "II"]
    np.testing.assert_allclose(rec.signal[:2], data, atol=1e-4)
    extra = tmp_path / "extra.csv"
    extra.write_text("I,II\n" + "\n".join(f"{data[0, i]:.4f},{data[1, i]:.4f},{data[0, i]:.4f}"
                                         for i in range(400)))
    rec = read_ecg(extra, fs=500)
    assert "column 3" in rec.leads  # an unnamed column is kept, not silently dropped


def test_a_window_keeps_the_other_warnings_and_says_which_part_was_used(tmp_path):
    """Text is read whole and cut afterwards; cutting must replace only the earlier window note."""
    data = _ecg(2, 250 * 20)
    path = tmp_path / "holter.csv"
    path.write_text("\n".join(["MLII,V1"] + [f"{a:.5f},{b:.5f}" for a, b in data.T]))
    rec = read_ecg(path, fs=250, start_s=2, duration_s=5)
    assert any("modified limb lead" in w for w in rec.warnings), rec.warnings
    assert [w for w in rec.warnings if w.startswith("Used 2.0–7.0 s")] == [
        "Used 2.0–7.0 s of the 20.0 s recording."]
    again = rec.window(1, 2)
    assert any("modified limb lead" in w for w in again.warnings)
    assert [w for w in again.warnings if "s recording." in w] == ["Used 3.0–5.0 s of the 20.0 s recording."]


def _pandas_table(lines: list[str], delim: str | None, width: int) -> np.ndarray:
    """The table as the reader's former parser, pandas' read_csv, reads it, but with pandas' correctly
    rounded float parser: its default one is up to ~1e-12 (relative) off for numbers of 16-17
    significant digits (Python's repr of a double), where numpy gives the nearest double."""
    import io

    import pandas as pd

    return pd.read_csv(io.StringIO("\n".join(lines)), sep=delim if delim else r"\s+", header=None,
                       names=list(range(width)), usecols=range(width), dtype=np.float64,
                       na_values=["", "-", "NA", "NaN", "nan"], skip_blank_lines=True,
                       engine="c", float_precision="round_trip").to_numpy(dtype=np.float64)


@pytest.mark.parametrize("delim", [",", ";", "\t", None])
@pytest.mark.parametrize("style", ["%.6f", "%.3f", "%g", "repr", "int", "%.17g"])
def test_numbers_read_as_pandas_read_them(delim, style):
    """The numpy parser gives pandas' numbers exactly, with gaps, missing-value words, quoted fields,
    short rows and signs."""
    from ecgfm.io.text import _parse

    rng = np.random.default_rng(len(style) + (ord(delim) if delim else 0))
    x = rng.standard_normal((300, 5)) * rng.choice([1e-3, 1, 2000], size=5)
    tokens = [[(repr(float(v)) if style == "repr" else str(int(v * 1000)) if style == "int" else style % v)
               for v in row] for row in x]
    if delim:  # gaps, missing-value words, quotes, a short row: only a real delimiter can show them
        tokens[3][1], tokens[7][4], tokens[9][0] = "", "NA", "-"
        tokens[11][2] = f'"{tokens[11][2]}"'
        tokens[13] = tokens[13][:3]
        tokens[15][0] = " " + tokens[15][0] + " "
    lines = [(delim or "  ").join(row) for row in tokens]
    ours = _parse(lines, delim, 5, "t.csv")
    np.testing.assert_array_equal(ours, _pandas_table(lines, delim, 5))
    assert ours.shape == (300, 5)


def test_real_text_files_read_as_pandas_read_them(samples_dir):
    from ecgfm.io.text import _delimiter, _is_number, _parse

    paths = sorted((samples_dir / "csv").glob("*"))
    assert paths
    for path in paths:
        lines = [ln for ln in path.read_text(encoding="latin-1").splitlines()
                 if ln.strip() and not ln.lstrip().startswith(("#", "%", "//"))]
        delim = _delimiter(lines)
        first = lines[0].split(delim) if delim else lines[0].split()
        if not all(_is_number(tok) for tok in first):
            lines = lines[1:]
        width = max(ln.count(delim) + 1 if delim else len(ln.split()) for ln in lines)
        np.testing.assert_array_equal(_parse(lines, delim, width, path.name),
                                      _pandas_table(lines, delim, width), err_msg=path.name)


@pytest.mark.parametrize("bad", ["1,5", "true", "1_0", "0x10", "12 mV", "--1"])
def test_a_field_that_is_not_a_number_refuses_the_file(tmp_path, bad):
    path = tmp_path / "bad.csv"
    rows = [f"{i * 0.01:.2f};{-i * 0.01:.2f}" for i in range(50)]
    rows[20] = f"{bad};0.5"
    path.write_text("I;II\n" + "\n".join(rows))
    with pytest.raises(ECGReadError, match="bad.csv: some fields are not numbers"):
        read_ecg(path, fs=500)
