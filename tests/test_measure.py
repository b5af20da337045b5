"""ecgfm.measure: automated, approximate measurements, on synthetic ECGs whose intervals and axes
are known by construction, and against the carts' own measurements and PhysioNet beat annotations
of the real files in ../shared/ecg-samples."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.measure import NOTE, PLAUSIBLE, QUANTITIES, Measurements, measure

BUILD_FS = 1000.0
KEYS = [key for key, _, _ in QUANTITIES]
LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
# Precordial gains of each wave relative to its frontal amplitude (V1..V6): a plausible R-wave
# progression with upright T waves from V2 on.
PRECORDIAL = {"p": (0.6, 0.7, 0.6, 0.5, 0.5, 0.4),
              "qrs": (-0.8, -0.5, 0.3, 0.9, 1.1, 0.9),
              "t": (-0.2, 0.5, 0.8, 0.8, 0.6, 0.5)}


def _bump(t: np.ndarray, start: float, duration: float) -> np.ndarray:
    """A raised-cosine wave that starts and ends exactly at known times (s), peak 1."""
    inside = (t >= start) & (t <= start + duration)
    return np.where(inside, 0.5 * (1 - np.cos(2 * np.pi * (t - start) / duration)), 0.0)


def _limb_gains(angle_deg: float) -> dict[str, float]:
    """Each limb lead's share of a unit frontal vector at `angle_deg` (Einthoven, Goldberger)."""
    a = math.radians(angle_deg)
    lead_i, lead_ii = math.cos(a), math.cos(a - math.pi / 3)
    return {"I": lead_i, "II": lead_ii, "III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
            "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}


def synthetic(*, fs: float = 500.0, duration_s: float = 10.0, rr_ms=(800, 840, 780, 820, 860, 790),
              pr_ms: float = 160, qrs_ms: float = 96, qt_ms: float = 400,
              axes=(50.0, 60.0, 40.0), leads=STANDARD_LEADS, noise_mv: float = 0.01,
              p_waves: bool = True, fibrillation_mv: float = 0.0, seed: int = 0,
              first_qrs_s: float = 0.6, p_mv: float = 0.15) -> tuple[ECGRecord, dict]:
    """A 12-lead ECG made of P, QRS (q, R, s) and T waves at known times, with the frontal axes
    `axes` (P, QRS, T), baseline wander, mains hum and white noise; and the values it was built
    with (heart rate and RR SD over the beats placed)."""
    rng = np.random.default_rng(seed)
    # Built at 1 kHz, then brought to `fs` through an anti-aliasing filter, as a device would.
    t = np.arange(int(round(duration_s * BUILD_FS))) / BUILD_FS
    onsets = [first_qrs_s]
    while True:
        nxt = onsets[-1] + rr_ms[len(onsets) % len(rr_ms)] / 1000
        if nxt + qt_ms / 1000 + 0.15 > duration_s:
            break
        onsets.append(nxt)
    waves = {"p": np.zeros_like(t), "qrs": np.zeros_like(t), "t": np.zeros_like(t)}
    q, r = 0.15 * qrs_ms / 1000, 0.5 * qrs_ms / 1000
    s = qrs_ms / 1000 - q - r
    for on in onsets:
        if p_waves:
            waves["p"] += p_mv * _bump(t, on - pr_ms / 1000, 0.1)
        waves["qrs"] += (-0.15 * _bump(t, on, q) + 1.5 * _bump(t, on + q, r)
                         - 0.35 * _bump(t, on + q + r, s))
        waves["t"] += 0.35 * _bump(t, on + (qt_ms - 180) / 1000, 0.18)
    gains = {name: _limb_gains(angle) for name, angle in zip(("p", "qrs", "t"), axes)}
    signal = []
    for lead in leads:
        if lead in LIMB:
            row = sum(gains[w][lead] * waves[w] for w in waves)
        else:
            k = int(lead[1:]) - 1
            row = sum(PRECORDIAL[w][k] * waves[w] for w in waves)
        row = row + 0.15 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6.3))
        row = row + 0.02 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, noise_mv, t.size)
        if fibrillation_mv:
            row = row + _fibrillation(t, fibrillation_mv * (2 if lead == "V1" else 1), rng)
        signal.append(row)
    signal = np.array(signal)
    if fs != BUILD_FS:
        ratio = Fraction(fs / BUILD_FS).limit_denominator(1000)
        signal = resample_poly(signal, ratio.numerator, ratio.denominator, axis=1)
    truth = {"pr": pr_ms, "qrs": qrs_ms, "qt": qt_ms, "p_axis": axes[0], "qrs_axis": axes[1],
             "t_axis": axes[2], "beats": len(onsets)}
    if len(onsets) >= 3:
        rr = np.diff(onsets) * 1000
        truth |= {"heart_rate": 60000 / rr.mean(), "rr_sd": float(np.std(rr, ddof=1)),
                  "qtc_bazett": qt_ms / math.sqrt(rr.mean() / 1000),
                  "qtc_fridericia": qt_ms / (rr.mean() / 1000) ** (1 / 3)}
    record = ECGRecord(name="synthetic", signal=signal.astype(np.float32), fs=fs,
                       leads=list(leads), format="synthetic", units="mV")
    return record, truth


