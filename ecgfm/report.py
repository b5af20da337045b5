"""What a person reads about one record, described once and rendered twice: HTML (the page) and PDF.

`build` gathers the description (`Report`): the record, whether its input is fit for the model
(adequacy, said first), the automated measurements beside those the recording device stored in the
file, the signal quality per lead, ECG-FM's findings set against their prevalence in the training
data, where the network's attention concentrated, what was read, every warning, the model's
provenance and the disclaimer. How the ECG is drawn (`Display`) is for the eye only. `to_html` and `to_pdf`
only lay it out, so the page and the printout never disagree. Nothing here knows Gradio, and
nothing identifying a patient is ever in a report: readers keep no names, IDs or header comments.
"""
from __future__ import annotations

import base64
import html
import io
import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .adequacy import COMPLETE, LIMITED, UNUSABLE, Adequacy
from .io.record import STANDARD_LEADS, DeviceReport, ECGRecord
from .labels import LABELS
from .measure import NOTE as MEASUREMENT_NOTE
from .measure import QUANTITIES, Measurements, measure
from .preprocess import PreparedECG
from .quality import SignalQuality
from .saliency import SALIENCY_NOTE, saliency_track

DISCLAIMER = ("Research use only. ECG-FM is not a medical device; its outputs are not diagnoses and "
              "must not be used for clinical decisions.")
PROBABILITY_NOTE = ("Each probability is the model's output for that finding on this window, between "
                    "0 and 1; no threshold is applied. The baseline is how often the finding occurs in "
                    "the MIMIC-IV-ECG training data.")
LIMITED_NOTE = "Not reliable for this input"
PROBE_NOTE = ("A linear probe fitted on ECG-FM's embeddings with its owner's own labels (the person who set it "
              "up, not ECG-FM's authors): its outputs are that probe's, not ECG-FM's findings.")
DEVICE_NOTE = "stored in the file by the recording device; not ECG-FM's output"
DISPLAY_NOTE = ("Display settings change only the drawing: the model always receives the unfiltered signal, "
                "exactly as ECG-FM's pipeline prepares it.")
_PREVALENCE = {label.name: label for label in LABELS}
# Device values with no counterpart among ours, shown in rows of their own.
_DEVICE_ONLY = (("qtc", "QTc (formula not stated)", "ms"), ("atrial_rate", "Atrial rate", "bpm"))


@dataclass(frozen=True)
class Display:
    """How the ECG is drawn (`plot.plot_ecg`'s options); never what the model reads."""

    gain_mm_per_mv: float = 10.0
    speed_mm_per_s: float = 25.0
    filter: str | None = None  # None | "monitor" | "notch50" | "notch60"
    saliency_behind_leads: bool = False

    def describe(self) -> str:
        from .plot import DISPLAY_FILTERS

        return (f"{self.speed_mm_per_s:g} mm/s, {self.gain_mm_per_mv:g} mm/mV, "
                + (f"display filter {DISPLAY_FILTERS[self.filter]}" if self.filter else "no display filter"))

    def plot_options(self) -> dict:
        return {"gain_mm_per_mv": self.gain_mm_per_mv, "speed_mm_per_s": self.speed_mm_per_s,
                "display_filter": self.filter, "saliency_behind_leads": self.saliency_behind_leads}


@dataclass
class Finding:
    name: str
    description: str
    probability: float
    prevalence_pct: float


