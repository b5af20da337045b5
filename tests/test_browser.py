"""The page in a real browser: Playwright driving Debian's Chromium against `python app.py`.

What a person sees is asserted, not only photographed: at a desktop (1280 px) and a phone (390 px)
width, in the light and the dark colour scheme, no card or page scrolls sideways, the findings
columns meant for that width lie inside the card, and the report's text keeps a WCAG AA contrast
(4.5:1) against what is really behind it. Then the cases a clinician must not misread: limited input
said first, the next 10 s window without uploading again, a file that could not be read (the message
stays), downloads named after the record, and a server without weights saying so in plain words.

Two app processes (with a tiny random checkpoint, and without weights, offline), one per module.
Screenshots go to test-artifacts/ (git-ignored) for a person to look at. Skips when
/usr/bin/chromium is absent.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium to run the browser test)",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

from tests.fairseq_layout import write_checkpoint  # noqa: E402
from tests.test_app import (LEADS, get_json, running_app, synthetic_ecg, wait_for_model, write_csv,  # noqa: E402
                            write_wfdb)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
TIMEOUT_MS = 60_000
LOAD_TIMEOUT_MS = 20_000
WIDTHS = {"desktop": 1280, "phone": 390}
SCHEMES = ("light", "dark")
AA = 4.5  # WCAG 2 AA, normal text
AA_LARGE = 3.0  # 24 px, or 18.66 px bold, and above
TECHNICAL = ("ECGFM_CHECKPOINT", "--checkpoint", "URLError", "Traceback")


# --- files, apps, browser ------------------------------------------------------------------------

def write_two_lead(folder: Path, name: str, seconds: float = 12.0, fs: int = 500) -> list[Path]:
    """Leads I and II only: III, aVR, aVL, aVF are derived, V1-V6 are missing (limited input)."""
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 2, sig_name=["I", "II"], p_signal=synthetic_ecg(seconds, fs)[:, :2],
                fmt=["16"] * 2, adc_gain=[1000.0] * 2, baseline=[0] * 2, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def write_noisy_v2(folder: Path, name: str, seconds: float = 10.0, fs: int = 500) -> list[Path]:
    """Twelve leads, V2 buried in broadband noise: a signal-quality flag the page must show."""
    import numpy as np
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    signal = synthetic_ecg(seconds, fs)
    signal[:, 7] += np.random.default_rng(3).normal(0.0, 0.2, signal.shape[0])
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


@pytest.fixture(scope="module")
def ecgs(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("ecgs")
    garbage = folder / "garbage.xml"
    garbage.write_bytes(os.urandom(2048))
    return {"complete": write_wfdb(folder / "complete", "rec12"),
            "noisy": write_noisy_v2(folder / "noisy", "noisy_v2"),
            "philips": [REPO / "examples" / "philips_pagewriter.xml"],
            "limited": write_two_lead(folder / "limited", "two_lead"),
            "long": write_wfdb(folder / "long", "long35", seconds=35.0),
            "csv": [write_csv(folder / "csv" / "second_record.csv")],
            "garbage": [garbage]}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_finetuned.pt")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, checkpoint):
    with running_app(tmp_path_factory.mktemp("app"), ECGFM_CHECKPOINT=str(checkpoint)) as (url, _):
        assert wait_for_model(url)["model_loaded"], get_json(f"{url}/health")
        yield url


@pytest.fixture(scope="module")
def weightless_url(tmp_path_factory):
    """No ECGFM_CHECKPOINT, the Hub offline with an empty cache: the weights cannot be found."""
    with running_app(tmp_path_factory.mktemp("noweights")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """A fresh page at a width and colour scheme; dark is the browser's preference, as a person sets it."""
    contexts = []

    def open_(url: str, width: int = WIDTHS["desktop"], scheme: str = "light"):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        broken = []
        page.on("response", lambda r: broken.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url + "/")
        page.get_by_text("Research use only").first.wait_for()
        try:  # a page that never finishes loading fails here, in seconds, saying what did not load
            page.locator("input[type=file]").first.wait_for(state="attached", timeout=LOAD_TIMEOUT_MS)
        except playwright_sync.TimeoutError:
            pytest.fail(f"the page did not finish loading (no upload box); failed requests: {broken[:5]}")
        return page

    yield open_
    for context in contexts:
        context.close()


