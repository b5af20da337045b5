"""Automated, approximate ECG measurements of one record: heart rate, RR variability, PR, QRS,
QT, QTc (Bazett and Fridericia) and the frontal P, QRS and T axes.

The method is the one resting-ECG carts use (GE 12SL, Philips): QRS complexes are detected on the
recorded leads together; the beats of the dominant shape are aligned and reduced to a median beat
per lead; the wave boundaries are then found once, across leads, on the median beats: QRS onset and
offset, T end and P onset where the leads' combined rate of change (spatial velocity) crosses a
fraction of the wave's own peak. The axes are the directions of the waves' net areas in leads I and
aVF, computed from whichever limb leads carry a signal. Heart rate and RR variability (the standard
deviation of all RR intervals, ectopic beats included) come from the detected beats.

What it is not: a diagnostic program or a validated medical device. Every value is "automated,
approximate" (`NOTE`) and must be shown so. A quantity that cannot be measured (too few beats; no P
wave repeating from beat to beat, as in atrial fibrillation; no limb leads; a boundary that cannot
be found) is absent with a reason, never estimated. Flat, zero-filled and noise-only leads are not
used. Agreement with the carts' own measurements is in tests/test_measure.py and the README.

scipy.signal is imported on the first `measure` call, not with this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .io.record import ECGRecord
from .preprocess import FLAT_PEAK_TO_PEAK_MV, MIN_DURATION_S  # the same limits as the model's input

NOTE = "automated, approximate"
QUANTITIES: tuple[tuple[str, str, str], ...] = (
    ("heart_rate", "Heart rate", "bpm"),
    ("rr_sd", "RR variability (SD)", "ms"),
    ("pr", "PR interval", "ms"),
    ("qrs", "QRS duration", "ms"),
    ("qt", "QT interval", "ms"),
    ("qtc_bazett", "QTc (Bazett)", "ms"),
    ("qtc_fridericia", "QTc (Fridericia)", "ms"),
    ("p_axis", "P axis", "°"),
    ("qrs_axis", "QRS axis", "°"),
    ("t_axis", "T axis", "°"),
)
METHOD = ("Median beat: QRS complexes detected across the recorded leads, beats of the dominant "
          "shape reduced to a median beat per lead, wave boundaries found once across leads from "
          "their spatial velocity, axes from net wave areas in leads I and aVF.")

MIN_FS = 100.0  # Hz
MIN_BEATS_RATE = 3  # two RR intervals at least for a rate
MIN_BEATS_SD = 5  # four RR intervals at least for their spread
MIN_BEATS_MEDIAN = 3  # beats of one shape for a median beat
MAX_MEDIAN_BEATS = 300  # a long recording's median beat is made of this many beats, spread over it
BEFORE_R_S, AFTER_R_S = 0.45, 0.65  # the median beat's span around the QRS
# A boundary search that ends outside these (ms) found no boundary.
PLAUSIBLE = {"pr": (60, 400), "qrs": (40, 220), "qt": (200, 700)}
DETECTION_FRACTION = 0.45  # of a typical beat's QRS-band amplitude, for a peak to count as a beat
DOMINANT_CORRELATION = 0.8  # a beat's QRS against the first template: the same shape
REPEAT_CORRELATION = 0.5  # a lead's odd-beat against its even-beat median: a signal, not noise
# Boundaries, as fractions of the wave's peak spatial velocity. Chosen on the carts' measurements of
# ../shared/ecg-samples (10 files), from 0.02-0.06 (QRS), 0.1-0.3 (T end) and 0.1-0.3 (P onset).
QRS_FRACTION = 0.04
T_FRACTION = 0.2
P_FRACTION = 0.3
P_SMOOTH_S = 0.02  # the P wave is slow: its velocity is taken on a beat smoothed over 20 ms
# A P or T wave must stand this many standard errors above the beat-to-beat spread of its window.
P_SNR = 8.0
T_SNR = 6.0
NOISE_MARGIN = 1.5  # a boundary's threshold must stand this far above the median beat's noise
QUIET_S = 0.01  # a boundary is followed (or preceded) by this long under its threshold
EQUIPHASIC = 0.1  # a net frontal area under this share of the gross area gives no direction


@dataclass(frozen=True)
class Measurements:
    """One record's automated, approximate measurements, and why the others were not made.

    Every key of `QUANTITIES` is in exactly one of `values` and `absent`. `beats` counts the beats
    detected.
    """

    values: dict[str, float] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    method: str = METHOD
    beats: int = 0

    def to_dict(self) -> dict:
        return {"method": self.method, "note": NOTE,
                "values": {k: self.values[k] for k, _, _ in QUANTITIES if k in self.values},
                "absent": {k: self.absent[k] for k, _, _ in QUANTITIES if k in self.absent}}

    def rows(self) -> list[tuple[str, str, str]]:
        """(label, value with its unit or "—", reason or "") per quantity, for display."""
        out = []
        for key, label, unit in QUANTITIES:
            if key in self.values:
                value = f"{self.values[key]:.0f}{'' if unit == '°' else ' '}{unit}"
                out.append((label, value, ""))
            else:
                out.append((label, "—", self.absent.get(key, "Not measured.")))
        return out


def measure(record: ECGRecord) -> Measurements:
    """Heart rate, RR variability, PR, QRS, QT, QTc and the frontal axes of the whole `record`.

    Any sampling rate from 100 Hz and any subset of leads; what the record cannot give is in
    `absent`, each with a one-sentence reason. Pass `record.window(...)` to measure part of it.
    """
    values: dict[str, float] = {}
    absent: dict[str, str] = {}

    def result(beats: int, reason: str | None = None) -> Measurements:
        for key, _, _ in QUANTITIES:
            if key not in values and key not in absent:
                absent[key] = reason or "It could not be measured."
        ordered = {k: values[k] for k, _, _ in QUANTITIES if k in values}
        return Measurements(values=ordered, absent={k: absent[k] for k, _, _ in QUANTITIES
                                                    if k not in values}, beats=beats)

    if record.fs < MIN_FS:
        return result(0, f"The sampling rate ({record.fs:g} Hz) is below the {MIN_FS:g} Hz "
                         "these measurements need.")
    if record.duration_s < MIN_DURATION_S:
        return result(0, f"The record lasts {record.duration_s:.2f} s; these measurements need "
                         f"{MIN_DURATION_S:g} s at least.")
    names, signal = _usable_leads(record)
    if not names:
        return result(0, "No lead carries a signal (every lead is missing, flat or has gaps).")
    fs = float(record.fs)
    x = _filtered(signal, fs)
    # Derived limb leads repeat the recorded ones, noise included: they do not vote on beats.
    recorded = [i for i, name in enumerate(names) if name not in record.derived_leads]
    peaks = _detect_beats(x[recorded or list(range(len(names)))], fs)
    n = len(peaks)
    median = _median_beat(x, fs, peaks)
    if median is NOT_BEATS:
        return result(n, NOT_BEATS)

    rr_ms = np.diff(peaks) / fs * 1000.0
    if n < MIN_BEATS_RATE:
        absent["heart_rate"] = (f"{_beats(n)} detected; a heart rate needs at least "
                                f"{MIN_BEATS_RATE}.")
    else:
        values["heart_rate"] = _round(60000.0 / float(np.mean(rr_ms)))
    if n < MIN_BEATS_SD:
        absent["rr_sd"] = f"{_beats(n)} detected; RR variability needs at least {MIN_BEATS_SD}."
    else:
        values["rr_sd"] = _round(float(np.std(rr_ms, ddof=1)))
    if isinstance(median, str):
        return result(n, median)
    used = [i for i, ok in enumerate(median.repeats) if ok]
    mean_rr_s = float(np.mean(rr_ms)) / 1000.0 if n >= 2 else None
    marks, reasons = _delineate(median, used, fs, mean_rr_s)
    absent.update(reasons)

    for key, start, end in (("pr", "p_on", "qrs_on"), ("qrs", "qrs_on", "qrs_off"),
                            ("qt", "qrs_on", "t_end")):
        if key in absent:
            continue
        ms = (marks[end] - marks[start]) / fs * 1000.0
        low, high = PLAUSIBLE[key]
        if low <= ms <= high:
            values[key] = _round(ms)
        else:
            absent[key] = (f"The boundaries found give {ms:.0f} ms, outside the plausible "
                           f"{low}–{high} ms, so they are not trusted.")
    if "qt" in values and "heart_rate" in values:
        values["qtc_bazett"] = _round(values["qt"] / math.sqrt(mean_rr_s))
        values["qtc_fridericia"] = _round(values["qt"] / mean_rr_s ** (1 / 3))
    else:
        missing = "QT interval" if "qt" not in values else "heart rate"
        absent["qtc_bazett"] = absent["qtc_fridericia"] = f"There is no {missing} to correct."

    frontal = _frontal_leads([names[i] for i in used], median.beat[used])
    for key, base, start, end in (("p_axis", "p_on", "p_on", "p_off"),
                                  ("qrs_axis", "qrs_on", "qrs_on", "qrs_off"),
                                  ("t_axis", "qrs_on", "qrs_off", "t_end")):
        if frontal is None:
            absent[key] = ("The frontal axes need two limb leads with a signal (of I, II, III, "
                           "aVR, aVL, aVF); the record has fewer.")
        elif key not in absent:
            angle = _axis(frontal, marks[base], marks[start], marks[end])
            if angle is None:
                absent[key] = ("The wave is equiphasic in the limb leads, so its axis is "
                               "indeterminate.")
            else:
                values[key] = angle
    return result(n)


# --- leads --------------------------------------------------------------------------------------

def _usable_leads(record: ECGRecord) -> tuple[list[str], np.ndarray]:
    """The leads with an ECG in them: not zero-filled, finite, not flat."""
    names, rows = [], []
    for i, lead in enumerate(record.leads):
        row = record.signal[i]
        if lead in record.zero_leads or not np.isfinite(row).all():
            continue
        if np.ptp(row) < FLAT_PEAK_TO_PEAK_MV:
            continue
        names.append(lead)
        rows.append(row.astype(np.float64))
    return names, np.array(rows) if rows else np.zeros((0, record.signal.shape[1]))


def _filtered(x: np.ndarray, fs: float) -> np.ndarray:
    """Zero-phase band-pass 0.5-100 Hz (or 40 % of the rate) with 50 and 60 Hz mains notches, as
    carts filter before measuring: no baseline wander, no hum, and the QRS edges kept."""
    from scipy.signal import butter, iirnotch, sosfiltfilt, tf2sos

    high = min(100.0, 0.4 * fs)
    sections = [butter(2, [0.5, high], btype="bandpass", fs=fs, output="sos")]
    for mains in (50.0, 60.0):
        if mains < high:
            sections.append(tf2sos(*iirnotch(mains, 30.0, fs=fs)))
    return sosfiltfilt(np.concatenate(sections), x, axis=-1)


# --- beats --------------------------------------------------------------------------------------

def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred running mean along the last axis, the ends padded with their own values."""
    if width <= 1:
        return x
    left = width // 2
    padded = np.concatenate([np.repeat(x[..., :1], left, axis=-1), x,
                             np.repeat(x[..., -1:], width - 1 - left, axis=-1)], axis=-1)
    total = np.cumsum(padded, axis=-1)
    total = np.concatenate([np.zeros_like(total[..., :1]), total], axis=-1)
    return (total[..., width:] - total[..., :-width]) / width


