"""ECG-FM's saliency: where in each 5 s segment the network's attention concentrated, as its authors compute it.

The procedure is bowang-lab/ECG-FM's, in two steps: `scripts/saliency.py` (also the quickstart's
`infer`) takes the last transformer layer's attention, averaged over heads, and its maximum over
the keys, one value per query frame (156 for a 5 s segment); `notebooks/saliency.ipynb`'s
`prep_saliency_values` resamples that onto the segment with `scipy.ndimage.map_coordinates` at its
defaults (cubic spline, order 3, mode "constant") at `linspace(0, frames - 1, samples - 1)`, and
scales the result to [0, 1] by its minimum and maximum. There are `samples - 1` values because the
notebook colours the line from each sample to the next: value k belongs to the interval between
samples k and k + 1 at 500 Hz.

It is not an explanation of any finding: attention says which frames the network weighed, not why
it predicted what it did. scipy.ndimage is imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import ECGFMError
from .preprocess import SAMPLE_RATE

if TYPE_CHECKING:  # pragma: no cover
    from .predict import Prediction

SALIENCY_NOTE = ("Saliency is ECG-FM's last-layer attention, scaled to 0–1 within each 5 s segment: it shows where "
                 "the network's attention concentrated, not why any finding was predicted.")

# Value k of a segment sits at the middle of the interval between samples k and k + 1.
SALIENCY_OFFSET_S = 0.5 / SAMPLE_RATE


def segment_saliency(attention: np.ndarray, n_samples: int, valid_samples: int | None = None) -> np.ndarray:
    """One segment's saliency, float32 [n_samples - 1], from its last-layer attention [frames, frames].

    A padded segment (a record shorter than 5 s; `valid_samples` real samples, then padding) keeps
    the authors' frame-to-sample grid, but the intervals that reach into the padding get NaN (there
    is no ECG there to have looked at) and the 0–1 scaling uses the real intervals only, so the
    padded frames' query rows, which the network still computes, cannot set the scale.
    """
    from scipy.ndimage import map_coordinates

    per_frame = np.asarray(attention, dtype=np.float32).max(axis=1)  # max over keys, per query frame
    grid = np.linspace(0, per_frame.size - 1, n_samples - 1)
    values = map_coordinates(per_frame, [grid]).astype(np.float64)
    if valid_samples is not None:
        values[max(valid_samples - 1, 0):] = np.nan
    low, high = np.nanmin(values), np.nanmax(values)
    if not high > low:  # attention spread evenly: no place stands out
        return np.where(np.isnan(values), np.nan, 0.0).astype(np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def saliency_track(prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
    """A prediction's per-segment saliency as one series on the recording's clock: (times_s, values).

    The series runs at 500 Hz from the first segment's start to the last one's end; time no segment
    covers is NaN (drawn as nothing). Where segments overlap, the larger value is kept.
    """
    if prediction.saliency is None or not prediction.segments:
        return np.zeros(0), np.zeros(0, dtype=np.float32)
    start = min(segment.start_s for segment in prediction.segments)
    offsets = [int(round((segment.start_s - start) * SAMPLE_RATE)) for segment in prediction.segments]
    width = prediction.saliency.shape[1]
    values = np.full(max(offsets) + width, np.nan, dtype=np.float32)
    for offset, row in zip(offsets, prediction.saliency):
        values[offset:offset + width] = np.fmax(values[offset:offset + width], row)
    return start + SALIENCY_OFFSET_S + np.arange(values.size) / SAMPLE_RATE, values


def check_rate(rate_hz: float) -> int:
    """How many 500 Hz values make one at `rate_hz`; a rate that does not divide 500 Hz is refused."""
    factor = SAMPLE_RATE / rate_hz if rate_hz > 0 else 0.0
    if factor < 1 or abs(factor - round(factor)) > 1e-9:
        raise ECGFMError(f"A saliency rate must divide {SAMPLE_RATE:g} Hz (500, 250, 100, 50, 10 ...); "
                         f"{rate_hz:g} Hz does not.")
    return int(round(factor))


def downsampled(per_segment: np.ndarray, rate_hz: float) -> np.ndarray:
    """Each segment's saliency at `rate_hz`: the mean of each run of 500 Hz values (the last run may
    be shorter); a run all over padding stays NaN. Value k then sits at the middle of its run."""
    factor = check_rate(rate_hz)
    if factor == 1:
        return per_segment
    segments, width = per_segment.shape
    runs = -(-width // factor)
    padded = np.full((segments, runs * factor), np.nan, dtype=np.float32)
    padded[:, :width] = per_segment
    runs_of = padded.reshape(segments, runs, factor)
    counts = np.sum(~np.isnan(runs_of), axis=2)
    sums = np.nansum(runs_of, axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):  # a run of padding only: 0/0, NaN as it should be
        return (sums / counts).astype(np.float32)