def upload(page, paths: list[Path]) -> None:
    page.locator("input[type=file]").first.set_input_files([str(p) for p in paths])
    for path in paths:  # the upload has landed when the file list has a row for each file
        page.locator(f'td.filename[aria-label="{path.name}"]').wait_for(state="attached")


def analyse(page, paths: list[Path], sampling_rate: str | None = None, cards: int = 1):
    """Upload, press Analyse, wait for the cards; returns the report's locator."""
    upload(page, paths)
    if sampling_rate:
        page.get_by_label("Sampling rate (Hz)").fill(sampling_rate)
    page.get_by_role("button", name="Analyse").click()
    report = page.locator("#ecgfm-report")
    expect(report.locator("section.record")).to_have_count(cards, timeout=TIMEOUT_MS)
    return report


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --- measuring the page ---------------------------------------------------------------------------

CONTRAST_JS = """
([selectors, aa, aaLarge]) => {
  const parse = (text) => {
    let m = text.match(/^rgba?\\(([^)]*)\\)$/);
    if (m) {
      const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^color\\(srgb ([^)]*)\\)$/);
    if (m) {
      const p = m[1].split(/[\\s\\/]+/).filter(Boolean).map(Number);
      return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1];
    }
    return null;
  };
  const over = (top, base, alpha) => [0, 1, 2].map(i => top[i] * alpha + base[i] * (1 - alpha));
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const unparsed = [];
  // What is behind an element: its and its ancestors' background colours, composed down to the first
  // opaque one (the canvas is white if none is).
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const raw = getComputedStyle(e).backgroundColor;
      const c = parse(raw);
      if (!c) { unparsed.push(raw); continue; }
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let base = [255, 255, 255];
    for (let i = layers.length - 1; i >= 0; i--) base = over(layers[i], base, layers[i][3]);
    return base;
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
    return o;
  };
  const ownText = (el) => [...el.childNodes].filter(n => n.nodeType === Node.TEXT_NODE)
                                          .map(n => n.textContent).join("").trim();
  const results = {};
  for (const selector of selectors) {
    const checked = [], failures = [];
    for (const root of document.querySelectorAll(selector)) {
      for (const el of [root, ...root.querySelectorAll("*")]) {
        const text = ownText(el);
        if (!text || !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) continue;
        const style = getComputedStyle(el);
        const fg = parse(style.color);
        if (!fg) { unparsed.push(style.color); continue; }
        const bg = background(el);
        const shown = over(fg, bg, fg[3] * opacity(el));
        const [hi, lo] = [luminance(shown), luminance(bg)].sort((a, b) => b - a);
        const ratio = (hi + 0.05) / (lo + 0.05);
        const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight) >= 700;
        const need = size >= 24 || (size >= 18.66 && bold) ? aaLarge : aa;
        checked.push(text);
        if (ratio < need) failures.push({text: text.slice(0, 50), ratio: +ratio.toFixed(2), need,
                                         color: style.color, background: bg.map(Math.round).join(",")});
      }
    }
    results[selector] = {checked: checked.length, failures};
  }
  return {results, unparsed};
}
"""


SETTLED_OPACITY_JS = """
(selectors) => selectors.flatMap((sel) => [...document.querySelectorAll(sel)].map((el) => {
  let o = 1;
  for (let e = el; e; e = e.parentElement) o *= parseFloat(getComputedStyle(e).opacity);
  return Math.round(o * 1000);
}))
"""


