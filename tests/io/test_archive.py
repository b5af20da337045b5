"""Zip archives: members become records; limits against bombs and path tricks."""
from __future__ import annotations

import stat
import zipfile

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import archive, read_ecg, read_ecgs
from ecgfm.io.record import STANDARD_LEADS


def _wfdb(folder, name="r1"):
    t = np.arange(2500) / 500
    signal = np.stack([np.sin(2 * np.pi * t + k) for k in range(12)]).T
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=signal,
                fmt=["16"] * 12, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def test_zip_of_a_wfdb_record_and_a_csv(tmp_path):
    files = _wfdb(tmp_path)
    (tmp_path / "one.csv").write_text("# Sampling Rate (Hz):= 250\n" + "\n".join(
        f"{np.sin(i / 10):.4f}" for i in range(1000)))
    zpath = tmp_path / "upload.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"data/{f.name}")
        zf.write(tmp_path / "one.csv", "one.csv")
        zf.writestr("__MACOSX/._one.csv", b"junk")
    records = read_ecgs(zpath)
    assert sorted(r.name for r in records) == ["one.csv", "r1.hea"]
    wf = next(r for r in records if r.name == "r1.hea")
    assert wf.leads == list(STANDARD_LEADS) and wf.fs == 500
    with pytest.raises(ECGReadError, match="2 records"):
        read_ecg(zpath)


def test_temp_folder_is_removed(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    files = _wfdb(tmp_path)
    zpath = tmp_path / "a.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in files:
            zf.write(f, f.name)
    read_ecg(zpath)
    assert list((tmp_path / "tmp").iterdir()) == []


def _zip(path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_path_traversal_rejected(tmp_path):
    z = _zip(tmp_path / "evil.zip", {"../../escape.csv": b"1\n2\n"})
    with pytest.raises(ECGReadError, match="evil.zip.*unsafe path"):
        read_ecgs(z, fs=500)
    assert not (tmp_path.parent / "escape.csv").exists()
    z = _zip(tmp_path / "abs.zip", {"/etc/x.csv": b"1\n2\n"})
    with pytest.raises(ECGReadError, match="unsafe path"):
        read_ecgs(z, fs=500)


def test_symlink_member_rejected(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        info = zipfile.ZipInfo("link.csv")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ECGReadError, match="link.zip.*symbolic link"):
        read_ecgs(z, fs=500)


def test_too_many_members(tmp_path):
    z = _zip(tmp_path / "many.zip", {f"f{i}.csv": b"1\n" for i in range(archive.MAX_MEMBERS + 1)})
    with pytest.raises(ECGReadError, match="many.zip.*more than the 200"):
        read_ecgs(z, fs=500)


def test_zip_bomb_by_ratio(tmp_path):
    z = _zip(tmp_path / "bomb.zip", {"zeros.csv": b"0\n" * 5_000_000})  # 10 MB -> ~10 kB
    with pytest.raises(ECGReadError, match="bomb.zip.*zip bomb"):
        read_ecgs(z, fs=500)


def test_zip_bomb_lying_about_its_size(tmp_path):
    z = _zip(tmp_path / "liar.zip", {"a.csv": b"0.1\n" * 400_000})
    data = bytearray(z.read_bytes())
    # Shrink the declared uncompressed size in the central directory (and local header).
    size = (4 * 400_000).to_bytes(4, "little")
    data = data.replace(size, (1000).to_bytes(4, "little"))
    z.write_bytes(bytes(data))
    with pytest.raises(ECGReadError, match="liar.zip"):
        read_ecgs(z, fs=500)


def test_nested_archive_and_empty_archive(tmp_path):
    inner = _zip(tmp_path / "inner.zip", {"a.csv": b"1\n2\n3\n"})
    outer = _zip(tmp_path / "outer.zip", {"inner.zip": inner.read_bytes()})
    with pytest.raises(ECGReadError, match="outer.zip.*another archive"):
        read_ecgs(outer, fs=500)
    empty = _zip(tmp_path / "empty.zip", {})
    with pytest.raises(ECGReadError, match="empty.zip"):
        read_ecgs(empty, fs=500)