@dataclass
class Report:
    name: str
    analysed_at: str  # UTC, minutes: when the analysis ran, not when the ECG was recorded
    record: ECGRecord | None = None
    lead_status: dict[str, str] = field(default_factory=dict)
    adequacy: Adequacy | None = None
    findings: list[Finding] = field(default_factory=list)  # most probable first
    segments: list[dict] = field(default_factory=list)  # {"start_s", "end_s", "probabilities"}
    no_findings: str | None = None  # why there are none, in one sentence
    facts: list[tuple[str, str]] = field(default_factory=list)  # what was read
    warnings: list[str] = field(default_factory=list)
    provenance: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None  # the file could not be read at all
    overview: ECGRecord | None = None  # the whole recording, when it is longer than the window analysed
    dataset_label: str | None = None  # what the recording's source dataset says of it, shown apart
    probe: list[tuple[str, float]] = field(default_factory=list)  # the user's own probe, never ECG-FM's
    probe_identity: dict | None = None  # `Probe.identity()`: labels, weights sha256, training size, AUROC
    measurements: Measurements | None = None  # ours, automated and approximate
    device_report: DeviceReport | None = None  # the cart's own, from the file
    quality: SignalQuality | None = None
    saliency: tuple[np.ndarray, np.ndarray] | None = None  # (times_s, values), `saliency_track`
    display: Display = field(default_factory=Display)

    @property
    def level(self) -> str:
        """complete | limited | unusable, or "error" (not read) / "none" (no model, nothing judged)."""
        if self.error:
            return "error"
        return self.adequacy.level if self.adequacy else "none"

    @property
    def headline(self) -> str:
        """The one line that says first how to take what follows."""
        if self.error:
            return f"Not read: {self.error}"
        if self.adequacy is None:
            return self.no_findings or ""
        reasons = "; ".join(self.adequacy.reasons)
        if self.adequacy.level == UNUSABLE:
            return f"Not analysed: ECG-FM cannot judge this input ({reasons})."
        if self.adequacy.level == LIMITED:
            return f"Limited input: findings are not reliable for this input ({reasons})."
        return "Complete input: 12 leads recorded or derived, none flat."


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _names(leads: list[str]) -> str:
    return ", ".join(leads) if leads else "none"


def read_summary(record: ECGRecord, prepared: PreparedECG) -> dict:
    """What was read, with what preparing it for the model added: one account of the leads, JSON-ready
    (the API's `read`, the CLI's and the page's tables are made from it)."""
    status = prepared.lead_status
    return {**record.summary(), "lead_status": dict(status),
            "zero_filled_leads": [lead for lead, s in status.items() if s == "zero-filled"],
            "flat_leads": [lead for lead, s in status.items() if s == "flat"],
            "unused_leads": [lead for lead in record.leads if lead not in STANDARD_LEADS] + list(record.extra_leads),
            "input_adequacy": prepared.adequacy.to_dict(),
            "segments": [[round(a, 3), round(b, 3)] for a, b in prepared.spans_s],
            "warnings": list(prepared.warnings)}


def read_facts(summary: dict) -> list[tuple[str, str]]:
    """`read_summary` as label/value rows for a person."""
    by = {kind: [lead for lead, s in summary["lead_status"].items() if s == kind]
          for kind in ("recorded", "derived", "flat", "zero-filled")}
    given = f"{len(by['recorded'])} recorded"
    if by["derived"]:
        given += f"; derived from I and II: {_names(by['derived'])}"
    if by["flat"]:
        given += f"; flat, given as zeros: {_names(by['flat'])}"
    if by["zero-filled"]:
        given += f"; not recorded, given as zeros: {_names(by['zero-filled'])}"
    in_file = summary["recorded_leads"] + summary["extra_leads"]
    rows = [("Format", summary["format"]), ("Leads in the file", f"{len(in_file)}: {_names(in_file)}"),
            ("Leads given to the model", given)]
    if summary["unused_leads"]:
        rows.append(("Not used by the model", f"{_names(summary['unused_leads'])} (not one of the 12 standard leads)"))
    window = summary["window"]
    rows += [("Sampling rate", f"{summary['fs']:g} Hz"),
             ("Recording length", f"{summary['duration_s']:.1f} s"),
             ("Units in the file", summary["units"] or "not stated"),
             ("Window analysed", f"{window['start_s']:.1f}–{window['end_s']:.1f} s"),
             ("5 s segments", ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in summary["segments"]) or "none")]
    return rows


def provenance_rows(provenance: dict | None) -> list[tuple[str, str]]:
    """Where the weights came from, said truthfully: a local file is not called the Hub."""
    if not provenance:
        return []
    rows = [("Weights", f"{provenance.get('source') or 'unknown source'}: {provenance.get('file')}")]
    if provenance.get("repo"):
        rows.append(("Repository", f"{provenance['repo']} @ {provenance.get('revision') or '?'}"))
    rows += [("SHA-256", str(provenance.get("sha256"))), ("Device", str(provenance.get("device"))),
             ("Precision", str(provenance.get("precision"))),
             ("ecgfm version", str(provenance.get("ecgfm_version")))]
    return rows


