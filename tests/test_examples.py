"""The committed synthetic examples exist and are what examples/make_examples.py writes.

Read back with wfdb / numpy / pyedflib directly, not with ecgfm's readers.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
FILES = ["synthetic_normal_sinus.hea", "synthetic_normal_sinus.dat", "synthetic_bradycardia.csv",
         "synthetic_tachycardia.edf", "synthetic_noisy.csv"]


def read_wfdb(path: Path):
    import wfdb

    rec = wfdb.rdrecord(str(path.with_suffix("")))
    assert rec.sig_name == LEADS and rec.units == ["mV"] * 12
    return rec.p_signal.T, rec.fs


def read_csv(path: Path):
    header = path.read_text().split("\n", 1)[0].split(",")
    assert header == ["time_s"] + LEADS
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    fs = 1 / np.median(np.diff(table[:, 0]))
    return table[:, 1:].T, round(fs)


def read_edf(path: Path):
    import pyedflib

    with pyedflib.EdfReader(str(path)) as edf:
        assert edf.getSignalLabels() == LEADS
        assert {edf.getPhysicalDimension(i) for i in range(12)} == {"mV"}
        return np.array([edf.readSignal(i) for i in range(12)]), edf.getSampleFrequency(0)


READERS = {
    "synthetic_normal_sinus.hea": (read_wfdb, 500, 1e-3),
    "synthetic_bradycardia.csv": (read_csv, 500, 1e-3),
    "synthetic_tachycardia.edf": (read_edf, 500, 20 / 65535),
    "synthetic_noisy.csv": (read_csv, 250, 1e-3),
}


def test_examples_exist_and_are_small():
    for name in FILES + ["README.md", "make_examples.py"]:
        assert (EXAMPLES / name).is_file(), name
    total = sum((EXAMPLES / name).stat().st_size for name in FILES)
    assert total < 1.5 * 1024 * 1024
    assert "not real patients" in (EXAMPLES / "README.md").read_text()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("examples")
    written = module.main(out)
    assert sorted(p.name for p in written) == sorted(FILES)
    return out


@pytest.mark.parametrize("name", list(READERS))
def test_regenerating_gives_the_committed_signals(regenerated, name):
    reader, fs, quantum = READERS[name]
    committed, committed_fs = reader(EXAMPLES / name)
    fresh, fresh_fs = reader(regenerated / name)
    assert committed_fs == fresh_fs == fs
    assert committed.shape == fresh.shape == (12, 10 * fs)
    # Equal to the file's resolution (a value on a rounding boundary may land one step away on
    # another platform's floating point).
    np.testing.assert_allclose(fresh, committed, rtol=0, atol=quantum * 1.01)
    assert np.isfinite(committed).all() and 0.3 < np.ptp(committed, axis=1).min()


def test_edf_header_is_fixed(regenerated):
    # EDF headers hold a start date and time; the script fixes them, so the header (256 bytes plus
    # 256 per signal, annotations included) is byte-identical from run to run.
    name = "synthetic_tachycardia.edf"
    size = 256 * (1 + 13)
    committed = (EXAMPLES / name).read_bytes()[:size]
    assert committed == (regenerated / name).read_bytes()[:size]
    assert b"01.01.00" in committed and b"Startdate 01-JAN-2000" in committed
