"""`leads=`: the caller names a file's ECG channels when the file does not (or names them wrongly)."""
from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgfm.errors import ECGReadError
from ecgfm.io import read_ecg, read_ecgs
from ecgfm.io.record import STANDARD_LEADS


def _one_sentence(err: ECGReadError, fname: str) -> str:
    text = str(err)
    assert text.startswith(f"{fname}: ") and "\n" not in text
    assert text.endswith(".") and text.count(". ") == 0
    return text


def _column_csv(path, values) -> None:
    path.write_text("\n".join(f"{v:.5f}" for v in values) + "\n")


def _sine(n=2500, fs=250.0, phase=0.0):
    return np.sin(2 * np.pi * 1.1 * np.arange(n) / fs + phase)


def test_one_column_csv_without_header_named_by_the_user(tmp_path):
    path = tmp_path / "e0103.csv"
    _column_csv(path, 0.8 * _sine())
    unnamed = read_ecg(path, fs=250)
    assert unnamed.leads == ["ECG"]  # what the file alone gives: not one of the 12 leads
    rec = read_ecg(path, fs=250, leads=["II"])
    assert rec.leads == ["II"] and rec.signal.shape == (1, 2500) and rec.fs == 250
    np.testing.assert_allclose(rec.signal[0], 0.8 * _sine(), atol=1e-5)
    assert rec.warnings[0] == ("Lead names given by the user (II) were used in place of the "
                               "file's (unnamed).")
    assert sum("given by the user" in w for w in rec.warnings) == 1
    assert not any("holds 1 ECG lead" in w for w in rec.warnings)  # said once, by the input adequacy


@pytest.mark.parametrize("spelling", ["ii", "Lead II", " II ", "MLII"])
def test_names_are_canonicalised_as_usual(tmp_path, spelling):
    path = tmp_path / "one.csv"
    _column_csv(path, _sine())
    rec = read_ecg(path, fs=250, leads=[spelling])
    assert rec.leads == ["II"]
    assert f"Lead names given by the user ({spelling.strip()})" in rec.warnings[0]
    modified = [w for w in rec.warnings if "modified limb lead" in w]
    assert bool(modified) == (spelling == "MLII")


def test_a_single_string_is_comma_separated_names(tmp_path):
    np.savetxt(tmp_path / "three.csv", np.stack([_sine(), _sine(phase=1), _sine(phase=2)]).T,
               delimiter=",", fmt="%.5f")
    rec = read_ecg(tmp_path / "three.csv", fs=250, leads="I, II, V1")
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1"]


