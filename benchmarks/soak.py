"""Soak test of app.py: `python benchmarks/soak.py [--minutes 10] [--clients 4]`.

One `python app.py` process on 127.0.0.1, N gradio_client threads sending a mix of good requests and
bad ones for the given minutes, then a check of what the app left behind. Not part of the test suite;
bounded in time (it stops by itself, and a watchdog ends it if anything hangs) and loopback only.

- Good requests (goal: 0 errors): a WFDB pair (/predict), a CSV with its sampling rate (/predict),
  two records in one call (/predict), /read, /plot and /report.
- Bad requests (goal: every one refused cleanly): random bytes, an empty file, a .dat without its
  header, a truncated EDF, a sampling rate that is not a number. Clean = the call fails with one
  sentence that names the file (or, for the number, says it must be a number), no traceback in the
  message or in the app's log, and /health still answers "ok" right after.
- The app process's RSS (VmRSS) and open file descriptors are sampled every 10 s; growth is the
  median of the last quarter of the run against the median of the minute after the warm-up
  (goal: at most 5 %).
- At the end, after the upload grace (set small here, see --grace-s / --orphan-age-s), it counts
  what is left in the upload folder (GRADIO_TEMP_DIR) and in ECGFM_CACHE.

Weights: a tiny random checkpoint in the release layout (tests/fairseq_layout.py), so the run is about
the app (uploads, files, memory of the server), not the model's arithmetic; `--checkpoint` takes
another one (e.g. the full-size one bench.py caches). Figures go to benchmarks/results/soak.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
SAMPLE_EVERY_S = 10.0
REQUEST_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0
GOOD = ("predict_wfdb", "predict_csv", "predict_multi", "read", "plot", "report")
BAD = ("bad_garbage", "bad_empty", "bad_dat_without_header", "bad_truncated_edf", "bad_fs_not_a_number")
GROWTH_GOAL = 0.05
HEX_DIR = re.compile(r"^[0-9a-f]{32,128}$")
# which request sent a file left in the upload folder, by its name
SENT_BY = ((re.compile(r"_fs_text\.csv$"), "bad_fs_not_a_number"), (re.compile(r"_garbage\.xml$"), "bad_garbage"),
           (re.compile(r"^soak_empty\.csv$"), "bad_empty"), (re.compile(r"_alone\.dat$"), "bad_dat_without_header"),
           (re.compile(r"^soak_truncated\.edf$"), "bad_truncated_edf"),
           (re.compile(r"^soak_shared\."), "read/plot/report (shared record)"),
           (re.compile(r"^soak_c\d+_leads\.csv$"), "predict_csv/predict_multi"),
           (re.compile(r"^soak_c\d+\.(hea|dat)$"), "predict_wfdb/predict_multi"),
           (re.compile(r"^soak_final\.csv$"), "the final /read"))


# --- inputs ----------------------------------------------------------------------------------------

def synthetic_ecg(seconds: float, fs: float, seed: int):
    """[n, 12] millivolts: a 72 bpm spike train with a little noise; a test signal, not a heart."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-((t % (60 / 72) - 0.3) ** 2) / (2 * 0.01 ** 2))
    gains = np.linspace(0.4, 1.5, 12)
    return beats[:, None] * gains[None, :] + 0.02 * rng.standard_normal((t.size, 12))


