#!/usr/bin/env python
"""Write the synthetic example ECGs in examples/. None of them comes from a real patient.

They are simulated with neurokit2's 12-lead ECGSYN model (`nk.ecg_simulate(method="multileads")`)
with fixed random seeds, and written in several formats so that every reader has something to try:

    synthetic_normal_sinus.hea/.dat   WFDB, 500 Hz, 10 s, ~70 bpm
    synthetic_bradycardia.csv         CSV with a time column, 500 Hz, 10 s, ~45 bpm
    synthetic_tachycardia.edf         EDF+, 500 Hz, 10 s, ~120 bpm
    synthetic_noisy.csv               CSV with a time column, 250 Hz, 10 s, ~75 bpm, with baseline
                                      wander, 50 Hz mains hum and EMG (muscle) noise added

Running it again writes identical bytes (fixed seeds, fixed EDF start date, fixed formatting).

    python examples/make_examples.py [OUTPUT_DIR]      # default: the folder this script is in
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import numpy as np

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SECONDS = 10
HERE = Path(__file__).resolve().parent
NOTE = ("Synthetic ECG simulated with neurokit2 (ECGSYN, multileads) by examples/make_examples.py; "
        "not a real patient.")

# name -> (heart rate in bpm, sampling rate in Hz, seed)
EXAMPLES = {
    "synthetic_normal_sinus": (70, 500, 1),
    "synthetic_bradycardia": (45, 500, 2),
    "synthetic_tachycardia": (120, 500, 3),
    "synthetic_noisy": (75, 250, 4),
}


def simulate(heart_rate: float, fs: int, seed: int) -> np.ndarray:
    """[12, SECONDS * fs] float64 in mV (neurokit2's multileads output is scaled in mV)."""
    import neurokit2 as nk

    n = SECONDS * fs
    # Simulate a little more than needed: ECGSYN produces whole beats and can fall short.
    ecg = nk.ecg_simulate(duration=SECONDS + 2, sampling_rate=fs, heart_rate=heart_rate,
                          method="multileads", random_state=seed)
    signal = ecg[LEADS].to_numpy().T[:, :n]
    if signal.shape[1] != n:
        raise RuntimeError(f"neurokit2 produced {signal.shape[1]} samples, {n} needed")
    return signal


def add_noise(signal: np.ndarray, fs: int, seed: int) -> np.ndarray:
    """Baseline wander (respiration, electrode drift), 50 Hz mains hum, and EMG noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(signal.shape[1]) / fs
    noisy = signal.copy()
    for lead in range(signal.shape[0]):
        wander = (0.25 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 2 * np.pi))
                  + 0.10 * np.sin(2 * np.pi * 0.07 * t + rng.uniform(0, 2 * np.pi)))
        hum = 0.04 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
        # EMG: broadband noise in bursts (muscle activity comes and goes).
        bursts = 0.5 + 0.5 * np.sin(2 * np.pi * 0.4 * t + rng.uniform(0, 2 * np.pi)) ** 2
        emg = 0.03 * bursts * rng.standard_normal(t.size)
        noisy[lead] += wander + hum + emg
    return noisy


def _csv_number(values: np.ndarray) -> np.ndarray:
    """Round to 1 µV and get rid of '-0.000'."""
    return np.round(values, 3) + 0.0


def write_csv(path: Path, signal: np.ndarray, fs: int) -> None:
    """A header row `time_s,I,...,V6`, then one row per sample, values in mV to 1 µV."""
    t = np.arange(signal.shape[1]) / fs
    table = np.column_stack([t, _csv_number(signal.T)])
    lines = ["time_s," + ",".join(LEADS)]
    lines += [",".join(f"{v:.3f}" for v in row) for row in table]
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))


def write_wfdb(out_dir: Path, name: str, signal: np.ndarray, fs: int) -> None:
    """WFDB format 16, 1000 ADC units per mV (1 µV resolution), no base date or time."""
    import wfdb

    wfdb.wrsamp(record_name=name, fs=fs, units=["mV"] * len(LEADS), sig_name=LEADS,
                p_signal=signal.T, fmt=["16"] * len(LEADS), adc_gain=[1000.0] * len(LEADS),
                baseline=[0] * len(LEADS), comments=[NOTE], write_dir=str(out_dir))


def write_edf(path: Path, signal: np.ndarray, fs: int) -> None:
    """EDF+ with a fixed start date (EDF headers always hold one), ±10 mV over 16 bits."""
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), len(LEADS), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setStartdatetime(datetime(2000, 1, 1, 0, 0, 0))
        writer.setPatientName("Synthetic")
        writer.setPatientCode("SYNTHETIC")
        writer.setEquipment("neurokit2_ECGSYN")
        writer.setRecordingAdditional("synthetic_not_a_real_patient")
        writer.setSignalHeaders([{
            "label": lead, "dimension": "mV", "sample_frequency": fs,
            "physical_max": 10.0, "physical_min": -10.0,
            "digital_max": 32767, "digital_min": -32768,
            "transducer": "simulated", "prefilter": "",
        } for lead in LEADS])
        writer.writeSamples([np.ascontiguousarray(row) for row in signal])
    finally:
        writer.close()


def main(out_dir: Path = HERE) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    name = "synthetic_normal_sinus"
    hr, fs, seed = EXAMPLES[name]
    write_wfdb(out_dir, name, simulate(hr, fs, seed), fs)
    written += [out_dir / f"{name}.hea", out_dir / f"{name}.dat"]

    name = "synthetic_bradycardia"
    hr, fs, seed = EXAMPLES[name]
    write_csv(out_dir / f"{name}.csv", simulate(hr, fs, seed), fs)
    written.append(out_dir / f"{name}.csv")

    name = "synthetic_tachycardia"
    hr, fs, seed = EXAMPLES[name]
    write_edf(out_dir / f"{name}.edf", simulate(hr, fs, seed), fs)
    written.append(out_dir / f"{name}.edf")

    name = "synthetic_noisy"
    hr, fs, seed = EXAMPLES[name]
    write_csv(out_dir / f"{name}.csv", add_noise(simulate(hr, fs, seed), fs, seed + 100), fs)
    written.append(out_dir / f"{name}.csv")
    return written


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
