"""Signal quality per lead: what in the recorded signal itself may mislead ECG-FM, and where.

`assess` measures the window as read (mV, the file's own sampling rate), before ECG-FM's
resampling and standardisation. Each check is stated in mV, which is what a reader sees on paper
at 10 mm/mV, and, except clipping, also relative to the lead's own ECG amplitude (peak to peak below
40 Hz, drift removed), which is what the model sees after standardising each lead. Both must be
reached. The thresholds (module constants):

- clipped: the lead sits at its own maximum or minimum for `CLIP_MIN_S` (0.1 s) in all, counting
  stretches of two samples or more: the recorder's range was exceeded and the tops of the waves are
  cut off. A real peak stays at its extreme for a few ms (at most 0.07 s in the
  sample files, on a coarsely quantised 125 Hz monitor lead).
- noise: the lead's content from `NOISE_BAND_HZ` (40 Hz) up to 250 Hz (or the record's Nyquist
  limit), taken by FFT; its level is 1.4826 x its median absolute value, the RMS of Gaussian noise,
  which the QRS complexes (far less than half of the time) do not raise. Noisy from
  `NOISE_MIN_MV` (0.03 mV) and `NOISE_RATIO` (5 %) of the lead's amplitude. Mains hum counts
  here too: to the model it is noise like any other.
- baseline_wander: the baseline (a moving mean over `WANDER_WINDOW_S`, 1 s, applied twice) moves
  by `WANDER_MIN_MV` (0.5 mV) peak to peak and by `WANDER_RATIO` (0.5) times the lead's amplitude.
- mains: a narrow peak at 50 or 60 Hz (+-`MAINS_HALF_WIDTH_HZ`, 1 Hz) standing `MAINS_PEAK_RATIO`
  (10) times above the spectrum 2 to 10 Hz away, of amplitude `MAINS_MIN_MV` (0.03 mV) and
  `MAINS_RATIO` (2 %) of the lead's amplitude. Fainter hum (0.02 mV) is common in clinical records.
- reversal (for the record): a suspected limb-electrode reversal, read from the median beat of
  I, II, III and aVR (beats found from all judged leads' slopes; P wave measured against the chord
  from before it to the PR segment, QRS against the PR segment). RA/LL: in lead II the P wave and
  the QRS are both inverted and III's QRS is not upright. LA/RA: the same in lead I. Either way the
  QRS in aVR must not be inverted, as it is when the electrodes are right. A P wave is inverted when
  its downward deflection reaches `REVERSAL_P_MV` (0.04 mV), `REVERSAL_DOMINANCE` (2) times its
  upward one and `REVERSAL_P_SIGNIFICANCE` (3) times the median beat's own standard error there
  (beats scattered by artefacts make no P wave); a QRS when its net deflection is `REVERSAL_QRS_MV`
  (0.15 mV) or more below zero. Requiring the P wave keeps right axis deviation (QRS inverted in I,
  P upright) from raising it;
  dextrocardia looks like LA/RA reversal and is named with it. Not checked: LA/LL reversal (its
  only sign, a P wave taller in I than in II, is common in correct records) and reversals with the
  right-leg or chest electrodes. Without P waves (atrial fibrillation), without a distinct QRS or
  with fewer than `REVERSAL_MIN_BEATS` (4) beats there is no check, and `unchecked` says why. On
  the sample files with their limb electrodes swapped by computation, about 60 % of the records
  with P waves are caught; none of the records as recorded is flagged.

Flat and not-recorded leads come from `prepare`'s lead status (`preprocess.FLAT_PEAK_TO_PEAK_MV`)
and are not judged again. Derived limb leads (III, aVR, aVL, aVF computed from I and II, or any of
them from two of I, II, III) are not judged either: each is a combination of both recorded limb
leads, so it carries their flags. A clipped lead I leaves no rail in III = II - I to find, and one
bad electrode is reported once, where it is.

Each flag says whether it is severe: clipped, noise and reversal are; wander and mains are marks
only (`adequacy` says why and what a severe flag does). numpy only, on `prepare`'s path for every
record: about 5 ms for 10 s of 12 leads at 500 Hz.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .io.record import ECGRecord

CLIP_MIN_S = 0.1  # s at the rail in all; a QRS top is at its peak for a few ms only
NOISE_BAND_HZ = (40.0, 250.0)  # above the bulk of the ECG; 250 Hz is the limit of ECG-FM's 500 Hz input
NOISE_MIN_MV = 0.03  # noise level (RMS) below which no lead is called noisy, whatever its amplitude
NOISE_RATIO = 0.05  # noise level as a fraction of the lead's ECG amplitude (peak to peak)
WANDER_WINDOW_S = 1.0  # about one beat: the mean over it keeps the baseline, not the beat
WANDER_MIN_MV = 0.5  # baseline movement, peak to peak
WANDER_RATIO = 0.5  # baseline movement as a fraction of the lead's ECG amplitude
MAINS_FREQUENCIES_HZ = (50.0, 60.0)
MAINS_HALF_WIDTH_HZ = 1.0  # mains frequency drifts by a few tenths of a hertz
MAINS_MIN_MV = 0.03  # amplitude of the hum (0.06 mV peak to peak, 0.6 mm at 10 mm/mV)
MAINS_RATIO = 0.02  # hum amplitude as a fraction of the lead's ECG amplitude
MAINS_PEAK_RATIO = 10.0  # power at the mains frequency over the spectrum around it
MIN_FS = 50.0  # Hz; below this no QRS or P wave can be told apart, nor any of the bands above
REVERSAL_MIN_BEATS = 4
REVERSAL_P_MV = 0.04  # the smallest P deflection taken as a P wave
REVERSAL_QRS_MV = 0.15  # the smallest net QRS deflection taken as a direction
REVERSAL_DOMINANCE = 2.0  # a P wave's one direction over the other, to call it upright or inverted
REVERSAL_P_SIGNIFICANCE = 3.0  # the P deflection over the median beat's own uncertainty there

CLIPPED, NOISE, WANDER, MAINS, REVERSAL = "clipped", "noise", "baseline_wander", "mains", "reversal"
_MARKS = {CLIPPED: "clipped", NOISE: "noise", WANDER: "wander", REVERSAL: "reversed?"}
_LIMB = ("I", "II", "III")

# Median-beat windows, in s from the QRS's centre (the peak of the leads' summed slope energy).
_BEAT_S = (-0.40, 0.20)
_P_BEFORE_ONSET_S = (0.24, 0.02)  # the P wave is looked for between these times before the QRS onset
_QRS_S = 0.12  # the QRS is read over this time from its onset
_ONSET_SLOPE = 0.15  # of the steepest summed slope: below it, the median beat is quiet (no QRS yet)


@dataclass(frozen=True)
class QualityFlag:
    """One problem found in the signal: which leads it affects and, in one sentence, what was
    measured against which threshold."""

    kind: str  # clipped | noise | baseline_wander | mains | reversal
    leads: tuple[str, ...]
    detail: str
    mark: str  # the short mark by the lead's label on the plot
    severe: bool  # whether it makes the input 'limited' (adequacy)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "leads": list(self.leads), "detail": self.detail, "severe": self.severe}


@dataclass(frozen=True)
class SignalQuality:
    """The flags found in one record's window, and the checks that could not be made, with why."""

    flags: tuple[QualityFlag, ...] = ()
    assessed: tuple[str, ...] = ()  # the leads judged on their own signal
    unchecked: dict[str, str] = field(default_factory=dict)  # check -> why it was not made

    @property
    def severe(self) -> tuple[QualityFlag, ...]:
        return tuple(flag for flag in self.flags if flag.severe)

    def to_dict(self) -> dict:
        return {"flags": [flag.to_dict() for flag in self.flags], "lead_marks": self.lead_marks(),
                "assessed_leads": list(self.assessed), "unchecked": dict(self.unchecked)}

    def lead_marks(self) -> dict[str, str]:
        """Lead -> its short marks ("noise", "clipped", "wander", "50 Hz", "reversed?"), comma-joined."""
        marks: dict[str, list[str]] = {}
        for flag in self.flags:
            for lead in flag.leads:
                if flag.mark not in marks.setdefault(lead, []):
                    marks[lead].append(flag.mark)
        return {lead: ", ".join(found) for lead, found in marks.items()}

    def sentences(self) -> list[str]:
        return [flag.detail for flag in self.flags]