def build(record: ECGRecord, prepared: PreparedECG, prediction=None, *, model_problem: str | None = None,
          provenance: dict | None = None, measurements: Measurements | None = None,
          display: Display | None = None) -> Report:
    """The report of one record; `prediction` (a Prediction) is None when the model did not run,
    and `model_problem` then says why. The measurements are made here unless given (`measure`)."""
    report = Report(name=record.name, analysed_at=_now(), record=record, lead_status=prepared.lead_status,
                    facts=read_facts(read_summary(record, prepared)), warnings=list(prepared.warnings),
                    provenance=provenance_rows(prediction.provenance if prediction else provenance),
                    measurements=measurements or getattr(prediction, "measurements", None) or measure(record),
                    device_report=record.device_report, quality=prepared.quality, display=display or Display())
    if prediction is None:
        report.no_findings = f"No prediction: {model_problem}" if model_problem else "No prediction was made."
        if not prepared.adequacy.usable:
            report.adequacy = prepared.adequacy
        return report
    report.adequacy = prediction.adequacy
    if prediction.probabilities is None:
        report.no_findings = "No findings: " + "; ".join(prediction.adequacy.reasons) + "."
        return report
    report.findings = sorted((Finding(name, _PREVALENCE[name].description, p, _PREVALENCE[name].prevalence_pct)
                              for name, p in prediction.probabilities.items()), key=lambda f: -f.probability)
    report.segments = [{"start_s": s.start_s, "end_s": s.end_s, "probabilities": s.probabilities}
                       for s in prediction.segments]
    if prediction.saliency is not None:
        report.saliency = saliency_track(prediction)
    if prediction.probe_probabilities is not None:
        report.probe = list(prediction.probe_probabilities.items())
        report.probe_identity = prediction.provenance.get("probe")
    return report


def measurement_rows(report: Report) -> list[tuple[str, str, str, str]]:
    """(quantity, ours, the device's, why ours is absent) per quantity either side has."""
    ours = report.measurements
    stored = report.device_report.measurements if report.device_report else {}
    rows = []
    for key, label, unit in QUANTITIES:
        value = _with_unit(ours.values.get(key), unit) if ours else "—"
        reason = "" if ours is None or key in ours.values else ours.absent.get(key, "not measured")
        rows.append((label, value, _with_unit(stored.get(key), unit), reason))
    rows += [(label, "", _with_unit(stored[key], unit), "") for key, label, unit in _DEVICE_ONLY if key in stored]
    return rows


def _with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}{'' if unit == '°' else ' '}{unit}"


def failed(name: str, message: str) -> Report:
    """The report of a file that could not be read: its name and the one sentence why."""
    return Report(name=name, analysed_at=_now(), error=message.removeprefix(f"{name}: "))


def file_stem(name: str) -> str:
    """A download name after the record ("100.hea" -> "100"), with nothing a file system minds."""
    stem = re.sub(r"\.(hea|dat|csv|tsv|txt|xml|dcm|scp|edf|bdf|mat|npy|npz|zip|ecg)$", "", name, flags=re.I)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "ecg"


def ecg_figure(report: Report, row_scale: float = 1.0):
    """The record drawn as the report shows it: display settings, saliency, signal-quality marks."""
    from .plot import plot_ecg

    marks = report.quality.lead_marks() if report.quality else None
    return plot_ecg(report.record, lead_status=report.lead_status, row_scale=row_scale,
                    saliency=report.saliency, lead_marks=marks, **report.display.plot_options())


def ecg_caption(report: Report) -> str:
    """What the drawing's scale and shading mean, under the ECG on the page and on the printout."""
    caption = f"{report.display.describe()}. {DISPLAY_NOTE}"
    if report.saliency is not None:
        caption += f" Shaded orange: {SALIENCY_NOTE}"
    return caption


def ecg_png(report: Report, dpi: int = 130) -> bytes | None:
    if report.record is None:
        return None
    from .plot import figure_to_png

    return figure_to_png(ecg_figure(report), dpi=dpi)


def overview_png(report: Report, dpi: int = 110) -> bytes | None:
    """The whole recording with the analysed window shaded, when there is more than the window."""
    if report.overview is None or report.record is None:
        return None
    from .plot import figure_to_png, plot_overview

    window = (report.record.start_s, report.record.start_s + report.record.duration_s)
    return figure_to_png(plot_overview(report.overview, window), dpi=dpi)


