"""The ECG drawn as clinicians read it: pink paper, calibration pulses, 25 mm/s and 10 mm/mV by default.

Everything is drawn in millimetres of paper on one axes with equal aspect, and the figure is sized
so that, saved at any dpi and printed at 100 %, 1 mm on the grid is 1 mm on paper.

Layouts:
- 12-lead, a full page or longer: the standard printout, 3 rows x 4 columns
  (I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6, the columns being consecutive quarters of the page)
  and a lead II rhythm strip of the whole page at the bottom.
- 12-lead shorter than a page: 6 rows x 2 columns (limb leads | chest leads), both columns showing
  the same first (up to) half page, and a rhythm strip of all of it.
- fewer than 6 usable standard leads (Holter, single-lead devices): one full-width strip per lead.

The page is 250 mm of trace: 10 s at 25 mm/s, 5 s at 50 mm/s. Only the first page is drawn; use
`record.window(start_s, 10)` to show another part. Gain (5, 10, 20 mm/mV), speed and an optional
display filter (0.5–40 Hz, 50 or 60 Hz notch) change the drawing only, never the record, and are
marked at the top right as printouts do; the model always reads the unfiltered signal. ECG-FM's
saliency (`ecgfm.saliency`) can be shaded behind the rhythm strip, or behind every lead.

matplotlib is used only through its object API (`Figure()`, no pyplot), so this is safe in a web
server's threads and with any backend. matplotlib is imported on first use, scipy.signal only when
a display filter is asked for.
"""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from .errors import ECGFMError
from .io.leads import derive_missing_limb_leads
from .io.record import STANDARD_LEADS, ECGRecord
from .saliency import SALIENCY_NOTE

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MM_PER_S = 25.0
MM_PER_MV = 10.0
SPEEDS_MM_PER_S = (25.0, 50.0)
GAINS_MM_PER_MV = (5.0, 10.0, 20.0)
PAGE_S = 10.0  # at 25 mm/s
PAGE_MM = PAGE_S * MM_PER_S  # 250 mm of trace
CAL_MM = 10.0  # room for the calibration pulse left of the trace (x < 0)
DISPLAY_FILTERS = {"monitor": "0.5–40 Hz", "notch50": "50 Hz notch", "notch60": "60 Hz notch"}

GRID_MINOR = "#f7c9c9"
GRID_MAJOR = "#ea8f8f"
PAPER = "#fff7f6"
TRACE = "#111111"
MUTED = "#6f6f6f"
DERIVED = "#1f4e9e"
WARNING = "#b3261e"
SALIENCY_RGB = (0.89, 0.47, 0.0)  # orange: apart from the paper's pinks and the trace's black
SALIENCY_MAX_ALPHA = 0.5