def assess(record: ECGRecord, lead_status: dict[str, str]) -> SignalQuality:
    """The quality flags of the record's window, as read (before resampling and standardisation).

    `lead_status` is `prepare`'s (a lead it does not name counts as recorded): flat and zero-filled
    leads are skipped, derived ones carry the flags of the recorded limb leads they were computed from.
    """
    fs = float(record.fs)
    status = {lead: lead_status.get(lead, "recorded") for lead in record.leads}
    judged = [lead for lead in record.leads if status[lead] == "recorded"
              and np.isfinite(record.signal[record.leads.index(lead)]).all()]
    if not judged:
        return SignalQuality()
    if fs < MIN_FS or record.signal.shape[1] < fs:
        why = (f"sampled at {fs:g} Hz, below the {MIN_FS:g} Hz these checks need" if fs < MIN_FS
               else "shorter than the 1 s these checks need")
        return SignalQuality(unchecked={"signal quality": why})
    m = _Measures(judged, record.signal[[record.leads.index(lead) for lead in judged]].astype(np.float64), fs)
    derived = [lead for lead in record.leads if status[lead] == "derived"]
    sources = [lead for lead in _LIMB if lead in judged]

    def flag(kind: str, found: list[tuple[str, str]], head: str, rule: str, mark: str, severe: bool):
        """One flag for the leads `found` (lead, what was measured there); derived limb leads inherit it."""
        leads = [lead for lead, _ in found]
        heirs = derived if any(lead in sources for lead in leads) else []
        listed = ", ".join(f"{lead} {measured}" for lead, measured in found)
        detail = f"{head}: lead{'s' if len(found) > 1 else ''} {listed}; {rule}."
        if heirs:
            detail += f" {', '.join(heirs)}, computed from {' and '.join(sources)}, carry it too."
        return QualityFlag(kind, tuple(leads + heirs), detail, mark, severe)

    flags: list[QualityFlag] = []
    unchecked: dict[str, str] = {}
    clipped = [(judged[k], f"at its {side} for {held:.2f} s") for k, side, held in m.clipped]
    if clipped:
        flags.append(flag(CLIPPED, clipped, "Clipped (beyond the recorder's range)",
                          f"flagged from {CLIP_MIN_S:g} s held at the extreme value", _MARKS[CLIPPED], True))

    if m.noise is None:
        unchecked[NOISE] = f"sampled at {fs:g} Hz: nothing above {NOISE_BAND_HZ[0]:g} Hz to measure"
    else:
        noisy = [(lead, f"{n:.3f} mV RMS ({_relative(n, a)})")
                 for lead, n, a in zip(judged, m.noise, m.amplitude) if n >= NOISE_MIN_MV and n >= NOISE_RATIO * a]
        if noisy:
            band = f"{NOISE_BAND_HZ[0]:g}–{min(NOISE_BAND_HZ[1], fs / 2):g} Hz"
            flags.append(flag(NOISE, noisy, f"High-frequency noise ({band}, between the beats)",
                              f"flagged from {NOISE_MIN_MV:g} mV and {100 * NOISE_RATIO:g} % of the lead's "
                              "amplitude", _MARKS[NOISE], True))

    wandering = [(lead, f"{w:.2f} mV ({_relative(w, a, percent=False)})")
                 for lead, w, a in zip(judged, m.wander, m.amplitude) if w >= WANDER_MIN_MV and w >= WANDER_RATIO * a]
    if wandering:
        flags.append(flag(WANDER, wandering, "Baseline wander (peak to peak)",
                          f"flagged from {WANDER_MIN_MV:g} mV and {WANDER_RATIO:g} x the lead's amplitude",
                          _MARKS[WANDER], False))

    for f0, amplitudes, peaks in m.mains:
        if amplitudes is None:
            unchecked[f"{MAINS} {f0:g} Hz"] = f"sampled at {fs:g} Hz: {f0:g} Hz is too close to its {fs / 2:g} Hz limit"
            continue
        hum = [(lead, f"{h:.3f} mV ({_relative(h, a)}, {r:.0f} x the spectrum around it)")
               for lead, h, r, a in zip(judged, amplitudes, peaks, m.amplitude)
               if h >= MAINS_MIN_MV and h >= MAINS_RATIO * a and r >= MAINS_PEAK_RATIO]
        if hum:
            flags.append(flag(MAINS, hum, f"{f0:g} Hz mains interference (amplitude)",
                              f"flagged from {MAINS_MIN_MV:g} mV, {100 * MAINS_RATIO:g} % of the lead's amplitude "
                              f"and {MAINS_PEAK_RATIO:g} x the spectrum around it", f"{f0:g} Hz", False))

    reversal, why_not = _reversal(record, status, m)
    if reversal is not None:
        flags.append(reversal)
    elif why_not:
        unchecked[REVERSAL] = why_not
    return SignalQuality(tuple(flags), tuple(judged), unchecked)