# --- HTML ----------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def to_html(report: Report, anchor: str, png: bytes | None = None, png_url: str | None = None,
            overview_png: bytes | None = None) -> str:
    """One record's card. Class names carry the meaning (level-limited, finding rows ...); colours
    come from the page's stylesheet, which follows the light or dark theme. `png_url`, where the
    ECG image is served, lets a click open it full size (browsers refuse to open data: links)."""
    level = report.level
    parts = [f'<section class="record level-{level}" id="{_e(anchor)}"><h2>{_e(report.name)}</h2>']
    if report.headline:
        parts.append(f'<div class="headline" role="status">{_e(report.headline)}</div>')
    if report.error:
        return "".join(parts) + "</section>"
    parts.append(_measurements_html(report))
    if png:
        data = base64.b64encode(png).decode("ascii")
        image = (f'<img class="ecg" alt="ECG of {_e(report.name)}, {_e(report.display.describe())}" '
                 f'src="data:image/png;base64,{data}">')
        if png_url:
            image = (f'<a class="ecg-link" href="{_e(png_url)}" target="_blank" rel="noopener" '
                     f'title="Open the ECG full size, to zoom">{image}</a><p class="note">Click the ECG to '
                     'open it full size and zoom.</p>')
        parts.append(f'<h3>ECG</h3>{image}<p class="note ecg-caption">{_e(ecg_caption(report))}</p>')
    parts.append(_quality_html(report))
    if overview_png:
        data = base64.b64encode(overview_png).decode("ascii")
        parts.append(f'<img class="overview" alt="The whole recording, with the analysed window shaded" '
                     f'src="data:image/png;base64,{data}">')
    if report.dataset_label:
        parts.append(f'<div class="dataset-label"><b>Label in the dataset</b> (what the source dataset says '
                     f'of this recording; not ECG-FM\'s output): {_e(report.dataset_label)}</div>')
    parts.append("<h3>Findings</h3>")
    if report.findings:
        parts.append(_findings_html(report))
    else:
        parts.append(f'<div class="no-findings">{_e(report.no_findings)}</div>')
    if report.probe:
        parts.append(_probe_html(report))
    parts.append("<h3>What was read</h3>" + _rows_html(report.facts, "read"))
    if report.warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
        parts.append(f'<div class="warnings"><b>Notes from reading and preprocessing</b><ul>{items}</ul></div>')
    else:
        parts.append('<div class="ok">No warnings from reading or preprocessing.</div>')
    if report.provenance:
        parts.append(f'<details class="provenance"><summary>Model that produced these numbers</summary>'
                     f'{_rows_html(report.provenance, "provenance")}</details>')
    parts.append(f'<p class="analysed">Analysed {_e(report.analysed_at)}. {_e(DISCLAIMER)}</p></section>')
    return "".join(parts)


def _measurements_html(report: Report) -> str:
    """Ours beside the recording device's, never mixed: each column says whose it is."""
    device = report.device_report
    head = (f"<th>Automated here ({_e(MEASUREMENT_NOTE)})</th>"
            + (f"<th>{_e(device.source)} ({_e(DEVICE_NOTE)})</th>" if device and device.measurements else ""))
    body = ""
    for label, ours, theirs, reason in measurement_rows(report):
        why = f'<div class="desc">{_e(reason)}</div>' if reason else ""
        body += (f"<tr><th>{_e(label)}</th><td>{_e(ours)}{why}</td>"
                 + (f"<td>{_e(theirs)}</td>" if device and device.measurements else "") + "</tr>")
    method = report.measurements.method if report.measurements else ""
    parts = [f'<h3>Measurements</h3><div class="table-scroll"><table class="measurements"><thead><tr>'
             f'<th>Quantity</th>{head}</tr></thead><tbody>{body}</tbody></table></div>'
             f'<p class="note">Method: {_e(method)}</p>']
    if device and device.statements:
        items = "".join(f"<li>{_e(line)}</li>" for line in device.statements)
        parts.append(f'<div class="device-statements"><b>Interpretation {_e(DEVICE_NOTE)} '
                     f'({_e(device.source)})</b><ul>{items}</ul></div>')
    return "".join(parts)


def _quality_html(report: Report) -> str:
    if report.quality is None:
        return ""
    if not report.quality.flags:
        return '<div class="ok quality">Signal quality: no lead flagged (flat, clipped, noise, baseline ' \
               'wander, mains interference, limb-lead reversal).</div>'
    items = "".join(f"<li>{_e(line)}</li>" for line in report.quality.sentences())
    return f'<div class="warnings quality"><b>Signal quality</b><ul>{items}</ul></div>'


def _rows_html(rows: list[tuple[str, str]], css: str) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{css}"><tbody>{body}</tbody></table>'


