"""ECG-FM in the browser and over HTTP: a Gradio app that only wires components to `ecgfm`.

    python app.py                                   # http://127.0.0.1:7860
    ECGFM_CHECKPOINT=/path/file.pt python app.py    # a local finetuned checkpoint
    ECGFM_PRECISION=bf16 python app.py              # faster on CPUs with bfloat16 instructions, approximate

Research use only: ECG-FM is not a medical device and its outputs are not diagnoses.

Endpoints (besides the page), each taking (files, sampling_rate_hz=None, start_s=0, leads=None):
- Gradio API `/predict` -> {"records": [...]}: per record its probabilities, input adequacy, the
  automated measurements, signal quality, what was read (with the measurements and statements the
  recording device stored in the file) and warnings, or {"file", "error"} for a file that could not
  be read; a fifth argument `saliency_hz` ("500", "100", "50" ...) adds ECG-FM's saliency
- Gradio API `/read`    -> {"records": [...]}: what was read, no model
- Gradio API `/plot`    -> [(PNG, record name), ...]: the ECG on paper, no model
- Gradio API `/report`  -> [PDF, ...]: the one-page report of each record
- HTTP `GET /health` (is the app up, is the model loaded, and if not why) and `GET /info`.

Privacy: files sent by scripts are deleted seconds after they have been read; files on the page stay
while the page uses them (so settings can be changed and the analysis re-run) and are deleted
PAGE_IDLE_S after their last use, or seconds after the page is closed; a file that no request used
(its request cancelled before it started) is deleted UNUSED_UPLOAD_S after it arrived. Results are
written whole or not at all (a full disk is one sentence, never half a file) into Gradio's cache,
which `delete_cache` empties on a schedule; the browser keeps no run history; nothing from a file
(values, header text, names) is written to the log.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import html
import io
import json
import logging
import os
import platform
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

import ecgfm
from ecgfm import report as reports
from ecgfm.errors import ECGFMError, WeightsUnavailableError
from ecgfm.io.record import STANDARD_LEADS
from ecgfm.labels import LABELS
from ecgfm.predict import DEFAULT_WINDOW_S as WINDOW_S  # ECG-FM reads 10 s windows
from ecgfm.predict import BatchingPredictor, write_csv
from ecgfm.report import DISCLAIMER
from ecgfm.runtime import return_freed_memory, trim_heap

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = HERE / "examples"
MAX_FILE_SIZE = os.environ.get("ECGFM_MAX_FILE_SIZE", "100mb")
PRECISION = os.environ.get("ECGFM_PRECISION", "fp32")  # "bf16": faster on CPUs with bfloat16 instructions
MODEL_WAIT_S = 120.0  # how long a request waits for weights that are still loading
MAX_BATCH_RECORDS = 8  # concurrent requests share a forward pass up to this many 10 s records
CONCURRENT_REQUESTS = 8  # requests being read and prepared at once; their forwards are batched
UPLOAD_GRACE_S = float(os.environ.get("ECGFM_UPLOAD_GRACE_S", "10"))  # scripts' files live this long after use
PAGE_IDLE_S = float(os.environ.get("ECGFM_PAGE_IDLE_S", "600"))  # the page's files, after their last use
# Gradio's file component leaves an empty temporary file (tmpXXXX, gr.File's preprocessing) in the
# upload folder for each upload it hands on; one untouched this long belongs to no upload in progress.
ORPHAN_AGE_S = float(os.environ.get("ECGFM_ORPHAN_AGE_S", "120"))
# An upload no request has used (its request was cancelled before it started, or never came) is
# deleted this long after it arrived; as long as the page's idle time, so that a person can still
# set the options after adding a file.
UNUSED_UPLOAD_S = float(os.environ.get("ECGFM_UNUSED_UPLOAD_S", str(PAGE_IDLE_S)))
# A failed load (no network, no file yet ...) is tried again, at most this often, when a request or
# /health asks for the model: the app recovers without a restart once the weights can be had.
RETRY_LOAD_AFTER_S = float(os.environ.get("ECGFM_RETRY_LOAD_S", "60"))
MAX_REPORTS = 8  # PDF reports made per page analysis (each takes about a second)
# A linear probe of the server owner's own labels (`ecgfm probe fit --out DIR`), shown beside ECG-FM's
# findings and labelled as theirs; it needs ECG-FM's pretrained encoder too, loaded with the model.
PROBE_DIR = os.environ.get("ECGFM_PROBE") or None

log = logging.getLogger("ecgfm.app")


# --- a long-running server: keep its memory and open files flat ---------------------------------

# Matplotlib caches fonts per thread (each an open font file), and the request threads come and go:
# all drawing happens in this one thread, so the fonts are opened once.
_DRAWER = ThreadPoolExecutor(1, thread_name_prefix="ecgfm-draw")


def _drawn(fn, *args, **kwargs):
    return _DRAWER.submit(fn, *args, **kwargs).result()


# --- the model: loaded once per process, in the background ---------------------------------------

class ModelHolder:
    """ECG-FM's finetuned classifier, loaded in a daemon thread so the page is up at once.

    Once loaded, the model (which holds its own copy of the weights) is kept for the life of the
    process: the weights file is never read again, so deleting or replacing it changes nothing
    served, and /health says that the file no longer matches. A failed load is tried again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0
        self._last_error: str | None = None  # why the previous attempt failed, while trying again
        self.model = None
        self.batcher = None  # runs concurrent requests' records in one forward pass
        self.error: str | None = None
        self.probe_error: str | None = None  # why a configured probe is not applied (ECG-FM still is)

    def start(self) -> None:
        with self._lock:
            retry = self.error is not None and time.monotonic() - self._failed_at > RETRY_LOAD_AFTER_S
            if self.model is None and (self._thread is None or retry):
                self._last_error, self.error = self.error, None
                self._thread = threading.Thread(target=self._load, name="ecgfm-load", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            model = ecgfm.load_model("finetuned", precision=PRECISION)
            self.batcher = BatchingPredictor(model, max_records=MAX_BATCH_RECORDS, saliency=True,
                                             **self._probe_options())
            self.model = model
            log.info("ECG-FM weights loaded (%s)%s.", model.provenance.get("file"),
                     " after an earlier attempt failed" if self._last_error else "")
            return
        except ECGFMError as exc:
            error = str(exc)
        except Exception as exc:  # a broken install or file: say what kind, never crash the app
            error = f"Loading the ECG-FM weights failed ({type(exc).__name__})."
        self._failed_at = time.monotonic()
        self.error = error
        log.warning("ECG-FM weights not loaded: %s", error)

    def _probe_options(self) -> dict:
        """The probe and the encoder it reads, or nothing (and why) when they cannot be had."""
        if PROBE_DIR is None:
            return {}
        from ecgfm.probe import Probe

        try:
            probe = Probe.load(PROBE_DIR)
            encoder = ecgfm.load_model("pretrained", precision=PRECISION)
            probe.check_encoder(encoder.provenance)
        except ECGFMError as exc:
            self.probe_error = f"The configured probe is not applied: {exc}"
            log.warning("%s", self.probe_error)
            return {}
        self.probe_error = None
        return {"embedder": encoder, "probe": probe}

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
            from ecgfm.checkpoint import source_change

            return {"model_loaded": True, "model_status": "loaded", "reason": source_change(self.model),
                    **({"probe": "applied" if self.probe_error is None else self.probe_error} if PROBE_DIR else {})}
        if self.error:
            return {"model_loaded": False, "model_status": "unavailable", "reason": self.error}
        if self._last_error:
            return {"model_loaded": False, "model_status": "loading",
                    "reason": f"The weights are loading again; the last attempt failed: {self._last_error}"}
        return {"model_loaded": False, "model_status": "loading", "reason": "The weights are still loading."}

    def provenance(self) -> dict | None:
        if self.model is None:
            return None
        from ecgfm.predict import describe

        return describe(self.model)


MODEL = ModelHolder()


# --- uploads in, results out ---------------------------------------------------------------------

_LAST_USE: dict[Path, tuple[float, float, float]] = {}  # upload -> (last use, keep for, last use wall clock)
_SESSION_FILES: dict[str, set[Path]] = {}  # page session -> the uploads it used
_READING: Counter[Path] = Counter()  # upload -> requests reading it right now
_ARRIVED: dict[Path, list[float]] = {}  # upload -> when each upload of it that no request has used yet arrived
_USE_LOCK = threading.Lock()
_UPLOADS_IN_FLIGHT = [0]  # upload requests Gradio is storing right now (guarded by _USE_LOCK)
_RESULTS_IN_USE: set[Path] = set()  # results folders whose request is still writing them


def _upload_dir() -> Path:
    return Path(gr.utils.get_upload_folder()).resolve()


def _paths(files) -> list[str]:
    if not files:
        raise ECGFMError("Add one or more ECG files first (e.g. a WFDB .hea with its .dat).")
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


def _keep(paths: list[str], keep_s: float, session: str | None = None, claim: bool = False) -> None:
    """Delete these uploads once no request has used them for `keep_s`.

    Gradio stores identical uploads at one path, so two people sending the same file share it:
    deleting it the moment one request is done would pull it from under the other. So each upload
    is counted when it arrives (`_UploadWatch`) and a request `claim`s one of them when it starts:
    an upload still waiting for its request keeps the file.
    """
    now, wall = time.monotonic(), time.time()
    resolved = [Path(name).resolve() for name in paths]
    with _USE_LOCK:
        for path in resolved:
            _LAST_USE[path] = (now, keep_s, wall)
        for path in set(resolved) if claim else ():
            waiting = _ARRIVED.get(path)
            if waiting:
                waiting.pop(0)
                if not waiting:
                    del _ARRIVED[path]
        if session:
            _SESSION_FILES.setdefault(session, set()).update(resolved)
    timer = threading.Timer(keep_s, _delete_unused, [resolved])
    timer.daemon = True
    timer.start()


def _release_session(request: gr.Request) -> None:
    """The page was closed: its uploads go after the short grace, not the idle time."""
    with _USE_LOCK:
        paths = _SESSION_FILES.pop(getattr(request, "session_hash", None) or "", set())
    if paths:
        _keep([str(p) for p in paths], UPLOAD_GRACE_S)


def _delete_unused(paths: list[Path]) -> None:
    """Delete uploads (only ever inside Gradio's upload folder) and their emptied folders."""
    root = _upload_dir()
    for path in paths:
        with _USE_LOCK:
            last = _LAST_USE.get(path)
            if last is None or time.monotonic() - last[0] < last[1] - 0.05 or _READING[path] > 0:
                continue  # used again since, or being read: that request's own timer deletes it
            del _LAST_USE[path]
            if _ARRIVED.get(path):
                continue  # uploaded again for a request not started yet: that one deletes it
        if root not in path.parents or _is_example_copy(path):
            continue  # an example, or anything else that is not an upload of ours
        try:
            if path.stat().st_mtime > last[2]:
                continue  # stored again by a newer upload of the same bytes, not yet used: its request deletes it
            # Only the file: Gradio may be storing an identical upload into its folder right now;
            # _delete_orphans removes the empty folder when no upload is being stored.
            path.unlink(missing_ok=True)
        except OSError:
            pass
    _delete_orphans(root)


class _UploadWatch:
    """ASGI middleware: notes each file that Gradio's upload route stores, before its client hears of it.

    A request that starts claims its uploads (`_keep`); one cancelled while queued, or dropped by its
    client before it started, never does: `_delete_unclaimed` deletes those.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/gradio_api/upload"):
            await self.app(scope, receive, send)
            return
        status, body = [0], []
        with _USE_LOCK:
            _UPLOADS_IN_FLIGHT[0] += 1

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and status[0] == 200:
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    _arrived(b"".join(body))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            with _USE_LOCK:
                _UPLOADS_IN_FLIGHT[0] -= 1


def _arrived(body: bytes) -> None:
    try:
        names = json.loads(body)
    except ValueError:
        return
    now = time.time()
    with _USE_LOCK:
        for name in names if isinstance(names, list) else ():
            if isinstance(name, str):
                _ARRIVED.setdefault(Path(name).resolve(), []).append(now)


def _delete_unclaimed() -> None:
    """Uploads that no request claimed within UNUSED_UPLOAD_S of their arrival, and Gradio's leftovers."""
    root = _upload_dir()
    cutoff = time.time() - UNUSED_UPLOAD_S
    with _USE_LOCK:  # a request claiming a file now either comes first (it is kept) or finds it gone
        for path, waiting in list(_ARRIVED.items()):
            waiting[:] = [arrival for arrival in waiting if arrival > cutoff]
            if waiting:
                continue
            del _ARRIVED[path]
            if path in _LAST_USE or root not in path.parents:
                continue  # in use: the request's own timer deletes it
            try:
                if path.stat().st_mtime > cutoff or _is_example_copy(path):
                    continue  # stored again just now (its arrival is being noted), or an example's copy
                path.unlink()  # the file only, as in _delete_unused
            except OSError:
                pass
    _delete_orphans(root)


def _start_deleting_unclaimed() -> None:
    def run() -> None:
        while True:
            time.sleep(min(max(min(UNUSED_UPLOAD_S / 4, ORPHAN_AGE_S), 0.5), 30.0))
            try:
                _delete_unclaimed()
            except Exception as exc:  # never stop deleting because of one odd file
                log.error("Unexpected %s while deleting unused uploads.", type(exc).__name__)

    threading.Thread(target=run, name="ecgfm-unclaimed-uploads", daemon=True).start()


def _delete_orphans(root: Path) -> None:
    """Gradio's leftover empty temporary files (tmp*), once no upload can still be using them, and
    the empty folders left behind: one per distinct upload (named by its hash) and one per request's
    results (emptied by Gradio's delete_cache, which removes files only)."""
    cutoff = time.time() - ORPHAN_AGE_S
    for leftover in root.glob("tmp*"):
        try:
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass
    # Gradio stores an upload by creating its hash's folder (or finding it) and then moving the file
    # in; a folder removed in between would fail that upload. So folders go only while no upload is
    # being stored, and an upload that starts meanwhile waits for the lock before it is passed on.
    with _USE_LOCK:
        if _UPLOADS_IN_FLIGHT[0]:
            return
        for folder in root.iterdir():
            try:
                if (_HASH_FOLDER.fullmatch(folder.name) and folder not in _RESULTS_IN_USE and folder.is_dir()
                        and not folder.is_symlink() and folder.stat().st_mtime < cutoff):
                    folder.rmdir()  # only if empty
            except OSError:
                pass


_HASH_FOLDER = re.compile(r"[0-9a-f]{40,64}|ecgfm-results-[0-9a-f]{32}")


def _options(fs, start_s, leads) -> tuple[float | None, float, list[str] | None]:
    try:
        fs = None if fs in (None, "") or float(fs) == 0 else float(fs)
        start_s = 0.0 if start_s in (None, "") else float(start_s)
    except (TypeError, ValueError):
        raise ECGFMError("The sampling rate and the window start must be numbers.") from None
    if start_s < 0:
        raise ECGFMError("The window start must be 0 s or later.")
    if isinstance(leads, str):
        leads = [lead.strip() for lead in leads.split(",") if lead.strip()]
    return fs, start_s, (list(leads) or None) if leads else None


def _read(files, fs, start_s, leads, keep_s: float = UPLOAD_GRACE_S, session: str | None = None):
    """Each record windowed to [start, start + 10 s), or the error that stopped it, with its preparation."""
    paths = _paths(files)
    # Claimed first, before anything can fail (bad options too): the files are then deleted after
    # keep_s whatever happens, and an earlier request's pending deletion skips them meanwhile.
    _keep(paths, keep_s, session, claim=True)
    resolved = [Path(name).resolve() for name in paths]
    with _USE_LOCK:
        _READING.update(resolved)  # however long the read takes, no timer deletes these meanwhile
    try:
        fs, start_s, leads = _options(fs, start_s, leads)
        entries = ecgfm.read_ecgs(paths, fs=fs, leads=leads, start_s=start_s, duration_s=WINDOW_S,
                                  errors="return")
    finally:
        with _USE_LOCK:
            _READING.subtract(resolved)
            for path in resolved:
                if _READING[path] <= 0:
                    del _READING[path]
        _keep(paths, keep_s, session)
    return [(entry, None if isinstance(entry, Exception) else ecgfm.prepare(entry)) for entry in entries]


def _name_of(error: Exception) -> str:
    return str(error).split(": ", 1)[0]


def _predict(records) -> list:
    MODEL.get()
    return MODEL.batcher(records)


def _payload(entries, predictions: dict | None, saliency_hz: float | None = None,
             measured: dict | None = None) -> dict:
    """The JSON answer: one entry per record, in upload order, failures included; the saliency only
    when asked for (at 500 Hz or fewer values per second). `measured`: measurements already made."""
    from ecgfm.measure import measure

    records = []
    for entry, prepared in entries:
        if prepared is None:
            records.append({"file": _name_of(entry), "error": str(entry)})
            continue
        out = predictions[id(entry)].to_dict(saliency_hz=saliency_hz or 0) if predictions else {"file": entry.name}
        out["measurements"] = ((measured or {}).get(id(entry)) or measure(entry)).to_dict()
        out["read"] = reports.read_summary(entry, prepared)
        records.append(out)
    return {"disclaimer": DISCLAIMER, "ecgfm_version": ecgfm.__version__, "records": records}


def _all_failed(entries) -> None:
    """A call whose every file failed is an error for a script, in one message naming each file."""
    if entries and all(prepared is None for _, prepared in entries):
        raise ECGFMError(" ".join(str(entry) for entry, _ in entries))


class ResultsNotSaved(ECGFMError):
    """The results could not be written (disk full, folder not writable); nothing of them was kept."""


_DISK_PROBLEMS = {errno.ENOSPC: "its disk is full", errno.EDQUOT: "its disk quota is used up",
                  errno.EFBIG: "a file would exceed the size it may write", errno.EROFS: "its disk is read-only",
                  errno.EACCES: "its results folder is not writable", errno.EPERM: "its results folder is not writable",
                  errno.ENOTDIR: "its results folder cannot be created", errno.ENOENT: "its results folder is gone"}


def _not_saved(exc: OSError) -> ResultsNotSaved:
    reason = _DISK_PROBLEMS.get(exc.errno) or (exc.strerror or type(exc).__name__).lower()
    return ResultsNotSaved(f"The server could not save the results: {reason}; nothing was kept, so try again "
                           "later or tell the server's administrator.")


def _results_dir() -> Path:
    """A fresh folder inside Gradio's cache: served from there without a copy, swept by delete_cache."""
    folder = _upload_dir() / f"ecgfm-results-{uuid.uuid4().hex}"
    with _USE_LOCK:  # still empty while its request draws: not one for _delete_orphans to remove
        _RESULTS_IN_USE.add(folder)
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        with _USE_LOCK:
            _RESULTS_IN_USE.discard(folder)
        raise _not_saved(exc) from None
    return folder


@contextlib.contextmanager
def _results_folder():
    """One request's results folder, removed whole if anything fails before all its files are written:
    a person never gets, and the server never keeps, half of a request's results."""
    folder = _results_dir()
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        with _USE_LOCK:
            _RESULTS_IN_USE.discard(folder)


def _save(path: Path, data: bytes | str) -> str:
    """Write a result under a temporary name and rename it when complete: no half-written file, ever,
    under a name that is served; a write that fails (disk full ...) is one sentence."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise _not_saved(exc) from None
    return str(path)


def _download_stem(names: list[str]) -> str:
    stem = reports.file_stem(names[0]) if names else "ecgfm"
    return stem if len(names) <= 1 else f"{stem}-and-{len(names) - 1}-more"


def _write_downloads(payload: dict, folder: Path) -> list[str]:
    """JSON and CSV written straight into Gradio's cache, named after the records."""
    stem = _download_stem([record["file"] for record in payload["records"]])
    json_path = _save(folder / f"{stem}-ecgfm.json", json.dumps(payload, indent=2, ensure_ascii=False))
    predicted = [record for record in payload["records"] if "probabilities" in record]
    if not predicted:
        return [json_path]  # no prediction: the JSON still records what was read
    table = io.StringIO(newline="")
    write_csv(predicted, table)
    return [json_path, _save(folder / f"{stem}-ecgfm.csv", table.getvalue())]


def _guarded(fn):
    """Expected failures become one-sentence gr.Errors; anything else a generic one, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ECGFMError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:
            log.error("Unexpected %s in %s.", type(exc).__name__, fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(exc).__name__}); the files could "
                           "not be processed.", print_exception=False) from None
        finally:
            trim_heap()
    return wrapper


# --- API endpoints (JSON in, JSON out) -----------------------------------------------------------

@_guarded
def api_read(files, sampling_rate_hz=None, start_s=0.0, leads=None) -> dict:
    """What was read from each record: file, format, leads, fs, duration, units, window, adequacy, warnings."""
    entries = _read(files, sampling_rate_hz, start_s, leads)
    _all_failed(entries)
    return {"disclaimer": DISCLAIMER, "ecgfm_version": ecgfm.__version__,
            "records": [reports.read_summary(entry, prepared) if prepared
                        else {"file": _name_of(entry), "error": str(entry)} for entry, prepared in entries]}


@_guarded
def api_predict(files, sampling_rate_hz=None, start_s=0.0, leads=None, saliency_hz=None) -> dict:
    """ECG-FM's probabilities per record and per 5 s segment, with input adequacy, measurements,
    signal quality, warnings and provenance; `saliency_hz` (500, or a divisor of it) adds the saliency."""
    entries = _read(files, sampling_rate_hz, start_s, leads)  # claims the uploads first: a bad option deletes them too
    saliency_hz = _saliency_rate(saliency_hz)
    _all_failed(entries)
    records = [entry for entry, prepared in entries if prepared is not None]
    return _payload(entries, dict(zip(map(id, records), _predict(records))), saliency_hz)


def _saliency_rate(text) -> float | None:
    from ecgfm.saliency import check_rate

    if text in (None, "", "0", 0):
        return None
    try:
        rate = float(text)
    except (TypeError, ValueError):
        raise ECGFMError(f"saliency_hz must be a number of values per second (500, 100, 50 ...), not {text!r}.") from None
    check_rate(rate)
    return rate


@_guarded
def api_plot(files, sampling_rate_hz=None, start_s=0.0, leads=None) -> list:
    """The window drawn as ECG paper (25 mm/s, 10 mm/mV), one PNG per record; needs no weights."""
    from ecgfm.plot import figure_to_png

    entries = _read(files, sampling_rate_hz, start_s, leads)
    _all_failed(entries)
    images = []
    with _results_folder() as folder:
        for record, prepared in entries:
            if prepared is not None:
                png = _drawn(lambda: figure_to_png(ecgfm.plot_ecg(record, lead_status=prepared.lead_status,
                                                                  lead_marks=prepared.quality.lead_marks())))
                images.append((_save(folder / f"{reports.file_stem(record.name)}-ecg.png", png), record.name))
    return images


@_guarded
def api_report(files, sampling_rate_hz=None, start_s=0.0, leads=None) -> list[str]:
    """The one-page PDF report of each record; without weights it says why there are no findings."""
    entries = _read(files, sampling_rate_hz, start_s, leads)
    _all_failed(entries)
    made = _reports(entries)[0]
    with _results_folder() as folder:
        return _pdfs(made, folder)


def _reports(entries, display: reports.Display | None = None) -> tuple[list[reports.Report], dict | None]:
    """One report per entry, in order: read failures, and records with or without findings."""
    records = [entry for entry, prepared in entries if prepared is not None]
    predictions, problem = None, None
    if records:
        try:
            predictions = dict(zip(map(id, records), _predict(records)))
        except ECGFMError as exc:  # reading and drawing still work without weights
            problem = exc
    out = []
    for entry, prepared in entries:
        if prepared is None:
            out.append(reports.failed(_name_of(entry), str(entry)))
        else:
            prediction = predictions[id(entry)] if predictions else None
            out.append(reports.build(entry, prepared, prediction, model_problem=_plain(problem),
                                     provenance=MODEL.provenance(), display=display))
    return out, predictions


def _pdfs(made: list[reports.Report], folder: Path) -> list[str]:
    paths = []
    for report in made[:MAX_REPORTS]:
        if report.record is not None:
            paths.append(_save(folder / f"{reports.file_stem(report.name)}-report.pdf",
                               _drawn(reports.to_pdf, report)))
    return paths


# --- the page ------------------------------------------------------------------------------------

def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _plain(problem: ECGFMError | None) -> str | None:
    """What a clinician is told when there is no model; the technical detail stays on the status banner."""
    if problem is None:
        return None
    if isinstance(problem, WeightsUnavailableError):
        return "the ECG-FM weights are not available on this server (see the notice at the top of the page)."
    if MODEL.status()["model_status"] == "loading":
        return "the model is still loading; analyse again in a minute."
    if MODEL.model is None:
        return "the ECG-FM weights are not available on this server (see the notice at the top of the page)."
    return str(problem).split(": ", 1)[-1]  # the model failed on these records (out of memory ...): its sentence


def model_banner() -> str:
    """Before any upload: whether predictions are available, in plain words, the detail one click away."""
    status = MODEL.status()
    if status["model_status"] == "loaded":
        if status.get("probe", "applied") == "applied":
            return ""
        return ('<div class="model-status loading" role="status">ECG-FM is ready, but the probe this server '
                'is configured with is not applied, so only ECG-FM\'s findings are shown.'
                f'<details><summary>Technical detail</summary><code>{_esc(status["probe"])}</code></details></div>')
    if status["model_status"] == "loading":
        return ('<div class="model-status loading" role="status">The ECG-FM model is loading. You can add '
                'ECG files now; findings are given once it is ready.</div>')
    return ('<div class="model-status unavailable" role="alert"><b>Predictions are unavailable on this '
            'server:</b> the ECG-FM weights could not be loaded. ECGs can still be read and drawn, but no '
            'finding is shown, and nothing else answers in the model\'s place.'
            f'<details><summary>Technical detail</summary><code>{_esc(status["reason"])}</code></details></div>')


def _banner_tick():
    """Until the model is loaded, the page asks again: a load that failed is retried, and recovers."""
    loaded = MODEL.status()["model_status"] == "loaded"
    return model_banner(), gr.Timer(active=not loaded)


def _message_html(text: str, kind: str = "error") -> str:
    return f'<div class="ecgfm-message {kind}" role="{"alert" if kind == "error" else "status"}">{_esc(text)}</div>'


def _page_html(made: list[reports.Report], folder: Path) -> str:
    cards = []
    for i, report in enumerate(made):
        png, url = None, None
        if report.record is not None:
            png = _drawn(reports.ecg_png, report, dpi=160)
            path = _save(folder / f"{reports.file_stem(report.name)}-ecg.png", png)
            url = f"gradio_api/file={path}"  # relative: works under any root path
        cards.append(reports.to_html(report, anchor=f"ecgfm-record-{i + 1}", png=png, png_url=url,
                                     overview_png=_drawn(reports.overview_png, report)))
    nav = ""
    if len(made) > 1:
        nav = ('<nav class="records"><b>Records:</b> ' + "".join(
            f'<a href="#ecgfm-record-{i + 1}" class="level-{r.level}">{_esc(r.name)}</a>'
            for i, r in enumerate(made)) + "</nav>")
    return f'<div class="ecgfm-report">{nav}{"".join(cards)}</div>'


def _provenance_md(provenance: dict | None) -> str:
    rows = reports.provenance_rows(provenance)
    if not rows:
        status = MODEL.status()
        rows = [("Model", f"{status['model_status']}" + (f": {status['reason']}" if status["reason"] else ""))]
    rows.append(("Gradio", gr.__version__))
    return "\n".join(["| Item | Value |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in rows])


def ui_analyse(files, sampling_rate_hz, start_s, leads, gain=10, speed=25, display_filter=None,
               saliency_behind_leads=False, request: gr.Request = None):
    """The page's analysis. Every outcome is shown on the page and stays there until the next action."""
    session = getattr(request, "session_hash", None)
    try:
        display = reports.Display(float(gain or 10), float(speed or 25), display_filter or None,
                                  bool(saliency_behind_leads))
        entries = _read(files, sampling_rate_hz, start_s, leads, keep_s=PAGE_IDLE_S, session=session)
        made, predictions = _reports(entries, display)
        _add_overviews(made, files, sampling_rate_hz, leads)
        examples = {Path(p).name for p in _paths(files) if _is_example_copy(Path(p))}  # by content, not name
        for report in made:
            report.dataset_label = _dataset_label(report.name) if report.name in examples else None
        with _results_folder() as folder:
            page = _page_html(made, folder)
            measured = {id(r.record): r.measurements for r in made if r.record is not None}
            downloads = _write_downloads(_payload(entries, predictions, measured=measured), folder) + _pdfs(made, folder)
            downloads += sorted(str(p) for p in folder.glob("*-ecg.png"))
    except ECGFMError as exc:
        return "", gr.update(value=None, visible=False), gr.update(), _message_html(str(exc))
    except Exception as exc:  # a bug: one sentence on the page, the type in the log, never a traceback
        log.error("Unexpected %s in the page's analysis.", type(exc).__name__)
        return ("", gr.update(value=None, visible=False), gr.update(),
                _message_html(f"Something went wrong on the server ({type(exc).__name__}); the files could not "
                              "be processed."))
    finally:
        trim_heap()
    failed = [r.name for r in made if r.error is not None]
    provenance = next((p.provenance for p in (predictions or {}).values()), None) or MODEL.provenance()
    summary = (f"Analysed {len(made) - len(failed)} of {len(made)} record{'s' if len(made) != 1 else ''}"
               + (f"; could not be read: {', '.join(failed)} (see below)" if failed else "")
               + f". Files stay on the server while this page uses them and are deleted "
                 f"{PAGE_IDLE_S / 60:.0f} minutes after their last use, or seconds after the page is closed.")
    return (page, gr.update(value=downloads, visible=True), _provenance_md(provenance),
            _message_html(summary, "error" if len(failed) == len(made) else "info"))


def _add_overviews(made: list[reports.Report], files, fs, leads) -> None:
    """The whole recording beside each record longer than its window, for the overview strip.

    Read again without a window; a recording too long to read whole simply has no overview.
    """
    longer = {r.name for r in made if r.record is not None
              and r.record.total_duration_s > r.record.duration_s + 0.5}
    if not longer:
        return
    fs, _, leads = _options(fs, 0, leads)
    whole = ecgfm.read_ecgs(_paths(files), fs=fs, leads=leads, errors="return")
    by_name = {r.name: r for r in whole if not isinstance(r, Exception) and r.name in longer}
    for report in made:
        report.overview = by_name.get(report.name)


def _shift_window(start_s, step_s: float):
    try:
        value = float(start_s or 0)
    except (TypeError, ValueError):
        value = 0.0
    return max(0.0, value + step_s)


@functools.lru_cache(maxsize=1)
def _catalog() -> list[dict]:
    """The real example recordings (examples/catalog.json), each with its credit and the dataset's label."""
    path = EXAMPLES_DIR / "catalog.json"
    if not path.is_file():
        return []
    entries = json.loads(path.read_text(encoding="utf-8"))
    return [entry for entry in entries if all((EXAMPLES_DIR / name).is_file() for name in entry["files"])]


def _dataset_label(name: str) -> str | None:
    """The label an example's source dataset gives it, for an example's own file only."""
    return next((entry.get("dataset_label") for entry in _catalog() if name == entry["files"][0]), None)


def _examples_table() -> str:
    rows = "".join(
        f'<tr><td>{_esc(e["title"])}</td><td>{_esc(e.get("dataset_label") or "none given")}</td>'
        f'<td>{_esc(e["source"])} ({_esc(e["licence"])})</td></tr>' for e in _catalog())
    return ('<details class="examples-credits"><summary>About the examples: label in the dataset and credits'
            '</summary><p>Real, de-identified public recordings. The label in the dataset is what the dataset '
            'itself says about the recording, not ECG-FM\'s output.</p><div class="table-scroll"><table>'
            '<thead><tr><th>Example</th><th>Label in the dataset</th><th>Source (licence)</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></div></details>')


# Local fonts only: the page makes no request to a third party (no Google Fonts).
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial",
                             "sans-serif"],
                       font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])
