"""Signal quality per lead: made records with one artefact each, and what the real files show."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ecgfm
from ecgfm import quality
from ecgfm.adequacy import judge
from ecgfm.io import read_ecg
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.preprocess import prepare
from tests.conftest import REPO
from tests.fairseq_layout import write_checkpoint

LEADS = list(STANDARD_LEADS)
FS = 500.0
LIMB_ANGLES = {"I": 0.0, "II": 60.0}  # Einthoven: the other limb leads follow from these two
# Each wave: (time from the R peak in s, width sigma in s, frontal amplitude in mV, frontal axis in
# degrees, amplitudes in V1..V6 in mV). A normal sinus beat with a QRS axis of 50 degrees.
WAVES = {
    "P": (-0.16, 0.022, 0.15, 50.0, (0.06, 0.08, 0.10, 0.10, 0.10, 0.08)),
    "Q": (-0.025, 0.008, -0.10, 60.0, (0.0, 0.0, 0.0, -0.05, -0.10, -0.10)),
    "R": (0.0, 0.010, 1.20, 50.0, (0.25, 0.50, 0.80, 1.20, 1.40, 1.20)),
    "S": (0.028, 0.010, -0.30, 60.0, (-0.90, -1.20, -0.80, -0.50, -0.25, -0.10)),
    "T": (0.28, 0.050, 0.30, 45.0, (0.10, 0.30, 0.40, 0.40, 0.35, 0.30)),
}


def made_ecg(seed: int = 0, seconds: float = 10.0, fs: float = FS, p_waves: bool = True) -> np.ndarray:
    """A clean 12-lead ECG [12, n] in mV: Gaussian P-QRS-T beats at about 70 bpm, limb leads exact
    by Einthoven and Goldberger, a little white noise and a faint respiratory drift."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * fs))) / fs
    beats = np.cumsum(rng.normal(60 / 70, 0.02, int(seconds * 2) + 2)) - 0.5
    lead_i, lead_ii, chest = np.zeros_like(t), np.zeros_like(t), np.zeros((6, t.size))
    for name, (at, width, amplitude, axis, precordial) in WAVES.items():
        if name == "P" and not p_waves:
            continue
        shape = sum(np.exp(-0.5 * ((t - beat - at) / width) ** 2) for beat in beats)
        lead_i += amplitude * np.cos(np.radians(axis - LIMB_ANGLES["I"])) * shape
        lead_ii += amplitude * np.cos(np.radians(axis - LIMB_ANGLES["II"])) * shape
        chest += np.asarray(precordial)[:, None] * shape
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    signal = np.vstack([np.stack(limb), chest])
    signal += 0.05 * np.sin(2 * np.pi * 0.25 * t) + rng.normal(0, 0.004, signal.shape)
    return signal.astype(np.float32)


def record(signal: np.ndarray, leads=LEADS, fs: float = FS) -> ECGRecord:
    return ECGRecord(name="made.ecg", signal=signal, fs=fs, leads=list(leads), format="test", units="mV")


def row(lead: str) -> int:
    return LEADS.index(lead)


def flags_of(prepared_or_quality) -> dict[str, tuple[str, ...]]:
    found = getattr(prepared_or_quality, "quality", prepared_or_quality)
    return {flag.kind: flag.leads for flag in found.flags}


def test_clean_record_has_no_flags_and_stays_complete():
    prepared = prepare(record(made_ecg()))
    assert prepared.quality.flags == ()
    assert prepared.quality.assessed == tuple(LEADS)
    assert prepared.quality.unchecked == {}  # reversal was checked, and found nothing
    assert prepared.quality.lead_marks() == {} and prepared.quality.sentences() == []
    assert prepared.adequacy.level == "complete" and prepared.adequacy.reasons == ()