def _findings_html(report: Report) -> str:
    limited = report.adequacy is not None and report.adequacy.level != COMPLETE
    caption = (f'<caption class="limited-note">{LIMITED_NOTE}: read these numbers with the reasons above.</caption>'
               if limited else "")
    rows = []
    for f in report.findings:
        base = f.prevalence_pct / 100
        rows.append(
            f'<tr><td class="finding"><b>{_e(f.name)}</b><div class="desc">{_e(f.description)}</div></td>'
            f'<td class="prob">{f.probability:.3f}</td>'
            f'<td class="barcell"><div class="bar" role="img" aria-label="probability {f.probability:.3f}, '
            f'training prevalence {base:.3f}"><span class="fill" style="width:{100 * f.probability:.1f}%">'
            f'</span><span class="base" style="left:{100 * base:.1f}%"></span></div></td>'
            f'<td class="prev">{f.prevalence_pct:.1f} %</td></tr>')
    table = (f'<div class="table-scroll"><table class="findings{" unreliable" if limited else ""}">{caption}'
             '<thead><tr><th>Finding</th><th>Probability</th><th class="barcell">bar: probability · '
             'tick: training prevalence</th><th class="prev">Training prevalence</th></tr></thead><tbody>'
             + "".join(rows) + "</tbody></table></div>")
    names = [f.name for f in report.findings]
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    segs = "".join(f'<tr><th>{s["start_s"]:.1f}–{s["end_s"]:.1f} s</th>'
                   + "".join(f'<td>{s["probabilities"][n]:.3f}</td>' for n in names) + "</tr>"
                   for s in report.segments)
    return (f'<p class="note">{_e(PROBABILITY_NOTE)}</p>{table}'
            f'<details class="segments"><summary>Probabilities per 5 s segment ({len(report.segments)})</summary>'
            f'<div class="table-scroll"><table><thead><tr><th>Segment</th>{head}</tr></thead>'
            f'<tbody>{segs}</tbody></table></div></details>')


def _probe_html(report: Report) -> str:
    identity = report.probe_identity or {}
    auroc = identity.get("auroc") or {}
    rows = "".join(f'<tr><td>{_e(name)}</td><td class="prob">{p:.3f}</td>'
                   f'<td>{"—" if auroc.get(name) is None else f"{auroc[name]:.3f}"}</td></tr>'
                   for name, p in report.probe)
    trained = f"fitted on {identity['n_train']} records; " if identity.get("n_train") else ""
    sha = identity.get("weights_sha256") or "unknown"
    return (f'<h3>Your own probe (not ECG-FM)</h3><p class="note">{_e(PROBE_NOTE)} '
            f'{_e(trained)}weights sha256 {_e(sha[:12])}….</p><div class="table-scroll"><table class="probe">'
            '<thead><tr><th>Label</th><th>Probability</th><th>AUROC on its held-out split</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></div>')


# --- PDF -----------------------------------------------------------------------------------------

A4_LANDSCAPE_MM = (297.0, 210.0)
_MARGIN = 8.0
_ROOM_BELOW_ECG = 14.0  # mm kept under the ECG for its caption, what was read and the notes
_LEVEL_COLOUR = {COMPLETE: "#1e5b1e", LIMITED: "#8a4b00", UNUSABLE: "#a3161a", "error": "#a3161a",
                 "none": "#a3161a"}