def _fibrillation(t: np.ndarray, amplitude: float, rng) -> np.ndarray:
    """Atrial fibrillatory waves: 4-9 Hz oscillations whose rate and phase wander."""
    out = np.zeros_like(t)
    for _ in range(3):
        rate = rng.uniform(4, 9) + 0.8 * np.cumsum(rng.normal(0, 1, t.size)) / np.sqrt(t.size)
        out += amplitude / 3 * np.sin(2 * np.pi * np.cumsum(rate) / BUILD_FS + rng.uniform(0, 6.3))
    return out


def _angle_diff(a: float, b: float) -> float:
    return (a - b + 180) % 360 - 180


# Tolerances against the values a synthetic record was built with.
TOLERANCE = {"heart_rate": 1.0, "rr_sd": 3.0, "pr": 12.0, "qrs": 10.0, "qt": 20.0,
             "qtc_bazett": 25.0, "qtc_fridericia": 25.0, "p_axis": 10.0, "qrs_axis": 2.0,
             "t_axis": 10.0}


# Below 250 Hz a sample lasts 4-10 ms and the QRS edges are smeared by the anti-aliasing filter.
LOW_RATE_TOLERANCE = {"pr": 30.0, "qrs": 30.0, "qt": 30.0, "qtc_bazett": 35.0,
                      "qtc_fridericia": 35.0}


def assert_close(m: Measurements, truth: dict, keys=KEYS, fs: float = 500.0,
                 looser: dict | None = None) -> None:
    tolerance = TOLERANCE | (LOW_RATE_TOLERANCE if fs < 250 else {}) | (looser or {})
    for key in keys:
        assert key in m.values, f"{key} absent: {m.absent.get(key)}"
        diff = (_angle_diff(m.values[key], truth[key]) if key.endswith("axis")
                else m.values[key] - truth[key])
        assert abs(diff) <= tolerance[key], f"{key}: {m.values[key]} against {truth[key]:.1f}"


def assert_complete(m: Measurements) -> None:
    """Every quantity is either measured or absent with a sentence, never both."""
    assert set(m.values) | set(m.absent) == set(KEYS)
    assert not set(m.values) & set(m.absent)
    for reason in m.absent.values():
        assert reason[0].isupper() and reason.endswith("."), reason


# --- synthetic records --------------------------------------------------------------------------

@pytest.mark.parametrize("fs", [100.0, 250.0, 500.0, 1000.0])
def test_known_intervals_and_axes(fs):
    record, truth = synthetic(fs=fs)
    m = measure(record)
    assert_complete(m)
    assert m.beats == truth["beats"]
    assert_close(m, truth, fs=fs)


@pytest.mark.parametrize("axes", [(60.0, -45.0, 20.0), (70.0, 120.0, 150.0), (30.0, 0.0, -30.0)])
def test_axes_in_every_quadrant(axes):
    m = measure(synthetic(axes=axes)[0])
    assert_close(m, dict(zip(("p_axis", "qrs_axis", "t_axis"), axes)),
                 keys=("p_axis", "qrs_axis", "t_axis"))


def test_intervals_other_than_the_defaults():
    record, truth = synthetic(pr_ms=220, qrs_ms=140, qt_ms=480, rr_ms=(1100, 1150, 1080))
    assert_close(measure(record), truth)


def test_two_limb_leads_give_the_frontal_axes():
    record, truth = synthetic(leads=("II", "III", "V1", "V2", "V3", "V4", "V5", "V6"))
    assert_close(measure(record), truth)


def test_no_limb_lead_no_axis():
    record, truth = synthetic(leads=("V1", "V2", "V3", "V4", "V5", "V6"))
    m = measure(record)
    assert_complete(m)
    assert_close(m, truth, keys=("heart_rate", "pr", "qrs", "qt"))
    for key in ("p_axis", "qrs_axis", "t_axis"):
        assert "limb leads" in m.absent[key]


