"""The one in-memory form of an ECG that every reader returns and every consumer takes."""
from __future__ import annotations

import re
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import ECGReadError

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF",
                                   "V1", "V2", "V3", "V4", "V5", "V6")
# Samples of all signals together that one read may hold (~320 MB as float64): a header or array
# claiming more is refused before anything is allocated.
MAX_VALUES = 40_000_000


def window_note(start_s: float, end_s: float, total_s: float) -> str:
    """The warning naming the part of a recording that was used, in one wording everywhere, so
    that cutting a window again replaces it (`_WINDOW_NOTE`) and no other warning."""
    return f"Used {start_s:.1f}–{end_s:.1f} s of the {total_s:.1f} s recording."


_WINDOW_NOTE = re.compile(r"Used [\d.]+–[\d.]+ s of the [\d.]+ s recording\.")


_WARNINGS_LOCK = threading.RLock()


@contextmanager
def decoder_warnings_silenced():
    """A third-party decoder's warnings can quote the file (header text, a patient's name) and say
    nothing a person needs (the reader checks and says what matters), so they are never passed on.
    `warnings.catch_warnings` swaps one process-wide list of filters, so concurrent readers (the
    app's request threads) take turns here: interleaved, one would restore the filters under the
    other and let its warnings out."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_error(name: str, what: str) -> ECGReadError:
    """The one form every reading failure takes: the file's name, then what is wrong with it."""
    return ECGReadError(f"{name}: {what}")


def check_file_size(path: Path, limit_bytes: int, what: str) -> int:
    """The file's size, refusing an empty one or one too large for its format before it is read."""
    try:
        size = path.stat().st_size
    except OSError:
        raise read_error(path.name, "the file cannot be opened.") from None
    if size > limit_bytes:
        raise read_error(path.name, f"the file is {size / 2**20:.0f} MB, larger than the "
                                    f"{limit_bytes / 2**20:.0f} MB accepted for {what} files.")
    if size == 0:
        raise read_error(path.name, "the file is empty.")
    return size


@dataclass(frozen=True)
class DeviceReport:
    """What the recording device stored in the file about its own reading of the ECG: the cart's
    measurements and interpretation statements, shown beside ECG-FM's output and never mixed with it.

    `measurements` uses the keys of `ecgfm.measure` (heart_rate in bpm; pr, qrs, qt, qtc,
    qtc_bazett, qtc_fridericia in ms; p_axis, qrs_axis, t_axis in degrees, in -90..270 as
    ecgfm.measure gives them; `qtc` when the device does not say which correction it used), and two
    more that carts report beside them: atrial_rate (bpm) and rr (the mean RR interval, ms). A key
    the device did not measure is absent. `statements` are the device's interpretation lines in its
    order; they never carry names or IDs (the readers drop lines such as "Confirmed by ...").
    `source` names the algorithm or device family, with the device model when the file states it,
    e.g. "GE MUSE (12SL)" or "Philips: PageWriter TC". Read by `device_report`.
    """

    source: str
    measurements: dict[str, float] = field(default_factory=dict)
    statements: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"source": self.source, "measurements": dict(self.measurements),
                "statements": list(self.statements)}


