"""Whether ECG-FM should judge a record at all: complete, limited or unusable input.

ECG-FM was trained on complete 12-lead resting ECGs (MIMIC-IV-ECG, 10 s at 500 Hz). Outside that
its outputs are numbers, not findings, so every result carries this assessment, made from what
reading and preprocessing found, before any probability is shown:

- complete: all 12 leads recorded or derived exactly (III, aVR, aVL, aVF from I and II), none flat,
  at least one whole 5 s segment, a sampling rate of at least 250 Hz.
- limited: the model can run, but the input differs from what it was trained on in a way that can
  change its outputs: leads zero-filled or flat, a record shorter than 5 s padded with a mask, a
  sampling rate below 250 Hz, or a signal-quality flag that changes what the model reads
  (`quality.py`, where the thresholds are): a suspected limb-electrode reversal (leads that do not
  show what their names say), a clipped lead (its wave tops cut off) or high-frequency noise (each
  lead is standardised, so noise that is large against the lead's own amplitude is large in what
  the model reads, whatever the gain). Probabilities are given, marked as not reliable for this
  input, with the reasons.
- unusable: nothing the model can read (no standard lead, every lead flat or missing, less than
  1 s, or nothing left after cutting the window). No probability is computed.

Baseline wander and mains hum are marked on their leads but do not make the input limited by
themselves. Wander moves the baseline slowly and leaves the beats' shape as it is; ECG-FM's
preprocessing has no baseline filter, so its training ECGs carried their own drift. Hum strong
enough to matter is counted as noise (the noise measure includes it).

This module only states the rule; `preprocess.prepare` gathers the facts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .quality import SignalQuality

COMPLETE, LIMITED, UNUSABLE = "complete", "limited", "unusable"
LEVELS = (COMPLETE, LIMITED, UNUSABLE)
NO_SIGNAL = "every lead is flat or missing, so there is no signal for the model to read"
MIN_FAITHFUL_FS = 250.0  # Hz; below this QRS detail and pacing spikes are lost before resampling


@dataclass(frozen=True)
class Adequacy:
    level: str  # COMPLETE | LIMITED | UNUSABLE
    reasons: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.level != UNUSABLE

    def to_dict(self) -> dict:
        return {"level": self.level, "reasons": list(self.reasons)}


def unusable(reason: str) -> Adequacy:
    return Adequacy(UNUSABLE, (reason,))


def _leads(names: list[str]) -> str:
    return f"lead {names[0]}" if len(names) == 1 else f"leads {', '.join(names)}"


# The reason each kind of severe signal-quality flag gives, naming the leads it concerns.
_QUALITY_REASONS = {
    "clipped": "{leads} clipped (beyond the recorder's range, the tops of the waves cut off)",
    "noise": "{leads} noisy (high-frequency noise)",
    "reversal": "limb electrodes probably swapped: {leads} may not show what their names say",
}


def judge(lead_status: dict[str, str], *, padded_s: float | None, fs: float,
          quality: SignalQuality | None = None) -> Adequacy:
    """The level for a record the model can run on, with one short reason per departure."""
    missing = [lead for lead, status in lead_status.items() if status == "zero-filled"]
    flat = [lead for lead, status in lead_status.items() if status == "flat"]
    if len(missing) + len(flat) == len(lead_status):
        return unusable(NO_SIGNAL)
    reasons = []
    if missing:
        reasons.append(f"{len(missing)} of 12 leads not recorded and given to the model as zeros "
                       f"({_leads(missing)})")
    if flat:
        reasons.append(f"{_leads(flat)} flat (no signal), given to the model as zeros")
    if padded_s is not None:
        reasons.append(f"only {padded_s:.1f} s long, padded to the 5 s the model reads")
    if fs < MIN_FAITHFUL_FS:
        reasons.append(f"sampled at {fs:g} Hz, below the {MIN_FAITHFUL_FS:g} Hz that keeps the QRS "
                       "detail the model was trained on")
    for flag in quality.severe if quality else ():
        reasons.append(_QUALITY_REASONS[flag.kind].format(leads=_leads(list(flag.leads))))
    return Adequacy(LIMITED if reasons else COMPLETE, tuple(reasons))