def _detect_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the QRS complexes, from the QRS-band (8-20 Hz) energy of the leads.

    Each lead's energy is scaled to its own peaks; three leads or more are combined by their
    median and two by their geometric mean, so that one lead's noise or artefact cannot make a beat
    (with two leads, a beat lost in one of them is lost).
    """
    from scipy.signal import butter, find_peaks, sosfiltfilt

    sos = butter(2, [8.0, min(20.0, 0.4 * fs)], btype="bandpass", fs=fs, output="sos")
    band = np.abs(sosfiltfilt(sos, x, axis=-1))
    scaled = (band / (np.percentile(band, 99, axis=1, keepdims=True) + 1e-12)) ** 2
    smooth = _moving_average(scaled, max(1, int(round(0.1 * fs))))
    if len(smooth) == 2:
        envelope = np.sqrt(np.sqrt(smooth[0] * smooth[1]))
    else:
        envelope = np.sqrt(np.median(smooth, axis=0))
    candidates, props = find_peaks(envelope, distance=max(1, int(round(0.22 * fs))), height=0)
    # A complex cut by the record's edge is not a whole beat, and the filters' edges are unreliable.
    edge = int(round(0.1 * fs))
    inner = (candidates >= edge) & (candidates < len(envelope) - edge)
    candidates, heights = candidates[inner], props["peak_heights"][inner]
    block = int(10 * fs)
    keep = np.zeros(candidates.size, dtype=bool)
    for start in range(0, len(envelope), block):
        inside = (candidates >= start) & (candidates < start + block)
        if inside.any():
            span_s = min(block, len(envelope) - start) / fs
            typical = _typical_beat(heights[inside], span_s)
            keep |= inside & (heights >= DETECTION_FRACTION * typical)
    return candidates[keep]


def _typical_beat(heights: np.ndarray, span_s: float) -> float:
    """The QRS-band amplitude of a typical beat among these peaks of `span_s` seconds of record.

    The beats are the tallest peaks, at least one per 2 s (30 bpm), unless the tallest few stand
    three times above all the others (a record with only one or two beats).
    """
    expected = max(1, int(math.ceil(span_s / 2)))
    top = np.sort(heights)[::-1][:expected + 1]
    if top.size > 1:
        ratios = top[:-1] / (top[1:] + 1e-12)
        gap = int(np.argmax(ratios))
        if ratios[gap] >= 3.0:
            return float(np.median(top[:gap + 1]))
    return float(np.median(top[:expected]))


def _beats(n: int) -> str:
    return "No beat was" if n == 0 else f"Only {n} beat{'s were' if n > 1 else ' was'}"


def _round(value: float) -> float:
    return float(round(value))


# --- median beat --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _MedianBeat:
    beat: np.ndarray  # [leads, samples], the QRS fiducial at BEFORE_R_S
    beats: np.ndarray  # [n, leads, samples], the aligned beats it is the median of
    repeats: list[bool]  # per lead: the waveform repeats from beat to beat
    residual: np.ndarray  # [leads, samples], half the odd-beat minus even-beat median: its noise


NOT_BEATS = ("No lead shows the same waveform from beat to beat, so what was detected is noise or "
             "artefact, not heartbeats.")


def _median_beat(x: np.ndarray, fs: float, peaks: np.ndarray) -> _MedianBeat | str:
    """The median beat per lead over the beats of the dominant shape, aligned on their QRS, or
    the reason there is none (NOT_BEATS when the detected complexes do not repeat at all)."""
    before, after = int(round(BEFORE_R_S * fs)), int(round(AFTER_R_S * fs))
    lag = int(round(0.03 * fs))
    inside = peaks[(peaks - before - lag >= 0) & (peaks + after + lag < x.shape[1])]
    if inside.size > MAX_MEDIAN_BEATS:
        inside = inside[np.linspace(0, inside.size - 1, MAX_MEDIAN_BEATS).round().astype(int)]
    if inside.size < MIN_BEATS_MEDIAN:
        return (f"Fewer than {MIN_BEATS_MEDIAN} complete beats, so no median beat could be "
                "formed.")
    span = np.arange(-before - lag, after + lag + 1)
    # [beats, leads, samples]
    epochs = np.transpose(x[:, inside[:, None] + span[None, :]], (1, 0, 2))
    signal_leads = _repeats(epochs)
    if not any(signal_leads):
        return NOT_BEATS
    half_qrs = int(round(0.08 * fs))
    qrs = slice(before + lag - half_qrs, before + lag + half_qrs + 1)
    # The shape is compared on the leads that carry a signal (noise would lower every match).
    leads = epochs[:, signal_leads, :]
    shifts, corr = _align(leads, np.median(leads[:, :, qrs], axis=0), qrs, lag)
    dominant = np.flatnonzero(corr >= DOMINANT_CORRELATION)
    if dominant.size < MIN_BEATS_MEDIAN:
        return (f"Fewer than {MIN_BEATS_MEDIAN} complete beats of the same shape, so no median "
                "beat could be formed.")
    width = before + after + 1
    beats = np.stack([epochs[i, :, lag + shifts[i]: lag + shifts[i] + width] for i in dominant])
    repeats = [a and b for a, b in zip(signal_leads, _repeats(beats))]
    residual = (np.median(beats[0::2], axis=0) - np.median(beats[1::2], axis=0)) / 2
    return _MedianBeat(np.median(beats, axis=0), beats, repeats, residual)


def _align(epochs: np.ndarray, template: np.ndarray, qrs: slice, lag: int):
    """Per beat: the shift (samples, within +-lag) that best matches the template's QRS over all
    leads, and the correlation at that shift."""
    t = template - template.mean(axis=1, keepdims=True)
    t_norm = np.sqrt((t ** 2).sum())
    best_corr = np.full(len(epochs), -1.0)
    best_shift = np.zeros(len(epochs), dtype=int)
    for s in range(-lag, lag + 1):
        seg = epochs[:, :, qrs.start + s: qrs.stop + s]
        seg = seg - seg.mean(axis=2, keepdims=True)
        norm = np.sqrt((seg ** 2).sum(axis=(1, 2))) * t_norm + 1e-12
        c = (seg * t[None]).sum(axis=(1, 2)) / norm
        better = c > best_corr
        best_corr[better] = c[better]
        best_shift[better] = s
    return best_shift, best_corr


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a ** 2).sum() * (b ** 2).sum()) + 1e-12))


def _repeats(beats: np.ndarray) -> list[bool]:
    """Per lead: whether the medians of the odd and of the even beats agree: noise does not."""
    odd, even = np.median(beats[0::2], axis=0), np.median(beats[1::2], axis=0)
    return [_correlation(a, b) >= REPEAT_CORRELATION for a, b in zip(odd, even)]


# --- delineation --------------------------------------------------------------------------------

def _velocity(beat: np.ndarray, fs: float, smooth_s: float) -> np.ndarray:
    """Spatial velocity (mV/s): the speed at which the leads together change, after smoothing."""
    smooth = _moving_average(beat, max(1, int(round(smooth_s * fs))))
    return np.sqrt((np.gradient(smooth, axis=1) ** 2).sum(axis=0)) * fs


def _too_noisy(median: _MedianBeat, used: list[int], fs: float, smooth_s: float,
               threshold: float) -> bool:
    """Whether a boundary threshold (mV/s) lies within the median beat's own noise, measured on
    its residual: a crossing there would be noise, not the wave's edge."""
    noise = float(np.median(_velocity(median.residual[used], fs, smooth_s)))
    return threshold < NOISE_MARGIN * noise


