"""The page in a real browser: Playwright driving Debian's Chromium against `python app.py`.

Uploads a WFDB record, presses Analyse, waits for the findings and saves screenshots under
test-artifacts/ (git-ignored) for a person to look at. Skips when /usr/bin/chromium is absent.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium to run the browser test)",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")

from tests.fairseq_layout import write_checkpoint  # noqa: E402
from tests.test_app import running_app, wait_for_model, write_csv, write_wfdb  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_factory(browser):
    contexts = []

    def new_page():
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        return page

    yield new_page
    for context in contexts:
        context.close()


def analyse(page, url: str, paths: list[Path], sampling_rate: str | None = None) -> None:
    page.goto(url)
    page.get_by_text("Research use only").first.wait_for()
    page.locator("input[type=file]").first.set_input_files([str(p) for p in paths])
    for path in paths:  # the upload has landed when the file list has a row for each file
        page.locator(f'td.filename[aria-label="{path.name}"]').wait_for(state="attached")
    if sampling_rate:
        page.get_by_label("Sampling rate (Hz)").fill(sampling_rate)
    page.get_by_role("button", name="Analyse").click()


def test_upload_analyse_and_see_findings(tmp_path, page_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    record = write_wfdb(tmp_path / "ecg", "patient_upload")
    csv = write_csv(tmp_path / "ecg" / "second_record.csv")
    checkpoint = write_checkpoint(tmp_path / "tiny_finetuned.pt")
    with running_app(tmp_path / "app", ECGFM_CHECKPOINT=str(checkpoint)) as (url, _):
        assert wait_for_model(url)["model_loaded"]
        page = page_factory()
        analyse(page, url, record + [csv], sampling_rate="250")
        report = page.locator(".ecgfm-report")
        report.locator("table.findings").first.wait_for()

        first = report.locator("section.record").first
        assert first.locator("h2").inner_text() in {"patient_upload.hea", "second_record.csv"}
        assert report.locator("section.record").count() == 2
        text = report.inner_text()
        assert "Atrial fibrillation" in text and "Sinus rhythm" in text
        assert re.search(r"\b0\.\d{3}\b", text), "a probability with three decimals"
        assert "Training prevalence" in text and "81.2 %" in text  # sinus rhythm's baseline
        assert "What was read" in text and "500 Hz" in text and "250 Hz" in text
        assert first.locator("img.ecg").evaluate("img => img.naturalWidth") > 500
        assert page.get_by_text("Research use only").first.is_visible()
        for name in ("ecgfm-results.json", "ecgfm-results.csv"):
            assert page.locator(f'a[download="{name}"]').count() == 1
        page.screenshot(path=str(ARTIFACTS / "app-findings.png"), full_page=True)

        # per-segment probabilities open on demand
        first.locator("details.segments summary").click()
        assert first.locator("details.segments table tbody tr").count() == 2

        # where the weights came from
        page.get_by_text("Model and software").click()
        sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        page.get_by_text(sha256).wait_for()
        assert page.get_by_text(checkpoint.name).first.is_visible()


def test_without_weights_the_ecg_is_drawn_and_the_reason_shown(tmp_path, page_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    record = write_wfdb(tmp_path / "ecg", "no_weights_record")
    with running_app(tmp_path / "app", ECGFM_CHECKPOINT=str(tmp_path / "missing" / "finetuned.pt")) as (url, _):
        page = page_factory()
        analyse(page, url, record)
        report = page.locator(".ecgfm-report")
        report.locator(".unavailable").first.wait_for()
        assert "does not exist" in report.locator(".unavailable").first.inner_text()
        assert report.locator("img.ecg").first.evaluate("img => img.naturalWidth") > 500
        assert report.locator("table.findings").count() == 0
        page.screenshot(path=str(ARTIFACTS / "app-no-weights.png"), full_page=True)