@dataclass
class ECGRecord:
    """An ECG in millivolts, with everything a reader learnt about it and nothing about the patient.

    `signal` holds only canonical ECG leads, in the order of `leads`; extra ECG leads that ECG-FM
    was not trained on (V3R, V7, Frank X/Y/Z ...) stay in `extra_leads`. `derived_leads` names the
    leads computed from others (Einthoven/Goldberger), `zero_leads` the ones filled with zeros; both
    are also listed in `leads`. `start_s` and `total_duration_s` place this window in the recording.

    A record may hold no standard lead at all (a monitor's MCL1, Frank X/Y/Z only): `leads` is then
    empty, `signal` has shape (0, n_samples) and the samples are in `extra_leads`; it can be drawn,
    but ECG-FM cannot read it.
    """

    name: str
    signal: np.ndarray  # float32 [n_leads, n_samples], mV
    fs: float
    leads: list[str]
    format: str
    units: str  # the unit stored in the file, before conversion to mV
    warnings: list[str] = field(default_factory=list)
    derived_leads: list[str] = field(default_factory=list)
    zero_leads: list[str] = field(default_factory=list)
    extra_leads: dict[str, np.ndarray] = field(default_factory=dict)
    start_s: float = 0.0
    total_duration_s: float | None = None
    device_report: DeviceReport | None = None

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal, dtype=np.float32)
        if not self.leads and self.signal.size == 0:
            # No standard lead: the sample count comes from the extra leads, so that duration_s,
            # window() and summary() still describe the recording.
            has_width = self.signal.ndim == 2 and self.signal.shape[1] > 0
            lengths = {len(v) for v in self.extra_leads.values()}
            if has_width:
                n = self.signal.shape[1]
            elif len(lengths) > 1:
                raise ECGReadError(f"{self.name}: the extra leads have different lengths "
                                   f"({', '.join(str(k) for k in sorted(lengths))} samples).")
            else:
                n = lengths.pop() if lengths else 0
            self.signal = np.zeros((0, n), dtype=np.float32)
        if self.signal.ndim == 1:
            self.signal = self.signal[None, :]
        if self.signal.ndim != 2 or self.signal.shape[0] != len(self.leads):
            raise ECGReadError(f"{self.name}: the signal has shape {self.signal.shape} "
                               f"but {len(self.leads)} lead names.")
        if not np.isfinite(self.fs) or not 1.0 <= self.fs <= 100_000.0:
            raise ECGReadError(f"{self.name}: the sampling rate {self.fs} Hz is not plausible for an ECG.")
        if self.total_duration_s is None:
            self.total_duration_s = self.duration_s

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs

    def summary(self) -> dict:
        """What was read, JSON-serialisable: the CLI's `info --json` and the app's `/read` both show it."""
        return {
            "file": self.name,
            "format": self.format,
            "leads": list(self.leads),
            "recorded_leads": [lead for lead in self.leads
                               if lead not in self.derived_leads and lead not in self.zero_leads],
            "derived_leads": list(self.derived_leads),
            "zero_filled_leads": list(self.zero_leads),
            "extra_leads": list(self.extra_leads),
            "fs": float(self.fs),
            "duration_s": round(float(self.total_duration_s), 3),
            "units": self.units,
            "window": {"start_s": round(self.start_s, 3), "end_s": round(self.start_s + self.duration_s, 3)},
            "warnings": list(self.warnings),
            "device_report": self.device_report.to_dict() if self.device_report else None,
        }

    def window(self, start_s: float = 0.0, duration_s: float | None = None) -> "ECGRecord":
        """The part of this record from `start_s` lasting at most `duration_s` (all of it if None).

        Used by readers that cannot seek and by `predict`, so a window is cut one way everywhere;
        the result says which part of the recording it is when that is not the whole of it.
        """
        if start_s < 0 or (duration_s is not None and duration_s <= 0):
            raise ECGReadError(f"{self.name}: a window must start at 0 s or later and last more than 0 s.")
        first = int(round(start_s * self.fs))
        if first >= self.signal.shape[1]:
            raise ECGReadError(f"{self.name}: the window starts at {start_s:g} s, "
                               f"after the end of the {self.duration_s:.1f} s recording.")
        last = self.signal.shape[1] if duration_s is None else min(
            self.signal.shape[1], first + int(round(duration_s * self.fs)))
        if first == 0 and last == self.signal.shape[1]:
            return self
        window_start = self.start_s + first / self.fs
        window_end = self.start_s + last / self.fs
        return replace(
            self,
            signal=self.signal[:, first:last],
            extra_leads={k: v[first:last] for k, v in self.extra_leads.items()},
            start_s=window_start,
            warnings=[w for w in self.warnings if not _WINDOW_NOTE.fullmatch(w)]
            + [window_note(window_start, window_end, self.total_duration_s)],
        )