def _relative(value: float, amplitude: float, percent: bool = True) -> str:
    """A measurement set against the lead's ECG amplitude, in words."""
    if amplitude <= 0:
        return "the lead has no ECG below 40 Hz"
    share = f"{100 * value / amplitude:.0f} % of" if percent else f"{value / amplitude:.1f} x"
    return f"{share} its {amplitude:.2f} mV"


class _Measures:
    """The per-lead numbers every check reads, computed once (numpy only)."""

    def __init__(self, leads: list[str], x: np.ndarray, fs: float):
        n = x.shape[1]
        self.leads, self.fs = leads, fs
        baseline, spectrum, freqs = _drift_and_spectrum(x, fs)
        self.wander = np.ptp(baseline, axis=1)
        # The ECG without drift or high-frequency noise: its amplitude is what noise is set against.
        self.smooth = _below(spectrum, freqs, NOISE_BAND_HZ[0], n)
        self.amplitude = np.ptp(self.smooth, axis=1)
        band = (freqs >= NOISE_BAND_HZ[0]) & (freqs <= NOISE_BAND_HZ[1])
        if band.any():
            high = np.fft.irfft(spectrum * band, n=n, axis=1)
            self.noise = 1.4826 * _middle(np.abs(high), axis=1)
        else:
            self.noise = None
        power = np.abs(spectrum) ** 2
        self.mains = [(f0, *_hum(power, freqs, f0, n)) for f0 in MAINS_FREQUENCIES_HZ]
        self.clipped = _rails(x, fs)


