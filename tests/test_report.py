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