def test_clipped_lead_is_flagged_and_limits_the_input():
    signal = made_ecg(seed=1)
    signal[row("V3")] = np.minimum(signal[row("V3")], 0.5)  # V3's R waves (0.8 mV) cut at a 0.5 mV rail
    prepared = prepare(record(signal))
    assert flags_of(prepared) == {"clipped": ("V3",)}
    flag = prepared.quality.flags[0]
    assert "V3 at its maximum for" in flag.detail and "0.1 s" in flag.detail and flag.severe
    assert prepared.quality.lead_marks() == {"V3": "clipped"}
    assert prepared.adequacy.level == "limited"
    assert prepared.adequacy.reasons == (
        "lead V3 clipped (beyond the recorder's range, the tops of the waves cut off)",)


def test_a_few_samples_at_the_extreme_are_not_clipping():
    signal = made_ecg(seed=2)
    top = signal[row("V4")].argmax()
    signal[row("V4"), top - 1:top + 2] = signal[row("V4"), top]  # a flat top of 3 samples: a peak, not a rail
    assert flags_of(prepare(record(signal))) == {}


def test_high_frequency_noise_is_flagged_on_its_lead_only():
    signal = made_ecg(seed=3)
    signal[row("V2")] += np.random.default_rng(0).normal(0, 0.15, signal.shape[1]).astype(np.float32)
    prepared = prepare(record(signal))
    assert flags_of(prepared) == {"noise": ("V2",)}
    assert "V2 0.1" in prepared.quality.flags[0].detail and "mV RMS" in prepared.quality.flags[0].detail
    assert prepared.quality.lead_marks() == {"V2": "noise"}
    assert prepared.adequacy.level == "limited"
    assert prepared.adequacy.reasons == ("lead V2 noisy (high-frequency noise)",)


def test_noise_below_the_floor_is_not_flagged_even_on_a_small_lead():
    """20 µV of white noise on a lead of 0.2 mV is 10 % of it, but below NOISE_MIN_MV: not flagged."""
    signal = made_ecg(seed=4)
    signal[row("aVL")] = signal[row("aVL")] * 0.2 / np.ptp(signal[row("aVL")])
    signal[row("aVL")] += np.random.default_rng(1).normal(0, 0.02, signal.shape[1]).astype(np.float32)
    assert "noise" not in flags_of(prepare(record(signal)))


def test_baseline_wander_is_flagged_but_does_not_limit():
    signal = made_ecg(seed=5)
    t = np.arange(signal.shape[1]) / FS
    signal[row("V5")] += (1.5 * np.sin(2 * np.pi * 0.3 * t)).astype(np.float32)
    prepared = prepare(record(signal))
    assert flags_of(prepared) == {"baseline_wander": ("V5",)}
    assert not prepared.quality.flags[0].severe
    assert prepared.quality.lead_marks() == {"V5": "wander"}
    assert prepared.adequacy.level == "complete"


@pytest.mark.parametrize("hertz, lead, other", [(50.0, "V4", "V5"), (60.0, "V5", "V4")])
def test_mains_hum_is_flagged_with_its_frequency(hertz, lead, other):
    signal = made_ecg(seed=6)
    t = np.arange(signal.shape[1]) / FS
    signal[row(lead)] += (0.05 * np.sin(2 * np.pi * hertz * t + 0.3)).astype(np.float32)
    prepared = prepare(record(signal))
    assert flags_of(prepared) == {"mains": (lead,)}
    flag = prepared.quality.flags[0]
    assert flag.detail.startswith(f"{hertz:g} Hz mains interference") and f"{lead} 0.05" in flag.detail
    assert prepared.quality.lead_marks() == {lead: f"{hertz:g} Hz"} and other not in prepared.quality.lead_marks()
    assert prepared.adequacy.level == "complete"  # 0.05 mV on a 1.8 mV lead: marked, not noise


def test_strong_mains_hum_counts_as_noise():
    signal = made_ecg(seed=7)
    t = np.arange(signal.shape[1]) / FS
    signal[row("V1")] += (0.2 * np.sin(2 * np.pi * 60.0 * t)).astype(np.float32)
    prepared = prepare(record(signal))
    assert flags_of(prepared) == {"noise": ("V1",), "mains": ("V1",)}
    assert prepared.quality.lead_marks() == {"V1": "noise, 60 Hz"}
    assert prepared.adequacy.reasons == ("lead V1 noisy (high-frequency noise)",)