def _middle(values: np.ndarray, axis: int) -> np.ndarray:
    """The median, taking the upper of the two middle values of an even count (one partition, not two)."""
    k = values.shape[axis] // 2
    return np.take(np.partition(values, k, axis=axis), k, axis=axis)


def _drift_and_spectrum(x: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline (moving mean over WANDER_WINDOW_S, twice), and the spectrum of what is left.

    The baseline moves below 1 Hz, so it is computed on 10 ms block means and interpolated back:
    the same curve for a tenth of the work at 1 kHz."""
    n = x.shape[1]
    block = max(1, int(fs // 100))
    count = n // block
    coarse = x[:, :count * block].reshape(len(x), count, block).mean(axis=2)
    window = max(1, int(round(WANDER_WINDOW_S * fs / block)))
    coarse = _moving_mean(_moving_mean(coarse, window), window)
    centres = (np.arange(count) + 0.5) * block - 0.5
    baseline = np.stack([np.interp(np.arange(n), centres, row) for row in coarse])
    return baseline, np.fft.rfft(x - baseline, axis=1), np.fft.rfftfreq(n, 1 / fs)


def _below(spectrum: np.ndarray, freqs: np.ndarray, cutoff_hz: float, n: int) -> np.ndarray:
    return np.fft.irfft(spectrum * (freqs < cutoff_hz), n=n, axis=-1)


def _moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean over `window` samples along the last axis, shrinking at the edges."""
    n = x.shape[-1]
    half = min(window // 2, (n - 1) // 2)
    total = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(x, axis=-1)], axis=-1)
    width = 2 * half + 1
    grow = np.arange(half + 1, width)  # samples the window holds near either edge
    return np.concatenate([total[..., half + 1:width] / grow,
                           (total[..., width:] - total[..., :n + 1 - width]) / width,
                           (total[..., -1:] - total[..., n - width + 1:n - half]) / grow[::-1]], axis=-1)


def _hum(power: np.ndarray, freqs: np.ndarray, f0: float, n: int):
    """Amplitude (mV) at f0 above the local spectrum, and how far its power stands above it."""
    offset = np.abs(freqs - f0)
    peak = offset <= MAINS_HALF_WIDTH_HZ
    around = (offset > 2.0) & (offset <= 10.0)
    if f0 + MAINS_HALF_WIDTH_HZ >= freqs[-1] or around.sum() < 4:
        return None, None
    background = _middle(power[:, around], axis=1) * peak.sum()
    at_peak = power[:, peak].sum(axis=1)
    # A sinusoid of amplitude A over n samples puts n^2 A^2 / 4 into the positive-frequency bins.
    amplitude = 2 * np.sqrt(np.maximum(at_peak - background, 0.0)) / n
    return amplitude, at_peak / np.maximum(background, 1e-30)


