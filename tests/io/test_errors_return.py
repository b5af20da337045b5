"""`read_ecgs(errors="return")`: one bad file does not sink the batch; whole-call failures still raise."""
from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import numpy as np
import pytest
import wfdb

import ecgfm.io
from ecgfm.errors import ECGReadError
from ecgfm.io import MAX_FILES, read_ecgs
from ecgfm.io.record import STANDARD_LEADS


def _wfdb(folder, name, n_leads=12, fs=500, seconds=4):
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([np.sin(2 * np.pi * t + k) for k in range(n_leads)]).T
    wfdb.wrsamp(name, fs=fs, units=["mV"] * n_leads, sig_name=list(STANDARD_LEADS)[:n_leads],
                p_signal=signal, fmt=["16"] * n_leads, write_dir=str(folder))
    return folder / f"{name}.hea", folder / f"{name}.dat"


def _csv(path, n=2000):
    path.write_text("I,II\n" + "\n".join(f"{np.sin(i / 30):.4f},{np.cos(i / 30):.4f}"
                                        for i in range(n)))
    return path


def _garbage(path):
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20)
    return path


def _check(err, fname):
    assert isinstance(err, ECGReadError), err
    text = str(err)
    assert text.startswith(f"{fname}: ") or text.startswith(f"{fname} (in "), text
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0
    return text


def test_bad_files_become_entries_in_input_order(tmp_path):
    hea, dat = _wfdb(tmp_path, "good1")
    _, lonely = _wfdb(tmp_path, "lonely")
    (tmp_path / "lonely.hea").unlink()
    garbage = _garbage(tmp_path / "photo.jpg")
    good2 = _csv(tmp_path / "good2.csv")
    files = [garbage, dat, hea, lonely, good2]
    out = read_ecgs(files, fs=500, errors="return")
    assert len(out) == 4
    assert _check(out[0], "photo.jpg") == ("photo.jpg: the file format is not recognised as an ECG "
                                           "format ECG-FM reads.")
    assert out[1].name == "good1.hea" and out[1].leads == list(STANDARD_LEADS)
    assert _check(out[2], "lonely.dat") == ("lonely.dat: this is a WFDB signal file; give its .hea "
                                            "header with it.")
    assert out[3].name == "good2.csv" and out[3].leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(out[3].signal[0], np.sin(np.arange(2000) / 30), atol=1e-4)
    # the default keeps today's behaviour: the first failure raises
    with pytest.raises(ECGReadError, match="^lonely.dat: this is a WFDB signal file"):
        read_ecgs(files, fs=500)
    with pytest.raises(ECGReadError, match="^photo.jpg: "):
        read_ecgs([garbage, dat, hea, good2], fs=500)


def test_each_kind_of_file_failure_is_its_own_entry(tmp_path):
    hea, dat = _wfdb(tmp_path, "ok")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "bad.hea").write_text("this is not a header\n")
    t_hea, t_dat = _wfdb(tmp_path, "short")
    t_dat.write_bytes(t_dat.read_bytes()[:1000])  # a record whose reading fails
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.csv", "1\n2\n")
    zpath = tmp_path / "mixed.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(_csv(tmp_path / "inzip.csv"), "inzip.csv")
        zf.writestr("nothing.csv", b"")
        zf.write(inner, "inner.zip")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    missing = tmp_path / "gone.csv"
    files = [tmp_path / "empty.csv", tmp_path / "bad.hea", t_hea, t_dat, zpath, hea, dat,
             tmp_path / "broken.zip", missing]
    out = read_ecgs(files, fs=500, errors="return")
    assert [type(e).__name__ for e in out] == ["ECGReadError", "ECGReadError", "ECGReadError",
                                               "ECGRecord", "ECGReadError", "ECGReadError",
                                               "ECGRecord", "ECGReadError", "ECGReadError"]
    assert _check(out[0], "empty.csv") == "empty.csv: the file is empty."
    assert _check(out[1], "bad.hea") == "bad.hea: this is not a valid WFDB header."
    assert "truncated" in _check(out[2], "short.hea")
    assert out[3].name == "inzip.csv"
    assert _check(out[4], "nothing.csv") == "nothing.csv (in mixed.zip): the file is empty."
    assert "another archive (inner.zip)" in _check(out[5], "mixed.zip")
    assert out[6].name == "ok.hea"
    assert "zip archive" in _check(out[7], "broken.zip")
    assert _check(out[8], "gone.csv") == "gone.csv: the file does not exist."


def test_only_failures_are_returned_not_raised(tmp_path):
    _garbage(tmp_path / "a.jpg")
    out = read_ecgs([tmp_path / "a.jpg"], errors="return")
    assert len(out) == 1 and _check(out[0], "a.jpg")


def test_whole_call_failures_still_raise(tmp_path):
    good = _csv(tmp_path / "good.csv")
    with pytest.raises(ECGReadError, match="No file was given"):
        read_ecgs([], errors="return")
    with pytest.raises(ECGReadError, match=f"at most {MAX_FILES}"):
        read_ecgs([good] * (MAX_FILES + 1), errors="return")
    with pytest.raises(ECGReadError, match="^good.csv: the given sampling rate"):
        read_ecgs([good, _garbage(tmp_path / "x.jpg")], fs=5, errors="return")
    with pytest.raises(ECGReadError, match="^good.csv: the window must start"):
        read_ecgs([good], start_s=-1, errors="return")
    with pytest.raises(ECGReadError, match="^good.csv: the window must last"):
        read_ecgs([good], duration_s=0, errors="return")
    with pytest.raises(ValueError):
        read_ecgs([good], errors="ignore")


def test_an_empty_folder_is_named(tmp_path):
    empty = tmp_path / "my-ecgs"
    empty.mkdir()
    (empty / ".hidden").write_text("1\n")
    for mode in ("raise", "return"):
        with pytest.raises(ECGReadError) as info:
            read_ecgs(empty, errors=mode)
        assert str(info.value) == "my-ecgs: the folder holds no ECG file."
    # beside other files, an empty folder is no record and no error
    assert [r.name for r in read_ecgs([empty, _csv(tmp_path / "c.csv")], fs=500)] == ["c.csv"]


def test_folder_and_zip_members_keep_their_place(tmp_path):
    folder = tmp_path / "batch"
    folder.mkdir()
    _csv(folder / "a.csv")
    _garbage(folder / "b.jpg")
    _csv(folder / "c.csv")
    out = read_ecgs(folder, fs=500, errors="return")
    assert [getattr(e, "name", None) for e in out] == ["a.csv", None, "c.csv"]
    _check(out[1], "b.jpg")


def test_no_message_of_the_readers_says_upload():
    """The same messages reach the CLI and the web page: none may speak of uploading."""
    folder = Path(ecgfm.io.__file__).parent
    offenders = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and id(node) not in docstrings and "upload" in node.value.lower():
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