def to_pdf(report: Report) -> bytes:
    """One A4 landscape page, printable at 100 %: header, input adequacy, measurements (ours and the
    device's), findings, signal quality, the ECG at its true scale (25 mm/s and 10 mm/mV unless the
    display says otherwise), what was read, every warning, provenance and the disclaimer."""
    from matplotlib.backends.backend_pdf import FigureCanvasPdf
    from matplotlib.figure import Figure

    width, height = A4_LANDSCAPE_MM
    fig = Figure(figsize=(width / 25.4, height / 25.4))
    FigureCanvasPdf(fig)
    y = _MARGIN  # mm from the top, advanced as lines are written

    def text(x_mm, y_mm, value, size=7.0, **style):
        fig.text(x_mm / width, 1 - y_mm / height, value, fontsize=size, va="top", ha="left", **style)

    def lines(value: str, size: float = 6.6, wrap: int = 200, most: int = 2, **style) -> None:
        nonlocal y
        for part in textwrap.wrap(value, wrap)[:most]:
            text(_MARGIN, y, part, size, **style)
            y += size * 0.45

    text(_MARGIN, y, f"ECG-FM report: {report.name}", 12, weight="bold")
    text(width - _MARGIN - 70, y + 1, f"Analysed {report.analysed_at}", 7.5)
    y += 7
    level = report.level
    lines(report.headline, 8.5, 150, 3, weight="bold", color=_LEVEL_COLOUR[level])
    y += 1
    if report.record is not None:
        rows = measurement_rows(report)
        lines(f"Measurements ({MEASUREMENT_NOTE}): " + "; ".join(f"{label} {ours}" for label, ours, _, _ in rows
                                                                  if ours and ours != "—"), weight="bold")
        device = report.device_report
        if device and device.measurements:
            lines(f"{device.source}, {DEVICE_NOTE}: "
                  + "; ".join(f"{label} {theirs}" for label, _, theirs, _ in rows if theirs != "—"))
        if device and device.statements:
            lines(f"Interpretation {DEVICE_NOTE}: " + "; ".join(device.statements), most=1)
        y += 1
    if report.findings:
        note = f"{LIMITED_NOTE}. " if report.adequacy and report.adequacy.level != COMPLETE else ""
        text(_MARGIN, y, f"{note}Findings (probability; prevalence in the training data):", 7.5, weight="bold")
        y += 4
        columns, per_column = 3, 6
        for i, f in enumerate(report.findings):
            column, row = divmod(i, per_column)
            if column >= columns:
                break
            text(_MARGIN + column * 94, y + row * 3.6,
                 f"{f.probability:.3f}  {f.name[:44]}  ({f.prevalence_pct:.1f} %)", 6.8,
                 color="#555555" if note else "#111111", family="DejaVu Sans")
        y += per_column * 3.6
    elif report.no_findings and report.adequacy is not None:
        text(_MARGIN, y, report.no_findings, 7.5)
        y += 4
    if report.probe:
        lines("Your own probe, not ECG-FM: " + "; ".join(f"{name} {p:.3f}" for name, p in report.probe),
              6.8, most=1, style="italic")
    if report.quality is not None and report.quality.flags:
        lines("Signal quality: " + " ".join(report.quality.sentences()), color=_LEVEL_COLOUR[LIMITED])
    bottom = height - _MARGIN - 5
    if report.record is not None:
        top = y + 1
        y = top + _place_ecg(fig, report, width, height, top, bottom - _ROOM_BELOW_ECG - top)
        lines(ecg_caption(report), 6.2, 215)
    after = ["What was read: " + "; ".join(f"{k}: {v}" for k, v in report.facts)] if report.facts else []
    after += [f"Note: {w}" for w in report.warnings]
    if report.provenance:
        after.append("Model: " + "; ".join(f"{k}: {v}" for k, v in report.provenance))
    for line in after:
        for part in textwrap.wrap(line, 215):
            if y > bottom - 3:
                break
            text(_MARGIN, y, part, 6.2)
            y += 2.9
    text(_MARGIN, bottom, DISCLAIMER, 7, weight="bold")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf", metadata={"Title": f"ECG-FM report: {report.name}", "Author": None,
                                                "Creator": "ecgfm", "Producer": None})
    return buffer.getvalue()


def _place_ecg(fig, report: Report, width: float, height: float, top_mm: float, room_mm: float) -> float:
    """The ECG figure, drawn in mm, placed on the page at its own size so the scale holds; rows are
    brought closer (never rescaled in time or mV) to fit `room_mm`. Returns the height it took."""
    from matplotlib.image import imread

    from .plot import figure_to_png

    ecg = ecg_figure(report)
    ecg_w, ecg_h = (v * 25.4 for v in ecg.get_size_inches())
    if ecg_h > room_mm:
        # The figure's height is its fixed title lines plus rows in proportion to row_scale: two
        # drawings give both, and the third fits the room.
        half_h = ecg_figure(report, row_scale=0.5).get_size_inches()[1] * 25.4
        per_scale = 2 * (ecg_h - half_h)
        ecg = ecg_figure(report, row_scale=max((room_mm - (ecg_h - per_scale)) / per_scale, 0.2))
        ecg_w, ecg_h = (v * 25.4 for v in ecg.get_size_inches())
    image = imread(io.BytesIO(figure_to_png(ecg, dpi=200)), format="png")
    left = (width - ecg_w) / 2
    axes = fig.add_axes((left / width, 1 - (top_mm + ecg_h) / height, ecg_w / width, ecg_h / height))
    axes.imshow(np.asarray(image), interpolation="antialiased", aspect="auto")
    axes.set_axis_off()
    return ecg_h
