"""ECG-FM's input pipeline: from an `ECGRecord` to the model's [S, 12, 2500] segments.

The core is exactly the pipeline of ECG-FM's quickstart (bowang-lab/ECG-FM,
notebooks/infer_quickstart.ipynb), built on ecg-transform's transforms:

    ReorderLeads(I, II, III, aVR, aVL, aVF, V1-V6) -> LinearResample(500 Hz)
    -> HandleConstantLeads('zero') -> Standardize() -> SegmentNonoverlapping(2500)

Resampling, the one step whose rounding is delicate, is ecg-transform's own `LinearResample`; it
and scipy.interpolate under it (~0.5 s, ~40 MB) are imported only when a record is not already at
500 Hz. The other steps are a few numpy lines each, written as ecg-transform writes them (same
operations, same order, same dtypes), so that a 500 Hz record never pays for that import;
tests/test_preprocess.py holds them equal to the quickstart run with ecg-transform (bit for bit on
this machine; within one float32 step, 2e-6, where another CPU rounds a sum differently).

What the quickstart does not cover is handled here, never silently: limb leads missing from the
file are derived from I and II (a warning); a lead that cannot be derived is zero-filled, and a lead
held (nearly) constant is zeroed; a record shorter than 5 s is standardized over its real samples and
then zero-padded to 2500 samples with a padding mask; a tail dropped by segmentation is mentioned.
Whatever makes the input differ from a complete 12-lead ECG is stated once, in `adequacy`
(see adequacy.py), not repeated as warnings; the signal's quality per lead (`quality.py`) is judged
here too, on the window as read.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .adequacy import NO_SIGNAL, Adequacy, judge, unusable
from .errors import ECGFMError
from .io.leads import derive_missing_limb_leads
from .io.record import STANDARD_LEADS, ECGRecord
from .quality import SignalQuality, assess

SAMPLE_RATE = 500  # Hz, ECG-FM's input rate
SEGMENT_SECONDS = 5
SEGMENT_SAMPLES = SAMPLE_RATE * SEGMENT_SECONDS  # 2500
LEAD_ORDER: list[str] = list(STANDARD_LEADS)

# A dropped tail longer than this is worth telling the user about.
TAIL_WARNING_S = 0.5
# Below this there is not even one full heartbeat to look at; padding it to 5 s would be pretending.
MIN_DURATION_S = 1.0
# A lead whose whole window spans less than this carries no ECG (a QRS is ~0.5-2 mV; 20 µV is a
# few steps of a typical ECG ADC).
FLAT_PEAK_TO_PEAK_MV = 0.02


@dataclass
class PreparedECG:
    """The model's input for one record, with what was done to get it."""

    segments: np.ndarray  # float32 [S, 12, 2500]
    padding_mask: np.ndarray | None  # bool [S, 2500], True = padded; None when nothing is padded
    spans_s: list[tuple[float, float]]  # (start, end) of each segment in the original recording, s
    lead_status: dict[str, str]  # lead -> "recorded" | "derived" | "flat" | "zero-filled"
    warnings: list[str]
    adequacy: Adequacy
    quality: SignalQuality | None = None  # None when there is no signal to judge (unusable input)


def _reorder(signal: np.ndarray, present: list[str]) -> np.ndarray:
    """ecg-transform's ReorderLeads(missing_lead_strategy="zero"): the 12 leads in ECG-FM's order, in
    the signal's own dtype. The quickstart raises on a missing lead; here a lead still missing after
    limb-lead derivation is zero-filled, and the adequacy says so."""
    if present == LEAD_ORDER:
        return signal
    ordered = np.full((len(LEAD_ORDER), signal.shape[1]), 0, dtype=signal.dtype)
    for row, lead in enumerate(LEAD_ORDER):
        if lead in present:
            ordered[row] = signal[present.index(lead)]
    return ordered


def _resample(signal: np.ndarray, fs: float) -> np.ndarray:
    """ecg-transform's LinearResample to 500 Hz, itself (see the module's docstring)."""
    if fs == SAMPLE_RATE:
        return signal
    from ecg_transform.inp import ECGInput, ECGMetadata
    from ecg_transform.t.common import LinearResample

    n = signal.shape[1]
    meta = ECGMetadata(sample_rate=fs, num_samples=n, lead_names=LEAD_ORDER, unit="mV",
                       input_start=0, input_end=n)
    return LinearResample(desired_sample_rate=SAMPLE_RATE)([ECGInput(signal, meta)])[0].signal


def _standardize(signal: np.ndarray) -> np.ndarray:
    """ecg-transform's HandleConstantLeads("zero") then Standardize(): exactly constant leads are
    zero, every other lead has mean 0 and standard deviation 1 (+1e-8 against division by zero)."""
    constant = np.std(signal, axis=1) == 0
    if np.any(constant):
        signal = signal.copy()
        signal[constant, :] = 0
    centered = signal - np.mean(signal, axis=1, keepdims=True)
    scaled = centered / (np.std(centered, axis=1, keepdims=True) + 1e-8)
    scaled[constant, :] = 0  # Standardize's own constant-lead step: the same leads, zero by now
    return scaled


def _plural(items: list[str], one: str, many: str) -> str:
    return f"{one} {items[0]}" if len(items) == 1 else f"{many} {', '.join(items)}"


def _unusable(record: ECGRecord, warnings: list[str], reason: str,
              status: dict[str, str] | None = None) -> PreparedECG:
    """Nothing for the model: no segments, and the reason the result will give instead."""
    status = status or {lead: "recorded" if lead in record.leads else "zero-filled" for lead in LEAD_ORDER}
    return PreparedECG(segments=np.zeros((0, len(LEAD_ORDER), SEGMENT_SAMPLES), dtype=np.float32),
                       padding_mask=None, spans_s=[], lead_status=status, warnings=warnings,
                       adequacy=unusable(reason))