CSS = (HERE / "app.css").read_text(encoding="utf-8")


API_EXAMPLE = ("HR06000.hea", "HR06000.mat")  # on the API page, in place of Gradio's sample PDF


def _with_example(component, payload, value=None):
    """The API page shows each input's example; make it a real one, not Gradio's sample PDF or
    "Hello!!". (Set on the instance: a component subclass would make Gradio write a type stub.)"""
    component.example_payload = lambda: payload
    component.example_value = lambda: payload if value is None else value
    return component


def _real_ecg_example(component: gr.File) -> gr.File:
    from gradio_client import handle_file

    return _with_example(component, [handle_file(str(EXAMPLES_DIR / name)) for name in API_EXAMPLE],
                         [str(EXAMPLES_DIR / name) for name in API_EXAMPLE])


def build_ui() -> gr.Blocks:
    with gr.Blocks(title="ECG-FM — research demo", analytics_enabled=False,
                   delete_cache=(300, 900)) as demo:
        gr.Markdown("# ECG-FM: findings from a resting ECG\n"
                    "Add an ECG; ECG-FM, a foundation model trained on MIMIC-IV-ECG, gives the "
                    "probability of 17 findings for a 10 s window, after judging whether the input is fit for it.")
        gr.HTML(f'<div class="disclaimer">⚠ {_esc(DISCLAIMER)}</div>')
        banner = gr.HTML(model_banner())
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                files = _real_ecg_example(gr.File(label="ECG files (several records at once; a WFDB record "
                                                         "needs both its .hea and .dat)", file_count="multiple",
                                                   height=220))
            with gr.Column(scale=2):
                fs = gr.Number(label="Sampling rate (Hz)", value=0, minimum=0,
                               info="Only for files that do not store one (e.g. plain CSV); "
                                    "0 = use the rate in the file.")
                start = gr.Number(label="Window start (s)", value=0, minimum=0,
                                  info="ECG-FM reads 10 s from here, in 5 s segments.")
                leads = gr.Dropdown(choices=list(STANDARD_LEADS), multiselect=True, value=[],
                                    label="Leads in the file (optional)",
                                    info="Only for files that do not name their leads, e.g. a one-column "
                                         "CSV: the lead each column holds, in order.")
                with gr.Accordion("Display (for the eye only)", open=False):
                    gain = gr.Radio([("5 mm/mV", 5), ("10 mm/mV", 10), ("20 mm/mV", 20)], value=10, label="Gain")
                    speed = gr.Radio([("25 mm/s", 25), ("50 mm/s", 50)], value=25, label="Paper speed")
                    display_filter = gr.Radio([("None", ""), ("0.5–40 Hz (monitoring)", "monitor"),
                                               ("50 Hz notch", "notch50"), ("60 Hz notch", "notch60")],
                                              value="", label="Display filter")
                    behind = gr.Checkbox(False, label="Saliency behind every lead (not only the rhythm strip)")
                    gr.HTML(f'<p class="note">{_esc(reports.DISPLAY_NOTE)}</p>')
                analyse = gr.Button("Analyse", variant="primary")
                with gr.Row():
                    earlier = gr.Button("◀ Previous 10 s", size="sm")
                    later = gr.Button("Next 10 s ▶", size="sm")
        message = gr.HTML(elem_id="ecgfm-message")
        examples_slot = gr.Column()
        downloads = gr.File(label="Downloads: report (PDF), ECG (PNG), results (JSON, CSV)",
                            file_count="multiple", interactive=False, visible=False, elem_id="ecgfm-downloads")
        report = gr.HTML(elem_id="ecgfm-report")
        with gr.Accordion("Model and software", open=False):
            provenance = gr.Markdown(_provenance_md(None))
        inputs = [files, fs, start, leads, gain, speed, display_filter, behind]
        outputs = [report, downloads, provenance, message]
        catalog = _catalog()
        if catalog:
            with examples_slot:
                gr.Examples(examples=[[[str(EXAMPLES_DIR / n) for n in e["files"]], None, 0, [], 10, 25, "", False]
                                      for e in catalog],
                            inputs=inputs, outputs=outputs, fn=ui_analyse, run_on_click=True,
                            cache_examples=False, api_visibility="private",
                            label="Real example ECGs (public, de-identified recordings): click one to analyse it",
                            example_labels=[e["title"] for e in catalog])
                gr.HTML(_examples_table())
        gr.Markdown("ECG-FM: McKeen et al., *ECG-FM: An Open Electrocardiogram Foundation Model* "
                    f"(bowang-lab/ECG-FM). {DISCLAIMER}")

        run = dict(fn=ui_analyse, inputs=inputs, outputs=outputs, api_visibility="private",
                   concurrency_id="model", concurrency_limit=CONCURRENT_REQUESTS)
        analyse.click(**run)
        earlier.click(lambda s: _shift_window(s, -WINDOW_S), start, start, api_visibility="private").then(**run)
        later.click(lambda s: _shift_window(s, WINDOW_S), start, start, api_visibility="private").then(**run)
        timer = gr.Timer(3.0, active=True)
        timer.tick(_banner_tick, None, [banner, timer], api_visibility="private")
        demo.load(lambda: (_provenance_md(MODEL.provenance()), model_banner()), None, [provenance, banner],
                  api_visibility="private")
        demo.unload(_release_session)

        # Script endpoints: the same inputs, one output each; no page element triggers them. The
        # numbers arrive as text, so that "abc" or -3 gets our sentence, not a validation error.
        inputs = [files, _with_example(gr.Textbox(label="sampling_rate_hz", visible=False), "500"),
                  _with_example(gr.Textbox(label="start_s", value="0", visible=False), "0"),
                  _with_example(gr.Dropdown(choices=list(STANDARD_LEADS), multiselect=True, value=[],
                                            label="leads", visible=False), [])]
        saliency_hz = _with_example(gr.Textbox(label="saliency_hz", value="", visible=False), "")
        predicted = gr.JSON(label="prediction", visible=False)
        read = gr.JSON(label="reading", visible=False)
        gr.Button(visible=False).click(api_predict, inputs + [saliency_hz], predicted, api_name="predict",
                                       concurrency_id="model", concurrency_limit=CONCURRENT_REQUESTS)
        gr.Button(visible=False).click(api_read, inputs, read, api_name="read")
        drawn = gr.Gallery(label="ecg", visible=False, format="png")
        gr.Button(visible=False).click(api_plot, inputs, drawn, api_name="plot")
        pdfs = gr.File(label="reports", file_count="multiple", visible=False)
        gr.Button(visible=False).click(api_report, inputs, pdfs, api_name="report",
                                       concurrency_id="model", concurrency_limit=CONCURRENT_REQUESTS)
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

    app.add_middleware(_UploadWatch)
    _start_deleting_unclaimed()
    return gr.mount_gradio_app(app, build_ui(), path="/", footer_links=["api", "settings"],
                               run_history=False, show_error=False, max_file_size=MAX_FILE_SIZE,
                               ssr_mode=False, css=CSS, theme=THEME)


def main() -> None:
    import uvicorn

    return_freed_memory()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    app = create_app()
    MODEL.start()
    print(f"ECG-FM app on http://{host}:{port} (research use only)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