def write_wfdb(folder: Path, name: str, seed: int, seconds: float = 12.0, fs: int = 500) -> list[Path]:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=synthetic_ecg(seconds, fs, seed),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def write_csv(path: Path, seed: int, seconds: float = 10.0, fs: int = 250) -> Path:
    """Leads only, no time column: the file does not say its sampling rate (250 Hz is sent with it)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, synthetic_ecg(seconds, fs, seed), delimiter=",", fmt="%.4f", header=",".join(LEADS),
               comments="")
    return path


def write_truncated_edf(path: Path) -> Path:
    """A valid 10 s, 12-lead EDF+ cut in half (header intact, data records missing)."""
    import numpy as np
    import pyedflib

    whole = path.with_name("whole.edf")
    writer = pyedflib.EdfWriter(str(whole), 12, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([dict(label=lead, dimension="mV", sample_frequency=250, physical_max=5.0,
                                  physical_min=-5.0, digital_max=32767, digital_min=-32768) for lead in LEADS])
    writer.writeSamples([np.ascontiguousarray(column) for column in synthetic_ecg(10, 250, 7).T])
    writer.close()
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    whole.unlink()
    return path


class Inputs:
    """One client's files. Its own WFDB and CSV records are rewritten with fresh noise every round, so
    each upload is new to the server (new folder in the upload cache, deleted after use); /read, /plot
    and /report send a record shared by all clients, byte for byte, so several requests use one upload
    path at once (Gradio stores identical uploads at one path)."""

    def __init__(self, folder: Path, client: int, shared: list[Path], edf: Path, rng: random.Random):
        self.folder, self.client, self.shared, self.edf, self.rng = folder, client, shared, edf, rng
        self.round = 0
        self.refresh()

    def refresh(self) -> None:
        self.round += 1
        seed = self.client * 100_000 + self.round
        self.wfdb = write_wfdb(self.folder / "wfdb", f"soak_c{self.client}", seed)
        self.csv = write_csv(self.folder / "csv" / f"soak_c{self.client}_leads.csv", seed)
        self.garbage = self.folder / "bad" / f"soak_c{self.client}_garbage.xml"
        self.garbage.parent.mkdir(parents=True, exist_ok=True)
        self.garbage.write_bytes(os.urandom(2048))
        self.empty = self.folder / "bad" / "soak_empty.csv"
        self.empty.write_bytes(b"")
        self.dat = self.folder / "bad" / f"soak_c{self.client}_alone.dat"
        self.dat.write_bytes(os.urandom(12 * 2 * 5000))
        # the same CSV under its own name, sent with a sampling rate that is not a number
        self.fs_text = self.folder / "bad" / f"soak_c{self.client}_fs_text.csv"
        self.fs_text.write_bytes(self.csv.read_bytes())

    def request(self, kind: str) -> tuple[str, tuple, str | None]:
        """(api_name, arguments, what a clean refusal must contain) for one request of this kind."""
        from gradio_client import handle_file

        up = lambda paths: [handle_file(str(p)) for p in paths]  # noqa: E731
        return {
            "predict_wfdb": ("/predict", (up(self.wfdb),), None),
            "predict_csv": ("/predict", (up([self.csv]), "250", "0"), None),
            "predict_multi": ("/predict", (up(self.wfdb + [self.csv]), "250", "0"), None),
            "read": ("/read", (up(self.shared),), None),
            "plot": ("/plot", (up(self.shared),), None),
            "report": ("/report", (up(self.shared),), None),
            "bad_garbage": ("/predict", (up([self.garbage]),), self.garbage.name),
            "bad_empty": ("/predict", (up([self.empty]),), self.empty.name),
            "bad_dat_without_header": ("/predict", (up([self.dat]),), self.dat.name),
            "bad_truncated_edf": ("/predict", (up([self.edf]),), self.edf.name),
            "bad_fs_not_a_number": ("/predict", (up([self.fs_text]), "two hundred fifty", "0"), "must be numbers"),
        }[kind]


# --- checks ----------------------------------------------------------------------------------------

def check_good(kind: str, result) -> str | None:
    """None when the answer is what a good request should get, else what is wrong with it."""
    if kind.startswith("predict"):
        records = result.get("records", []) if isinstance(result, dict) else []
        expected = 2 if kind == "predict_multi" else 1
        if len(records) != expected:
            return f"{len(records)} records, expected {expected}"
        for record in records:
            if "error" in record:
                return f"record error: {record['error']}"
            if not isinstance(record.get("probabilities"), dict) or len(record["probabilities"]) != 17:
                return f"no 17 probabilities for {record.get('file')}"
        return None
    if kind == "read":
        records = result.get("records", []) if isinstance(result, dict) else []
        if len(records) != 1 or "error" in records[0] or records[0].get("fs") != 500:
            return f"unexpected /read answer: {str(result)[:200]}"
        return None
    if kind == "plot":
        if not result or not Path(result[0]["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n":
            return f"no PNG: {str(result)[:200]}"
        return None
    if kind == "report":
        if not result or not Path(result[0]).read_bytes()[:5] == b"%PDF-":
            return f"no PDF: {str(result)[:200]}"
        return None
    return f"unknown kind {kind}"


def refusal_problem(message: str, must_contain: str) -> str | None:
    """None for a clean refusal: one sentence, naming the file (or the reason), no traceback."""
    if "Traceback" in message or 'File "' in message:
        return "traceback in the message"
    if "Something went wrong on the server" in message:
        return "generic server error (an unexpected exception in the app)"
    if must_contain not in message:
        return f"does not contain {must_contain!r}"
    if "\n" in message or len(message) > 300 or len(re.findall(r"[.!?](?:\s|$)", message)) != 1:
        return "not one sentence"
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


# --- the app process ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def fd_targets(pid: int) -> Counter:
    """What the open descriptors point at, digits generalised (socket:[N], a font file, the log ...)."""
    targets = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/"):
            target = ("…/" + "/".join(Path(target).parts[-2:])) if ".venv" in target or "site-packages" in target \
                else re.sub(r"ecgfm-soak-[^/]+", "ecgfm-soak-*", target)
        targets[re.sub(r"\d+", "N", target) if not target.startswith("…/") else target] += 1
    return targets


def fd_kind(target: str) -> str:
    if target.startswith("socket:"):
        return "sockets"
    if target.endswith((".ttf", ".otf", ".afm")):
        return "font files"
    if "gradio-uploads" in target:
        return "upload folder"
    return "other"


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    kinds = Counter()
    for target, count in fd_targets(pid).items():
        kinds[fd_kind(target)] += count
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"]), "fd_kinds": dict(kinds)}


def folder_stats(root: Path) -> dict:
    """Files and bytes in the upload folder, tolerant of the app deleting them meanwhile."""
    files = size = results = tmp = 0
    for folder, dirs, names in os.walk(root):
        if folder == str(root):
            results = sum(1 for d in dirs if d.startswith("ecgfm-results-"))
            tmp = sum(1 for n in names if n.startswith("tmp"))
        for name in names:
            try:
                size += os.stat(os.path.join(folder, name)).st_size
                files += 1
            except OSError:
                pass
    return {"files": files, "bytes": size, "results_folders": results, "tmp_files": tmp}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0


def sent_by(name: str) -> str:
    return next((kind for pattern, kind in SENT_BY if pattern.search(name)), "?")


def leftovers(uploads: Path, cache: Path, examples: Path, our_names: set[str], orphan_age_s: float) -> dict:
    """What is left, by kind: uploads (goal 0), tmp* (goal 0), ecgfm-results-* (swept by Gradio's
    delete_cache after 15 min), copies of the app's own examples, and anything else, named."""
    example_digests = {(p.name, hashlib.sha256(p.read_bytes()).hexdigest())
                       for p in examples.iterdir() if p.is_file()} if examples.is_dir() else set()
    out = {"uploaded_files": [], "tmp_files": [], "results_folders": 0, "results_bytes": 0, "results_files": 0,
           "example_copies": [], "empty_folders": [], "other": []}
    if uploads.is_dir():
        for entry in sorted(uploads.iterdir()):
            if entry.name.startswith("ecgfm-results-") and entry.is_dir():
                out["results_folders"] += 1
                out["results_bytes"] += _size(entry)
                out["results_files"] += sum(1 for p in entry.rglob("*") if p.is_file())
            elif entry.name.startswith("tmp") and entry.is_file():
                out["tmp_files"].append({"name": entry.name, "bytes": _size(entry),
                                         "age_s": round(time.time() - entry.stat().st_mtime, 1)})
            elif entry.is_dir() and HEX_DIR.match(entry.name):
                files = [p for p in entry.rglob("*") if p.is_file()]
                if not files:
                    out["empty_folders"].append(entry.name)
                for p in files:
                    item = {"name": p.name, "folder": entry.name[:12], "bytes": _size(p),
                            "age_s": round(time.time() - p.stat().st_mtime, 1)}
                    try:
                        is_example = (p.name, hashlib.sha256(p.read_bytes()).hexdigest()) in example_digests
                    except OSError:
                        is_example = False
                    if is_example:
                        out["example_copies"].append(item)
                    elif p.name in our_names or p.name.startswith("soak_"):
                        out["uploaded_files"].append(item)
                    else:
                        out["other"].append({**item, "where": "uploads"})
            else:
                out["other"].append({"name": entry.name, "where": "uploads", "bytes": _size(entry)})
    cache_items = []
    if cache.is_dir():
        for p in sorted(cache.rglob("*")):
            if p.is_file():
                cache_items.append({"name": str(p.relative_to(cache)), "bytes": _size(p)})
    out["ecgfm_cache"] = cache_items
    out["uploaded_by_request_kind"] = dict(Counter(sent_by(item["name"]) for item in out["uploaded_files"]))
    out["counts"] = {"uploaded_files": len(out["uploaded_files"]), "tmp_files": len(out["tmp_files"]),
                     "tmp_files_older_than_orphan_age": sum(1 for t in out["tmp_files"] if t["age_s"] > orphan_age_s),
                     "tmp_bytes": sum(t["bytes"] for t in out["tmp_files"]),
                     "results_folders": out["results_folders"], "results_mb": round(out["results_bytes"] / 2**20, 1),
                     "example_copies": len(out["example_copies"]), "empty_upload_folders": len(out["empty_folders"]),
                     "other_in_uploads": len(out["other"]), "ecgfm_cache_files": len(cache_items)}
    for key in ("uploaded_files", "tmp_files", "example_copies", "other", "empty_folders"):
        out[key] = out[key][:20]  # a sample is enough to say what they are
    return out


