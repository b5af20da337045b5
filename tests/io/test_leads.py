"""Lead naming (one table for every format) and limb-lead derivation."""
from __future__ import annotations

import numpy as np
import pytest

from ecgfm.io.leads import (EXTRA, MODIFIED, NON_ECG, STANDARD, UNKNOWN, classify_lead,
                            complete_limb_leads, derive_missing_limb_leads, voltage_scale)
from ecgfm.io.record import STANDARD_LEADS, ECGRecord


@pytest.mark.parametrize("name, canonical", [
    ("I", "I"), ("i", "I"), ("II", "II"), ("iii", "III"), ("AVR", "aVR"), ("avl", "aVL"),
    ("aVF", "aVF"), ("v1", "V1"), ("V6", "V6"), ("Lead I (Einthoven)", "I"), ("Lead aVR", "aVR"),
    ("Lead II", "II"), ("Lead V3", "V3"), ("MDC_ECG_LEAD_AVL", "aVL"), ("ECG V2", "V2"),
    ("DII", "II"), ("  V4 ", "V4"), ("V5 (mV)", "V5"),
])
def test_standard_spellings(name, canonical):
    assert classify_lead(name) == (STANDARD, canonical)


@pytest.mark.parametrize("name, canonical", [("MLII", "II"), ("MLIII", "III"), ("mli", "I")])
def test_modified_limb_leads(name, canonical):
    assert classify_lead(name) == (MODIFIED, canonical)


@pytest.mark.parametrize("name", ["vx", "vy", "vz", "V3R", "V4R", "V7", "V8", "V9", "MCL1", "X"])
def test_extra_ecg_leads(name):
    assert classify_lead(name) == (EXTRA, name)


@pytest.mark.parametrize("name", ["ECG", "ECG 1", "ECG1", "V", "ekg", "CH1", ""])
def test_unknown_ecg_leads_keep_their_name(name):
    kind, kept = classify_lead(name)
    assert kind == UNKNOWN and kept == (name or "ECG")


@pytest.mark.parametrize("name, unit", [("ABP", None), ("PAP", None), ("PLETH", None), ("RESP", None),
                                        ("CVP", None), ("SpO2", None), ("UC", None),
                                        ("EEG Fpz-Cz", None), ("EDF Annotations", None),
                                        ("II", "mmHg"), ("ECG", "NU"), ("V", "%")])
def test_non_ecg_channels(name, unit):
    assert classify_lead(name, unit)[0] == NON_ECG


def test_voltage_units():
    assert voltage_scale("mV") == 1 and voltage_scale("mv") == 1
    assert voltage_scale("uV") == pytest.approx(1e-3) and voltage_scale("µV") == pytest.approx(1e-3)
    assert voltage_scale("V") == 1000 and voltage_scale("nV") == pytest.approx(1e-6)
    assert voltage_scale("mmHg") is None and voltage_scale("NU") is None


def _record(leads, signal):
    return ECGRecord(name="t", signal=np.asarray(signal, np.float32), fs=500.0, leads=list(leads),
                     format="test", units="mV")


def test_derive_from_i_and_ii_keeps_its_behaviour():
    rng = np.random.default_rng(0)
    i, ii = rng.normal(size=(2, 100))
    rec = derive_missing_limb_leads(_record(["I", "II"], [i, ii]))
    assert rec.leads == ["I", "II", "III", "aVR", "aVL", "aVF"]
    assert rec.derived_leads == ["III", "aVR", "aVL", "aVF"]
    np.testing.assert_allclose(rec.signal[2], ii - i, atol=1e-6)
    np.testing.assert_allclose(rec.signal[3], -(i + ii) / 2, atol=1e-6)
    assert "derived from I and II" in rec.warnings[-1]
    full = _record(STANDARD_LEADS, rng.normal(size=(12, 10)))
    assert derive_missing_limb_leads(full) is full


def test_complete_from_i_and_iii():
    rng = np.random.default_rng(1)
    i, iii = rng.normal(size=(2, 50))
    rec = complete_limb_leads(_record(["III", "I"], [iii, i]))
    assert set(rec.leads) == {"I", "II", "III", "aVR", "aVL", "aVF"}
    np.testing.assert_allclose(rec.signal[rec.leads.index("II")], i + iii, atol=1e-6)
    assert "II" in rec.derived_leads and "III" not in rec.derived_leads


def test_complete_from_ii_and_iii():
    rng = np.random.default_rng(2)
    ii, iii = rng.normal(size=(2, 50))
    rec = complete_limb_leads(_record(["II", "III"], [ii, iii]))
    np.testing.assert_allclose(rec.signal[rec.leads.index("I")], ii - iii, atol=1e-6)
    np.testing.assert_allclose(rec.signal[rec.leads.index("aVF")], ii - (ii - iii) / 2, atol=1e-6)


def test_nothing_to_complete_from_one_limb_lead():
    rec = _record(["II", "V5"], np.ones((2, 10)))
    assert complete_limb_leads(rec) is rec
