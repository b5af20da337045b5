"""Lead names and the leads that can be computed from others.

Every reader hands its channels over with the names found in the file; `classify_lead` decides,
in one place for all formats, what each channel is: one of the 12 standard leads (under its
canonical spelling), another ECG lead ECG-FM was not trained on (Frank X/Y/Z, right-sided or
posterior chest leads, MCL1 ...), an ECG lead whose position is unknown ("ECG", "ECG 1", MIMIC's
"V"), or a channel that is not an ECG at all (blood pressure, plethysmogram, respiration ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ECGReadError
from .record import STANDARD_LEADS, ECGRecord

# Einthoven's and Goldberger's relations: every limb lead is a combination of I and II.
_LIMB_FROM_I_II = {
    "I": lambda i, ii: i,
    "II": lambda i, ii: ii,
    "III": lambda i, ii: ii - i,
    "aVR": lambda i, ii: -(i + ii) / 2,
    "aVL": lambda i, ii: i - ii / 2,
    "aVF": lambda i, ii: ii - i / 2,
}


def derive_missing_limb_leads(record: ECGRecord) -> ECGRecord:
    """Add III, aVR, aVL and aVF computed from I and II when the file did not store them.

    Many carts (GE MUSE, most SCP-ECG writers) store only the 8 independent leads; the other four
    are exact linear combinations, so computing them loses nothing. Returns the record unchanged
    when I or II is missing or nothing is missing.
    """
    if "I" not in record.leads or "II" not in record.leads:
        return record
    lead_i = record.signal[record.leads.index("I")]
    lead_ii = record.signal[record.leads.index("II")]
    missing = [lead for lead in _LIMB_FROM_I_II if lead not in record.leads]
    if not missing:
        return record
    derived = np.stack([_LIMB_FROM_I_II[lead](lead_i, lead_ii) for lead in missing])
    return replace(
        record,
        signal=np.concatenate([record.signal, derived.astype(np.float32)]),
        leads=record.leads + missing,
        derived_leads=record.derived_leads + missing,
        warnings=record.warnings + [f"Leads {', '.join(missing)} were not stored in the file and were "
                                    "derived from I and II."],
    )


def complete_limb_leads(record: ECGRecord) -> ECGRecord:
    """Like `derive_missing_limb_leads`, but also when the file holds III with only one of I, II.

    Einthoven's law (II = I + III) gives the missing one of I and II first (MIMIC stores III and
    I); the rest then follows from I and II. Unchanged when fewer than two of I, II, III exist.
    """
    leads = record.leads
    if ("I" in leads) != ("II" in leads) and "III" in leads:
        iii = record.signal[leads.index("III")]
        if "I" in leads:
            name, values = "II", record.signal[leads.index("I")] + iii
        else:
            name, values = "I", record.signal[leads.index("II")] - iii
        record = replace(
            record,
            signal=np.concatenate([record.signal, values[None].astype(np.float32)]),
            leads=leads + [name],
            derived_leads=record.derived_leads + [name],
            warnings=record.warnings + [f"Lead {name} was not stored in the file and was derived "
                                        "from the other two limb leads (Einthoven: II = I + III)."],
        )
    return derive_missing_limb_leads(record)


# --- naming -------------------------------------------------------------------------------------

STANDARD = "standard"  # one of the 12 leads ECG-FM reads
MODIFIED = "modified"  # a Holter "modified limb lead" (MLII): used as that lead, with a warning
EXTRA = "extra"  # an ECG lead ECG-FM was not trained on: kept aside in `extra_leads`
UNKNOWN = "unknown"  # an ECG channel of unknown position ("ECG", "ECG 1", "V"): kept, with a warning
NON_ECG = "non-ECG"  # anything else: dropped, with a warning

_CANONICAL = {lead.lower(): lead for lead in STANDARD_LEADS}
_CANONICAL.update({"di": "I", "dii": "II", "diii": "III", "d1": "I", "d2": "II", "d3": "III",
                   "lead1": "I", "lead2": "II", "lead3": "III"})
_MODIFIED = {"mli": "I", "mlii": "II", "mliii": "III", "ml2": "II"}
_EXTRA = re.compile(r"^(v[1-9]r|v7|v8|v9|vx|vy|vz|x|y|z|mcl\d?|cm\d|cc\d|ml\d|es|as|ai|nasa|"
                    r"v10|ecg[ _-]?[xyz])$")
# Channels that are certainly not an ECG (names as found in PhysioNet, EDF and monitor exports).
_NON_ECG = re.compile(
    r"^(abp|art|ap|bp|nbp|nibp|sbp|dbp|mbp|map|pap|cvp|rap|lap|icp|cpp|uap|fap|pawp|"
    r"pleth|ppg|spo2|sao2|sp02|pulse|pr|hr|rr|resp|respiration|co2|etco2|awrr|o2|temp|"
    r"uc|fhr|toco|flow|pressure|press|airflow|thor|abdo|abd|thorax|abdomen|snore|"
    r"eeg|eog|emg|ecog|gsr|eda|scg|bcg|acc|gyro|pos|position|light|status|marker|event|"
    r"annotations?|edf annotations|bdf annotations|trigger|sao|lpm|imp|bis)$"
    r"|^(eeg|eog|emg|resp|pleth|spo2|abp|art|temp|acc|pos)\b")
_VOLTAGE_UNITS = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "microvolt": 1e-3,
                  "microvolts": 1e-3, "millivolt": 1.0, "millivolts": 1.0, "v": 1e3, "volt": 1e3,
                  "volts": 1e3, "nv": 1e-6, "nanovolt": 1e-6, "nanovolts": 1e-6}


def voltage_scale(unit: str | None) -> float | None:
    """How many mV one unit is (`'uV'` -> 0.001), or None when `unit` is not a voltage."""
    if unit is None:
        return None
    key = unit.strip().lower().replace(" ", "")
    return _VOLTAGE_UNITS.get(key)


def _clean(name: str) -> str:
    """Strip the decorations files put around a lead name: 'Lead I (Einthoven)' -> 'i'."""
    text = re.sub(r"\(.*?\)|\[.*?\]", " ", str(name)).strip().lower()
    text = re.sub(r"^mdc_ecg_lead_", "", text)
    text = re.sub(r"^(lead|ableitung|derivation)[\s_:-]+", "", text)
    text = re.sub(r"^(ecg|ekg)[\s_:-]+(?=\S)", lambda m: m.group(0) if _is_number(text[m.end():])
                  else "", text)
    return re.sub(r"\s+", " ", text).strip(" -_:")


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"\d+", text.strip()))


def classify_lead(name: str, unit: str | None = None) -> tuple[str, str]:
    """(kind, name to use) for a channel named `name` in the file, measured in `unit`.

    kind is STANDARD (name is the canonical spelling), MODIFIED (name is the standard lead it
    stands for), EXTRA, UNKNOWN or NON_ECG (name as in the file, stripped). A unit that is not
    a voltage (mmHg, NU, %, bpm ...) makes any channel NON_ECG.
    """
    raw = str(name).strip()
    if unit is not None and unit.strip() and voltage_scale(unit) is None:
        return NON_ECG, raw
    key = _clean(raw)
    if key in _CANONICAL:
        return STANDARD, _CANONICAL[key]
    if key in _MODIFIED:
        return MODIFIED, _MODIFIED[key]
    if _EXTRA.match(key):
        return EXTRA, raw
    if _NON_ECG.search(key):
        return NON_ECG, raw
    return UNKNOWN, raw or "ECG"


# --- what a reader hands over --------------------------------------------------------------------

@dataclass
class Channel:
    """One channel as a reader found it: values, rate, and how to get millivolts.

    `scale` multiplies the values into mV (after subtracting `offset`); None means the file does
    not say what unit the values are in, and the central reader infers it from strong evidence.
    """

    name: str
    data: np.ndarray  # 1-D
    fs: float
    unit: str = ""  # as written in the file ("" when the file gives none)
    scale: float | None = 1.0
    offset: float = 0.0


@dataclass
class RawRecord:
    """Everything a reader learnt from a file, before the central naming, units and NaN rules."""

    name: str
    format: str
    channels: list[Channel]
    warnings: list[str] = field(default_factory=list)
    # Set by readers that read only the requested window themselves (WFDB, EDF, .npy).
    windowed: bool = False
    start_s: float = 0.0
    total_duration_s: float | None = None
    # Resolution in bits, when the file states it (used to find the ADC mid-scale of raw counts).
    adc_bits: int | None = None
    # Readers of formats with no lead names that assumed an order say so in `warnings`.
    extra: dict = field(default_factory=dict)


def names_for_unnamed(fname: str, count: int, what: str,
                      names_given: bool = False) -> tuple[list[str], str | None]:
    """Lead names for a file that gives none, and the warning that says what was assumed.

    A single signal is one unnamed ECG lead; exactly 12 are taken to be in the standard order, as
    every 12-lead export we know writes them. Any other count cannot be named without guessing.
    With `names_given` (the caller names the leads itself, `read_ecgs(leads=...)`) nothing is
    assumed: every signal is an unnamed ECG lead, to be renamed centrally.
    """
    if names_given:
        return ["ECG"] * count, None
    if count == 12:
        return list(STANDARD_LEADS), (f"The file names no leads; its 12 {what} were assumed to be in the "
                                      "standard order I, II, III, aVR, aVL, aVF, V1-V6.")
    if count == 1:
        return ["ECG"], None
    raise ECGReadError(f"{fname}: the file names no leads and holds {count} {what}; give their lead "
                       "names (leads), as only a single one or exactly 12 (standard order) can be read "
                       "without them.")