def _delineate(median: _MedianBeat, used: list[int], fs: float,
               mean_rr_s: float | None) -> tuple[dict[str, int], dict[str, str]]:
    """Sample indices on the median beat of qrs_on, qrs_off, t_end, p_on, p_off, and the reasons
    (keyed by quantity) for those that could not be found."""
    beat = median.beat[used]
    marks: dict[str, int] = {}
    r = int(round(BEFORE_R_S * fs))
    velocity = _velocity(beat, fs, 0.008)
    quiet = _quiet(fs)
    near = slice(r - int(0.1 * fs), r + int(0.1 * fs) + 1)
    v_max = float(velocity[near].max())
    if _too_noisy(median, used, fs, 0.008, QRS_FRACTION * v_max):
        why = "The median beat is too noisy to place the QRS boundaries."
        return marks, dict.fromkeys(("pr", "qrs", "qt", "p_axis", "qrs_axis", "t_axis"), why)
    core = np.flatnonzero(velocity[near] >= 0.3 * v_max) + near.start
    qrs_on = _last_below(velocity, core[0], QRS_FRACTION * v_max, r - int(0.25 * fs), quiet)
    qrs_off = _first_below(velocity, core[-1], QRS_FRACTION * v_max, r + int(0.25 * fs), quiet)
    if qrs_on is None or qrs_off is None:
        why = "The QRS complex's boundaries could not be found on the median beat."
        return marks, dict.fromkeys(("pr", "qrs", "qt", "p_axis", "qrs_axis", "t_axis"), why)
    marks["qrs_on"], marks["qrs_off"] = qrs_on, qrs_off
    reasons: dict[str, str] = {}

    level = beat - beat[:, max(0, qrs_on - int(0.02 * fs)): qrs_on + 1].mean(axis=1, keepdims=True)
    limit = beat.shape[1] - 1
    if mean_rr_s is not None:
        limit = min(limit, r + int(0.85 * mean_rr_s * fs))
    t_end = _t_end(median, used, level, qrs_on, qrs_off, limit, fs)
    if isinstance(t_end, str):
        reasons["qt"] = reasons["t_axis"] = t_end
    else:
        marks["t_end"] = t_end

    # The P wave is looked for after the previous beat's T wave: its end found here, or else the
    # latest a T wave ends at this rate (QTc 500 ms, Bazett).
    first = qrs_on - int(0.3 * fs)
    if mean_rr_s is not None:
        previous_t_end = (marks["t_end"] if "t_end" in marks
                          else qrs_on + int(0.5 * math.sqrt(mean_rr_s) * fs))
        first = max(first, previous_t_end - int(round(mean_rr_s * fs)) + int(0.02 * fs))
    # A QRS onset found early (a P wave fused into it) would put the window before the median beat.
    first = max(first, 0)
    p = _p_wave(median, used, first, qrs_on, fs)
    if isinstance(p, str):
        reasons["pr"] = reasons["p_axis"] = p
    else:
        marks["p_on"], marks["p_off"] = p
    return marks, reasons


