"""ECG paper rendering: layout, labels and markings, physical scale, PNG output."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ecgfm.errors import ECGFMError
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.plot import CAL_MM, MM_PER_S, WARNING, figure_to_png, filtered_for_display, plot_ecg
from ecgfm.preprocess import prepare

LEADS = list(STANDARD_LEADS)
REPO = Path(__file__).resolve().parents[1]


def synthetic(fs: float, seconds: float, n_leads: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(fs * seconds))) / fs
    beats = np.zeros_like(t)
    for beat in np.arange(0.2, seconds, 60 / 75):
        beats += np.exp(-0.5 * ((t - beat) / 0.01) ** 2) \
            + 0.25 * np.exp(-0.5 * ((t - beat - 0.25) / 0.04) ** 2)
    return np.asarray([rng.uniform(0.5, 1.5) * beats + 0.01 * rng.standard_normal(t.size)
                       for _ in range(n_leads)], dtype=np.float32)


def record(signal, fs, leads, **kw) -> ECGRecord:
    return ECGRecord(name="synthetic", signal=signal, fs=fs, leads=list(leads), format="test",
                     units="mV", **kw)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def lines(fig, prefix: str) -> dict[str, np.ndarray]:
    return {line.get_gid(): line.get_xydata() for ax in fig.axes for line in ax.lines
            if (line.get_gid() or "").startswith(prefix)}


def test_twelve_lead_standard_layout():
    fig = plot_ecg(record(synthetic(500, 10), 500, LEADS))
    (ax,) = fig.axes
    labels = texts(fig)
    for lead in LEADS:
        assert lead in labels
    assert "II — rhythm" in labels
    assert not any("derived" in t or "not recorded" in t for t in labels)
    # 25 mm/s: the 10 s page is 250 mm wide, plus room for the calibration pulse.
    assert ax.get_xlim() == (-CAL_MM, 250.0)
    traces = lines(fig, "trace:")
    assert set(traces) == {f"trace:{lead}" for lead in LEADS}
    # Consecutive 2.5 s windows: I at 0-62.5 mm, aVR at 62.5-125, V1 at 125-187.5, V4 at 187.5-250.
    for col, lead in enumerate(("I", "aVR", "V1", "V4")):
        xs = traces[f"trace:{lead}"][:, 0]
        assert xs[0] == pytest.approx(col * 62.5)
        assert xs[-1] == pytest.approx((col + 1) * 62.5, abs=0.1)
    rhythm = lines(fig, "rhythm:")["rhythm:II"]
    assert rhythm[0, 0] == 0 and rhythm[-1, 0] == pytest.approx(10 * MM_PER_S, abs=0.1)
    # 10 mm/mV: a 1 mV calibration pulse at the start of each of the 4 rows is 10 mm tall.
    cals = [line.get_xydata() for line in ax.lines if line.get_gid() == "calibration"]
    assert len(cals) == 4
    assert all(np.ptp(c[:, 1]) == pytest.approx(10.0) and np.ptp(c[:, 0]) < CAL_MM for c in cals)


def test_physical_scale_and_grid():
    fig = plot_ecg(record(synthetic(500, 10), 500, LEADS))
    (ax,) = fig.axes
    # The axes is sized so that one data unit is one millimetre of figure.
    box = ax.get_position()
    width_mm = box.width * fig.get_figwidth() * 25.4
    height_mm = box.height * fig.get_figheight() * 25.4
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert width_mm == pytest.approx(x1 - x0, rel=1e-6)
    assert height_mm == pytest.approx(y1 - y0, rel=1e-6)
    minor, major = ax.collections[:2]
    minor_x = sorted({seg[0][0] for seg in minor.get_segments() if seg[0][0] == seg[1][0]})
    major_x = sorted({seg[0][0] for seg in major.get_segments() if seg[0][0] == seg[1][0]})
    assert np.allclose(np.diff(major_x), 5.0)
    assert set(np.diff(minor_x)) <= {1.0, 2.0}  # 1 mm, skipping where a major line is
    assert len(major_x) == (250 + CAL_MM) / 5 + 1


def test_png(tmp_path):
    fig = plot_ecg(record(synthetic(500, 10), 500, LEADS))
    png = figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    path = tmp_path / "ecg.png"
    fig.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    Path("/tmp/ecgfm_test_plot_12lead.png").write_bytes(png)  # for looking at by hand


def test_eight_lead_record_marks_derived_leads():
    full = synthetic(500, 10)
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rec = record(full[[LEADS.index(lead) for lead in eight]], 500, eight)
    prepared = prepare(rec)
    for status in (None, prepared.lead_status):
        fig = plot_ecg(rec, status)
        labels = texts(fig)
        for lead in ("III", "aVR", "aVL", "aVF"):
            assert f"{lead} (derived)" in labels
            assert f"trace:{lead}" in lines(fig, "trace:")
        for lead in eight:
            assert lead in labels
    # Drawn values follow Einthoven: III = II - I (offsets removed for display).
    fig = plot_ecg(rec)
    iii = lines(fig, "trace:")["trace:III"][:, 1]
    i, ii = full[0, :1250].astype(float), full[1, :1250].astype(float)
    expected = (ii - i) - np.median(ii - i)
    base = np.median(iii - expected * 10)
    np.testing.assert_allclose(iii, base + expected * 10, atol=1e-3)


def test_zero_filled_lead_marked_without_trace():
    full = synthetic(500, 10)
    leads = [lead for lead in LEADS if lead != "V1"]
    rec = record(np.delete(full, LEADS.index("V1"), axis=0), 500, leads)
    fig = plot_ecg(rec, prepare(rec).lead_status)
    assert "V1 — not recorded" in texts(fig)
    assert "trace:V1" not in lines(fig, "trace:")
    # A lead the reader zero-filled is treated the same way.
    zeroed = full.copy()
    zeroed[LEADS.index("V3")] = 0
    fig = plot_ecg(record(zeroed, 500, LEADS, zero_leads=["V3"]))
    assert "V3 — not recorded" in texts(fig) and "trace:V3" not in lines(fig, "trace:")


def test_two_lead_holter_gets_one_strip_per_lead():
    rec = record(synthetic(250, 30, n_leads=2), 250, ["II", "V5"], total_duration_s=3600.0)
    fig = plot_ecg(rec)
    labels = texts(fig)
    assert "II" in labels and "V5" in labels
    assert any(t.startswith("Not recorded: I, III") for t in labels)
    traces = lines(fig, "trace:")
    assert set(traces) == {"trace:II", "trace:V5"}
    # Only the first 10 s, full width.
    assert traces["trace:II"][-1, 0] == pytest.approx(250.0, abs=0.2)
    assert any("0.0–10.0 s of a 3600.0 s recording" in t for t in labels)


def test_single_lead():
    fig = plot_ecg(record(synthetic(360, 10, n_leads=1), 360, ["I"]))
    assert set(lines(fig, "trace:")) == {"trace:I"}
    assert len(fig.axes[0].lines) == 2  # the trace and its calibration pulse


def test_three_second_record_draws_what_exists():
    fig = plot_ecg(record(synthetic(500, 3), 500, LEADS))
    labels = texts(fig)
    for lead in LEADS:
        assert lead in labels
    traces = lines(fig, "trace:")
    assert set(traces) == {f"trace:{lead}" for lead in LEADS}
    for lead in ("I", "aVF"):
        xs = traces[f"trace:{lead}"][:, 0]
        assert xs[0] == 0 and xs[-1] == pytest.approx(3 * MM_PER_S, abs=0.1)
    for lead in ("V1", "V6"):
        xs = traces[f"trace:{lead}"][:, 0]
        assert xs[0] == 125 and xs[-1] == pytest.approx(125 + 3 * MM_PER_S, abs=0.1)
    assert not lines(fig, "rhythm:")  # it would repeat lead II
    assert fig.axes[0].get_xlim() == (-CAL_MM, 250.0)


def test_seven_second_record_has_rhythm_strip_of_all_of_it():
    fig = plot_ecg(record(synthetic(400, 7), 400, LEADS))
    rhythm = lines(fig, "rhythm:")["rhythm:II"]
    assert rhythm[-1, 0] == pytest.approx(7 * MM_PER_S, abs=0.1)


def test_threads_and_no_pyplot():
    figs = []

    def work():
        figs.append(figure_to_png(plot_ecg(record(synthetic(500, 10), 500, LEADS))))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(figs) == 4 and len(set(figs)) == 1
    code = ("import sys, numpy as np; from ecgfm.plot import plot_ecg, figure_to_png; "
            "from ecgfm.io.record import ECGRecord; "
            "r = ECGRecord('x', np.zeros((1, 5000)), 500, ['II'], 't', 'mV'); "
            "figure_to_png(plot_ecg(r)); assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_overview_shades_exactly_the_analysed_window():
    from ecgfm.plot import plot_overview

    fs, seconds = 250.0, 600.0
    t = np.arange(int(fs * seconds)) / fs
    signal = np.stack([np.sin(2 * np.pi * 1.2 * t)] * 2).astype(np.float32)
    record = ECGRecord(name="long.hea", signal=signal, fs=fs, leads=["I", "II"], format="test", units="mV")
    fig = plot_overview(record, (120.0, 130.0))
    (ax,) = fig.axes
    (window,) = [p for p in ax.patches if p.get_gid() == "window"]
    x0, x1 = window.get_x(), window.get_x() + window.get_width()
    assert (x0, x1) == pytest.approx((120.0, 130.0))
    assert ax.get_xlim() == pytest.approx((0.0, 600.0))
    assert "lead II" in ax.get_title(loc="left") and "10.0 min" in ax.get_title(loc="left")


def amplitude_at(x: np.ndarray, fs: float, hz: float) -> float:
    """The amplitude of the `hz` sinusoid in x (x spans whole cycles of it)."""
    t = np.arange(x.size) / fs
    return float(np.hypot(2 * np.mean(x * np.sin(2 * np.pi * hz * t)), 2 * np.mean(x * np.cos(2 * np.pi * hz * t))))


@pytest.mark.parametrize("mains", [50, 60])
def test_notch_removes_mains_and_keeps_the_rest(mains):
    fs = 500.0
    t = np.arange(int(10 * fs)) / fs
    slow = np.sin(2 * np.pi * 1.0 * t)
    x = np.stack([slow + 0.3 * np.sin(2 * np.pi * mains * t + 0.4), slow])
    before = x.copy()
    y = filtered_for_display(x, fs, f"notch{mains}")
    np.testing.assert_array_equal(x, before)  # a copy is filtered
    middle = slice(int(fs), int(9 * fs))  # 8 s: whole cycles of 1, 50 and 60 Hz
    assert amplitude_at(x[0, middle], fs, mains) == pytest.approx(0.3, rel=1e-3)
    assert amplitude_at(y[0, middle], fs, mains) < 0.003
    assert amplitude_at(y[0, middle], fs, 1.0) == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(y[1, middle], slow[middle], atol=2e-3)
    # The other mains frequency passes.
    other = 110 - mains
    z = filtered_for_display(np.sin(2 * np.pi * other * t)[None], fs, f"notch{mains}")
    assert amplitude_at(z[0, middle], fs, other) > 0.9


def test_monitor_filter_removes_baseline_wander_and_keeps_the_qrs_band():
    fs = 500.0
    t = np.arange(int(10 * fs)) / fs
    wander, qrs_band = 0.8 * np.sin(2 * np.pi * 0.125 * t), 0.5 * np.sin(2 * np.pi * 10 * t)
    y = filtered_for_display((wander + qrs_band + 1.5)[None], fs, "monitor")[0]
    middle = slice(int(fs), int(9 * fs))
    assert amplitude_at(y[middle], fs, 0.125) < 0.1 and abs(np.mean(y[middle])) < 0.01
    assert amplitude_at(y[middle], fs, 10) == pytest.approx(0.5, rel=0.02)
    # Missing samples stay missing; the rest is filtered around them.
    gappy = (wander + qrs_band)[None].copy()
    gappy[0, 2000:2010] = np.nan
    out = filtered_for_display(gappy, fs, "monitor")
    assert np.isnan(out[0, 2000:2010]).all() and np.isfinite(np.delete(out[0], range(2000, 2010))).all()


def test_display_filter_draws_a_filtered_copy_and_marks_it():
    fs = 500.0
    signal = synthetic(fs, 10)
    t = np.arange(signal.shape[1]) / fs
    signal = (signal + 0.2 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    rec = record(signal, fs, LEADS)
    kept = rec.signal.copy()
    raw = lines(plot_ecg(rec), "rhythm:")["rhythm:II"][:, 1]
    fig = plot_ecg(rec, display_filter="notch50")
    np.testing.assert_array_equal(rec.signal, kept)
    drawn = lines(fig, "rhythm:")["rhythm:II"][:, 1]
    middle = slice(500, 4500)
    assert amplitude_at(raw[middle], fs, 50) == pytest.approx(0.2 * 10, rel=0.01)  # 10 mm/mV
    assert amplitude_at(drawn[middle], fs, 50) < 0.02
    assert "25 mm/s   10 mm/mV   50 Hz notch" in texts(fig)
    assert "25 mm/s   10 mm/mV" in texts(plot_ecg(rec))  # unfiltered: no filter claimed either way
    with pytest.raises(ECGFMError, match=r"^synthetic: .*60 Hz notch.*above 120 Hz.*100 Hz"):
        plot_ecg(record(synthetic(100, 10), 100, LEADS), display_filter="notch60")
    with pytest.raises(ValueError, match="display_filter"):
        plot_ecg(rec, display_filter="lowpass")


def test_gain_scales_traces_and_calibration():
    rec = record(synthetic(500, 10), 500, LEADS)
    at = {gain: plot_ecg(rec, gain_mm_per_mv=gain) for gain in (5.0, 10.0, 20.0)}
    rhythm = {gain: lines(fig, "rhythm:")["rhythm:II"][:, 1] for gain, fig in at.items()}
    for gain in (5.0, 20.0):
        np.testing.assert_allclose(rhythm[gain] - np.median(rhythm[gain]),
                                   (rhythm[10.0] - np.median(rhythm[10.0])) * gain / 10, atol=1e-6)
        cals = [line.get_xydata() for line in at[gain].axes[0].lines if line.get_gid() == "calibration"]
        assert all(np.ptp(c[:, 1]) == pytest.approx(gain) for c in cals)
        assert f"25 mm/s   {gain:g} mm/mV" in texts(at[gain])
    assert np.ptp(rhythm[20.0]) == pytest.approx(2 * np.ptp(rhythm[10.0]))
    with pytest.raises(ValueError, match="gain_mm_per_mv"):
        plot_ecg(rec, gain_mm_per_mv=15)


def test_speed_50_shows_half_the_time_on_the_same_paper():
    fs = 500
    rec = record(synthetic(fs, 10), fs, LEADS)
    fig = plot_ecg(rec, speed_mm_per_s=50)
    traces = lines(fig, "trace:")
    assert fig.axes[0].get_xlim() == (-CAL_MM, 250.0)
    for col, lead in enumerate(("I", "aVR", "V1", "V4")):
        xs = traces[f"trace:{lead}"]
        assert xs.shape[0] == 625  # 1.25 s per column instead of 2.5 s
        assert xs[0, 0] == pytest.approx(col * 62.5) and xs[-1, 0] == pytest.approx((col + 1) * 62.5, abs=0.2)
    # aVR's column starts at 1.25 s of the record.
    slow = lines(plot_ecg(rec), "rhythm:")["rhythm:II"]
    fast = lines(fig, "rhythm:")["rhythm:II"]
    assert fast.shape[0] == 2500 and fast[-1, 0] == pytest.approx(250.0, abs=0.2)
    np.testing.assert_allclose(fast[:, 1], slow[:2500, 1] - np.median(slow[:2500, 1]) + np.median(fast[:, 1]),
                               atol=1e-6)
    assert any("0.0–5.0 s of a 10.0 s recording" in t for t in texts(fig))
    assert "50 mm/s   10 mm/mV" in texts(fig)
    with pytest.raises(ValueError, match="speed_mm_per_s"):
        plot_ecg(rec, speed_mm_per_s=12.5)


def mesh_x(fig, gid: str) -> tuple[float, float]:
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == gid]
    x = mesh.get_coordinates()[..., 0]
    return float(x.min()), float(x.max())


def test_saliency_band_over_the_rhythm_strip_and_behind_leads():
    from ecgfm.saliency import SALIENCY_NOTE

    rec = record(synthetic(500, 30), 500, LEADS).window(12.0, 10.0)
    times = 12.0 + 0.001 + np.arange(4999) / 500
    values = np.abs(np.sin(times)).astype(np.float32)
    values[2499] = np.nan
    fig = plot_ecg(rec, saliency=(times, values))
    assert mesh_x(fig, "saliency:rhythm:II") == pytest.approx((0.0, 249.95), abs=0.01)
    assert not [c for c in fig.axes[0].collections if (c.get_gid() or "").startswith("saliency:trace:")]
    assert any(SALIENCY_NOTE in t for t in texts(fig))
    (mesh,) = [c for c in fig.axes[0].collections if c.get_gid() == "saliency:rhythm:II"]
    shaded = np.ma.ravel(mesh.get_array())
    assert shaded.size == 4999 and shaded.mask[2499] and np.allclose(shaded[:10], values[:10])

    fig = plot_ecg(rec, saliency=(times, values), saliency_behind_leads=True)
    assert mesh_x(fig, "saliency:trace:aVR") == pytest.approx((62.5, 125.0), abs=0.01)
    assert mesh_x(fig, "saliency:trace:V4") == pytest.approx((187.5, 249.95), abs=0.01)
    assert len([c for c in fig.axes[0].collections if (c.get_gid() or "").startswith("saliency:")]) == 13

    # Time no segment covers shows nothing; a series that misses the page draws nothing, says nothing.
    fig = plot_ecg(rec, saliency=(times[:2499], values[:2499]))
    assert mesh_x(fig, "saliency:rhythm:II") == pytest.approx((0.0, 124.95), abs=0.01)
    fig = plot_ecg(rec, saliency=(times + 60, values))
    assert not [c for c in fig.axes[0].collections if (c.get_gid() or "").startswith("saliency:")]
    assert not any(SALIENCY_NOTE in t for t in texts(fig))
    assert not any(SALIENCY_NOTE in t for t in texts(plot_ecg(rec)))


def test_lead_marks_follow_the_label_in_the_warning_colour():
    rec = record(synthetic(500, 10), 500, LEADS)
    fig = plot_ecg(rec, lead_marks={"V2": "noise", "II": "baseline wander"})
    marks = {t.get_text(): t for t in fig.axes[0].texts if t.get_gid() == "lead-mark"}
    assert set(marks) == {" — noise", " — baseline wander", ", baseline wander"}  # II's cell and its rhythm strip
    assert all(t.get_color() == WARNING for t in marks.values())
    assert "V2" in texts(fig) and "II — rhythm" in texts(fig)
    png = figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    two = record(synthetic(250, 10, n_leads=2), 250, ["II", "V5"])
    assert " — noise" in texts(plot_ecg(two, lead_marks={"V5": "noise"}))