def swapped(signal: np.ndarray, electrodes: str) -> np.ndarray:
    """The ECG as the cart would have recorded it with two limb electrodes exchanged."""
    out = signal.copy()
    i, ii, iii = signal[row("I")], signal[row("II")], signal[row("III")]
    avr, avl, avf = signal[row("aVR")], signal[row("aVL")], signal[row("aVF")]
    if electrodes == "LA/RA":
        new = {"I": -i, "II": iii, "III": ii, "aVR": avl, "aVL": avr, "aVF": avf}
    else:  # RA/LL
        new = {"I": -iii, "II": -ii, "III": -i, "aVR": avf, "aVL": avl, "aVF": avr}
    for lead, values in new.items():
        out[row(lead)] = values
    return out


@pytest.mark.parametrize("electrodes, lead", [("LA/RA", "I"), ("RA/LL", "II")])
def test_swapped_limb_electrodes_are_suspected(electrodes, lead):
    prepared = prepare(record(swapped(made_ecg(seed=8), electrodes)))
    assert list(flags_of(prepared)) == ["reversal"]
    flag = prepared.quality.flags[0]
    assert flag.detail.startswith(f"Suspected {electrodes} electrode reversal: in lead {lead} the P wave")
    assert set(flag.leads) >= {"I", "II", "III", "aVR"} and not set(flag.leads) & {"V1", "V6"}
    assert prepared.quality.lead_marks()["aVR"] == "reversed?"
    assert prepared.adequacy.level == "limited"
    assert prepared.adequacy.reasons[0].startswith("limb electrodes probably swapped: leads I, II, III, aVR")


def test_without_p_waves_reversal_is_not_checked_and_says_why():
    prepared = prepare(record(swapped(made_ecg(seed=9, p_waves=False), "LA/RA")))
    assert flags_of(prepared) == {}
    assert "no P wave" in prepared.quality.unchecked["reversal"]


def test_derived_limb_leads_carry_their_sources_flags():
    """A cart that stores I, II, V1-V6: III, aVR, aVL, aVF are computed from a noisy I, so they are
    noisy too; II is not."""
    signal = made_ecg(seed=10)
    signal[row("I")] += np.random.default_rng(2).normal(0, 0.15, signal.shape[1]).astype(np.float32)
    stored = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    prepared = prepare(record(signal[[row(lead) for lead in stored]], stored))
    assert prepared.lead_status["aVF"] == "derived"
    assert flags_of(prepared) == {"noise": ("I", "III", "aVR", "aVL", "aVF")}
    assert prepared.quality.assessed == tuple(stored)
    assert "III, aVR, aVL, aVF, computed from I and II, carry it too." in prepared.quality.flags[0].detail
    assert prepared.adequacy.reasons == ("leads I, III, aVR, aVL, aVF noisy (high-frequency noise)",)


def test_flat_and_missing_leads_are_left_to_lead_status():
    signal = made_ecg(seed=11)
    signal[row("V2")] = 0.3  # flat
    leads = [lead for lead in LEADS if lead != "V6"]
    prepared = prepare(record(np.delete(signal, row("V6"), axis=0), leads))
    assert prepared.lead_status["V2"] == "flat" and prepared.lead_status["V6"] == "zero-filled"
    assert "V2" not in prepared.quality.assessed and "V6" not in prepared.quality.assessed
    assert prepared.quality.flags == ()


def test_unusable_input_has_no_quality():
    assert prepare(record(np.zeros((12, 5000), dtype=np.float32))).quality is None