def test_single_lead():
    record, truth = synthetic(leads=("II",))
    m = measure(record)
    assert_close(m, truth, keys=("heart_rate", "rr_sd", "pr", "qrs", "qt"))
    assert "limb leads" in m.absent["qrs_axis"]


def test_atrial_fibrillation_gives_no_pr():
    rng = np.random.default_rng(3)
    rr = tuple(int(v) for v in rng.uniform(450, 1000, 24))
    record, truth = synthetic(rr_ms=rr, p_waves=False, fibrillation_mv=0.08, seed=3)
    m = measure(record)
    assert_complete(m)
    for key in ("pr", "p_axis"):
        assert key not in m.values
        assert "No P wave repeats" in m.absent[key]
    assert_close(m, truth, keys=("heart_rate", "rr_sd", "qrs", "qrs_axis"))
    assert m.values["rr_sd"] > 100


@pytest.mark.parametrize("beats", [1, 2])
def test_one_or_two_beats_give_no_heart_rate(beats):
    record, _ = synthetic(duration_s=0.6 + (beats - 1) * 0.8 + 0.7, first_qrs_s=0.6)
    m = measure(record)
    assert_complete(m)
    assert m.beats == beats
    assert m.values == {}
    assert f"{beats} beat" in m.absent["heart_rate"] and "at least" in m.absent["heart_rate"]


def test_noise_lead_is_not_used():
    record, truth = synthetic()
    noisy = record.signal.copy()
    v3 = record.leads.index("V3")
    noisy[v3] = np.random.default_rng(7).normal(0, 0.5, noisy.shape[1])
    with_noise = measure(ECGRecord(name="n", signal=noisy, fs=record.fs, leads=record.leads,
                                   format="synthetic", units="mV"))
    keep = [i for i in range(len(record.leads)) if i != v3]
    without = measure(ECGRecord(name="w", signal=record.signal[keep], fs=record.fs,
                                leads=[record.leads[i] for i in keep], format="synthetic",
                                units="mV"))
    assert with_noise.values == without.values
    assert_close(with_noise, truth)



@pytest.mark.parametrize("pr_ms, rr_ms", [(120, 1000), (140, 1500)])
def test_a_p_wave_fused_into_the_qrs_gives_a_reason_not_a_crash(pr_ms, rr_ms):
    """A P wave as large as a QRS, close to it, at a slow rate: its QRS onset is found so early that
    the P wave's search window began before the median beat (it raised ValueError)."""
    record, _ = synthetic(pr_ms=pr_ms, rr_ms=(rr_ms,), p_mv=1.2)
    result = measure(record)
    assert "heart_rate" in result.values
    assert ("pr" in result.values) != ("pr" in result.absent)
    if "pr" in result.values:
        low, high = PLAUSIBLE["pr"]
        assert low <= result.values["pr"] <= high


@pytest.mark.parametrize("noise_mv", [0.05, 0.1, 0.3])
def test_noise_gives_a_right_value_or_none(noise_mv):
    """However noisy, a value is within tolerance or absent with a reason, never wrong."""
    for seed in range(3):
        record, truth = synthetic(noise_mv=noise_mv, seed=seed)
        m = measure(record)
        assert_complete(m)
        # The beats are placed by their QRS-band energy, which noise moves by a few ms.
        assert_close(m, truth, keys=["heart_rate", *[k for k in KEYS if k in m.values]],
                     looser={"rr_sd": 6.0})


def test_flat_and_zero_filled_leads_are_not_used():
    record, truth = synthetic()
    signal = record.signal.copy()
    signal[record.leads.index("V2")] = 0.0
    signal[record.leads.index("aVL")] = 0.3  # a constant offset: no ECG
    m = measure(ECGRecord(name="z", signal=signal, fs=record.fs, leads=record.leads,
                          format="synthetic", units="mV", zero_leads=["V2"]))
    assert_close(m, truth)


def test_flat_record_gives_nothing():
    m = measure(ECGRecord(name="flat", signal=np.full((12, 5000), 0.2, dtype=np.float32),
                          fs=500.0, leads=list(STANDARD_LEADS), format="synthetic", units="mV"))
    assert_complete(m)
    assert m.values == {} and m.beats == 0
    assert all("flat" in reason for reason in m.absent.values())