def _last_below(v: np.ndarray, start: int, threshold: float, stop: int, run: int) -> int | None:
    """The latest sample at or before `start` (and after `stop`) that ends `run` samples in a row
    under the threshold: a wave's onset, not a brief dip inside it."""
    stop = max(stop, 0)
    quiet = _runs_below(v[stop: start + 1], threshold, run)
    return None if quiet.size == 0 else stop + int(quiet[-1]) + run - 1


def _first_below(v: np.ndarray, start: int, threshold: float, stop: int, run: int) -> int | None:
    """The earliest sample at or after `start` (and before `stop`) that begins `run` samples in a
    row under the threshold: a wave's end, not a brief dip inside it."""
    stop = min(stop, len(v) - 1)
    quiet = _runs_below(v[start: stop + 1], threshold, run)
    return None if quiet.size == 0 else start + int(quiet[0])


def _quiet(fs: float) -> int:
    return max(2, int(round(QUIET_S * fs)))


def _runs_below(v: np.ndarray, threshold: float, run: int) -> np.ndarray:
    """Indices i where v[i:i + run] are all under the threshold."""
    if v.size < run:
        return np.zeros(0, dtype=int)
    below = np.concatenate([[0], np.cumsum(v < threshold)])
    return np.flatnonzero(below[run:] - below[:-run] == run)