def test_three_unnamed_columns_named_then_limb_leads_derived(tmp_path):
    i, ii, v1 = 0.5 * _sine(), _sine(phase=0.7), 0.3 * _sine(phase=2)
    path = tmp_path / "three.csv"
    np.savetxt(path, np.stack([i, ii, v1]).T, delimiter=",", fmt="%.5f")
    with pytest.raises(ECGReadError) as info:
        read_ecg(path, fs=250)  # without names: no guess at three columns, and the way out is said
    assert "(leads)" in _one_sentence(info.value, "three.csv")
    rec = read_ecg(path, fs=250, leads=["I", "II", "V1"])
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V1"]
    assert rec.derived_leads == ["III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(rec.signal[rec.leads.index("III")], ii - i, atol=2e-5)
    np.testing.assert_allclose(rec.signal[rec.leads.index("V1")], v1, atol=1e-5)
    assert rec.warnings[0] == ("Lead names given by the user (I, II, V1) were used in place of the "
                               "file's (unnamed).")


def test_twelve_unnamed_columns_in_another_order(tmp_path):
    order = ["V1", "V2", "V3", "V4", "V5", "V6", "I", "II", "III", "aVR", "aVL", "aVF"]
    data = np.random.default_rng(0).normal(0, 0.3, (1000, 12))
    path = tmp_path / "twelve.csv"
    np.savetxt(path, data, delimiter=",", fmt="%.5f")
    rec = read_ecg(path, fs=500, leads=order)
    assert rec.leads == list(STANDARD_LEADS) and rec.derived_leads == []
    for k, lead in enumerate(order):
        np.testing.assert_allclose(rec.signal[rec.leads.index(lead)], data[:, k], atol=1e-5)
    # the standard-order assumption made without names is not made (nor said) with them
    assert not any("standard order" in w for w in rec.warnings)
    assert any("standard order" in w for w in read_ecg(path, fs=500).warnings)


def test_names_replace_the_files_and_non_ecg_channels_stay_out(tmp_path):
    t = np.arange(2000) / 250
    ecg1, ecg2 = np.sin(2 * np.pi * t), 0.5 * np.cos(2 * np.pi * t)
    wfdb.wrsamp("icu", fs=250, units=["mV", "NU", "mV"], sig_name=["ECG1", "PLETH", "ECG2"],
                p_signal=np.stack([ecg1, 2 + np.cos(t), ecg2]).T, fmt=["16"] * 3,
                write_dir=str(tmp_path))
    files = [tmp_path / "icu.hea", tmp_path / "icu.dat"]
    rec = read_ecg(files, leads=["II", "V5"])
    assert rec.leads == ["II", "V5"]
    np.testing.assert_allclose(rec.signal[0], ecg1, atol=1e-3)
    np.testing.assert_allclose(rec.signal[1], ecg2, atol=1e-3)
    assert "Left out 1 non-ECG channel (PLETH); ECG-FM reads only ECG leads." in rec.warnings
    assert ("Lead names given by the user (II, V5) were used in place of the file's (ECG1, ECG2)."
            in rec.warnings)
    with pytest.raises(ECGReadError) as info:
        read_ecg(files, leads=["II", "I", "V5"])  # the PLETH channel is not counted
    assert _one_sentence(info.value, "icu.hea") == (
        "icu.hea: 3 lead names were given but the file holds 2 ECG channels (its 1 other channel "
        "is not ECG).")


def test_names_sending_a_channel_aside(tmp_path):
    np.save(tmp_path / "x.npy", np.stack([_sine(), 0.4 * _sine(phase=1)]))
    rec = read_ecg(tmp_path / "x.npy", fs=250, leads=["II", "V4R"])
    assert rec.leads == ["II"] and list(rec.extra_leads) == ["V4R"]
    np.testing.assert_allclose(rec.extra_leads["V4R"], 0.4 * _sine(phase=1), atol=1e-6)


@pytest.mark.parametrize("leads, expected", [
    (["II", "V1"], "one.csv: 2 lead names were given but the file holds 1 ECG channel."),
    (["foo"], "one.csv: the lead name 'foo' given is not an ECG lead ECG-FM knows (such as I, II, "
              "aVR, V1, MLII or V4R)."),
    (["PLETH"], None),
    (["II", "ii"], "one.csv: the lead names given name lead II twice (II and ii)."),
    ([], "one.csv: the list of lead names given is empty."),
])
def test_wrong_names_are_one_sentence(tmp_path, leads, expected):
    path = tmp_path / "one.csv"
    _column_csv(path, _sine())
    with pytest.raises(ECGReadError) as info:
        read_ecg(path, fs=250, leads=leads)
    text = _one_sentence(info.value, "one.csv")
    if expected:
        assert text == expected


def test_names_apply_to_every_record_of_the_call(tmp_path):
    _column_csv(tmp_path / "a.csv", _sine())
    _column_csv(tmp_path / "b.csv", 0.5 * _sine(phase=1))
    np.savetxt(tmp_path / "c.csv", np.stack([_sine(), _sine()]).T, delimiter=",", fmt="%.5f")
    a, b = read_ecgs([tmp_path / "a.csv", tmp_path / "b.csv"], fs=250, leads=["V2"])
    assert a.leads == b.leads == ["V2"]
    np.testing.assert_allclose(b.signal[0], 0.5 * _sine(phase=1), atol=1e-5)
    # a record whose channel count does not match is that record's failure
    with pytest.raises(ECGReadError, match="c.csv: 1 lead name was given but the file holds 2 ECG"):
        read_ecgs([tmp_path / "a.csv", tmp_path / "c.csv"], fs=250, leads=["V2"])
    a, c = read_ecgs([tmp_path / "a.csv", tmp_path / "c.csv"], fs=250, leads=["V2"], errors="return")
    assert a.leads == ["V2"] and isinstance(c, ECGReadError) and str(c).startswith("c.csv: ")
    # an unknown name concerns the whole call: it raises, naming the first file
    with pytest.raises(ECGReadError, match="^a.csv: the lead name 'Q7'"):
        read_ecgs([tmp_path / "a.csv", tmp_path / "b.csv"], fs=250, leads=["Q7"], errors="return")


def test_npz_and_mat_without_names(tmp_path):
    from scipy.io import savemat

    data = np.stack([_sine(), 0.5 * _sine(phase=1), 0.2 * _sine(phase=2)])
    np.savez(tmp_path / "x.npz", signal=data, fs=250)
    savemat(tmp_path / "x.mat", {"signal": data, "fs": 250.0})
    for name in ("x.npz", "x.mat"):
        rec = read_ecg(tmp_path / name, leads=["II", "III", "V6"])
        assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF", "V6"]
        assert rec.derived_leads == ["I", "aVR", "aVL", "aVF"]
        np.testing.assert_allclose(rec.signal[rec.leads.index("I")], data[0] - data[1], atol=1e-5)
        assert "in place of the file's (unnamed)" in rec.warnings[0]


def test_a_real_single_column_export(samples_dir):
    path = samples_dir / "csv" / "edb_e0103.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    rec = read_ecg(path, fs=250, leads=["V4"])
    assert rec.leads == ["V4"] and rec.fs == 250 and rec.duration_s == pytest.approx(120, abs=0.01)
    assert rec.warnings[0] == ("Lead names given by the user (V4) were used in place of the "
                               "file's (unnamed).")
    np.testing.assert_allclose(rec.signal, read_ecg(path, fs=250).signal)