def test_noise_only_record_gives_nothing():
    noise = np.random.default_rng(11).normal(0, 0.3, (12, 5000)).astype(np.float32)
    m = measure(ECGRecord(name="noise", signal=noise, fs=500.0, leads=list(STANDARD_LEADS),
                          format="synthetic", units="mV"))
    assert_complete(m)
    assert m.values == {}
    assert "noise" in m.absent["heart_rate"]


@pytest.mark.parametrize("samples", [1, 20, 400])
def test_a_record_under_a_second_gives_nothing(samples):
    record, _ = synthetic()
    short = ECGRecord(name="short", signal=record.signal[:, :samples], fs=record.fs,
                      leads=record.leads, format="synthetic", units="mV")
    m = measure(short)
    assert_complete(m)
    assert m.values == {}
    assert "1 s at least" in m.absent["heart_rate"]


def test_rate_below_100_hz_gives_nothing():
    record, _ = synthetic(fs=500.0)
    slow = ECGRecord(name="slow", signal=record.signal[:, ::10], fs=50.0, leads=record.leads,
                     format="synthetic", units="mV")
    m = measure(slow)
    assert m.values == {}
    assert all("50 Hz" in reason for reason in m.absent.values())


def test_to_dict_and_rows():
    record, _ = synthetic(leads=("V1", "V2", "V3", "V4", "V5", "V6"))
    m = measure(record)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["note"] == NOTE == "automated, approximate"
    assert set(d) == {"method", "note", "values", "absent"}
    assert list(d["values"]) == [k for k in KEYS if k in m.values]
    rows = m.rows()
    assert [label for label, _, _ in rows] == [label for _, label, _ in QUANTITIES]
    by_label = {label: (value, reason) for label, value, reason in rows}
    assert by_label["Heart rate"] == (f"{m.values['heart_rate']:.0f} bpm", "")
    assert by_label["QTc (Bazett)"][0].endswith(" ms")
    assert by_label["QRS axis"] == ("—", m.absent["qrs_axis"])