def scan_log(text: str, our_names: set[str]) -> dict:
    """Tracebacks, errors and warnings in the app's log (file names and digits generalised), and
    whether any name of an uploaded file appears in it (it must not: privacy)."""
    lines = text.splitlines()
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    excerpts = []  # each traceback's first frames and its end (the exception itself), digits kept
    for i in tracebacks[:6]:
        end = next((j for j in range(i + 1, min(i + 400, len(lines)))
                    if lines[j] and not lines[j].startswith((" ", "Traceback"))), min(i + 399, len(lines) - 1))
        block = lines[i: end + 1]
        excerpts.append("\n".join(block if len(block) <= 16 else block[:5] + ["  …"] + block[-10:]))
    kinds = Counter()
    for line in lines:
        if re.search(r"Traceback|ERROR|Error|Exception|WARNING|warn", line) or not re.match(r"^\d{4}-\d\d-\d\d ", line):
            kinds[re.sub(r"\d+", "N", line.strip())[:200]] += 1
    stems = {Path(n).stem for n in our_names} | {"soak_c", "soak_empty"}
    leaked = sorted({stem for stem in stems if stem and stem in text})
    return {"lines": len(lines), "tracebacks": len(tracebacks), "traceback_excerpts": excerpts,
            "notable_lines": [{"line": k, "count": v} for k, v in kinds.most_common(25)],
            "file_names_in_log": leaked}


