"""ECG-FM in the browser and over HTTP: a Gradio app that only wires components to `ecgfm`.

    python app.py                                   # http://127.0.0.1:7860
    ECGFM_CHECKPOINT=/path/file.pt python app.py    # a local finetuned checkpoint
    ECGFM_PRECISION=bf16 python app.py              # faster on CPUs with bfloat16 instructions, approximate

Research use only: ECG-FM is not a medical device and its outputs are not diagnoses.

Endpoints (besides the page):
- Gradio API `/predict` (files, sampling_rate_hz=None, start_s=0) -> {"records": [...], ...}
- Gradio API `/read`    (files, sampling_rate_hz=None, start_s=0) -> {"records": [...], ...}
- Gradio API `/plot`    (files, sampling_rate_hz=None, start_s=0) -> [(PNG, file name), ...]
- HTTP `GET /health` (is the app up, is the model loaded, and if not why) and `GET /info`.

Privacy: uploads are deleted seconds after they have been read; results are written into Gradio's
cache, which `delete_cache` empties on a schedule; the browser keeps no run history; nothing
from a file (values, header text, names) is written to the log.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import logging
import os
import platform
import threading
import time
import uuid
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

import ecgfm
from ecgfm.errors import ECGFMError, WeightsUnavailableError
from ecgfm.labels import LABELS
from ecgfm.predict import DEFAULT_WINDOW_S as WINDOW_S  # ECG-FM reads 10 s windows
from ecgfm.predict import BatchingPredictor, write_csv

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
MAX_FILE_SIZE = os.environ.get("ECGFM_MAX_FILE_SIZE", "100mb")
PRECISION = os.environ.get("ECGFM_PRECISION", "fp32")  # "bf16": faster on CPUs with bfloat16 instructions
MODEL_WAIT_S = 120.0  # how long a request waits for weights that are still loading
MAX_BATCH_RECORDS = 8  # concurrent requests share a forward pass up to this many 10 s records
CONCURRENT_REQUESTS = 8  # requests being read and prepared at once; their forwards are batched
UPLOAD_GRACE_S = float(os.environ.get("ECGFM_UPLOAD_GRACE_S", "10"))  # uploads live this long after use
RETRY_LOAD_AFTER_S = 60.0  # a failed load (no network ...) is tried again at most this often
DISCLAIMER = ("Research use only. ECG-FM is not a medical device; its outputs are not diagnoses and "
              "must not be used for clinical decisions.")
PROBABILITY_NOTE = ("Each probability is the model's output for that finding on this window, between "
                    "0 and 1; no threshold is applied. The baseline is how often the finding occurs in "
                    "the MIMIC-IV-ECG training data.")

log = logging.getLogger("ecgfm.app")


# --- the model: loaded once per process, in the background ---------------------------------------

class ModelHolder:
    """ECG-FM's finetuned classifier, loaded in a daemon thread so the page is up at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0
        self.model = None
        self.batcher = None  # runs concurrent requests' records in one forward pass
        self.error: str | None = None

    def start(self) -> None:
        with self._lock:
            retry = self.error is not None and time.monotonic() - self._failed_at > RETRY_LOAD_AFTER_S
            if self.model is None and (self._thread is None or retry):
                self.error = None
                self._thread = threading.Thread(target=self._load, name="ecgfm-load", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            model = ecgfm.load_model("finetuned", precision=PRECISION)
            self.batcher = BatchingPredictor(model, max_records=MAX_BATCH_RECORDS)
            self.model = model
            log.info("ECG-FM weights loaded (%s).", model.provenance.get("file"))
            return
        except ECGFMError as exc:
            error = str(exc)
        except Exception as exc:  # a broken install or file: say what kind, never crash the app
            error = f"Loading the ECG-FM weights failed ({type(exc).__name__})."
        self._failed_at = time.monotonic()
        self.error = error
        log.warning("ECG-FM weights not loaded: %s", error)

    def get(self, wait_s: float = MODEL_WAIT_S):
        """The model, or an ECGFMError saying why there is none."""
        self.start()
        thread = self._thread
        if thread is not None:
            thread.join(wait_s)
        if self.model is not None:
            return self.model
        if self.error:
            raise WeightsUnavailableError(self.error)
        raise ECGFMError("The ECG-FM weights are still loading; try again in a minute.")

    def status(self) -> dict:
        self.start()
        if self.model is not None:
            return {"model_loaded": True, "model_status": "loaded", "reason": None}
        if self.error:
            return {"model_loaded": False, "model_status": "unavailable", "reason": self.error}
        return {"model_loaded": False, "model_status": "loading", "reason": "The weights are still loading."}

    def provenance(self) -> dict | None:
        if self.model is None:
            return None
        from ecgfm.predict import describe

        return describe(self.model)


MODEL = ModelHolder()
_LAST_USE: dict[Path, float] = {}  # upload path -> when a request last read it
_USE_LOCK = threading.Lock()


# --- uploads in, results out ---------------------------------------------------------------------

def _upload_dir() -> Path:
    return Path(gr.utils.get_upload_folder()).resolve()


def _paths(files) -> list[str]:
    if not files:
        raise gr.Error("Upload one or more ECG files first (e.g. a WFDB .hea with its .dat).",
                       print_exception=False)
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [str(getattr(f, "path", None) or getattr(f, "name", None) or f) for f in files]


@functools.lru_cache(maxsize=1)
def _example_digests() -> frozenset[tuple[str, str]]:
    if not EXAMPLES_DIR.is_dir():
        return frozenset()
    return frozenset((p.name, _digest(p)) for p in EXAMPLES_DIR.iterdir() if p.is_file())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_example_copy(path: Path) -> bool:
    """Gradio serves the examples from copies in its cache; those must survive a click."""
    names = {name for name, _ in _example_digests()}
    try:
        return path.name in names and (path.name, _digest(path)) in _example_digests()
    except OSError:
        return False


def _forget(paths: list[str]) -> None:
    """Delete these uploads once no request has used them for UPLOAD_GRACE_S.

    Gradio stores identical uploads at one path, so two people sending the same file share it:
    deleting it the moment one request is done would pull it from under the other.
    """
    _mark_used(paths)
    timer = threading.Timer(UPLOAD_GRACE_S, _delete_unused, [paths])
    timer.daemon = True
    timer.start()


def _mark_used(paths: list[str]) -> None:
    now = time.monotonic()
    with _USE_LOCK:
        for name in paths:
            _LAST_USE[Path(name).resolve()] = now


def _delete_unused(paths: list[str]) -> None:
    """Delete uploads (only ever inside Gradio's upload folder) and their emptied folders."""
    root = _upload_dir()
    for name in paths:
        path = Path(name).resolve()
        with _USE_LOCK:
            last = _LAST_USE.get(path)
            if last is None or time.monotonic() - last < UPLOAD_GRACE_S:
                continue  # used again since: that request's own timer deletes it
            del _LAST_USE[path]
        if root not in path.parents or _is_example_copy(path):
            continue  # a synthetic example, or anything else that is not an upload of ours
        try:
            path.unlink(missing_ok=True)
            if path.parent != root and not any(path.parent.iterdir()):
                path.parent.rmdir()
        except OSError:
            pass


def _options(fs, start_s) -> tuple[float | None, float]:
    try:
        fs = None if fs in (None, "") or float(fs) == 0 else float(fs)
        start_s = 0.0 if start_s in (None, "") else float(start_s)
    except (TypeError, ValueError):
        raise gr.Error("The sampling rate and the window start must be numbers.", print_exception=False) from None
    return fs, start_s


def _read(files, fs, start_s, *, keep_on_error: bool = False):
    """Records windowed to [start, start + 10 s) and their preparation; uploads deleted after.

    The page keeps uploads that could not be read, so the user can add a sampling rate or move
    the window and try again; `delete_cache` removes them later. Scripts upload on every call.
    """
    paths = _paths(files)
    _mark_used(paths)  # before reading: an earlier request's pending deletion must skip these
    fs, start_s = _options(fs, start_s)
    try:
        records = ecgfm.read_ecgs(paths, fs=fs, start_s=start_s, duration_s=WINDOW_S)
        prepared = [ecgfm.prepare(record) for record in records]
    except BaseException:
        if not keep_on_error:
            _forget(paths)
        raise
    _forget(paths)
    return records, prepared


def _read_info(record, prepared) -> dict:
    """The record's own summary, with what preparing it for the model added."""
    return {**record.summary(), "lead_status": dict(prepared.lead_status),
            "segments": [[round(a, 3), round(b, 3)] for a, b in prepared.spans_s],
            "warnings": list(prepared.warnings)}


def _predictions(records) -> list[dict]:
    MODEL.get()
    return [result.to_dict() for result in MODEL.batcher(records)]


def _results_payload(infos: list[dict], predictions: list[dict] | None) -> dict:
    records = []
    for i, info in enumerate(infos):
        entry = dict(predictions[i]) if predictions else {"file": info["file"]}
        entry["read"] = info
        records.append(entry)
    return {"disclaimer": DISCLAIMER, "ecgfm_version": ecgfm.__version__, "records": records}


def _results_dir() -> Path:
    """A fresh folder inside Gradio's cache: served from there without a copy, swept by delete_cache."""
    folder = _upload_dir() / f"ecgfm-results-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    return folder


def _write_downloads(payload: dict) -> list[str]:
    """JSON and CSV written straight into Gradio's cache, so delete_cache removes them."""
    folder = _results_dir()
    json_path = folder / "ecgfm-results.json"
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    if not all("probabilities" in record for record in payload["records"]):
        return [str(json_path)]  # no prediction: the JSON still records what was read
    csv_path = folder / "ecgfm-results.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        write_csv(payload["records"], handle)
    return [str(json_path), str(csv_path)]


def _guarded(fn):
    """Expected failures become one-sentence gr.Errors; anything else a generic one, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except gr.Error:
            raise
        except ECGFMError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.error("Unexpected %s in %s.", type(exc).__name__, fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}); the files could "
                           "not be processed.", print_exception=False) from None
    return wrapper


# --- API endpoints (JSON in, JSON out) -----------------------------------------------------------

@_guarded
def api_read(files, sampling_rate_hz=None, start_s=0.0) -> dict:
    """What was read from each record: file, format, leads, fs, duration, units, window, warnings."""
    records, prepared = _read(files, sampling_rate_hz, start_s)
    return {"disclaimer": DISCLAIMER, "ecgfm_version": ecgfm.__version__,
            "records": [_read_info(r, p) for r, p in zip(records, prepared)]}


@_guarded
def api_predict(files, sampling_rate_hz=None, start_s=0.0) -> dict:
    """ECG-FM's probabilities per record and per 5 s segment, with warnings and provenance."""
    records, prepared = _read(files, sampling_rate_hz, start_s)
    infos = [_read_info(r, p) for r, p in zip(records, prepared)]
    return _results_payload(infos, _predictions(records))


@_guarded
def api_plot(files, sampling_rate_hz=None, start_s=0.0) -> list:
    """The window drawn as ECG paper (25 mm/s, 10 mm/mV), one PNG per record; needs no weights."""
    from ecgfm.plot import figure_to_png

    records, prepared = _read(files, sampling_rate_hz, start_s)
    folder = _results_dir()
    images = []
    for i, (record, prep) in enumerate(zip(records, prepared)):
        path = folder / f"ecg-{i + 1}.png"
        path.write_bytes(figure_to_png(ecgfm.plot_ecg(record, lead_status=prep.lead_status)))
        images.append((str(path), record.name))
    return images


# --- the page ------------------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _ecg_image(record, prepared) -> str:
    from ecgfm.plot import figure_to_png

    png = figure_to_png(ecgfm.plot_ecg(record, lead_status=prepared.lead_status), dpi=130)
    data = base64.b64encode(png).decode("ascii")
    return (f'<img class="ecg" alt="ECG of {_esc(record.name)}, 25 mm/s, 10 mm/mV" '
            f'src="data:image/png;base64,{data}">')


def _read_html(info: dict) -> str:
    def leads(names):
        return ", ".join(_esc(n) for n in names) if names else "none"

    status = info["lead_status"]
    recorded = [lead for lead, s in status.items() if s == "recorded"]
    rows = [
        ("Format", _esc(info["format"])),
        ("Leads in the file", f"{len(info['recorded_leads'])}: {leads(info['recorded_leads'])}"),
        ("Leads given to the model", f"{len(recorded)} recorded"
         + (f"; derived: {leads([k for k, s in status.items() if s == 'derived'])}"
            if "derived" in status.values() else "")
         + (f"; <b>not recorded (zeros)</b>: {leads([k for k, s in status.items() if s == 'zero-filled'])}"
            if "zero-filled" in status.values() else "")),
        ("Sampling rate", f"{info['fs']:g} Hz"),
        ("Recording length", _seconds(info["duration_s"])),
        ("Units in the file", _esc(info["units"] or "not stated")),
        ("Window analysed", f"{info['window']['start_s']:.1f}–{info['window']['end_s']:.1f} s"),
        ("5 s segments", ", ".join(f"{a:.1f}–{b:.1f} s" for a, b in info["segments"]) or "none"),
    ]
    if info["extra_leads"]:
        rows.append(("Other channels (not used)", leads(info["extra_leads"])))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    warnings = "".join(f"<li>{_esc(w)}</li>" for w in info["warnings"])
    warn_html = (f'<div class="warnings"><b>Notes from reading and preprocessing</b><ul>{warnings}</ul></div>'
                 if warnings else '<div class="ok">No warnings from reading or preprocessing.</div>')
    return f'<table class="read">{body}</table>{warn_html}'


def _findings_html(prediction: dict) -> str:
    by_name = {label.name: label for label in LABELS}
    ordered = sorted(prediction["probabilities"].items(), key=lambda item: -item[1])
    rows = []
    for name, p in ordered:
        label = by_name[name]
        base = label.prevalence_pct / 100
        rows.append(
            f'<tr><td class="finding"><b>{_esc(name)}</b><div class="desc">{_esc(label.description)}</div></td>'
            f'<td class="prob">{p:.3f}</td>'
            f'<td class="barcell"><div class="bar" title="probability {p:.3f}; baseline {base:.3f}">'
            f'<span class="fill" style="width:{100 * p:.1f}%"></span>'
            f'<span class="base" style="left:{100 * base:.1f}%"></span></div></td>'
            f'<td class="prev">{label.prevalence_pct:.1f} %</td></tr>')
    table = ('<table class="findings"><thead><tr><th>Finding</th><th>Probability</th>'
             '<th class="barcell"><span class="legend">bar: probability (0 to 1) · tick: training '
             'prevalence</span></th>'
             '<th>Training prevalence</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    names = [name for name, _ in ordered]
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    segs = "".join(
        f'<tr><th>{s["start_s"]:.1f}–{s["end_s"]:.1f} s</th>'
        + "".join(f'<td>{s["probabilities"][n]:.3f}</td>' for n in names) + "</tr>"
        for s in prediction["segments"])
    per_segment = (f'<details class="segments"><summary>Probabilities per 5 s segment '
                   f'({len(prediction["segments"])})</summary><div class="scroll"><table><thead><tr>'
                   f'<th>Segment</th>{head}</tr></thead><tbody>{segs}</tbody></table></div></details>')
    return table + per_segment


def _report_html(records, prepared, infos, predictions, model_problem: str | None) -> str:
    cards = []
    for i, (record, prep, info) in enumerate(zip(records, prepared, infos)):
        if predictions:
            findings = f'<p class="note">{_esc(PROBABILITY_NOTE)}</p>{_findings_html(predictions[i])}'
        else:
            findings = (f'<div class="unavailable"><b>No prediction: the model is not available.</b> '
                        f'{_esc(model_problem)} Reading and drawing the ECG work without it.</div>')
        cards.append(
            f'<section class="record" id="ecgfm-record-{i + 1}"><h2>{_esc(record.name)}</h2>'
            f'<h3>ECG</h3>{_ecg_image(record, prep)}'
            f'<h3>Findings</h3>{findings}'
            f'<h3>What was read</h3>{_read_html(info)}</section>')
    nav = ""
    if len(records) > 1:
        nav = ('<nav class="records"><b>Records:</b> ' + "".join(
            f'<a href="#ecgfm-record-{i + 1}">{_esc(r.name)}</a>' for i, r in enumerate(records)) + "</nav>")
    return f'<div class="ecgfm-report">{nav}{"".join(cards)}</div>'


def _provenance_md(provenance: dict | None) -> str:
    status = MODEL.status()
    lines = ["| | |", "|---|---|"]
    if provenance:
        for key, label in (("source", "Source"), ("repo", "Repository"), ("revision", "Revision"),
                           ("file", "File"), ("sha256", "SHA-256"), ("device", "Device"),
                           ("precision", "Precision")):
            value = provenance.get(key)
            lines.append(f"| {label} | `{value}` |" if value else f"| {label} | — |")
    else:
        lines.append(f"| Model | {status['model_status']}: {status['reason']} |")
    lines.append(f"| ecgfm package | `{ecgfm.__version__}` |")
    lines.append(f"| Gradio | `{gr.__version__}` |")
    return "\n".join(lines)


@_guarded
def ui_analyse(files, sampling_rate_hz, start_s):
    records, prepared = _read(files, sampling_rate_hz, start_s, keep_on_error=True)
    infos = [_read_info(r, p) for r, p in zip(records, prepared)]
    predictions, problem = None, None
    try:
        predictions = _predictions(records)
    except WeightsUnavailableError as exc:  # reading and drawing still work without weights
        problem = str(exc)
        gr.Warning("No prediction: the ECG-FM weights are not available (see the findings).")
    except ECGFMError as exc:
        problem = str(exc)
    report = _report_html(records, prepared, infos, predictions, problem)
    downloads = _write_downloads(_results_payload(infos, predictions))
    provenance = predictions[0]["provenance"] if predictions else MODEL.provenance()
    names = ", ".join(r.name for r in records)
    return (report, gr.update(value=downloads, visible=True), _provenance_md(provenance),
            gr.update(value=None),
            f"Analysed {len(records)} record{'s' if len(records) != 1 else ''}: {_esc(names)}. "
            "The uploaded files are deleted from the server within seconds.")


def _examples() -> list[list]:
    """One example per record in examples/ (files sharing a stem, e.g. .hea + .dat, go together)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    groups: dict[str, list[str]] = {}
    for path in sorted(EXAMPLES_DIR.iterdir()):
        if path.is_file() and path.suffix.lower() not in {".py", ".md", ".txt", ".json"} \
                and not path.name.startswith("."):
            groups.setdefault(path.stem, []).append(str(path))
    return [[files, None, 0] for _, files in sorted(groups.items())]


CSS = """
.disclaimer {background:#fff4e5; border:1px solid #f0b45a; border-radius:8px; padding:10px 14px;
             color:#5a3b00; font-weight:600}
.ecgfm-report section.record {border:1px solid var(--border-color-primary); border-radius:10px;
             padding:12px 16px; margin-bottom:18px}
.ecgfm-report h2 {margin:0 0 6px 0; font-size:1.25rem}
.ecgfm-report h3 {margin:14px 0 6px 0; font-size:1.05rem}
.ecgfm-report img.ecg {width:100%; height:auto; border:1px solid #e5e5e5; border-radius:4px}
.ecgfm-report table {border-collapse:collapse; width:100%; font-size:0.92rem}
.ecgfm-report table, .ecgfm-report tr {border:none !important}
.ecgfm-report th, .ecgfm-report td {padding:4px 8px; border:none !important;
             border-bottom:1px solid #e4e7ec !important; text-align:left; vertical-align:middle}
.ecgfm-report nav.records {margin-bottom:10px}
.ecgfm-report nav.records a {margin-right:14px}
.ecgfm-report table.findings td.prob {font-variant-numeric:tabular-nums; font-weight:700; width:6em}
.ecgfm-report table.findings td.prev {font-variant-numeric:tabular-nums; width:8em; color:#555}
.ecgfm-report .desc {font-size:0.82rem; color:#666}
.ecgfm-report .barcell {width:34%}
.ecgfm-report .bar {position:relative; height:14px; background:#eef1f5; border-radius:3px}
.ecgfm-report .bar .fill {position:absolute; left:0; top:0; bottom:0; background:#3b6fb6; border-radius:3px}
.ecgfm-report .bar .base {position:absolute; top:-3px; bottom:-3px; width:2px; background:#222}
.ecgfm-report .legend {font-weight:400; color:#666; font-size:0.8rem; margin:0 8px}
.ecgfm-report .note {font-size:0.85rem; color:#555; margin:0 0 6px 0}
.ecgfm-report table.read th {width:14em; color:#444; font-weight:600}
.ecgfm-report .warnings {background:#fffbe6; border-left:4px solid #e0a800; padding:6px 12px; margin-top:8px}
.ecgfm-report .warnings ul {margin:4px 0 0 18px}
.ecgfm-report .ok {color:#2f6b2f; margin-top:8px}
.ecgfm-report .unavailable {background:#fdecea; border-left:4px solid #c62828; padding:8px 12px}
.ecgfm-report details.segments {margin-top:8px}
.ecgfm-report details.segments summary {cursor:pointer; color:#3b6fb6}
.ecgfm-report .scroll {overflow-x:auto}
.ecgfm-report details.segments th, .ecgfm-report details.segments td {font-size:0.8rem; white-space:nowrap}
.ecgfm-report details.segments thead th {white-space:normal; min-width:7em; vertical-align:bottom}
"""


# Local fonts only: the page makes no request to a third party (no Google Fonts).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial",
                             "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="ECG-FM — research demo", analytics_enabled=False,
                   delete_cache=(300, 900)) as demo:
        gr.Markdown("# ECG-FM: findings from a resting ECG\n"
                    "Upload an ECG; ECG-FM, a foundation model trained on MIMIC-IV-ECG, gives the "
                    "probability of 17 findings for a 10 s window.")
        gr.HTML(f'<div class="disclaimer">⚠ {_esc(DISCLAIMER)}</div>')
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                files = gr.File(label="ECG files (several records at once; a WFDB record needs both "
                                      "its .hea and .dat)", file_count="multiple", height=220)
            with gr.Column(scale=2):
                fs = gr.Number(label="Sampling rate (Hz)", value=0, minimum=0,
                               info="Only for files that do not store one (e.g. plain CSV); "
                                    "0 = use the rate in the file.")
                start = gr.Number(label="Window start (s)", value=0, minimum=0,
                                  info="ECG-FM reads 10 s from here, in 5 s segments.")
                analyse = gr.Button("Analyse", variant="primary")
        message = gr.Markdown()
        examples_slot = gr.Column()
        downloads = gr.File(label="Download results (JSON and CSV)", file_count="multiple",
                            interactive=False, visible=False)
        report = gr.HTML()
        with gr.Accordion("Model and software", open=False):
            provenance = gr.Markdown(_provenance_md(None))
        outputs = [report, downloads, provenance, files, message]
        examples = _examples()
        if examples:
            with examples_slot:
                gr.Examples(examples=examples, inputs=[files, fs, start], outputs=outputs, fn=ui_analyse,
                            run_on_click=True, cache_examples=False, api_visibility="private",
                            label="Synthetic examples (simulated ECGs, not patients): click one to analyse it",
                            example_labels=[Path(e[0][0]).stem.replace("_", " ") for e in examples])
        gr.Markdown("ECG-FM: McKeen et al., *ECG-FM: An Open Electrocardiogram Foundation Model* "
                    "(bowang-lab/ECG-FM); weights from the Hugging Face Hub (wanglab/ecg-fm). "
                    f"{DISCLAIMER}")

        analyse.click(ui_analyse, [files, fs, start], outputs,
                      api_visibility="private", concurrency_id="model", concurrency_limit=CONCURRENT_REQUESTS)
        demo.load(lambda: _provenance_md(MODEL.provenance()), None, provenance, api_visibility="private")

        # Script endpoints: the same inputs, one JSON output each; no page element triggers them.
        predicted = gr.JSON(label="prediction", visible=False)
        read = gr.JSON(label="reading", visible=False)
        gr.Button(visible=False).click(api_predict, [files, fs, start], predicted, api_name="predict",
                                       concurrency_id="model", concurrency_limit=CONCURRENT_REQUESTS)
        gr.Button(visible=False).click(api_read, [files, fs, start], read, api_name="read")
        drawn = gr.Gallery(label="ecg", visible=False, format="png")
        gr.Button(visible=False).click(api_plot, [files, fs, start], drawn, api_name="plot")
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


# --- HTTP routes next to the app -----------------------------------------------------------------

def _versions() -> dict:
    import numpy
    import torch

    return {"ecgfm": ecgfm.__version__, "gradio": gr.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def create_app() -> FastAPI:
    app = FastAPI(title="ECG-FM", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **MODEL.status()}

    @app.get("/info")
    def info() -> dict:
        return {
            "disclaimer": DISCLAIMER,
            "labels": [{"name": label.name, "description": label.description,
                        "prevalence_pct": label.prevalence_pct, "aggregation": label.aggregation}
                       for label in LABELS],
            "model": {**MODEL.status(), "provenance": MODEL.provenance()},
            "window_s": WINDOW_S,
            "versions": _versions(),
        }

    return gr.mount_gradio_app(app, build_ui(), path="/", footer_links=["api", "settings"],
                               run_history=False, show_error=False, max_file_size=MAX_FILE_SIZE,
                               ssr_mode=False, css=CSS, theme=THEME)


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    app = create_app()
    MODEL.start()
    print(f"ECG-FM app on http://{host}:{port} (research use only)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