def wait_for_settled_opacity(page, selectors: list[str], timeout_s: float = 5.0) -> None:
    """Gradio fades outputs in and out around an update: measuring mid-fade reads a colour nobody
    sees for long. Wait until the elements' effective opacity is the same twice, 250 ms apart."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        now = page.evaluate(SETTLED_OPACITY_JS, selectors)
        if now == last:
            return
        last = now
        page.wait_for_timeout(250)


def assert_contrast(page, selectors: list[str]) -> None:
    """Every visible text of these elements at WCAG AA against its own background, each one found."""
    wait_for_settled_opacity(page, selectors)
    measured = page.evaluate(CONTRAST_JS, [selectors, AA, AA_LARGE])
    assert not measured["unparsed"], f"colours the test cannot read: {set(measured['unparsed'])}"
    for selector, result in measured["results"].items():
        assert result["checked"], f"no visible text checked for {selector}"
    failures = {}
    for selector, result in measured["results"].items():
        for f in result["failures"]:  # one line per colour pair, with how often and an example
            key = (selector, f["color"], f["background"], f["ratio"], f["need"])
            failures.setdefault(key, []).append(f["text"])
    assert not failures, "text below WCAG AA contrast:\n" + "\n".join(
        f"  {sel}: {color} on rgb({bg}) = {ratio}:1 < {need}:1, {len(texts)}x, e.g. {texts[0]!r}"
        for (sel, color, bg, ratio, need), texts in failures.items())


def luminance_of_body(page) -> float:
    rgb = page.evaluate("""() => getComputedStyle(document.body).backgroundColor
                                 .match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number)""")
    lin = [v / 255 / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def assert_no_sideways_scroll(page) -> None:
    overflow = page.evaluate("""() => ({
        page: [document.documentElement.scrollWidth, window.innerWidth],
        cards: [...document.querySelectorAll('#ecgfm-report section.record')]
               .map(c => [c.querySelector('h2').innerText, c.scrollWidth, c.clientWidth])})""")
    page_width, viewport = overflow["page"]
    assert page_width <= viewport + 1, f"the page scrolls sideways: {page_width} px in a {viewport} px viewport"
    for name, scroll, client in overflow["cards"]:
        assert scroll <= client + 1, f"card {name} scrolls sideways: {scroll} px in {client} px"


FINDINGS_COLUMNS = {"Finding": "th:nth-child(1)", "Probability": "th:nth-child(2)",
                    "bar": "th.barcell", "Training prevalence": "th.prev"}


def assert_columns_inside(card, columns: list[str], hidden: list[str]) -> None:
    """The findings table's header cells for these columns lie inside the card; the hidden ones are not shown."""
    box = card.bounding_box()
    head = card.locator("table.findings thead tr")
    for name in columns:
        cell = head.locator(FINDINGS_COLUMNS[name])
        assert cell.inner_text().startswith(name), (name, cell.inner_text())
        assert cell.is_visible(), f"column {name!r} is not shown"
        b = cell.bounding_box()
        assert box["x"] - 0.5 <= b["x"] and b["x"] + b["width"] <= box["x"] + box["width"] + 0.5, \
            f"column {name!r} ({b['x']:.0f}-{b['x'] + b['width']:.0f} px) sticks out of the card " \
            f"({box['x']:.0f}-{box['x'] + box['width']:.0f} px)"
    for name in hidden:
        assert not head.locator(FINDINGS_COLUMNS[name]).is_visible(), f"column {name!r} should give way here"


# --- with weights: layout, contrast and colour schemes -------------------------------------------