# --- the soak ----------------------------------------------------------------------------------------

class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds = {k: {"requests": 0, "ok": 0, "errors": 0, "refused_cleanly": 0, "not_clean": 0,
                          "latencies": [], "messages": Counter(), "problems": Counter()} for k in GOOD + BAD}
        self.health_failures: list[str] = []

    def add(self, kind: str, seconds: float, *, ok: bool, message: str | None = None, problem: str | None = None):
        with self.lock:
            k = self.kinds[kind]
            k["requests"] += 1
            k["latencies"].append(seconds)
            if kind in GOOD:
                k["ok" if ok else "errors"] += 1
            else:
                k["refused_cleanly" if ok else "not_clean"] += 1
            if message is not None:
                k["messages"][message[:300]] += 1
            if problem is not None:
                k["problems"][problem[:300]] += 1


def client_loop(index: int, url: str, inputs: Inputs, downloads: Path, stop: threading.Event, tally: Tally,
                rng: random.Random) -> None:
    from gradio_client import Client

    client = Client(url + "/", verbose=False, download_files=str(downloads), analytics_enabled=False)
    kinds = list(GOOD + BAD)
    while not stop.is_set():
        rng.shuffle(kinds)
        for kind in kinds:
            if stop.is_set():
                break
            api, args, must_contain = inputs.request(kind)
            sent = time.monotonic()
            job = client.submit(*args, api_name=api)
            try:
                result = job.result(timeout=REQUEST_TIMEOUT_S)
                took = time.monotonic() - sent
                if kind in GOOD:
                    problem = check_good(kind, result)
                    tally.add(kind, took, ok=problem is None, problem=problem)
                else:
                    tally.add(kind, took, ok=False, problem="answered instead of refused",
                              message=str(result)[:300])
            except Exception as exc:  # noqa: BLE001 - every failure is a figure
                took = time.monotonic() - sent
                message = str(exc) or type(exc).__name__
                if kind in GOOD:
                    tally.add(kind, took, ok=False, message=f"{type(exc).__name__}: {message}")
                    if isinstance(exc, TimeoutError):
                        job.cancel()
                else:
                    problem = refusal_problem(message, must_contain)
                    tally.add(kind, took, ok=problem is None, message=message, problem=problem)
            if kind in BAD:
                try:
                    if get_json(f"{url}/health")["status"] != "ok":
                        raise RuntimeError("status not ok")
                except Exception as exc:  # noqa: BLE001
                    with tally.lock:
                        tally.health_failures.append(f"after {kind}: {type(exc).__name__}: {exc}"[:300])
            shutil.rmtree(downloads, ignore_errors=True)  # the client's copies of PNGs and PDFs
        inputs.refresh()


