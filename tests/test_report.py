"""The report, described once and rendered to HTML and PDF: adequacy first, findings as the model gave them."""
from __future__ import annotations

from html import escape as html_escape

import numpy as np
import pytest

import ecgfm
from ecgfm import report as reports
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.labels import LABEL_NAMES
from ecgfm.preprocess import prepare
from tests.fairseq_layout import write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return ecgfm.load_model(write_checkpoint(tmp_path_factory.mktemp("w") / "tiny.pt", seed=3), device="cpu")


def ecg(name: str, leads=STANDARD_LEADS, seconds: float = 10.0, fs: float = 500.0) -> ECGRecord:
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-((t % 0.8 - 0.3) ** 2) / (2 * 0.012 ** 2))
    signal = np.stack([beats * (0.5 + 0.1 * i) + 0.01 * np.sin(7 * t + i) for i in range(len(leads))])
    return ECGRecord(name=name, signal=signal, fs=fs, leads=list(leads), format="test", units="mV")


def made(model, record: ECGRecord) -> reports.Report:
    return reports.build(record, prepare(record), ecgfm.predict(model, record))


def test_complete_record_lists_every_finding_most_probable_first(model):
    record = ecg("complete.csv")
    report = made(model, record)
    prediction = ecgfm.predict(model, record)
    assert report.headline.startswith("Complete input")
    assert [f.name for f in report.findings] == sorted(LABEL_NAMES, key=lambda n: -prediction.probabilities[n])
    assert [f.probability for f in report.findings] == sorted(prediction.probabilities.values(), reverse=True)
    html = reports.to_html(report, "r1")
    assert 'class="record level-complete"' in html and "unreliable" not in html
    assert html.index("Complete input") < html.index("Findings") < html.index("What was read")
    assert dict(report.facts)["Leads given to the model"] == "12 recorded"


def test_limited_input_says_so_before_the_findings_and_marks_them(model):
    record = ecg("two_leads.hea", leads=["I", "II"], fs=200.0)
    report = made(model, record)
    assert report.adequacy.level == "limited" and report.findings
    html = reports.to_html(report, "r2")
    assert html.index("Limited input") < html.index("<h3>Findings")
    assert 'table class="findings unreliable"' in html and reports.LIMITED_NOTE in html
    assert "V1, V2, V3, V4, V5, V6" in report.headline and "200 Hz" in report.headline
    facts = dict(report.facts)
    assert "derived from I and II: III, aVR, aVL, aVF" in facts["Leads given to the model"]
    assert "not recorded, given as zeros: V1, V2, V3, V4, V5, V6" in facts["Leads given to the model"]


def test_unusable_input_has_no_findings_only_the_reason(model):
    record = ecg("flat.csv")
    record.signal[:] = 0.4
    report = made(model, record)
    assert report.findings == [] and report.adequacy.level == "unusable"
    assert report.headline.startswith("Not analysed") and "flat" in report.headline
    html = reports.to_html(report, "r3")
    assert "table class=\"findings" not in html and "level-unusable" in html


def test_a_lead_the_model_never_uses_is_listed_as_such(model):
    report = made(model, ecg("mimic.hea", leads=["I", "II", "V"]))
    assert dict(report.facts)["Not used by the model"].startswith("V ")


def test_without_a_model_the_report_says_why_and_still_draws(model):
    record = ecg("no_model.csv")
    report = reports.build(record, prepare(record), None, model_problem="the weights are not available.")
    assert report.findings == [] and report.no_findings == "No prediction: the weights are not available."
    assert reports.ecg_png(report)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_that_could_not_be_read_is_a_card_with_its_sentence():
    report = reports.failed("broken.xml", "broken.xml: the file is empty.")
    html = reports.to_html(report, "r4")
    assert "level-error" in html and "Not read: the file is empty." in html and "<img" not in html