def test_short_low_rate_record_is_assessed_without_error():
    """1.5 s at 100 Hz: no 50 or 60 Hz to look at, too few beats for the reversal check."""
    signal = made_ecg(seed=12, seconds=1.5, fs=100.0)
    found = quality.assess(record(signal, fs=100.0), {})
    assert found.flags == ()
    assert set(found.unchecked) == {"mains 50 Hz", "mains 60 Hz", "reversal"}


@pytest.mark.parametrize("fs, samples", [(1.0, 1), (1.0, 2), (10.0, 10), (100.0, 100), (128.0, 1280),
                                         (100_000.0, 100_000)])
@pytest.mark.parametrize("kind", ["noise", "constant", "steps"])
def test_odd_inputs_are_assessed_without_error(fs, samples, kind):
    rng = np.random.default_rng(samples)
    signal = {"noise": rng.normal(0, 1, (12, samples)), "constant": np.full((12, samples), 0.7),
              "steps": np.repeat(rng.integers(-3, 3, (12, 1 + samples // 7)), 7, axis=1)[:, :samples]}[kind]
    found = quality.assess(record(signal.astype(np.float32), fs=fs), {})
    json.dumps(found.to_dict())
    assert set(found.lead_marks()) <= set(LEADS)


def test_to_dict_marks_and_sentences():
    signal = made_ecg(seed=13)
    signal[row("V2")] += np.random.default_rng(3).normal(0, 0.15, signal.shape[1]).astype(np.float32)
    signal[row("V3")] = np.minimum(signal[row("V3")], 0.5)
    found = prepare(record(signal)).quality
    as_dict = json.loads(json.dumps(found.to_dict()))
    assert [flag["kind"] for flag in as_dict["flags"]] == ["clipped", "noise"]
    assert as_dict["flags"][1] == {"kind": "noise", "leads": ["V2"], "severe": True,
                                   "detail": found.flags[1].detail}
    assert as_dict["lead_marks"] == {"V3": "clipped", "V2": "noise"} == found.lead_marks()
    assert found.sentences() == [flag.detail for flag in found.flags]
    assert as_dict["assessed_leads"] == LEADS


def test_judge_without_quality_is_unchanged():
    status = {lead: "recorded" for lead in LEADS}
    assert judge(status, padded_s=None, fs=500.0) == judge(status, padded_s=None, fs=500.0,
                                                             quality=quality.SignalQuality())


def test_prediction_carries_the_quality(tmp_path):
    model = ecgfm.load_model(write_checkpoint(tmp_path / "tiny.pt", seed=3), device="cpu")
    signal = made_ecg(seed=14)
    signal[row("V2")] += np.random.default_rng(4).normal(0, 0.15, signal.shape[1]).astype(np.float32)
    prediction = ecgfm.predict(model, record(signal))
    assert prediction.quality is not None and flags_of(prediction.quality) == {"noise": ("V2",)}
    out = json.loads(json.dumps(prediction.to_dict()))
    assert out["signal_quality"]["lead_marks"] == {"V2": "noise"}
    assert out["input_adequacy"]["level"] == "limited"


# --- the real files ------------------------------------------------------------------------------

# What the first 10 s (what `predict` reads by default) of each real file is flagged for, and why.
# Everything else in ../shared/ecg-samples and examples/ is flagged for nothing.
REAL_FLAGS = {
    # Respiratory drift far larger than the beats: lead III's baseline moves 4.1 mV against a
    # 1.9 mV ECG, aVF 3.5 mV, II 2.9 mV; I and V1 just reach half their amplitude.
    "mat/code_15_2969044.mat": {"baseline_wander": ("I", "II", "III", "aVL", "aVF", "V1")},
    # V6's baseline sinks and rises by 0.9 mV, more than its 0.8 mV QRS; V5 drifts 0.6 mV.
    "wfdb/cinc2021_HR06000/HR06000.hea": {"baseline_wander": ("V5", "V6")},
    # V2 drifts 0.64 mV against a 0.73 mV ECG.
    "wfdb/cinc2021_E07500/E07500.hea": {"baseline_wander": ("V2",)},
}
FS_NOT_STORED = {"csv/contec_0000050.ECG.csv": 800.0, "csv/edb_e0103.csv": 250.0}


def real_files(samples_dir) -> list[str]:
    files = []
    for path in sorted(samples_dir.rglob("*")):
        relative = path.relative_to(samples_dir).as_posix()
        if (path.is_dir() or relative.startswith("licenses/") or path.suffix in (".dat", ".atr", ".xyz")
                or path.name in ("MANIFEST.csv", "README.md") or "multiseg/041s0" in relative):
            continue
        if path.suffix == ".mat" and path.with_suffix(".hea").exists():
            continue  # the WFDB header names it
        files.append(relative)
    return files


def test_real_files_are_flagged_only_where_the_artefact_is(samples_dir):
    seen = {}
    for relative in real_files(samples_dir):
        rec = read_ecg(samples_dir / relative, fs=FS_NOT_STORED.get(relative), duration_s=10.0)
        prepared = prepare(rec)
        if prepared.quality is not None:
            seen[relative] = flags_of(prepared)
    assert len(seen) >= 25
    assert {name: found for name, found in seen.items() if found} == REAL_FLAGS


def test_real_mains_hum_on_a_raw_single_lead_recording(samples_dir):
    """BioSPPy's raw example (one unnamed lead, 1 kHz) carries 50 Hz hum of 0.065 mV, visible on
    the trace; ECG-FM cannot read it (no standard lead), but `assess` measures it."""
    rec = read_ecg(samples_dir / "csv/biosppy_ecg.txt", duration_s=10.0)
    found = quality.assess(rec, {})
    assert flags_of(found) == {"mains": ("ECG",)}
    assert found.lead_marks() == {"ECG": "50 Hz"}


@pytest.mark.parametrize("relative, electrodes", [("wfdb/cinc2021_HR06000/HR06000.hea", "LA/RA"),
                                                  ("mat/code_15_270272.mat", "LA/RA"),
                                                  ("mat/code_15_270272.mat", "RA/LL"),
                                                  ("wfdb/cinc2021_E07500/E07500.hea", "RA/LL")])
def test_real_records_with_swapped_electrodes_are_suspected(samples_dir, relative, electrodes):
    """The same real records with two limb electrodes exchanged, as a cart would have recorded them."""
    rec = read_ecg(samples_dir / relative, duration_s=10.0)
    rec.signal = swapped(rec.signal, electrodes)
    found = prepare(rec).quality
    assert "reversal" in flags_of(found)
    assert found.flags[-1].detail.startswith(f"Suspected {electrodes} electrode reversal")


EXAMPLE_LEVELS = {"HR06000.hea": "complete", "JS20003.hea": "complete", "philips_pagewriter.xml": "complete",
                  "scp_ecg.scp": "complete", "data_8_4.hea": "limited", "100.hea": "limited"}


@pytest.mark.parametrize("name", sorted(EXAMPLE_LEVELS))
def test_examples_keep_their_adequacy(name):
    """No example has an artefact that limits it: HR06000's V5/V6 drift is marked, not limiting;
    data_8_4 and 100 are limited by their missing leads (and 200 Hz), as before."""
    prepared = prepare(read_ecg(REPO / "examples" / name, duration_s=10.0))
    assert prepared.adequacy.level == EXAMPLE_LEVELS[name]
    assert not prepared.quality.severe


@pytest.mark.parametrize("fs, samples", [(5.0, 50), (20.0, 200), (500.0, 300)])
def test_too_slow_or_too_short_is_unchecked_with_the_reason(fs, samples):
    rec = ECGRecord("odd.csv", np.random.default_rng(2).normal(size=(12, samples)).astype(np.float32), fs,
                    list(LEADS), "test", "mV")
    result = quality.assess(rec, {lead: "recorded" for lead in LEADS})
    assert result.flags == () and list(result.unchecked) == ["signal quality"]
    assert ("Hz" if fs < quality.MIN_FS else "1 s") in result.unchecked["signal quality"]
