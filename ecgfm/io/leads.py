"""Lead names and the leads that can be computed from others."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .record import ECGRecord

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