def growth(samples: list[dict], key: str, warmup_s: float, duration_s: float) -> dict:
    base_window = (warmup_s, warmup_s + max(60.0, 0.1 * duration_s))
    base = [s[key] for s in samples if base_window[0] <= s["t"] <= base_window[1]]
    last = [s[key] for s in samples if s["t"] >= 0.75 * duration_s]
    if not base or not last:
        return {"base": None, "last_quarter": None, "growth": None, "ok": None}
    b, lq = statistics.median(base), statistics.median(last)
    g = (lq - b) / b if b else 0.0
    return {"base": b, "base_window_s": list(base_window), "last_quarter": lq, "growth": g,
            "min": min(s[key] for s in samples if s["t"] >= warmup_s),
            "max": max(s[key] for s in samples if s["t"] >= warmup_s), "ok": g <= GROWTH_GOAL}


def git_commit(repo: Path) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the clients send requests")
    parser.add_argument("--clients", type=int, default=4, help="client threads sending at once")
    parser.add_argument("--repo", type=Path, default=HERE.parent,
                        help="the checkout whose app.py is soaked (default: this one)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights to serve (default: a tiny random checkpoint, written for the run)")
    parser.add_argument("--warmup-min", type=float, default=2.0, help="minutes left out of the growth figures")
    parser.add_argument("--grace-s", type=float, default=5.0, help="ECGFM_UPLOAD_GRACE_S given to the app")
    parser.add_argument("--orphan-age-s", type=float, default=15.0, help="ECGFM_ORPHAN_AGE_S given to the app")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "soak.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (uploads, log)")
    parser.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra environment variable for app.py (e.g. MALLOC_ARENA_MAX=2), repeatable")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    repo = args.repo.resolve()
    if args.checkpoint is not None and not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    duration_s = args.minutes * 60
    warmup_s = min(args.warmup_min * 60, 0.25 * duration_s)
    hard_limit_s = START_TIMEOUT_S + duration_s + REQUEST_TIMEOUT_S + 2 * (args.grace_s + args.orphan_age_s) + 180
    tmp = Path(tempfile.mkdtemp(prefix="ecgfm-soak-"))
    uploads, cache = tmp / "gradio-uploads", tmp / "ecgfm-cache"
    os.environ.update({"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf"),
                       "GRADIO_TEMP_DIR": str(tmp / "client-gradio-tmp")})
    sys.path.insert(0, str(repo))
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())

    if args.checkpoint is None:
        from tests.fairseq_layout import write_checkpoint

        checkpoint = write_checkpoint(tmp / "tiny_classifier.pt")
        weights = "tiny random checkpoint (tests/fairseq_layout.py TINY: 2 layers, 64 wide), release layout"
    else:
        checkpoint = args.checkpoint.resolve()
        weights = f"{checkpoint.name} ({checkpoint.stat().st_size / 2**20:.0f} MB)"

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(repo), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_TEMP_DIR": str(uploads), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf"), "ECGFM_CACHE": str(cache),
           "ECGFM_CHECKPOINT": str(checkpoint), "ECGFM_UPLOAD_GRACE_S": f"{args.grace_s:g}",
           "ECGFM_ORPHAN_AGE_S": f"{args.orphan_age_s:g}", "PYTHONUNBUFFERED": "1",
           **dict(item.split("=", 1) for item in args.app_env)}
    (tmp / "hf").mkdir()
    log_path = tmp / "app.log"
    log = open(log_path, "w")
    app = subprocess.Popen([sys.executable, "app.py"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)

    def watchdog() -> None:  # whatever hangs, the soak ends
        print(f"soak: hard limit of {hard_limit_s:.0f} s reached; stopping the app and exiting", flush=True)
        app.kill()
        os._exit(3)

    dog = threading.Timer(hard_limit_s, watchdog)
    dog.daemon = True
    dog.start()
    started = time.monotonic()
    try:
        while True:
            if app.poll() is not None:
                raise SystemExit(f"app.py exited ({app.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                health = get_json(f"{url}/health", timeout=2)
                if health["model_status"] != "loading":
                    break
            except OSError:
                pass
            if time.monotonic() - started > START_TIMEOUT_S:
                raise SystemExit(f"app.py did not load within {START_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        if not health["model_loaded"]:
            raise SystemExit(f"app.py did not load the weights: {health['reason']}")
        startup_s = time.monotonic() - started
        print(f"soak: app up on {url} in {startup_s:.1f} s (pid {app.pid}); {args.clients} clients for "
              f"{args.minutes:g} min, {weights}", flush=True)

        shared = write_wfdb(tmp / "inputs" / "shared", "soak_shared", seed=1)
        edf = write_truncated_edf(tmp / "inputs" / "soak_truncated.edf")
        inputs = [Inputs(tmp / "inputs" / f"client{i}", i, shared, edf, random.Random(args.seed + i))
                  for i in range(args.clients)]
        our_names = {p.name for p in shared} | {edf.name}
        for item in inputs:
            our_names |= {p.name for p in item.wfdb + [item.csv, item.garbage, item.empty, item.dat, item.fs_text]}

        tally, stop = Tally(), threading.Event()
        samples: list[dict] = []
        t0 = time.monotonic()

        def sampler() -> None:
            while True:
                sample = {"t": round(time.monotonic() - t0, 1)}
                try:
                    sample.update(proc_sample(app.pid))
                except (OSError, KeyError, ValueError) as exc:
                    sample["error"] = f"{type(exc).__name__}: {exc}"
                sample.update({f"uploads_{k}": v for k, v in folder_stats(uploads).items()})
                samples.append(sample)
                if stop.wait(SAMPLE_EVERY_S):
                    return

        threads = [threading.Thread(target=sampler, name="sampler", daemon=True)]
        threads += [threading.Thread(target=client_loop, name=f"client{i}", daemon=True,
                                     args=(i, url, inputs[i], tmp / "downloads" / f"client{i}", stop, tally,
                                           random.Random(1000 + args.seed + i)))
                    for i in range(args.clients)]
        for thread in threads:
            thread.start()
        next_report = 60.0
        while time.monotonic() - t0 < duration_s:
            time.sleep(1.0)
            if app.poll() is not None:
                print(f"soak: app.py exited ({app.returncode}) during the run", flush=True)
                break
            if time.monotonic() - t0 >= next_report:
                next_report += 60.0
                with tally.lock:
                    done = sum(k["requests"] for k in tally.kinds.values())
                    bad = sum(k["errors"] + k["not_clean"] for k in tally.kinds.values())
                last = samples[-1] if samples else {}
                print(f"soak: {time.monotonic() - t0:.0f} s, {done} requests, {bad} problems, "
                      f"RSS {last.get('rss_mb', 0):.0f} MB, {last.get('fds', 0)} fds, "
                      f"{last.get('uploads_files', 0)} files in the upload folder", flush=True)
        stop.set()
        ran_s = time.monotonic() - t0
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 10)
        stuck = [t.name for t in threads if t.is_alive()]
        app_alive = app.poll() is None
        final_health = None
        try:
            final_health = get_json(f"{url}/health")
        except Exception as exc:  # noqa: BLE001
            final_health = {"error": f"{type(exc).__name__}: {exc}"}

        # After the grace: the scripts' uploads should be gone, and the parser's tmp* files and emptied
        # folders once older than ORPHAN_AGE_S (app.py sweeps every ORPHAN_AGE_S, at most 30 s). Then one
        # more request, and the same wait: its own files must go too.
        settle_s = args.grace_s + args.orphan_age_s + min(args.orphan_age_s, 30) + 5
        print(f"soak: clients stopped after {ran_s:.0f} s; waiting {settle_s:.0f} s (grace + orphan age) …",
              flush=True)
        time.sleep(settle_s)
        after_grace = leftovers(uploads, cache, repo / "examples", our_names, args.orphan_age_s)
        from gradio_client import Client, handle_file

        last_file = write_csv(tmp / "inputs" / "final" / "soak_final.csv", seed=999)
        our_names.add(last_file.name)
        final_request = "ok"
        try:
            Client(url + "/", verbose=False, download_files=str(tmp / "downloads" / "final"),
                   analytics_enabled=False).predict([handle_file(str(last_file))], "250", "0", api_name="/read")
        except Exception as exc:  # noqa: BLE001
            final_request = f"{type(exc).__name__}: {exc}"[:300]
        time.sleep(settle_s + min(args.orphan_age_s, 30))
        after_next_request = leftovers(uploads, cache, repo / "examples", our_names, args.orphan_age_s)
        end_sample = proc_sample(app.pid) if app_alive else {}
        if app_alive:
            end_sample["fd_targets"] = dict(fd_targets(app.pid).most_common(20))
    finally:
        app.terminate()
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        log.close()
        dog.cancel()
        if sys.exc_info()[0] is not None and not args.keep:  # a failed start: its message has the log's end
            shutil.rmtree(tmp, ignore_errors=True)
    log_text = log_path.read_text(errors="replace")

    kinds = {}
    for name, k in tally.kinds.items():
        entry = {"requests": k["requests"],
                 "latency_p50_s": percentile(k["latencies"], 0.5), "latency_p95_s": percentile(k["latencies"], 0.95),
                 "latency_max_s": max(k["latencies"]) if k["latencies"] else None}
        if name in GOOD:
            entry.update(ok=k["ok"], errors=k["errors"])
        else:
            entry.update(refused_cleanly=k["refused_cleanly"], not_clean=k["not_clean"])
        entry["messages"] = [{"message": m, "count": c} for m, c in k["messages"].most_common(5)]
        entry["problems"] = [{"problem": p, "count": c} for p, c in k["problems"].most_common(5)]
        kinds[name] = entry
    good_requests = sum(kinds[k]["requests"] for k in GOOD)
    good_errors = sum(kinds[k]["errors"] for k in GOOD)
    bad_requests = sum(kinds[k]["requests"] for k in BAD)
    bad_clean = sum(kinds[k]["refused_cleanly"] for k in BAD)
    valid = [s for s in samples if "rss_mb" in s]
    resources = {"rss_mb": growth(valid, "rss_mb", warmup_s, ran_s), "fds": growth(valid, "fds", warmup_s, ran_s),
                 "threads": growth(valid, "threads", warmup_s, ran_s), "at_end_after_settling": end_sample,
                 "fds_by_kind": {kind: growth([{"t": s_["t"], kind: s_["fd_kinds"].get(kind, 0)} for s_ in valid],
                                              kind, warmup_s, ran_s)
                                 for kind in ("sockets", "font files", "upload folder", "other")},
                 "upload_folder_peak": {key: max((s_[f"uploads_{key}"] for s_ in valid), default=None)
                                        for key in ("files", "bytes", "tmp_files", "results_folders")}}
    log_findings = scan_log(log_text, our_names)
    final_counts = after_next_request["counts"]
    goals = {
        "good_requests_without_error": good_errors == 0 and good_requests > 0,
        "bad_requests_refused_cleanly": bad_clean == bad_requests and bad_requests > 0,
        "no_traceback_in_log": log_findings["tracebacks"] == 0,
        "healthy_throughout": not tally.health_failures and app_alive and final_health.get("status") == "ok",
        "rss_growth_at_most_5pct": resources["rss_mb"]["ok"],
        "fd_growth_at_most_5pct": resources["fds"]["ok"],
        "no_uploads_left": final_counts["uploaded_files"] == 0,
        "no_tmp_files_left": final_counts["tmp_files"] == 0,
        "no_tmp_files_older_than_orphan_age_left": final_counts["tmp_files_older_than_orphan_age"] == 0,
        "no_empty_folders_left": final_counts["empty_upload_folders"] == 0,
        "no_file_names_in_log": not log_findings["file_names_in_log"],
    }
    cpu = platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = {
        "measured": {**git_commit(repo), "repo": str(repo)},
        "settings": {"minutes": args.minutes, "ran_s": ran_s, "clients": args.clients, "weights": weights,
                     "warmup_s": warmup_s, "sample_every_s": SAMPLE_EVERY_S, "request_timeout_s": REQUEST_TIMEOUT_S,
                     "ECGFM_UPLOAD_GRACE_S": args.grace_s, "ECGFM_ORPHAN_AGE_S": args.orphan_age_s,
                     "ECGFM_PAGE_IDLE_S": "default (the page is not used: API clients only)",
                     "delete_cache": "Gradio's (300, 900) from app.py: ecgfm-results-* older than 15 min are swept "
                                     "every 5 min, so none are swept within a 10 min soak",
                     "settle_s": settle_s, "HF_HUB_OFFLINE": "1", "host": "127.0.0.1",
                     "mix": "each client cycles through all 11 kinds in a shuffled order, round after round; its own "
                            "WFDB/CSV/garbage/.dat files get fresh content every round; /read, /plot, /report "
                            "send one WFDB record shared byte for byte by all clients",
                     "app_env": args.app_env, "seed": args.seed},
        "machine": {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "load_before": load_before, "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())},
        "startup_s": startup_s,
        "totals": {"requests": good_requests + bad_requests, "requests_per_s": (good_requests + bad_requests) / ran_s,
                   "good_requests": good_requests, "good_errors": good_errors,
                   "bad_requests": bad_requests, "bad_refused_cleanly": bad_clean,
                   "health_failures": len(tally.health_failures), "stuck_clients": stuck,
                   "app_alive_at_end": app_alive, "final_health": final_health},
        "kinds": kinds,
        "health_failures": tally.health_failures[:10],
        "resources": resources,
        "leftovers_after_grace": after_grace,
        "final_request": final_request,
        "leftovers_after_next_request": after_next_request,
        "log": log_findings,
        "goals": goals,
        "samples": samples,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(summary(results))
    print(f"JSON in {args.json}" + (f"; files in {tmp}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(r: dict) -> str:
    m, s, t = r["measured"], r["settings"], r["totals"]
    lines = [f"soak of app.py at {m['commit'][:10]}{' (dirty)' if m['dirty'] else ''}: {s['clients']} clients, "
             f"{s['ran_s'] / 60:.1f} min, {s['weights']}; {r['machine']['cores']} cores, load "
             f"{r['machine']['load_before']} → {r['machine']['load_after']}",
             f"{t['requests']} requests ({t['requests_per_s']:.2f}/s): good {t['good_requests']} with "
             f"{t['good_errors']} errors; bad {t['bad_requests']}, {t['bad_refused_cleanly']} refused cleanly; "
             f"{t['health_failures']} failed health checks",
             f"{'kind':<24}{'requests':>9}{'fail':>6}{'p50 s':>8}{'p95 s':>8}"]
    for name, k in r["kinds"].items():
        fail = k.get("errors", k.get("not_clean"))
        lines.append(f"{name:<24}{k['requests']:>9}{fail:>6}{k['latency_p50_s'] or 0:>8.2f}{k['latency_p95_s'] or 0:>8.2f}")
        for p in k["problems"] + ([{"problem": m["message"], "count": m["count"]} for m in k["messages"]]
                                  if fail and name in GOOD else []):
            lines.append(f"    {p['count']}× {p['problem'][:150]}")
    for key, label in (("rss_mb", "RSS MB"), ("fds", "open fds"), ("threads", "threads")):
        g = r["resources"][key]
        if g["growth"] is not None:
            lines.append(f"{label}: {g['base']:.0f} after warm-up → {g['last_quarter']:.0f} in the last quarter "
                         f"({g['growth']:+.1%}; range {g['min']:.0f}–{g['max']:.0f})")
    by_kind = r["resources"]["fds_by_kind"]
    lines.append("open fds by kind (after warm-up → last quarter): " + ", ".join(
        f"{kind} {g['base']:.0f} → {g['last_quarter']:.0f}" for kind, g in by_kind.items() if g["base"] is not None))
    peak = r["resources"]["upload_folder_peak"]
    if peak["files"] is not None:
        lines.append(f"upload folder at its fullest (10 s samples): {peak['files']} files, {peak['bytes'] / 2**20:.1f} MB, "
                     f"{peak['tmp_files']} tmp*, {peak['results_folders']} ecgfm-results-*")
    for title, key in (("after the grace", "leftovers_after_grace"), ("after one more request", "leftovers_after_next_request")):
        c = r[key]["counts"]
        by_kind = ", ".join(f"{n} from {k}" for k, n in r[key]["uploaded_by_request_kind"].items())
        lines.append(f"left {title}: {c['uploaded_files']} uploads{f' ({by_kind})' if by_kind else ''}, "
                     f"{c['tmp_files']} tmp* ({c['tmp_files_older_than_orphan_age']} older than ORPHAN_AGE_S, "
                     f"{c['tmp_bytes']} bytes), {c['results_folders']} "
                     f"ecgfm-results-* ({c['results_mb']} MB, left to delete_cache: 15 min), "
                     f"{c['example_copies']} example copies, {c['empty_upload_folders']} empty upload folders, "
                     f"{c['other_in_uploads']} other; ecgfm cache {c['ecgfm_cache_files']} files")
    lines.append(f"log: {r['log']['tracebacks']} tracebacks, file names in log: {r['log']['file_names_in_log'] or 'none'}")
    lines.append("goals: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["goals"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
