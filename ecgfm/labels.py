"""ECG-FM's 17 MIMIC-IV-ECG findings, in the order of the classifier's outputs.

Aggregation rules come from ECG-FM's quickstart (max for findings that may appear in only one
5 s segment, mean for the rest); prevalences are `pos_percent_all` of ECG-FM's
`data/mimic_iv_ecg/labels/label_def.csv`, shown as the baseline a probability should be read against.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    name: str
    aggregation: str  # "max" or "mean" over the 5 s segments of one record
    description: str
    prevalence_pct: float  # share of MIMIC-IV-ECG recordings with this finding


LABELS: tuple[Label, ...] = (
    Label("Poor data quality", "max", "Noise, artefact or lead problems limit interpretation.", 2.64),
    Label("Sinus rhythm", "mean", "Rhythm originating normally from the sinus node.", 81.16),
    Label("Premature ventricular contraction", "max", "Early beats arising in the ventricles.", 6.48),
    Label("Tachycardia", "mean", "Heart rate above 100 beats per minute.", 20.94),
    Label("Ventricular tachycardia", "max", "A fast rhythm arising in the ventricles.", 0.09),
    Label("Supraventricular tachycardia with aberrancy",
          "max", "A fast rhythm from above the ventricles conducted with a wide QRS.", 4.17),
    Label("Atrial fibrillation", "mean", "Irregular rhythm with chaotic atrial activity and no P waves.", 10.14),
    Label("Atrial flutter", "mean", "Organised rapid atrial activity, often with sawtooth flutter waves.", 1.80),
    Label("Bradycardia", "mean", "Heart rate below 60 beats per minute.", 13.08),
    Label("Accessory pathway conduction",
          "mean", "Pre-excitation through an extra pathway, as in Wolff-Parkinson-White.", 11.95),
    Label("Atrioventricular block", "mean", "Delayed or blocked conduction from atria to ventricles.", 7.92),
    Label("1st degree atrioventricular block", "mean", "PR interval longer than 200 ms.", 7.38),
    Label("Bifascicular block", "mean", "Block in two of the three ventricular conduction fascicles.", 3.04),
    Label("Right bundle branch block", "mean", "Delayed conduction through the right bundle branch.", 8.25),
    Label("Left bundle branch block", "mean", "Delayed conduction through the left bundle branch.", 3.72),
    Label("Infarction", "mean", "Signs of a current or previous myocardial infarction.", 22.43),
    Label("Electronic pacemaker", "max", "Pacing spikes from an implanted pacemaker.", 3.90),
)

LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)
