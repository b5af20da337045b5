"""Faults while serving: the app (a `python app.py` subprocess on 127.0.0.1) stays up and /health tells the truth.

1. the weights file truncated, deleted or replaced under a running app;
2. no weights at start (a missing, then a truncated file), the file appearing later;
3. a full disk: results are written whole or not at all, and the answer is one sentence;
4. requests cancelled by their client, while running and while queued;
5. a forward pass that raises for one request of a batch (in-process: no fault can be injected
   into a running server without a hook in it, and the app has none).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import html
import os
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

import ecgfm  # noqa: E402
from ecgfm.checkpoint import load_checkpoint, read_checkpoint, source_change  # noqa: E402
from ecgfm.errors import CheckpointError, ECGFMError  # noqa: E402
from ecgfm.hub import file_sha256  # noqa: E402
from ecgfm.predict import BatchingPredictor, predict  # noqa: E402
from ecgfm.preprocess import prepare  # noqa: E402
from tests.fairseq_layout import write_checkpoint  # noqa: E402
from tests.test_app import get_json, probabilities_close, running_app, wait_for_model, write_wfdb  # noqa: E402
from tests.test_predict import synthetic  # noqa: E402

ONE_SENTENCE_NOT_SAVED = "The server could not save the results: "
CUT_SHORT = ("mimic_iv_ecg_finetuned.pt: not a readable PyTorch checkpoint, the file ends too early (truncated, "
             "or still being copied).")


@contextlib.contextmanager
def serving(tmp: Path, **env: str):
    """`running_app`, with the app's process too: to see that it stays alive, and to limit it."""
    started: list[subprocess.Popen] = []
    popen = subprocess.Popen

    def remember(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    with contextlib.ExitStack() as stack:
        with mock.patch.object(subprocess, "Popen", remember):  # only while it starts
            url, uploads = stack.enter_context(running_app(tmp, **env))
        process = started[-1]
        try:
            yield url, uploads, process
        finally:  # uvicorn waits up to 10 s for gradio_client's closed streams: no need, the tests are done
            process.terminate()
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()


def healthy(url: str, process: subprocess.Popen) -> dict:
    assert process.poll() is None, "the app exited"
    health = get_json(f"{url}/health")
    assert health["status"] == "ok"
    return health


def wait_until(condition, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def uploaded(uploads: Path, stem: str) -> list[str]:
    return sorted(p.name for p in uploads.rglob(f"{stem}.*") if p.is_file())


@contextlib.contextmanager
def clients(url: str, count: int = 1):
    """gradio_client Clients, closed after: an open client's heartbeat stream holds up the app's shutdown."""
    made = [Client(url + "/", verbose=False) for _ in range(count)]
    try:
        yield made
    finally:
        for client in made:
            client.close()


def send(files: list[Path]) -> list:
    return [handle_file(str(p)) for p in files]


# --- one app for faults 1, 3 and 4: its own copy of the weights, short grace and unused-upload times ---

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("served") / "served.pt")


@pytest.fixture(scope="module")
def reference(weights):
    return ecgfm.load_model(weights, device="cpu")  # its own copy: the file may change afterwards


@pytest.fixture(scope="module")
def server(tmp_path_factory, weights, reference):
    with serving(tmp_path_factory.mktemp("faults-app"), ECGFM_CHECKPOINT=str(weights),
                 ECGFM_UNUSED_UPLOAD_S="8", ECGFM_UPLOAD_GRACE_S="1") as (url, uploads, process):
        assert wait_for_model(url)["model_loaded"], get_json(f"{url}/health")
        yield url, uploads, process


@pytest.fixture(scope="module")
def client(server) -> Client:
    with clients(server[0]) as (client,):
        yield client


# --- 1. the weights file changes under a running app ----------------------------------------------

def test_the_weights_file_changing_under_the_app_changes_nothing_served(server, client, weights, reference,
                                                                         tmp_path):
    """The model holds its own copy of the weights: what it answers, and the provenance it gives,
    stay those of the weights in memory; /health says the file no longer matches them."""
    url, _, process = server
    files = write_wfdb(tmp_path, "weights_change", seconds=10, fs=250)
    expected = ecgfm.predict(reference, ecgfm.read_ecgs(files))[0].probabilities
    sha256 = get_json(f"{url}/info")["model"]["provenance"]["sha256"]
    assert sha256 == reference.provenance["sha256"]

    def truncate():
        with open(weights, "r+b") as handle:
            handle.truncate(1000)

    def replace():
        write_checkpoint(weights, seed=7)  # another model at the same path

    for change, word in ((truncate, "changed"), (weights.unlink, "deleted"), (replace, "changed")):
        change()
        health = healthy(url, process)
        assert health["model_loaded"] is True and health["model_status"] == "loaded", health
        assert health["reason"] == (f"served.pt: the weights file was {word} after it was loaded; the weights in "
                                    f"memory (sha256 {sha256[:12]}…) are still the ones used, until the model "
                                    "is loaded again.")
        (record,) = client.predict(send(files), api_name="/predict")["records"]
        probabilities_close(record["probabilities"], expected)
        assert record["provenance"]["sha256"] == sha256
        assert get_json(f"{url}/info")["model"]["provenance"]["sha256"] == sha256
    assert process.poll() is None


def _mapped(paths: set[str]) -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip() in paths:
                low, high = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((low, high))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc/self/maps")
def test_a_model_never_reads_its_weights_from_the_checkpoint_file(tmp_path, monkeypatch):
    """Weights mapped from the user's checkpoint would crash the process (SIGBUS) if it were truncated:
    none are. They are mapped from ecgfm's own cache instead (no second copy in memory)."""
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    path = write_checkpoint(tmp_path / "c.pt")
    files = {str(path.resolve())}
    _, raw = read_checkpoint(path)  # the reader does map the file: the check below can see a mapping
    assert any(low <= t.data_ptr() < high for t in raw.values() for low, high in _mapped(files))
    del raw
    digest = file_sha256(path)
    converted = load_checkpoint(path, sha256=digest)  # from the checkpoint, writing the cache
    cached = load_checkpoint(path, sha256=digest)  # from the safetensors cache
    uncached = load_checkpoint(path)  # no hash, so no cache: the model owns a copy
    for model in (converted, cached, uncached):
        ranges = _mapped(files)
        for name, tensor in model.state_dict().items():
            assert not any(low <= tensor.data_ptr() < high for low, high in ranges), name
    path.write_bytes(b"")  # the user's file gone: every model still answers the same
    x = torch.randn(1, 12, 2500)
    with torch.inference_mode():
        reference = uncached(x).logits
        for model in (converted, cached):
            torch.testing.assert_close(model(x).logits, reference)


def test_a_file_rewritten_with_its_old_size_and_time_is_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.pt"
    path.write_bytes(b"a" * 4096)
    first = file_sha256(path)
    stat = path.stat()
    time.sleep(0.05)  # the kernel's file clock ticks every few milliseconds
    path.write_bytes(b"b" * 4096)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before
    assert file_sha256(path) == hashlib.sha256(b"b" * 4096).hexdigest() != first


def test_a_checkpoint_changed_while_loading_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    import ecgfm.checkpoint as checkpoint_module

    path = write_checkpoint(tmp_path / "c.pt")
    digest = file_sha256(path)
    read = checkpoint_module.read_checkpoint

    def read_then_replace(source):
        out = read(source)
        time.sleep(0.05)
        write_checkpoint(tmp_path / "c.pt", seed=9)  # rewritten in place while being converted
        return out

    monkeypatch.setattr(checkpoint_module, "read_checkpoint", read_then_replace)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, sha256=digest)
    assert str(error.value) == (f"c.pt: the checkpoint file changed while it was being loaded (its sha256 is no "
                                f"longer {digest[:12]}…); load it again once it is complete.")
    assert not list((tmp_path / "cache").rglob(f"{digest}.*"))  # nothing cached under the old hash
    monkeypatch.setattr(checkpoint_module, "read_checkpoint", read)
    model = load_checkpoint(path, sha256=file_sha256(path))
    assert source_change(model) is None