def _t_end(median: _MedianBeat, used: list[int], level: np.ndarray, qrs_on: int, qrs_off: int,
           limit: int, fs: float) -> int | str:
    """T end, or the reason there is none: after the steepest fall of the T wave, where the leads
    together stop changing (spatial velocity under T_FRACTION of that fall's). A tangent to the
    fall, tried too, ends 25 ms before the carts on average.

    The T wave must stand out from the beat-to-beat spread (T_SNR standard errors), and must end
    before the next beat begins.
    """
    magnitude = np.sqrt((_moving_average(level, max(1, int(round(0.02 * fs)))) ** 2).mean(axis=0))
    start = qrs_off + int(0.06 * fs)
    peak_limit = min(limit, qrs_on + int(0.55 * fs))
    if peak_limit - start < int(0.05 * fs):
        return "The next beat follows too closely to find the end of the T wave."
    peak = start + int(np.argmax(magnitude[start:peak_limit + 1]))
    after = magnitude[peak:limit + 1]
    floor, height = float(after.min()), float(after[0] - after.min())
    spread = float(np.median(median.beats[:, used, start:limit + 1].std(axis=0)))
    if height < T_SNR * spread / math.sqrt(len(median.beats)):
        return ("The T wave does not stand out from the beat-to-beat noise, so its end cannot be "
                "found.")
    cross = peak + int(np.flatnonzero(after <= floor + 0.1 * height)[0])
    velocity = _velocity(level, fs, 0.04)
    fall = peak + int(np.argmax(velocity[peak:cross + 1]))
    if _too_noisy(median, used, fs, 0.04, T_FRACTION * velocity[fall]):
        return "The median beat is too noisy to place the end of the T wave."
    end = _first_below(velocity, fall, T_FRACTION * velocity[fall], limit, _quiet(fs))
    if end is None or end > limit - int(0.02 * fs):
        return "The T wave runs into the next beat, so its end cannot be found."
    return end