LAYOUT_3X4 = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
LAYOUT_6X2 = (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"))
RHYTHM_CHOICES = ("II", "V1", "I", "V5", "III", "aVF")

_MARGIN_MM = 4.0
_HEADER_MM = 12.0
_CAPTION_MM = 4.0


def _statuses(record: ECGRecord, lead_status: dict[str, str] | None) -> dict[str, str]:
    """Each lead the record has or should have -> "recorded" | "derived" | "flat" | "zero-filled"."""
    out = {}
    for lead in list(STANDARD_LEADS) + [lead for lead in record.leads if lead not in STANDARD_LEADS]:
        if lead not in record.leads or lead in record.zero_leads:
            status = "zero-filled"
        elif lead in record.derived_leads:
            status = "derived"
        else:
            status = "recorded"
        if lead_status and lead in lead_status and status != "zero-filled":
            # The caller's account (prepare's) wins, except that a lead we have no trace for
            # cannot be drawn whatever it says.
            status = lead_status[lead]
        out[lead] = status
    return out


def _label(lead: str, status: str) -> tuple[str, str]:
    if lead not in STANDARD_LEADS:
        return f"{lead} (not used by ECG-FM)", MUTED
    if status == "derived":
        return f"{lead} (derived)", DERIVED
    if status == "zero-filled":
        return f"{lead} — not recorded", MUTED
    if status == "flat":
        return f"{lead} — flat, no signal", MUTED
    return lead, TRACE


class _Paper:
    """One axes in millimetres: x = 0 at the start of the trace, y = 0 at the bottom."""

    def __init__(self, height_mm: float, title: str, settings: str, gain_mm_per_mv: float,
                 speed_mm_per_s: float, caption: str | None = None):
        from matplotlib.figure import Figure

        self.height = height_mm
        self.gain, self.speed = gain_mm_per_mv, speed_mm_per_s
        header = _HEADER_MM + (_CAPTION_MM if caption else 0.0)
        width = CAL_MM + PAGE_MM
        fig_w = width + 2 * _MARGIN_MM
        fig_h = height_mm + _MARGIN_MM + header
        self.fig = Figure(figsize=(fig_w / 25.4, fig_h / 25.4), facecolor="white")
        self.ax = self.fig.add_axes((_MARGIN_MM / fig_w, _MARGIN_MM / fig_h, width / fig_w,
                                     height_mm / fig_h))
        ax = self.ax
        ax.set_xlim(-CAL_MM, PAGE_MM)
        ax.set_ylim(0, height_mm)
        ax.set_aspect("equal", adjustable="box")
        ax.set_facecolor(PAPER)
        ax.set_axis_off()
        ax.add_patch(_rect(-CAL_MM, 0, width, height_mm, PAPER))
        self._grid(width)
        self._fig_w, self._fig_h = fig_w, fig_h
        self.fig.text(_MARGIN_MM / fig_w, 1 - 2.5 / fig_h, title, ha="left", va="top", fontsize=9,
                      color="#333333")
        self.fig.text(1 - _MARGIN_MM / fig_w, 1 - 7.5 / fig_h, settings, ha="right", va="top", fontsize=8,
                      color="#333333", gid="settings")
        if caption:
            self.fig.text(_MARGIN_MM / fig_w, 1 - (_HEADER_MM - 0.5) / fig_h, caption, ha="left", va="top",
                          fontsize=7, color=MUTED, gid="saliency-caption")

    def subtitle(self, text: str) -> None:
        self.fig.text(_MARGIN_MM / self._fig_w, 1 - 7.5 / self._fig_h, text, ha="left", va="top",
                      fontsize=7.5, color=MUTED)

    def _grid(self, width: float) -> None:
        from matplotlib.collections import LineCollection

        minor, major = [], []
        for x in np.arange(-CAL_MM, PAGE_MM + 0.5):
            (major if round(x) % 5 == 0 else minor).append([(x, 0), (x, self.height)])
        for y in np.arange(0, self.height + 0.5):
            (major if round(y) % 5 == 0 else minor).append([(-CAL_MM, y), (PAGE_MM, y)])
        self.ax.add_collection(LineCollection(minor, colors=GRID_MINOR, linewidths=0.3, zorder=1))
        self.ax.add_collection(LineCollection(major, colors=GRID_MAJOR, linewidths=0.6, zorder=1))

    def calibration(self, baseline: float) -> None:
        """A 1 mV pulse left of the trace, as tall as the gain (10 mm at 10 mm/mV), 5 mm wide."""
        x0 = -CAL_MM + 1.5
        h = 1.0 * self.gain
        xs = [x0, x0 + 1.5, x0 + 1.5, x0 + 6.5, x0 + 6.5, x0 + 8.0]
        ys = [baseline, baseline, baseline + h, baseline + h, baseline, baseline]
        self.ax.plot(xs, ys, color=TRACE, lw=0.8, zorder=3, solid_joinstyle="miter",
                     gid="calibration")

    def trace(self, x0_mm: float, baseline: float, values_mv: np.ndarray, fs: float,
              clip_mm: float, gid: str) -> None:
        if values_mv.size < 2:
            return
        v = values_mv.astype(np.float64)
        v = v - np.median(v)  # sit the trace on its baseline (display only)
        y = np.clip(baseline + v * self.gain, baseline - clip_mm, baseline + clip_mm)
        x = x0_mm + np.arange(v.size) / fs * self.speed
        self.ax.plot(x, y, color=TRACE, lw=0.7, zorder=3, solid_joinstyle="round", gid=gid)

    def label(self, x_mm: float, y_mm: float, text: str, color: str, mark: str | None = None,
              size: float = 8) -> None:
        """The lead's name; `mark` (e.g. "noise", from a signal-quality check) follows it in the warning colour."""
        artist = self.ax.text(x_mm + 1.0, y_mm, text, color=color, fontsize=size, ha="left", va="top",
                              zorder=4, fontweight="bold" if color == TRACE else "normal",
                              fontstyle="italic" if color == MUTED else "normal")
        if mark:  # placed at the label's right edge once the label is laid out, whatever the font
            self.ax.annotate((", " if " — " in text else " — ") + mark, xy=(1, 1), xycoords=artist, ha="left",
                             va="top", color=WARNING, fontsize=size, fontweight="bold", zorder=5, gid="lead-mark")

    def saliency(self, x0_mm: float, y0_mm: float, y1_mm: float, t0_s: float, t1_s: float,
                 track: tuple[np.ndarray, np.ndarray], gid: str) -> None:
        """Shade [y0, y1] from x0 on, darker where the saliency of [t0, t1) on the recording's clock is higher."""
        times, values = track
        inside = (times >= t0_s) & (times < t1_s)
        if inside.sum() < 2 or not np.isfinite(values[inside]).any():
            return
        t, v = times[inside], values[inside]
        mids = (t[:-1] + t[1:]) / 2
        edges = np.concatenate([[t[0] - (mids[0] - t[0])], mids, [t[-1] + (t[-1] - mids[-1])]])
        x = x0_mm + (np.clip(edges, t0_s, t1_s) - t0_s) * self.speed
        self.ax.pcolormesh(x, [y0_mm, y1_mm], np.ma.masked_invalid(v[None, :].astype(np.float64)),
                           cmap=_saliency_colormap(), vmin=0.0, vmax=1.0, shading="flat", zorder=2,
                           edgecolors="none", antialiased=False, gid=gid)

    def separator(self, x_mm: float, baseline: float) -> None:
        self.ax.plot([x_mm, x_mm], [baseline - 3, baseline + 3], color=TRACE, lw=0.7, zorder=3)


def _rect(x, y, w, h, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=color, edgecolor="none", zorder=0)


def _saliency_colormap():
    """From transparent (0) to half-opaque orange (1); no value (NaN) is transparent."""
    from matplotlib.colors import LinearSegmentedColormap

    ramp = LinearSegmentedColormap.from_list("ecgfm-saliency", [(*SALIENCY_RGB, 0.0),
                                                                (*SALIENCY_RGB, SALIENCY_MAX_ALPHA)])
    return ramp.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def filtered_for_display(signal: np.ndarray, fs: float, kind: str) -> np.ndarray:
    """A filtered copy of `signal` [leads, samples] in mV, for the eye only; `signal` is left as it is.

    "monitor": 0.5–40 Hz band-pass (Butterworth, order 2), "notch50" / "notch60": a notch at the mains
    frequency (Q = 10: 5 or 6 Hz wide, settled within about 0.1 s of the start); each runs forwards
    and backwards (zero phase), so no wave is shifted. Missing samples (NaN) are bridged for
    filtering and stay missing.
    """
    from scipy import signal as filters

    if kind not in DISPLAY_FILTERS:
        raise ValueError(f"display_filter must be one of {', '.join(DISPLAY_FILTERS)} or None, not {kind!r}.")
    highest = 40.0 if kind == "monitor" else float(kind.removeprefix("notch"))
    if fs <= 2 * highest:
        raise ECGFMError(f"the {DISPLAY_FILTERS[kind]} display filter needs a sampling rate above "
                         f"{2 * highest:g} Hz; this record is sampled at {fs:g} Hz.")
    if kind == "monitor":
        sos = filters.butter(2, [0.5, 40.0], btype="bandpass", fs=fs, output="sos")
    else:
        sos = filters.tf2sos(*filters.iirnotch(highest, 10.0, fs=fs))
    out = np.array(signal, dtype=np.float64)
    positions = np.arange(out.shape[-1])
    for row in out:
        missing = ~np.isfinite(row)
        if row.size < 2 or missing.all():
            continue
        row[missing] = np.interp(positions[missing], positions[~missing], row[~missing])
        # 3 s of mirrored signal at each end lets the 0.5 Hz high-pass settle before the page starts.
        row[:] = filters.sosfiltfilt(sos, row, padlen=min(row.size - 1, int(3 * fs)))
        row[missing] = np.nan
    return out


def _title(record: ECGRecord, shown_s: float, layout: str) -> str:
    start = record.start_s
    total = record.total_duration_s or record.duration_s
    span = f"{start:.1f}–{start + shown_s:.1f} s"
    if abs(shown_s - total) > 1e-6 or start > 0:
        span += f" of a {total:.1f} s recording"
    return f"{record.name}   ·   {span}   ·   {record.fs:g} Hz   ·   {layout}"


def plot_ecg(record: ECGRecord, lead_status: dict[str, str] | None = None, row_scale: float = 1.0, *,
             gain_mm_per_mv: float = MM_PER_MV, speed_mm_per_s: float = MM_PER_S,
             display_filter: str | None = None, saliency: tuple[np.ndarray, np.ndarray] | None = None,
             saliency_behind_leads: bool = False, lead_marks: dict[str, str] | None = None) -> "Figure":
    """Draw the first page of `record` on ECG paper; return a matplotlib Figure (no pyplot).

    `lead_status` (as `prepare` returns it) marks leads as derived or not recorded; without it the
    record's own `derived_leads` / `zero_leads` are used. Limb leads missing from the file are
    derived from I and II for display, exactly as `prepare` does, and labelled "(derived)".
    `row_scale` < 1 brings the rows closer together (a printed page); gain and speed hold.
    `gain_mm_per_mv` (5, 10, 20) and `speed_mm_per_s` (25, 50: the same paper then shows 5 s) set
    the scale; `display_filter` ("monitor", "notch50", "notch60") filters the drawn copy only.
    `saliency` (times on the recording's clock, values in [0, 1], NaN for none; `saliency_track`
    makes it from a Prediction) shades the rhythm strip, and every lead with `saliency_behind_leads`;
    the figure then carries SALIENCY_NOTE. `lead_marks` ({"V2": "noise"}) adds a warning to labels.
    """
    if gain_mm_per_mv not in GAINS_MM_PER_MV:
        raise ValueError(f"gain_mm_per_mv must be one of {GAINS_MM_PER_MV}, not {gain_mm_per_mv!r}.")
    if speed_mm_per_s not in SPEEDS_MM_PER_S:
        raise ValueError(f"speed_mm_per_s must be one of {SPEEDS_MM_PER_S}, not {speed_mm_per_s!r}.")
    record = derive_missing_limb_leads(record)
    status = _statuses(record, lead_status)
    marks = lead_marks or {}
    fs = record.fs
    page_s = PAGE_MM / speed_mm_per_s
    n_show = min(record.signal.shape[1], int(round(page_s * fs)))
    shown_s = n_show / fs
    drawn = record.signal[:, :n_show]
    extras = {lead: values[:n_show] for lead, values in record.extra_leads.items()}
    if display_filter is not None:
        # Up to 3 s of the record beyond the page are filtered with it, so its right edge does not ring.
        end = min(record.signal.shape[1], n_show + int(round(3 * fs)))
        try:
            drawn = filtered_for_display(record.signal[:, :end], fs, display_filter)[:, :n_show]
            extras = {lead: filtered_for_display(values[None, :end], fs, display_filter)[0, :n_show]
                      for lead, values in record.extra_leads.items()}
        except ECGFMError as error:
            raise ECGFMError(f"{record.name}: {error}") from None
    settings = f"{speed_mm_per_s:g} mm/s   {gain_mm_per_mv:g} mm/mV"
    if display_filter is not None:
        settings += f"   {DISPLAY_FILTERS[display_filter]}"
    if saliency is not None:
        times, values = (np.asarray(a, dtype=np.float64) for a in saliency)
        on_page = (times >= record.start_s) & (times < record.start_s + shown_s)
        saliency = (times, values) if np.isfinite(values[on_page]).any() else None
    caption = f"Shaded orange: {SALIENCY_NOTE}" if saliency is not None else None

    def new_paper(height_mm: float, layout: str) -> _Paper:
        return _Paper(height_mm, _title(record, shown_s, layout), settings, gain_mm_per_mv, speed_mm_per_s,
                      caption)

    def samples(lead: str, t0: float, t1: float) -> np.ndarray:
        row = drawn[record.leads.index(lead)]
        a, b = int(round(t0 * fs)), min(n_show, int(round(t1 * fs)))
        return row[a:b] if b > a else row[:0]

    def shade(x0_mm: float, top: float, row_mm: float, t0: float, t1: float, gid: str) -> None:
        if saliency is not None:
            paper.saliency(x0_mm, top - row_mm, top, record.start_s + t0, record.start_s + t1, saliency,
                           gid=f"saliency:{gid}")

    drawable = [lead for lead in STANDARD_LEADS if status[lead] != "zero-filled"]
    rhythm = next((lead for lead in RHYTHM_CHOICES if lead in drawable), None)
    leads_text = "12-lead" if len(drawable) == 12 else f"{len(drawable)} of 12 leads"

    if len(drawable) >= 6 and shown_s >= page_s - 1e-9:
        row_mm, rhythm_mm = 40.0 * row_scale, 40.0 * row_scale
        paper = new_paper(3 * row_mm + rhythm_mm, f"{leads_text}, 3 × 4 + rhythm")
        col_s = page_s / 4
        for r, row in enumerate(LAYOUT_3X4):
            top = paper.height - r * row_mm
            base = top - 0.6 * row_mm
            paper.calibration(base)
            for c, lead in enumerate(row):
                x0 = c * col_s * speed_mm_per_s
                if c:
                    paper.separator(x0, base)
                text, color = _label(lead, status[lead])
                paper.label(x0, top - 1.5, text, color, marks.get(lead))
                if saliency_behind_leads:
                    shade(x0, top, row_mm, c * col_s, (c + 1) * col_s, f"trace:{lead}")
                if status[lead] != "zero-filled":
                    paper.trace(x0, base, samples(lead, c * col_s, (c + 1) * col_s), fs,
                                clip_mm=2 * row_mm, gid=f"trace:{lead}")
        _rhythm_strip(paper, rhythm, status, rhythm_mm, samples, fs, shown_s, marks, shade)
    elif len(drawable) >= 6:
        col_s = min(shown_s, page_s / 2)
        # The rhythm strip only adds something when there is more than one column's worth.
        row_mm, rhythm_mm = 30.0 * row_scale, (35.0 * row_scale if shown_s > col_s + 1e-9 else 0.0)
        paper = new_paper(6 * row_mm + rhythm_mm, f"{leads_text}, 6 × 2 (both columns "
                                                  f"0–{col_s:.1f} s){' + rhythm' if rhythm_mm else ''}")
        for r, row in enumerate(LAYOUT_6X2):
            top = paper.height - r * row_mm
            base = top - 0.6 * row_mm
            paper.calibration(base)
            for c, lead in enumerate(row):
                x0 = c * (page_s / 2) * speed_mm_per_s
                if c:
                    paper.separator(x0, base)
                text, color = _label(lead, status[lead])
                paper.label(x0, top - 1.0, text, color, marks.get(lead))
                if saliency_behind_leads or (not rhythm_mm and lead == rhythm):
                    shade(x0, top, row_mm, 0.0, col_s, f"trace:{lead}")
                if status[lead] != "zero-filled":
                    paper.trace(x0, base, samples(lead, 0.0, col_s), fs, clip_mm=2 * row_mm,
                                gid=f"trace:{lead}")
        if rhythm_mm:
            _rhythm_strip(paper, rhythm, status, rhythm_mm, samples, fs, shown_s, marks, shade)
    else:
        # Few leads: each one gets a full-width strip, in the record's own order.
        leads = [lead for lead in record.leads if lead not in record.zero_leads]
        missing = [lead for lead in record.leads if lead in record.zero_leads]
        strips = leads + missing + list(extras)
        # Every strip is a rhythm strip here; the saliency goes with the one a rhythm strip would show.
        banded = next((lead for lead in RHYTHM_CHOICES if lead in leads), strips[0] if strips else None)
        row_mm = 40.0 * row_scale
        layout = f"{len(leads)} of 12 leads, one strip per lead" if leads else "no standard lead, one strip per channel"
        paper = new_paper(max(1, len(strips)) * row_mm, layout)
        for r, lead in enumerate(strips):
            top = paper.height - r * row_mm
            base = top - 0.6 * row_mm
            paper.calibration(base)
            if saliency_behind_leads or lead == banded:
                shade(0.0, top, row_mm, 0.0, shown_s, f"trace:{lead}")
            if lead in extras:
                paper.label(0, top - 1.5, f"{lead} (not used by ECG-FM)", MUTED, marks.get(lead))
                paper.trace(0, base, extras[lead], fs, clip_mm=2 * row_mm, gid=f"trace:{lead}")
                continue
            text, color = _label(lead, status.get(lead, "recorded"))
            paper.label(0, top - 1.5, text, color, marks.get(lead))
            if lead in leads:
                paper.trace(0, base, samples(lead, 0.0, shown_s), fs, clip_mm=2 * row_mm,
                            gid=f"trace:{lead}")
        # Name the 12-lead leads that are absent, so nobody looks for them.
        absent = [lead for lead in STANDARD_LEADS if lead not in record.leads]
        if absent:
            paper.subtitle("Not recorded: " + ", ".join(absent))
    return paper.fig


def _rhythm_strip(paper: _Paper, lead: str | None, status: dict[str, str], row_mm: float,
                  samples, fs: float, shown_s: float, marks: dict[str, str], shade) -> None:
    top = row_mm
    base = top - 0.6 * row_mm
    paper.calibration(base)
    if lead is None:
        paper.label(0, top - 1.5, "Rhythm strip — no lead recorded", MUTED)
        return
    text, color = _label(lead, status[lead])
    paper.label(0, top - 1.5, f"{text} — rhythm", color, marks.get(lead))
    shade(0.0, top, row_mm, 0.0, shown_s, f"rhythm:{lead}")
    paper.trace(0, base, samples(lead, 0.0, shown_s), fs, clip_mm=2 * row_mm,
                gid=f"rhythm:{lead}")


def figure_to_png(fig: "Figure", dpi: int = 150) -> bytes:
    """The figure as PNG bytes (Agg), without touching pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()


OVERVIEW_COLUMNS = 1200  # min/max pairs drawn across the strip: enough for the eye, bounded for any length


def plot_overview(record: ECGRecord, window_s: tuple[float, float]) -> "Figure":
    """The whole recording as one compressed strip, with the analysed window shaded.

    For long recordings (Holter, monitoring): where the 10 s on the paper sit in the hours around
    them. The trace is each column's minimum and maximum, so no beat vanishes in decimation.
    """
    from matplotlib.figure import Figure

    lead = next((lead for lead in RHYTHM_CHOICES if lead in record.leads and lead not in record.zero_leads),
                record.leads[0] if record.leads else next(iter(record.extra_leads), None))
    row = (record.signal[record.leads.index(lead)] if lead in record.leads
           else record.extra_leads.get(lead, np.zeros(0)))
    fig = Figure(figsize=(10.5, 1.3), facecolor="white")
    ax = fig.add_axes((0.04, 0.3, 0.94, 0.55))
    total = record.duration_s
    if row.size:
        columns = min(OVERVIEW_COLUMNS, row.size)
        edges = np.linspace(0, row.size, columns + 1).astype(int)
        lows = np.minimum.reduceat(row, edges[:-1])
        highs = np.maximum.reduceat(row, edges[:-1])
        t = record.start_s + edges[:-1] / record.fs
        ax.fill_between(t, lows, highs, color=TRACE, linewidth=0.4, step="post")
    start, end = window_s
    ax.axvspan(start, end, facecolor="#f0a830", alpha=0.6, edgecolor="#b3261e", linewidth=1.2, gid="window")
    ax.set_xlim(record.start_s, record.start_s + total)
    ax.set_yticks([])
    minutes = total > 180
    unit = 60.0 if minutes else 1.0
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 240, 480) if total / unit / s <= 10) * unit
    ticks = np.arange(np.ceil(record.start_s / step) * step, record.start_s + total + 1e-9, step)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{v / unit:g} {'min' if minutes else 's'}" for v in ticks], fontsize=7)
    ax.set_title(f"Whole recording ({total / 60:.1f} min, lead {lead}); shaded: the {end - start:.0f} s "
                 f"analysed ({start:.1f}–{end:.1f} s)" if minutes else
                 f"Whole recording ({total:.1f} s, lead {lead}); shaded: the {end - start:.1f} s analysed "
                 f"({start:.1f}–{end:.1f} s)", fontsize=8, loc="left")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return fig