# --- 2. no weights at start, then weights: recovered without a restart ----------------------------

def test_weights_that_appear_later_are_loaded_without_a_restart(tmp_path):
    target = tmp_path / "later" / "mimic_iv_ecg_finetuned.pt"
    good = write_checkpoint(tmp_path / "good.pt", seed=3)
    files = write_wfdb(tmp_path / "ecg", "later", seconds=10, fs=250)
    with contextlib.ExitStack() as stack:
        url, _, process = stack.enter_context(serving(tmp_path / "app", ECGFM_CHECKPOINT=str(target),
                                                      ECGFM_RETRY_LOAD_S="1"))
        health = wait_for_model(url)
        assert health["model_status"] == "unavailable" and "does not exist" in health["reason"], health
        client = stack.enter_context(clients(url))[0]
        with pytest.raises(Exception, match="does not exist"):
            client.predict(send(files), api_name="/predict")

        target.parent.mkdir()
        target.write_bytes(good.read_bytes()[:20000])  # half copied: one sentence, still unavailable
        seen = []

        def unreadable():
            seen.append(healthy(url, process))
            return CUT_SHORT in (seen[-1]["reason"] or "")

        assert wait_until(unreadable, 30), seen[-1]
        assert seen[-1]["model_status"] in ("unavailable", "loading") and not seen[-1]["model_loaded"]

        shutil.copyfile(good, target)  # the rest arrives: loaded on a later try, hashed again
        assert wait_until(lambda: seen.append(healthy(url, process)) or seen[-1]["model_loaded"], 30), seen[-1]
        assert {h["model_status"] for h in seen} <= {"unavailable", "loading", "loaded"}
        assert seen[-1] == {"status": "ok", "model_loaded": True, "model_status": "loaded", "reason": None}
        provenance = get_json(f"{url}/info")["model"]["provenance"]
        assert provenance["sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
        (record,) = client.predict(send(files), api_name="/predict")["records"]
        model = ecgfm.load_model(good, device="cpu")
        probabilities_close(record["probabilities"], ecgfm.predict(model, ecgfm.read_ecgs(files))[0].probabilities)
        assert process.poll() is None
    log = (tmp_path / "app" / "app.log").read_text()
    assert "Traceback" not in log and "after an earlier attempt failed" in log


# --- 3. a full disk -------------------------------------------------------------------------------

def test_a_full_disk_is_one_sentence_and_leaves_no_half_written_results(server, client, tmp_path):
    """The app may write no file over 100 kB (RLIMIT_FSIZE: the kernel stops the write half-way, as on a
    full disk, for any user): its ECG drawings and PDFs (~200 kB) cannot be written whole."""
    url, uploads, process = server
    files = write_wfdb(tmp_path, "disk_full", seconds=10, fs=250)  # 60 kB: the upload itself fits
    before = set(uploads.glob("ecgfm-results-*"))
    limits = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (100_000, limits[1]))
    try:
        for endpoint in ("/plot", "/report"):
            with pytest.raises(Exception) as failure:
                client.predict(send(files), api_name=endpoint)
            assert str(failure.value) == (f"{ONE_SENTENCE_NOT_SAVED}a file would exceed the size it may write; "
                                          "nothing was kept, so try again later or tell the server's administrator.")
            assert set(uploads.glob("ecgfm-results-*")) == before  # no folder with half of the results
            assert not list(uploads.rglob("*.partial"))
            assert healthy(url, process)["model_loaded"]
        (record,) = client.predict(send(files), api_name="/predict")["records"]  # answered in the reply: works
        assert record["probabilities"]
    finally:
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, limits)
    (image,) = client.predict(send(files), api_name="/plot")  # room again: the same request succeeds
    assert Path(image["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in (uploads.parent / "app.log").read_text()


def test_results_folder_that_cannot_be_made_is_one_sentence(tmp_path, monkeypatch):
    import importlib

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(blocker / "uploads"))  # works for root too, unlike chmod
    app_module = importlib.import_module("app")
    with pytest.raises(ECGFMError) as error:
        app_module._results_dir()
    assert str(error.value) == (f"{ONE_SENTENCE_NOT_SAVED}its results folder cannot be created; nothing was kept, "
                                "so try again later or tell the server's administrator.")


def test_the_page_keeps_no_half_of_its_results(tmp_path, monkeypatch, reference):
    """The page's drawing is written, then its JSON fails (disk full): the page says so, and the
    folder goes with everything already in it."""
    import importlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app_module = importlib.import_module("app")
    files = write_wfdb(tmp_path / "ecg", "page_disk_full", seconds=10, fs=250)
    monkeypatch.setattr(app_module, "_predict", lambda records: ecgfm.predict(reference, records))
    save, written = app_module._save, []

    def full_after_the_drawing(path, data):
        if path.name.endswith(".json"):
            raise app_module._not_saved(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        written.append(save(path, data))
        return written[-1]

    monkeypatch.setattr(app_module, "_save", full_after_the_drawing)
    page, downloads, _, message = app_module.ui_analyse([str(p) for p in files], 0, 0, [])
    assert page == "" and downloads["visible"] is False and downloads["value"] is None
    assert (f"{ONE_SENTENCE_NOT_SAVED}its disk is full; nothing was kept, so try again later or tell the "
            "server's administrator.") in html.unescape(message)
    assert written and not any(Path(p).exists() for p in written)
    assert not list((tmp_path / "gradio").glob("ecgfm-results-*"))


# --- 4. requests cancelled by their client --------------------------------------------------------

def test_a_request_cancelled_while_running_has_its_files_deleted_and_disturbs_no_other(server, reference,
                                                                                         tmp_path):
    url, uploads, process = server
    cancelled = write_wfdb(tmp_path / "a", "cancelled_running", seconds=10, fs=250)
    other = write_wfdb(tmp_path / "b", "answered_meanwhile", seconds=10, fs=250)
    with clients(url, 2) as (first, second):
        job = first.submit(send(cancelled), api_name="/report")  # ~1.5 s of work
        # running (or, on a slow day, just done: the outcome must be the same)
        assert wait_until(lambda: job.status().code in (Status.PROCESSING, Status.FINISHED), 30), job.status()
        meanwhile = second.submit(send(other), api_name="/predict")
        assert job.cancel()
        (record,) = meanwhile.result(timeout=60)["records"]
    probabilities_close(record["probabilities"], ecgfm.predict(reference, ecgfm.read_ecgs(other))[0].probabilities)
    assert wait_until(lambda: not uploaded(uploads, "cancelled_running"), 20), uploaded(uploads, "cancelled_running")
    assert wait_until(lambda: not uploaded(uploads, "answered_meanwhile"), 20)
    assert healthy(url, process)["model_loaded"]


def test_uploads_whose_request_never_runs_are_deleted(server, tmp_path):
    """A client that uploads and goes away before its request runs (cancelled while queued, or the
    connection closed): no request claims the files, and they go ECGFM_UNUSED_UPLOAD_S after they
    arrived (8 s here: the first request on a cold, busy server can take seconds to start, and must
    still find its files)."""
    import httpx

    url, uploads, process = server
    abandoned = write_wfdb(tmp_path / "a", "abandoned_upload", seconds=10, fs=250)
    response = httpx.post(f"{url}/gradio_api/upload",
                          files=[("files", (p.name, p.read_bytes())) for p in abandoned], timeout=30)
    assert response.status_code == 200 and all(Path(p).is_file() for p in response.json())
    cancelled = write_wfdb(tmp_path / "c", "cancelled_at_once", seconds=10, fs=250)
    with clients(url) as (client,):
        client.submit(send(cancelled), api_name="/plot").cancel()  # stopped wherever it got to
        time.sleep(2)
        assert uploaded(uploads, "abandoned_upload") == ["abandoned_upload.dat", "abandoned_upload.hea"]
        assert wait_until(lambda: not uploaded(uploads, "abandoned_upload"), 30), uploaded(uploads, "abandoned")
        assert wait_until(lambda: not uploaded(uploads, "cancelled_at_once"), 30)
    assert healthy(url, process)["model_loaded"]
    assert "Traceback" not in (uploads.parent / "app.log").read_text()


def test_a_file_uploaded_twice_stays_until_both_requests_have_used_it(tmp_path, monkeypatch):
    """Gradio stores two uploads of the same bytes at one path: the first request done must not
    delete the file from under the second, however late that one starts."""
    import importlib
    import json

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app_module = importlib.import_module("app")
    shared = app_module._upload_dir() / "same-bytes" / "shared.csv"
    shared.parent.mkdir(parents=True)
    shared.write_text("1")
    app_module._arrived(json.dumps([str(shared), str(shared)]).encode())  # two people, one file
    app_module._keep([str(shared)], 0.2, claim=True)  # the first request starts, and is done
    time.sleep(0.6)
    assert shared.exists()  # the second upload still waits for its request
    app_module._keep([str(shared)], 0.2, claim=True)
    time.sleep(0.6)
    assert not shared.exists()


def test_an_upload_no_request_claims_is_deleted_after_the_unused_time(tmp_path, monkeypatch):
    import importlib
    import json

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app_module = importlib.import_module("app")
    monkeypatch.setattr(app_module, "UNUSED_UPLOAD_S", 0.3)
    forgotten, in_use = (app_module._upload_dir() / name / f"{name}.csv" for name in ("forgotten", "in_use"))
    for path in (forgotten, in_use):
        path.parent.mkdir(parents=True)
        path.write_text(path.name)
    app_module._arrived(json.dumps([str(forgotten), str(in_use), str(in_use)]).encode())
    app_module._keep([str(in_use)], 30, claim=True)  # a page uses it: kept for its idle time
    app_module._delete_unclaimed()
    assert forgotten.exists() and in_use.exists()  # too recent
    time.sleep(0.5)
    app_module._delete_unclaimed()
    assert not forgotten.exists()  # its folder stays: Gradio may be storing into it
    assert in_use.exists()  # its own request's timer deletes it


# --- 5. a forward pass that raises for one request of a batch (in-process) -------------------------

@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return ecgfm.load_model(write_checkpoint(tmp_path_factory.mktemp("oom") / "classifier.pt", seed=4),
                            device="cpu")


@contextlib.contextmanager
def failing_for(model, marked, error: BaseException):
    """The model's forward raises `error` for any batch holding `marked`'s first segment, and counts batches."""
    marker = torch.from_numpy(prepare(marked).segments[0])
    batches = []

    def hook(module, args):
        batches.append(args[0].shape[0])
        if any(torch.equal(segment, marker) for segment in args[0]):
            raise error

    handle = model.register_forward_pre_hook(hook)
    try:
        yield batches
    finally:
        handle.remove()


def call_together(batcher, requests: dict[str, list]) -> tuple[dict, dict]:
    """Each request (name -> records) from its own thread at once; any exception kept as it is."""
    results, errors = {}, {}
    barrier = threading.Barrier(len(requests))

    def call(name, records):
        barrier.wait()
        try:
            results[name] = batcher(records)
        except BaseException as error:  # noqa: BLE001 - the test looks at exactly what a caller gets
            errors[name] = error

    threads = [threading.Thread(target=call, args=item) for item in requests.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


OOM_SENTENCE = "the server ran out of memory analysing {}; send fewer records at once, or try again later."


@pytest.mark.parametrize("error, sentence", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), OOM_SENTENCE.format("this record")),
    (MemoryError(), OOM_SENTENCE.format("this record")),
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
     "the model failed while analysing this record (RuntimeError); try again, and tell the server's "
     "administrator if it happens again."),
])
def test_a_forward_that_fails_for_one_request_fails_only_that_request(classifier, error, sentence):
    others = {f"r{i}": [synthetic(f"r{i}", 10.0, seed=20 + i)] for i in range(3)}
    marked = synthetic("marked", 10.0, seed=99)
    batcher = BatchingPredictor(classifier, max_records=8, wait_s=0.1)
    with failing_for(classifier, marked, error) as batches:
        results, errors = call_together(batcher, {**others, "marked": [marked]})
    assert set(errors) == {"marked"} and set(results) == set(others)
    failure = errors["marked"]
    assert type(failure) is ECGFMError and str(failure) == f"marked: {sentence}"
    assert failure.__cause__ is error  # kept for a debugger, never shown
    assert batches[0] > 2  # they did share a forward pass, which failed; then each ran alone
    for name, records in others.items():
        (alone,) = predict(classifier, records)
        assert results[name][0].name == name
        assert results[name][0].probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_a_request_of_several_records_that_runs_out_of_memory_is_named_and_the_batcher_goes_on(classifier):
    records = [synthetic(f"part{i}", 10.0, seed=30 + i) for i in range(4)]
    batcher = BatchingPredictor(classifier, wait_s=0.01)
    with failing_for(classifier, records[2], RuntimeError("DefaultCPUAllocator: not enough memory")) as batches:
        with pytest.raises(ECGFMError) as failure:
            batcher(records)
    assert str(failure.value) == ("part0, part1, part2 and 1 more: the server ran out of memory analysing these 4 "
                                  "records; send fewer records at once, or try again later.")
    assert len(batches) == 1  # a request alone in its batch is not run a second time
    (after,) = batcher(records[:1])  # the worker lives on
    assert after.probabilities == pytest.approx(predict(classifier, records[0]).probabilities, abs=1e-5)
    assert np.isfinite(list(after.probabilities.values())).all()