def _rails(x: np.ndarray, fs: float) -> list[tuple[int, str, float]]:
    """The clipped leads: (row, "maximum" or "minimum", seconds held there; the longer side when
    both), counting the samples at the extreme value next to another one there (a single touch is a
    peak, not a rail)."""
    found: dict[int, tuple[int, str, float]] = {}
    for side, value in (("maximum", x.max(axis=1, keepdims=True)), ("minimum", x.min(axis=1, keepdims=True))):
        at = np.abs(x - value) <= 1e-6 * np.maximum(1.0, np.abs(value))
        for k in np.flatnonzero(at.sum(axis=1) >= CLIP_MIN_S * fs):  # only these can be clipped
            pairs = at[k, 1:] & at[k, :-1]
            counted = np.zeros(x.shape[1], dtype=bool)
            counted[1:] |= pairs
            counted[:-1] |= pairs
            held = np.count_nonzero(counted) / fs
            if held >= CLIP_MIN_S and held > found.get(int(k), (0, "", 0.0))[2]:
                found[int(k)] = (int(k), side, held)
    return [found[k] for k in sorted(found)]


def _beats(smooth: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of the QRS complexes, in time order: the highest peaks of the leads' summed,
    normalised slope energy, no two within 0.25 s."""
    if smooth.shape[1] < 4:
        return np.zeros(0, dtype=int)
    slope = np.diff(smooth, axis=1)
    scale = np.abs(slope).mean(axis=1, keepdims=True)
    energy = _moving_mean(((slope / np.maximum(scale, 1e-12)) ** 2).sum(axis=0), max(1, int(round(0.1 * fs))))
    rising, falling = energy[1:-1] > energy[:-2], energy[1:-1] >= energy[2:]
    candidates = np.flatnonzero(rising & falling & (energy[1:-1] > 0.3 * np.percentile(energy, 99))) + 1
    refractory = int(0.25 * fs)
    taken = np.zeros(energy.size, dtype=bool)  # within the refractory time of a peak already kept
    kept = []
    for k in candidates[np.argsort(-energy[candidates], kind="stable")]:
        if not taken[k]:
            kept.append(k)
            taken[max(k - refractory, 0):k + refractory + 1] = True
    return np.sort(np.array(kept, dtype=int))


def _reversal(record: ECGRecord, status: dict[str, str], m: _Measures) -> tuple[QualityFlag | None, str]:
    """A suspected limb-electrode reversal from the median beat of I, II, III and aVR; else why none
    could be judged ("" when it was judged and none is suspected)."""
    usable = {lead for lead, how in status.items() if how in ("recorded", "derived")}
    if not {"I", "II", "III", "aVR"} <= usable:
        return None, "needs leads I, II, III and aVR with signal"
    fs, n = m.fs, record.signal.shape[1]
    lo, hi = int(round(_BEAT_S[0] * fs)), int(round(_BEAT_S[1] * fs))
    peaks = _beats(m.smooth, fs)
    peaks = peaks[(peaks + lo >= 0) & (peaks + hi < n)]
    if len(peaks) < REVERSAL_MIN_BEATS:
        return None, f"fewer than {REVERSAL_MIN_BEATS} beats found in the window"
    at = peaks[:, None] + np.arange(lo, hi + 1)
    onset = _qrs_onset(_middle(m.smooth[:, at], axis=1), -lo, fs)
    if onset is None:
        return None, "no distinct QRS complex in the median beat"
    # The median beats of I, II, III and aVR, smoothed as the judged leads were (derived ones too).
    limb = ("I", "II", "III", "aVR")
    smooth = {lead: row for lead, row in zip(m.leads, m.smooth) if lead in limb}
    others = [lead for lead in limb if lead not in smooth]
    if others:
        rows = record.signal[[record.leads.index(lead) for lead in others]].astype(np.float64)
        _, spectrum, freqs = _drift_and_spectrum(rows, fs)
        smooth.update(zip(others, _below(spectrum, freqs, NOISE_BAND_HZ[0], n)))
    beats = np.stack([smooth[lead] for lead in limb])[:, at]  # [4, beats, samples]
    beat = _middle(beats, axis=1)
    # How far the median beat itself may be off: 1.86 x the beats' median absolute deviation / sqrt(beats)
    # is the standard error of a median for Gaussian scatter. Artefacts scatter the beats widely.
    error = 1.86 * _middle(np.abs(beats - beat[:, None]), axis=1) / np.sqrt(len(peaks))

    def mean_at(s_before: float) -> np.ndarray:
        k = onset - int(round(s_before * fs))
        return beat[:, max(k - 2, 0):k + 3].mean(axis=1)

    # The P wave against the chord from before it to the PR segment; the QRS against the PR segment.
    a, b = onset - int(round(_P_BEFORE_ONSET_S[0] * fs)), onset - int(round(_P_BEFORE_ONSET_S[1] * fs))
    if a < 2:
        return None, "the beats are too close together to find their P waves"
    first, last = mean_at(_P_BEFORE_ONSET_S[0]), mean_at(_P_BEFORE_ONSET_S[1])
    chord = first[:, None] + (last - first)[:, None] * np.linspace(0, 1, b - a + 1)
    p_wave = beat[:, a:b + 1] - chord
    p_up, p_down = p_wave.max(axis=1), -p_wave.min(axis=1)
    p_error = error[:, a:b + 1].mean(axis=1)
    qrs = beat[:, onset:onset + int(round(_QRS_S * fs)) + 1] - last[:, None]
    qrs_net = qrs.max(axis=1) + qrs.min(axis=1)
    if max(p_up.max(), p_down.max()) < REVERSAL_P_MV:
        return None, f"no P wave of {REVERSAL_P_MV:g} mV in leads I, II, III or aVR (atrial fibrillation?)"
    inverted = ((p_down >= REVERSAL_P_MV) & (p_down >= REVERSAL_DOMINANCE * p_up)
                & (p_down >= REVERSAL_P_SIGNIFICANCE * p_error) & (qrs_net <= -REVERSAL_QRS_MV))
    i, ii, iii, avr = range(4)
    if qrs_net[avr] <= -REVERSAL_QRS_MV:  # inverted, as in a correctly placed ECG
        return None, ""
    # RA/LL inverts II (and shows -I in III); LA/RA inverts I and shows II in III, which stays upright.
    if inverted[ii] and qrs_net[iii] < REVERSAL_QRS_MV:
        lead, electrodes, leads = ii, "RA/LL", ("I", "II", "III", "aVR", "aVF")
    elif inverted[i]:
        lead, electrodes, leads = i, "LA/RA", ("I", "II", "III", "aVR", "aVL")
    else:
        return None, ""
    name = ("I", "II")[lead]
    detail = (f"Suspected {electrodes} electrode reversal: in lead {name} the P wave ({-p_down[lead]:+.2f} mV) "
              f"and the QRS ({qrs_net[lead]:+.2f} mV net) are inverted, while the QRS in aVR is "
              f"not ({qrs_net[avr]:+.2f} mV net)" + ("; dextrocardia looks the same" if electrodes == "LA/RA" else "")
              + f" (a P wave counts as inverted from {REVERSAL_P_MV:g} mV down, a QRS from "
              f"{REVERSAL_QRS_MV:g} mV net).")
    return QualityFlag(REVERSAL, leads, detail, _MARKS[REVERSAL], True), ""


def _qrs_onset(beats: np.ndarray, centre: int, fs: float) -> int | None:
    """The QRS onset in the median beats: the end of the last quiet stretch (summed slope, each lead
    scaled to its own steepest, below _ONSET_SLOPE of the peak for 20 ms) within 0.15 s before the
    steepest point. None when there is none: no distinct QRS complex to read."""
    slope = np.abs(np.diff(beats, axis=1))
    slope = (slope / np.maximum(slope.max(axis=1, keepdims=True), 1e-12)).sum(axis=0)
    near = int(round(0.08 * fs))
    peak = centre - near + int(np.argmax(slope[centre - near:centre + near]))
    quiet = np.concatenate([[0], np.cumsum(slope < _ONSET_SLOPE * slope[peak])])
    run = max(2, int(round(0.02 * fs)))
    for end in range(peak, max(peak - int(round(0.15 * fs)), run - 1), -1):
        if quiet[end + 1] - quiet[end + 1 - run] == run:
            return end
    return None
