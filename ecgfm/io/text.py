"""Delimited text: CSV, TSV, semicolon- or whitespace-separated, one column per lead.

Copes with: a header row of lead names (with or without units such as "I (mV)" or "V1 [uV]"),
no header row, a time column (the sampling rate then comes from it) or a sample-index column,
'#' comment lines (BioSPPy's "Sampling Rate (Hz):= 1000.00", "Labels:= ECG", "Resolution:= 12"),
empty fields (missing samples, read as NaN), and exports without any lead names: exactly 12
columns are taken as the standard 12-lead order, with a warning. The sampling rate, when neither
a time column nor a comment gives it, must come from the caller.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .leads import Channel, RawRecord, names_for_unnamed, voltage_scale
from .record import read_error

MAX_TEXT_BYTES = 100_000_000
_TIME_NAMES = re.compile(r"^(time|t|times|timestamp|sec|secs|seconds|elapsed|elapsed time|ms|"
                         r"time_ms|time_s|time \(s\)|time \(ms\)|time\[s\]|time\[ms\])$", re.I)
_INDEX_NAMES = re.compile(r"^(index|idx|sample|samples|sample #|sample number|n|no|nr|#|"
                          r"sample_index|sample index)$", re.I)


def _is_number(token: str) -> bool:
    token = token.strip().strip('"').strip("'").strip()
    if token == "" or token.lower() in ("nan", "na", "-"):
        return True
    try:
        float(token)
        return True
    except ValueError:
        return False


def _split_name_unit(label: str) -> tuple[str, str]:
    """'V1 (mV)' -> ('V1', 'mV'); 'II [uV]' -> ('II', 'uV'); 'aVR' -> ('aVR', '')."""
    label = label.strip().strip('"').strip("'").strip()
    match = re.match(r"^(.*?)\s*[\(\[]\s*([^\)\]]*)\s*[\)\]]\s*$", label)
    if match and voltage_scale(match.group(2)) is not None:
        return match.group(1).strip(), match.group(2).strip()
    match = re.match(r"^(.*?)[ _](mv|uv|µv|μv)$", label, re.I)
    if match:
        return match.group(1).strip(), match.group(2)
    return label, ""


def _delimiter(lines: list[str]) -> str | None:
    sample = lines[: min(len(lines), 50)]
    for delim in ("\t", ";", ","):
        counts = {line.count(delim) for line in sample}
        if len(counts) == 1 and counts.pop() > 0:
            return delim
    for delim in ("\t", ";", ","):
        if all(delim in line for line in sample):
            return delim
    return None  # whitespace (or a single column)


def _comment_metadata(comments: list[str]) -> dict:
    meta = {}
    for line in comments:
        text = line.lstrip("#").strip()
        match = re.match(r"^(.*?)\s*(?::=|=|:)\s*(.*)$", text)
        if not match:
            continue
        key, value = match.group(1).strip().lower(), match.group(2).strip()
        if re.search(r"sampling[ _]?(rate|frequency)|sample[ _]?rate|^fs\b|^frequency", key):
            number = re.search(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?", value)
            if number:
                rate = float(number.group(0))
                if re.search(r"\bkhz\b", key + " " + value, re.I):
                    rate *= 1000
                meta["fs"] = rate
        elif re.fullmatch(r"(labels?|leads?|channels?|signals?)(\s+(names?|labels?))?", key):
            # The key must name the lead list itself ("Labels", "Leads", "Channel names"): "Lead
            # technician: <name>" or "Signal reviewed by: <name>" would make a person a lead name.
            meta["labels"] = [v for v in re.split(r"[\t,;]+|\s{2,}|\s", value) if v]
        elif re.search(r"^resolution\b", key):
            number = re.search(r"\d+", value)
            if number:
                meta["bits"] = int(number.group(0))
        elif re.search(r"^units?\b", key):
            meta["unit"] = value.split()[0] if value.split() else ""
    return meta


def _rate_from_time(t: np.ndarray, label: str) -> float | None:
    """The sampling rate a time column implies (None if it is not evenly spaced)."""
    t = t[np.isfinite(t)]
    if t.size < 3:
        return None
    step = np.diff(t)
    if np.any(step <= 0):
        return None
    mean = (t[-1] - t[0]) / (t.size - 1)
    if np.max(np.abs(step - mean)) > 0.05 * mean + 1e-9:
        return None
    in_ms = bool(re.search(r"ms|msec|milli", label, re.I))
    fs = (1000.0 if in_ms else 1.0) / mean
    nearest = round(fs)
    if nearest and abs(fs - nearest) / nearest < 1e-5:
        return float(nearest)
    return float(round(fs, 4))


# Fields read as a missing sample (NaN): empty, a dash, and the spellings spreadsheets and pandas
# write for "not available".
_MISSING = frozenset({"", "-", "NA", "N/A", "n/a", "#N/A", "NaN", "nan", "-nan", "NULL", "null", "None"})


def _parse(lines: list[str], delim: str | None, width: int, fname: str) -> np.ndarray:
    """The numbers of the data rows as [samples, width]; missing fields are NaN.

    numpy's own parser reads a complete table directly; rows with missing or empty fields are first
    written out with "nan" in those places. (The reader used pandas' read_csv before: ~0.4 s and
    ~50 MB to import, and its default float parser is up to ~1e-12 off, relative, for numbers of
    16-17 significant digits, where numpy gives the nearest double; tests/io/test_text.py holds
    this parser equal to pandas' correctly rounded one.)
    """
    def table(rows: list[str]) -> np.ndarray:
        return np.loadtxt(rows, delimiter=delim, dtype=np.float64, comments=None, quotechar='"', ndmin=2)

    try:
        return table(lines)
    except ValueError:
        pass
    joiner = delim or " "
    filled = []
    for line in lines:
        fields = line.split(delim) if delim else line.split()
        fields = ["nan" if f.strip().strip('"') in _MISSING else f for f in fields]
        filled.append(joiner.join(fields + ["nan"] * (width - len(fields))))
    try:
        return table(filled)
    except ValueError:
        raise read_error(fname, "some fields are not numbers, so this is not a table of ECG "
                           "samples.") from None


def read(path: Path, *, fs: float | None = None, names_given: bool = False) -> RawRecord:
    """`names_given`: the caller names the leads, so a file without names needs no assumption."""
    fname = path.name
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise read_error(fname, f"the text file is {size / 1e6:.0f} MB, more than the "
                           f"{MAX_TEXT_BYTES / 1e6:.0f} MB a text ECG may have.")
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise read_error(fname, "this is a binary file, not a text ECG.")
    for enc in ("utf-8-sig", "utf-16", "latin-1"):
        try:
            text = raw.decode(enc)
            if enc == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                continue
            break
        except UnicodeDecodeError:
            continue
    all_lines = text.splitlines()
    comments = [ln for ln in all_lines if ln.lstrip().startswith(("#", "%", "//"))]
    lines = [ln for ln in all_lines if ln.strip() and not ln.lstrip().startswith(("#", "%", "//"))]
    if not lines:
        raise read_error(fname, "the text file holds no data rows.")
    meta = _comment_metadata(comments)
    delim = _delimiter(lines)

    def split(line: str) -> list[str]:
        return [tok.strip() for tok in (line.split(delim) if delim else line.split())]

    first = split(lines[0])
    header = None
    if not all(_is_number(tok) for tok in first):
        header = [tok.strip().strip('"').strip("'") for tok in first]
        lines = lines[1:]
        if not lines:
            raise read_error(fname, "the text file has a header row but no data rows.")
    counts = [ln.count(delim) + 1 if delim else len(ln.split()) for ln in lines]
    width = max(counts)
    if width > 1000:
        raise read_error(fname, f"the text file has {width} columns, too many for an ECG.")
    values = _parse(lines, delim, width, fname)
    if header is not None and len(header) < width and np.isnan(values[:, len(header):]).all():
        values = values[:, : len(header)]  # trailing delimiters after the named columns
        width = len(header)
    names = header if header is not None else meta.get("labels")
    if names is not None and len(names) != width:
        if header is None:
            names = None
        else:
            names = (list(names) + [f"column {i + 1}" for i in range(len(names), width)])[:width]
    # Drop columns that are empty everywhere only when they have no name (trailing delimiters).
    warnings: list[str] = []
    time_col = None
    rate = None
    if names is not None and width > 1:
        for i, name in enumerate(names):
            label, _ = _split_name_unit(name)
            if _TIME_NAMES.match(label) or _TIME_NAMES.match(name.strip()):
                time_col = i
                rate = _rate_from_time(values[:, i], name)
                if rate is None:
                    raise read_error(fname, f"the time column '{name}' is not evenly spaced, so the "
                                       "sampling rate cannot be read from it.")
                break
            if _INDEX_NAMES.match(label):
                time_col = i
                break
    elif width > 2 or (width == 2 and names is None):
        # No header: a first column that rises evenly is a time (or sample-index) column.
        col = values[:, 0]
        if np.isfinite(col).all() and col.size > 2:
            step = np.diff(col)
            if np.all(step > 0) and np.allclose(step, step.mean(), rtol=0.05, atol=1e-9):
                time_col = 0
                if not np.allclose(step, 1.0):
                    rate = _rate_from_time(col, "")
                    warnings.append(f"The first column was taken as time in seconds, giving a "
                                    f"sampling rate of {rate:g} Hz.")
    if time_col is not None:
        values = np.delete(values, time_col, axis=1)
        if names is not None:
            names = [n for i, n in enumerate(names) if i != time_col]

    stated = next((r for r in (rate, meta.get("fs")) if r is not None), None)
    if stated is not None:
        rate = stated  # the file's own rate wins; `fs` is for files that do not state one
    elif fs is not None:
        rate = float(fs)
    else:
        raise read_error(fname, "the file does not state its sampling rate; give the sampling rate (fs).")

    n_cols = values.shape[1]
    if n_cols == 0:
        raise read_error(fname, "the text file holds no signal columns.")
    units = [""] * n_cols
    unnamed = names is None
    if names is None:
        names, assumed = names_for_unnamed(fname, n_cols, "columns", names_given)
        warnings.extend([assumed] if assumed else [])
    else:
        split_names = [_split_name_unit(n) for n in names]
        names = [n for n, _ in split_names]
        units = [u for _, u in split_names]
    file_unit = meta.get("unit", "")
    channels = []
    for i in range(n_cols):
        unit = units[i] or file_unit
        scale = voltage_scale(unit) if unit else None
        channels.append(Channel(name=names[i] or f"column {i + 1}", data=values[:, i], fs=rate,
                                unit=unit, scale=scale))
    return RawRecord(name=path.name, format="Delimited text", channels=channels, warnings=warnings,
                     adc_bits=meta.get("bits"),
                     extra={"fs_stated": stated is not None, "unnamed": unnamed})