REPORT_TEXT = ["#ecgfm-report section.record .headline", "#ecgfm-report table.findings",
               "#ecgfm-report table.read", "#ecgfm-report .warnings", "#ecgfm-report .desc",
               "#ecgfm-report table.measurements", "#ecgfm-report .ecg-caption",
               "#ecgfm-report section.record", ".disclaimer", "#ecgfm-message"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("device", list(WIDTHS))
def test_layout_and_contrast(app_url, ecgs, open_page, device, scheme):
    width = WIDTHS[device]
    page = open_page(app_url, width, scheme)
    dark = luminance_of_body(page) < 0.05
    assert dark == (scheme == "dark"), f"{scheme} scheme asked, body background luminance {luminance_of_body(page):.3f}"

    report = analyse(page, ecgs["complete"])
    card = report.locator("section.record.level-complete")
    card.locator("table.findings tbody tr").first.wait_for()
    expect(page.locator("#ecgfm-message")).to_contain_text("Analysed 1 of 1 record")
    card.locator("img.ecg").evaluate("img => img.decode()")
    shot(page, f"app-{width}-{scheme}")

    assert_no_sideways_scroll(page)
    columns = ["Finding", "Probability", "Training prevalence"] + (["bar"] if device == "desktop" else [])
    assert_columns_inside(card, columns, hidden=[] if device == "desktop" else ["bar"])
    assert card.locator("img.ecg").bounding_box()["width"] <= card.bounding_box()["width"]
    assert_contrast(page, REPORT_TEXT)

    # downloads: named after the record, nothing to remove from a list of results
    downloads = page.locator("#ecgfm-downloads")
    for name in ("rec12-report.pdf", "rec12-ecg.png", "rec12-ecgfm.json", "rec12-ecgfm.csv"):
        expect(downloads.locator(f'a[download="{name}"]')).to_have_count(1)
    remove = downloads.locator('button[aria-label="Remove this file"], button.label-clear-button')
    for i in range(remove.count()):
        assert not remove.nth(i).is_visible(), "the downloads list offers to remove a result (×)"
    assert "×" not in downloads.inner_text()
    cut = downloads.locator("td.filename .stem").evaluate_all(
        "stems => stems.filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.innerText)")
    assert not cut, f"download names cut short (which one is the report?): {cut}"
    assert_contrast(page, ["#ecgfm-downloads td.filename", "#ecgfm-downloads td.download"])


def test_findings_content_two_records_and_provenance(app_url, ecgs, checkpoint, open_page):
    page = open_page(app_url)
    report = analyse(page, ecgs["complete"] + ecgs["csv"], sampling_rate="250", cards=2)
    report.locator("table.findings").nth(1).wait_for()
    names = sorted(report.locator("section.record h2").all_inner_texts())
    assert names == ["rec12.hea", "second_record.csv"]
    text = report.inner_text()
    assert "Atrial fibrillation" in text and "Sinus rhythm" in text
    assert re.search(r"\b0\.\d{3}\b", text), "a probability with three decimals"
    assert "Training prevalence" in text and "81.2 %" in text  # sinus rhythm's baseline
    assert "What was read" in text and "500 Hz" in text and "250 Hz" in text
    assert report.locator("nav.records a").count() == 2
    downloads = page.locator("#ecgfm-downloads")
    for name in ("rec12-and-1-more-ecgfm.json", "rec12-and-1-more-ecgfm.csv", "rec12-report.pdf",
                 "second_record-report.pdf", "rec12-ecg.png", "second_record-ecg.png"):
        expect(downloads.locator(f'a[download="{name}"]')).to_have_count(1)

    first = report.locator("section.record").first  # per-segment probabilities open on demand
    first.locator("details.segments summary").click()
    assert first.locator("details.segments table tbody tr").count() == 2

    page.get_by_text("Model and software").click()  # where the weights came from
    sha256 = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    expect(page.get_by_text(sha256).filter(visible=True)).to_have_count(1)  # in the accordion, not the cards
    expect(page.get_by_text(checkpoint.name).filter(visible=True)).to_have_count(1)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_limited_input_is_said_first(app_url, ecgs, open_page, scheme):
    page = open_page(app_url, WIDTHS["phone"], scheme)
    report = analyse(page, ecgs["limited"])
    card = report.locator("section.record").first
    card.locator("table.findings tbody tr").first.wait_for()
    shot(page, f"app-limited-{scheme}")
    assert "level-limited" in card.get_attribute("class").split()
    headline = card.locator(".headline")
    assert headline.inner_text().startswith("Limited input")
    assert "not recorded" in headline.inner_text()  # the reason, in the headline
    table = card.locator("table.findings")
    assert headline.evaluate("(h, t) => !!(h.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING)",
                             table.element_handle()), "the headline comes before the findings"
    assert headline.bounding_box()["y"] < table.bounding_box()["y"]
    assert "unreliable" in table.get_attribute("class").split()
    assert table.locator("caption").inner_text().startswith("Not reliable for this input")
    assert_no_sideways_scroll(page)
    assert_contrast(page, ["#ecgfm-report section.record .headline", "#ecgfm-report table.findings",
                           "#ecgfm-report table.findings caption", "#ecgfm-report .desc"])


def test_next_window_without_uploading_again(app_url, ecgs, open_page):
    page = open_page(app_url)
    uploads = []
    page.on("request", lambda r: uploads.append(r.url) if "/upload" in r.url else None)
    report = analyse(page, ecgs["long"])
    window = report.locator("table.read tr").filter(has_text="Window analysed").locator("td")
    expect(window).to_have_text("0.0–10.0 s")
    sent = len(uploads)
    assert sent >= 1

    page.get_by_role("button", name="Next 10 s ▶").click()
    expect(page.get_by_label("Window start (s)")).to_have_value("10")
    expect(window).to_have_text("10.0–20.0 s", timeout=TIMEOUT_MS)  # analysed again: seconds under load
    expect(report.locator("table.read tr").filter(has_text="Recording length").locator("td")).to_have_text("35.0 s")
    shot(page, "app-long-next-window")
    assert len(uploads) == sent, f"the files were uploaded again: {uploads[sent:]}"
    for path in ecgs["long"]:  # still in the upload box
        expect(page.locator(f'td.filename[aria-label="{path.name}"]')).to_have_count(1)

    page.get_by_role("button", name="◀ Previous 10 s").click()
    expect(page.get_by_label("Window start (s)")).to_have_value("0")
    expect(window).to_have_text("0.0–10.0 s", timeout=TIMEOUT_MS)


def test_an_unreadable_file_stays_on_the_page(app_url, ecgs, open_page):
    page = open_page(app_url)
    report = analyse(page, ecgs["garbage"] + ecgs["complete"], cards=2)
    failed = report.locator("section.record.level-error")
    expect(failed).to_have_count(1)
    assert "garbage.xml" in failed.inner_text()
    assert failed.locator(".headline").inner_text().startswith("Not read")
    expect(report.locator("section.record.level-complete table.findings")).to_have_count(1)
    message = page.locator("#ecgfm-message")
    expect(message).to_contain_text("could not be read")
    assert_contrast(page, ["#ecgfm-report section.record.level-error", "#ecgfm-message"])

    page.wait_for_timeout(12_000)  # no toast that fades: the outcome stays until the next action
    assert failed.is_visible() and "garbage.xml" in failed.inner_text()
    assert message.is_visible() and "could not be read" in message.inner_text()
    shot(page, "app-error-mixed")

    page = open_page(app_url, WIDTHS["phone"])
    report = analyse(page, ecgs["garbage"])
    expect(report.locator("section.record.level-error")).to_have_count(1)
    message = page.locator("#ecgfm-message")
    message.locator(".ecgfm-message").wait_for()
    shot(page, "app-error-only")
    assert_no_sideways_scroll(page)
    assert "garbage.xml" in message.inner_text(), f"the message does not name the file: {message.inner_text()!r}"


# --- without weights ------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
def test_without_weights_the_page_says_so_first_in_plain_words(weightless_url, ecgs, open_page, scheme):
    page = open_page(weightless_url, WIDTHS["phone"], scheme)
    banner = page.locator(".model-status.unavailable")
    banner.wait_for()  # before any upload
    assert page.locator("#ecgfm-report section.record").count() == 0
    text = banner.inner_text()
    assert "Predictions are unavailable" in text and "can still be read and drawn" in text
    detail = banner.locator("details")
    assert detail.locator("summary").inner_text() == "Technical detail"
    reason = get_json(f"{weightless_url}/health")["reason"]
    assert reason and detail.locator("code").text_content() == reason
    assert not detail.locator("code").is_visible()  # one click away
    assert_contrast(page, [".model-status", ".disclaimer"])

    def visible_words() -> str:
        return page.evaluate("() => document.body.innerText")

    for word in TECHNICAL:
        assert word not in visible_words(), f"{word!r} is visible outside the technical detail"
    shot(page, f"app-weightless-{scheme}")

    # the ECG is still read and drawn; the card says why there are no findings, in the same plain words
    report = analyse(page, ecgs["complete"])
    card = report.locator("section.record").first
    assert card.locator("img.ecg").evaluate("img => img.naturalWidth") > 500
    assert card.locator("table.findings").count() == 0
    assert "not available on this server" in card.inner_text()
    shot(page, f"app-weightless-analysed-{scheme}")
    for word in TECHNICAL:
        assert word not in visible_words(), f"{word!r} is visible after an analysis without weights"
    assert_no_sideways_scroll(page)
    assert_contrast(page, ["#ecgfm-report section.record", "#ecgfm-message"])

    detail.locator("summary").click()
    expect(detail.locator("code")).to_be_visible()


def test_measurements_quality_saliency_and_display_on_the_page(app_url, ecgs, open_page):
    """A second reader a clinician can check: the measurements first (beside the cart's own), a noisy
    lead marked and explained, the saliency shaded and said what it is, display settings for the eye."""
    page = open_page(app_url)
    report = analyse(page, ecgs["noisy"] + ecgs["philips"], cards=2)
    noisy, philips = report.locator("section.record").nth(0), report.locator("section.record").nth(1)
    noisy.locator("table.findings tbody tr").first.wait_for()
    noisy.locator("img.ecg").evaluate("img => img.decode()")
    shot(page, "app-measurements-quality-saliency")
    assert "level-limited" in noisy.get_attribute("class").split()
    assert "V2" in noisy.locator(".headline").inner_text() and "noise" in noisy.locator(".headline").inner_text()
    quality = noisy.locator(".warnings.quality")
    assert "V2" in quality.inner_text()
    measurements = noisy.locator("table.measurements")
    assert "automated, approximate" in measurements.inner_text() and "Heart rate" in measurements.inner_text()
    assert noisy.locator("h3", has_text="Measurements").bounding_box()["y"] < \
        noisy.locator("table.findings").bounding_box()["y"]
    caption = noisy.locator(".ecg-caption").inner_text()
    assert "25 mm/s, 10 mm/mV, no display filter" in caption and "not why any finding was predicted" in caption
    # The cart's own reading, attributed, in a column of its own; its statements apart.
    header = philips.locator("table.measurements thead").inner_text()
    assert "stored in the file by the recording device" in header and "Automated here" in header
    assert philips.locator(".device-statements li").count() >= 1
    assert_no_sideways_scroll(page)
    assert_contrast(page, ["#ecgfm-report table.measurements", "#ecgfm-report .device-statements",
                           "#ecgfm-report .warnings.quality", "#ecgfm-report .ecg-caption"])

    # Display settings change the drawing only: the probabilities stay, the caption says what is drawn.
    before = noisy.locator("table.findings td.prob").all_inner_texts()
    page.get_by_text("Display (for the eye only)").click()
    page.get_by_label("20 mm/mV").check()
    page.get_by_label("50 Hz notch").check()
    page.get_by_label("Saliency behind every lead (not only the rhythm strip)").check()
    page.get_by_role("button", name="Analyse").click()
    expect(noisy.locator(".ecg-caption")).to_contain_text("25 mm/s, 20 mm/mV, display filter 50 Hz notch",
                                                          timeout=2 * TIMEOUT_MS)  # two records, drawn again
    assert noisy.locator("table.findings td.prob").all_inner_texts() == before
    noisy.locator("img.ecg").evaluate("img => img.decode()")
    shot(page, "app-display-settings")