def _p_wave(median: _MedianBeat, used: list[int], first: int, qrs_on: int, fs: float):
    """(P onset, P offset) on the median beat, or the reason there is none.

    A P wave must repeat from beat to beat: in at least one lead the median's P wave must stand
    out from the beat-to-beat spread in that window by P_SNR times its standard error. In atrial
    fibrillation the fibrillatory waves do not repeat and average away, so nothing stands out.
    """
    last = qrs_on - int(0.02 * fs)
    if last - first < int(0.06 * fs):
        return "The P wave cannot be separated from the previous beat's T wave."
    width = max(1, int(round(P_SMOOTH_S * fs)))
    beats = _moving_average(median.beats[:, used, first:last + 1], width)
    beats = beats - beats.mean(axis=2, keepdims=True)
    n = len(beats)
    centre = np.median(beats, axis=0)
    spread = np.median(beats.std(axis=0), axis=1) * 1.2533 / math.sqrt(n)
    snr = np.ptp(centre, axis=1) / (spread + 1e-9)
    if not (snr >= P_SNR).any():
        return ("No P wave repeats from beat to beat (as in atrial fibrillation, or P waves lost "
                "in noise).")
    velocity = _velocity(median.beat[used], fs, P_SMOOTH_S)
    v_max = float(velocity[first:last + 1].max())
    if _too_noisy(median, used, fs, P_SMOOTH_S, P_FRACTION * v_max):
        return "The median beat is too noisy to place the P wave's onset."
    core = np.flatnonzero(velocity[first:last + 1] >= 0.4 * v_max) + first
    quiet = _quiet(fs)
    p_on = _last_below(velocity, core[0], P_FRACTION * v_max, first - int(0.05 * fs), quiet)
    p_off = _first_below(velocity, core[-1], P_FRACTION * v_max, qrs_on, quiet)
    if p_on is None or p_off is None:
        return "The P wave's boundaries could not be found on the median beat."
    return p_on, p_off