def test_names_are_escaped_and_downloads_named_after_the_record(model):
    report = made(model, ecg('<img src=x onerror="alert(1)">.csv'))
    html = reports.to_html(report, "r5")
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert reports.file_stem("100.hea") == "100" and reports.file_stem("a b/../c.xml") == "a_b_.._c"


def test_pdf_is_one_a4_landscape_page(model):
    pdf = reports.to_pdf(made(model, ecg("page.csv", leads=["I", "II"], seconds=3.0)))
    assert pdf.startswith(b"%PDF-") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") <= 1
    assert b"/Count 1" in pdf
    width, height = (float(v) for v in pdf.split(b"/MediaBox [", 1)[1].split(b"]", 1)[0].split()[2:4])
    assert (width, height) == pytest.approx((297 / 25.4 * 72, 210 / 25.4 * 72), abs=0.5)


def test_the_dataset_label_is_shown_apart_from_the_findings(model):
    report = made(model, ecg("HR06000.hea"))
    report.dataset_label = "Sinus rhythm (SNOMED CT 426783006)"
    html = reports.to_html(report, "r6")
    label = html.index('class="dataset-label"')
    assert "not ECG-FM" in html[label:label + 300] and label < html.index('table class="findings')


def test_a_record_with_no_standard_lead_is_drawn_but_not_judged(model):
    base = ecg("monitor.hea", leads=["I"])
    record = ECGRecord(name="monitor.hea", signal=np.zeros((0, base.signal.shape[1]), dtype=np.float32), fs=500.0,
                       leads=[], format="test", units="mV", extra_leads={"MCL1": base.signal[0]})
    report = made(model, record)
    assert report.adequacy.level == "unusable" and "MCL1" in report.headline and report.findings == []
    assert reports.ecg_png(report)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_long_recording_gets_an_overview_with_its_window(model):
    whole = ecg("holter.hea", seconds=120.0, fs=250.0)
    report = made(model, whole.window(60.0, 10.0))
    assert reports.overview_png(report) is None  # nothing to place it in yet
    report.overview = whole
    assert reports.overview_png(report)[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img class="overview"' in reports.to_html(report, "r7", overview_png=reports.overview_png(report))


def test_a_probe_is_shown_apart_from_ecgfms_findings_and_named_as_the_owners(model, tmp_path):
    from ecgfm.probe import Probe

    encoder = ecgfm.load_model(write_checkpoint(tmp_path / "encoder.pt", "wav2vec2_cmsc", seed=2), device="cpu")
    dim = encoder.dims.embed_dim
    probe = Probe(labels=["my_label"], mean=np.zeros(dim), scale=np.ones(dim), weight=np.full((1, dim), 0.01),
                  bias=np.array([0.2]), card={"n_train": 40, "metrics": {"my_label": {"auroc": 0.91}},
                                              "weights": {"sha256": "ab" * 32}})
    record = ecg("probed.csv")
    prediction = ecgfm.predict(model, record, embedder=encoder, probe=probe)
    report = reports.build(record, prepare(record), prediction)
    assert report.probe == [("my_label", pytest.approx(prediction.probe_probabilities["my_label"]))]
    assert "my_label" not in [f.name for f in report.findings]
    html = reports.to_html(report, "p1")
    section = html[html.index("Your own probe"):html.index("What was read")]
    assert html.index("<h3>Findings") < html.index("Your own probe")
    assert html_escape(reports.PROBE_NOTE) in section and "0.910" in section and "abababababab" in section
    assert f'{prediction.probe_probabilities["my_label"]:.3f}' in section
    assert reports.to_pdf(report).startswith(b"%PDF")


# --- measurements, the device's own reading, signal quality, saliency, display (issue 11) ----------

def test_measurements_head_the_report_beside_the_recording_devices_own(model, samples_dir):
    record = ecgfm.read_ecg(samples_dir / "philips" / "sierra_1_04_01_2020-5-18_15-48-11.xml")
    report = made(model, record)
    device = record.device_report
    assert device is not None and device.measurements and device.statements
    html = reports.to_html(report, "m1", png=reports.ecg_png(report))
    assert html.index("<h3>Measurements") < html.index("<h3>ECG") < html.index("<h3>Findings")
    table = html[html.index('<table class="measurements"'):html.index("</table>", html.index("measurements"))]
    assert reports.MEASUREMENT_NOTE in table and html_escape(reports.DEVICE_NOTE) in table
    assert html_escape(device.source) in table
    rows = {label: (ours, theirs) for label, ours, theirs, _ in reports.measurement_rows(report)}
    assert rows["Heart rate"][1] == f"{device.measurements['heart_rate']:.0f} bpm"
    ours = report.measurements.values["heart_rate"]
    assert rows["Heart rate"][0] == f"{ours:.0f} bpm" and abs(ours - device.measurements["heart_rate"]) <= 2
    statements = html[html.index('class="device-statements"'):]
    assert all(html_escape(line) in statements for line in device.statements)
    assert reports.to_pdf(report).startswith(b"%PDF-")


def test_a_measurement_that_cannot_be_made_is_absent_with_its_reason(model):
    report = made(model, ecg("two_chest_leads.csv", leads=["V1", "V2"]))
    rows = {label: (ours, reason) for label, ours, _, reason in reports.measurement_rows(report)}
    assert rows["QRS axis"][0] == "—" and rows["QRS axis"][1] == report.measurements.absent["qrs_axis"]
    assert html_escape(rows["QRS axis"][1]) in reports.to_html(report, "m2")


def test_a_flagged_lead_is_marked_on_the_ecg_and_explained(model):
    record = ecg("noisy_v2.csv")
    record.signal[7] += np.random.default_rng(0).normal(0.0, 0.2, record.signal.shape[1])
    report = made(model, record)
    assert report.quality.lead_marks() == {"V2": "noise"} and report.adequacy.level == "limited"
    html = reports.to_html(report, "q1")
    quality = html[html.index('class="warnings quality"'):]
    assert all(html_escape(line) in quality for line in report.quality.sentences())
    marks = [t for ax in reports.ecg_figure(report).axes for t in ax.texts if t.get_gid() == "lead-mark"]
    assert [(mark.xycoords.get_text(), mark.get_text()) for mark in marks] == [("V2", " — noise")]
    clean = made(model, ecg("clean.csv"))
    assert 'class="ok quality"' in reports.to_html(clean, "q2")


def test_saliency_is_shaded_and_said_what_it_is(model):
    record = ecg("salient.csv")
    report = reports.build(record, prepare(record), ecgfm.predict(model, record, saliency=True))
    times, values = report.saliency
    assert times[0] == pytest.approx(0.001) and np.nanmax(values) == pytest.approx(1.0)
    assert html_escape(reports.SALIENCY_NOTE) in reports.to_html(report, "s1", png=reports.ecg_png(report))
    gids = {artist.get_gid() for ax in reports.ecg_figure(report).axes for artist in ax.get_children()}
    assert any(str(gid).startswith("saliency:rhythm") for gid in gids)
    without = made(model, record)
    html = reports.to_html(without, "s2", png=reports.ecg_png(without))
    assert without.saliency is None and html_escape(reports.SALIENCY_NOTE) not in html


def test_display_settings_change_the_drawing_only_and_are_stated(model):
    record = ecg("display.csv")
    before = record.signal.copy()
    display = reports.Display(gain_mm_per_mv=20, speed_mm_per_s=50, filter="notch50")
    report = reports.build(record, prepare(record), ecgfm.predict(model, record), display=display)
    assert report.display.describe() == "50 mm/s, 20 mm/mV, display filter 50 Hz notch"
    html = reports.to_html(report, "d1", png=reports.ecg_png(report))
    assert html_escape(report.display.describe()) in html and html_escape(reports.DISPLAY_NOTE) in html
    np.testing.assert_array_equal(record.signal, before)
    plain = made(model, record)
    assert [f.probability for f in report.findings] == [f.probability for f in plain.findings]
    assert reports.to_pdf(report).startswith(b"%PDF-")