def test_import_is_light():
    """Importing the module loads neither scipy.signal nor neurokit2 (the CLI's cold start)."""
    code = ("import sys, ecgfm.measure; "
            "print(any(m.startswith(('scipy.signal', 'neurokit2')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


# --- validation against the carts and against beat annotations -----------------------------------

# Goals (project issue #11): heart rate within 2 bpm; PR and QRS within 20 ms; QT within 30 ms;
# axes within 15 degrees; each on at least 80 % of the files. Heart rate is held to more: every cart
# file, and 95 % of the 10 s windows of the annotated records.
GOALS = {"heart_rate": 2.0, "pr": 20.0, "qrs": 20.0, "qt": 30.0, "p_axis": 15.0, "qrs_axis": 15.0,
         "t_axis": 15.0}
GOAL_SHARE = 0.8
VENDOR_FORMATS = {"ge-muse", "philips", "hl7-aecg", "scp", "dicom"}
# wfdb's beat annotation codes (normal, bundle branch block, premature, escape, paced, fusion,
# unclassified).
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")
WINDOW_S = 10.0
EDGE_S = 0.1  # the detector leaves out complexes this close to a window's ends; the reference too


def _manifest(samples_dir: Path) -> list[dict]:
    import csv

    with open(samples_dir / "MANIFEST.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _cart_values(report) -> dict[str, float]:
    """The cart's values under our keys; heart rate from the cart's RR interval when it gives
    only that (the DICOM file)."""
    values = dict(report.measurements)
    if "heart_rate" not in values and values.get("rr"):
        values["heart_rate"] = 60000.0 / values["rr"]
    return values


def _table(title: str, rows: dict[str, list[float]], goals: dict[str, float]) -> str:
    lines = [title, f"{'quantity':<16}{'n':>4}{'mean diff':>11}{'SD':>8}{'within goal':>14}"]
    for key, diffs in rows.items():
        d = np.array(diffs, dtype=float)
        if d.size == 0:
            continue
        sd = f"{d.std(ddof=1):8.1f}" if d.size > 1 else f"{'-':>8}"
        goal = goals.get(key)
        share = (f"{np.mean(np.abs(d) <= goal) * 100:5.0f} % (±{goal:g})" if goal
                 else f"{'no goal':>14}")
        lines.append(f"{key:<16}{d.size:>4}{d.mean():>+11.1f}{sd}  {share}")
    return "\n".join(lines)


def test_agreement_with_the_carts(samples_dir, capsys):
    """Every file in ../shared whose cart stored measurements, measured here and by the cart."""
    from ecgfm import read_ecg

    keys = ["heart_rate", "pr", "qrs", "qt", "qtc_bazett", "qtc_fridericia", "p_axis", "qrs_axis",
            "t_axis"]
    diffs: dict[str, list[float]] = {key: [] for key in keys}
    files, seconds = [], []
    for row in _manifest(samples_dir):
        if row["format"] not in VENDOR_FORMATS:
            continue
        record = read_ecg(samples_dir / row["path"])
        if record.device_report is None or not record.device_report.measurements:
            continue
        cart = _cart_values(record.device_report)
        start = time.perf_counter()
        ours = measure(record)
        seconds.append(time.perf_counter() - start)
        files.append(f"{row['path']} ({record.device_report.source})")
        for key in keys:
            if key in cart and key in ours.values:
                diff = ours.values[key] - cart[key]
                diffs[key].append(_angle_diff(diff, 0) if key.endswith("axis") else diff)
    if not files:
        pytest.skip("no sample file carries the cart's measurements in record.device_report")
    with capsys.disabled():
        print()
        print(_table(f"Automated, approximate measurements minus the cart's, {len(files)} files "
                     "(hl7_example_aecg.xml and ecgtoolkit_Example.scp hold the same ECG):",
                     diffs, GOALS))
        print(f"measure() per record: {np.mean(seconds) * 1000:.0f} ms mean, "
              f"{max(seconds) * 1000:.0f} ms at most")
    assert len(files) >= 9
    # Reached: heart rate 8/8; PR 10/10 (mean +0.6, SD 5.6 ms); QRS 9/10 (+0.7, 14.7 ms; the
    # Philips HeartStart file's 135 ms against its own per-beat 96 ms is the miss); QT 10/10 (+1.2,
    # 12.6 ms); axes P 8/10 (the two copies of one ECG, -39°), QRS 10/10, T 9/10.
    heart_rate = np.abs(diffs["heart_rate"])
    assert heart_rate.size >= 8 and (heart_rate <= GOALS["heart_rate"]).all()
    for key in ("pr", "qrs", "qt", "p_axis", "qrs_axis", "t_axis"):
        d = np.abs(diffs[key])
        assert d.size >= 8, key
        assert np.mean(d <= GOALS[key]) >= GOAL_SHARE, f"{key}: {np.round(diffs[key])}"


def test_heart_rate_per_10_s_window_against_beat_annotations(samples_dir, capsys):
    """Every PhysioNet record in ../shared with reference beat annotations (.atr), cut into 10 s
    windows: our heart rate against 60 / mean RR of the annotated beats in the same window."""
    import wfdb

    from ecgfm import read_ecg

    diffs: dict[str, list[float]] = {}
    for row in _manifest(samples_dir):
        if not row["path"].endswith(".atr"):
            continue
        folder = (samples_dir / row["path"]).parent
        record = read_ecg(sorted(p for p in folder.iterdir() if p.suffix != ".atr"))
        annotation = wfdb.rdann(str(samples_dir / row["path"][:-4]), "atr")
        beats = np.array([s for s, sym in zip(annotation.sample, annotation.symbol)
                          if sym in BEAT_SYMBOLS])
        name = Path(row["path"]).stem
        diffs[name] = []
        for k in range(int(record.duration_s // WINDOW_S)):
            first = k * WINDOW_S * record.fs
            inside = beats[(beats >= first + EDGE_S * record.fs)
                           & (beats < first + (WINDOW_S - EDGE_S) * record.fs)]
            if inside.size < 3:
                continue
            reference = 60.0 * record.fs / np.mean(np.diff(inside))
            ours = measure(record.window(k * WINDOW_S, WINDOW_S)).values.get("heart_rate")
            diffs[name].append(np.inf if ours is None else ours - reference)
    if not diffs:
        pytest.skip("no record with beat annotations in ../shared")
    every = [d for values in diffs.values() for d in values]
    with capsys.disabled():
        print()
        print(_table("Heart rate per 10 s window minus the annotated beats' (bpm):",
                     {**diffs, "all windows": every}, {k: GOALS["heart_rate"] for k in
                                                        [*diffs, "all windows"]}))
    # Reached: 362 of 364 windows (99.5 %); the misses are a noise burst counted as a beat in
    # atrial fibrillation (data_8_4) and a V5 electrode drop-out that hides two beats (100).
    assert np.mean(np.abs(every) <= GOALS["heart_rate"]) >= 0.95