# --- axes ---------------------------------------------------------------------------------------

# Each limb lead as a combination of leads I and II (Einthoven, Goldberger).
_LIMB = {"I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0), "aVR": (-0.5, -0.5),
         "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}


def _frontal_leads(names: list[str], beat: np.ndarray) -> np.ndarray | None:
    """Leads I and aVF of the median beat, by least squares from the limb leads (two or more)."""
    rows = [i for i, name in enumerate(names) if name in _LIMB]
    if len(rows) < 2:
        return None
    a = np.array([_LIMB[names[i]] for i in rows])
    i_ii, *_ = np.linalg.lstsq(a, beat[rows], rcond=None)
    lead_i, lead_ii = i_ii
    return np.stack([lead_i, lead_ii - lead_i / 2])


def _axis(frontal: np.ndarray, base: int, start: int, end: int) -> float | None:
    """Direction (degrees, -90 to 270) of the net area of leads I and aVF between two marks,
    measured from the level at `base` (the isoelectric line before the wave)."""
    seg = frontal[:, start:end + 1] - frontal[:, base:base + 1]
    # Einthoven: I = |H| cos(a), aVF = |H| sin(a) * sqrt(3) / 2.
    seg = seg * np.array([[1.0], [2 / math.sqrt(3)]])
    x, y = seg.sum(axis=1)
    if math.hypot(x, y) <= EQUIPHASIC * math.hypot(*np.abs(seg).sum(axis=1)):
        return None
    angle = math.degrees(math.atan2(y, x))
    if angle <= -90:
        angle += 360
    return _round(angle)