def prepare(record: ECGRecord) -> PreparedECG:
    """Turn a record into ECG-FM's input: 12 leads, 500 Hz, standardized, 5 s segments.

    Never raises for a record the model should not judge: its `adequacy` says why instead.
    """
    warnings = list(record.warnings)
    n_before = len(record.warnings)

    # Limb leads the file did not store are exact combinations of I and II.
    record = derive_missing_limb_leads(record)
    warnings.extend(record.warnings[n_before:])

    present = [lead for lead in LEAD_ORDER if lead in record.leads]
    if not present:
        others = [*record.leads, *record.extra_leads]
        return _unusable(record, warnings, "none of the 12 standard leads (I, II, III, aVR, aVL, aVF, "
                                           f"V1-V6) is in the recording (it has {', '.join(others) or 'none'})")
    rows = [record.leads.index(lead) for lead in present]
    signal = record.signal[rows]
    bad = [lead for lead, row in zip(present, signal) if not np.isfinite(row).all()]
    if bad:
        return _unusable(record, warnings, f"{_plural(bad, 'lead', 'leads')} still contain"
                                           f"{'s' if len(bad) == 1 else ''} missing (NaN) or infinite samples")
    whole = record.start_s == 0 and record.duration_s >= record.total_duration_s - 1 / record.fs
    span = ("the recording" if whole else
            f"the window analysed ({record.start_s:.1f}–{record.start_s + record.duration_s:.1f} s)")
    if record.duration_s < MIN_DURATION_S:
        return _unusable(record, warnings, f"{span} lasts {record.duration_s:.2f} s; at least "
                                           f"{MIN_DURATION_S:g} s is needed")

    lead_status = {}
    for lead in LEAD_ORDER:
        if lead not in record.leads or lead in record.zero_leads:
            lead_status[lead] = "zero-filled"
        elif lead in record.derived_leads:
            lead_status[lead] = "derived"
        else:
            lead_status[lead] = "recorded"
    # A lead held (nearly) constant carries no ECG: a disconnected electrode, or a cart reporting
    # an offset. Standardizing it would blow its noise up into a signal, so it is zeroed, as
    # ECG-FM's pipeline does for exactly constant leads.
    flat = [lead for lead, row in zip(present, signal)
            if lead_status[lead] != "zero-filled" and np.ptp(row) < FLAT_PEAK_TO_PEAK_MV]
    if flat:
        signal = signal.copy()
        for lead in flat:
            signal[present.index(lead)] = 0.0
            lead_status[lead] = "flat"
        warnings.append(f"{_plural(flat, 'Lead', 'Leads')} {'is' if len(flat) == 1 else 'are'} flat "
                        f"(less than {FLAT_PEAK_TO_PEAK_MV * 1000:g} µV peak to peak: no signal) and "
                        f"{'was' if len(flat) == 1 else 'were'} set to zero.")
    if all(status in ("flat", "zero-filled") for status in lead_status.values()):
        return _unusable(record, warnings, NO_SIGNAL, lead_status)
    # Judged on the window as read, before resampling and standardisation change what it looks like.
    quality = assess(record, lead_status)

    # float32 as read, like the quickstart's .mat `feats`: the steps compute in the dtype they are
    # given (resampling returns float64), and the result is cast to float32 at the end, as the
    # quickstart does with `torch.from_numpy(sample.out).float()`.
    standardized = _standardize(_resample(_reorder(signal, present), record.fs))

    n_res = standardized.shape[1]
    start = record.start_s
    padded_s = None
    if n_res < SEGMENT_SAMPLES:
        # Standardized over the real samples above; only now padded, with a mask for the model.
        segments = np.pad(standardized, ((0, 0), (0, SEGMENT_SAMPLES - n_res)), mode="constant",
                          constant_values=0.0)[None]
        mask = np.zeros((1, SEGMENT_SAMPLES), dtype=bool)
        mask[0, n_res:] = True
        spans = [(start, start + record.duration_s)]
        padded_s = record.duration_s
    else:
        count = n_res // SEGMENT_SAMPLES  # non-overlapping; the tail is dropped
        segments = np.stack([standardized[:, i * SEGMENT_SAMPLES:(i + 1) * SEGMENT_SAMPLES]
                             for i in range(count)])
        mask = None
        spans = [(start + i * SEGMENT_SECONDS, start + (i + 1) * SEGMENT_SECONDS) for i in range(count)]
        tail_s = (n_res % SEGMENT_SAMPLES) / SAMPLE_RATE
        if tail_s > TAIL_WARNING_S:
            covered = count * SEGMENT_SECONDS
            warnings.append(f"ECG-FM reads whole 5 s segments: the last {tail_s:.1f} s of "
                            + (f"the {record.duration_s:.1f} s recording " if whole else f"{span} ")
                            + f"({start + covered:.1f}–{start + record.duration_s:.1f} s) was not analysed.")

    segments = segments.astype(np.float32)
    if not np.isfinite(segments).all():  # cannot happen after the checks above; never feed NaN
        raise ECGFMError(f"{record.name}: preprocessing produced non-finite values.")
    return PreparedECG(segments=segments, padding_mask=mask, spans_s=spans, lead_status=lead_status,
                       warnings=warnings, adequacy=judge(lead_status, padded_s=padded_s, fs=record.fs,
                                                         quality=quality), quality=quality)
