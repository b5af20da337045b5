"""The Gradio app end to end: `python app.py` in a subprocess on 127.0.0.1, driven by gradio_client.

Weights are a tiny random checkpoint in the release layout (tests/fairseq_layout.py): these tests
check the wiring (same numbers as `ecgfm.predict`, errors, privacy, health), never medicine.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

import ecgfm  # noqa: E402
from ecgfm.io.record import STANDARD_LEADS  # noqa: E402
from ecgfm.labels import LABEL_NAMES  # noqa: E402
from ecgfm.model import cpu_has_native_bf16  # noqa: E402
from tests.fairseq_layout import write_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LEADS = list(STANDARD_LEADS)
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_app(tmp: Path, **env: str):
    """`python app.py` on a free port of 127.0.0.1, its uploads in tmp; stopped on exit.

    Yields (base_url, upload_dir). The Hugging Face cache is an empty folder and offline, so
    nothing is downloaded: weights come only from what `env` gives (ECGFM_CHECKPOINT).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uploads = tmp / "gradio-uploads"
    (tmp / "hf-cache").mkdir(exist_ok=True)
    full_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "GRADIO_TEMP_DIR": str(uploads), "GRADIO_ANALYTICS_ENABLED": "False",
                "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf-cache"),
                "ECGFM_CACHE": str(tmp / "ecgfm-cache"), "ECGFM_UPLOAD_GRACE_S": "1", "ECGFM_ORPHAN_AGE_S": "1",
                "PYTHONUNBUFFERED": "1",
                **env}
    if "ECGFM_CHECKPOINT" not in env:
        full_env.pop("ECGFM_CHECKPOINT", None)
    log = open(tmp / "app.log", "w")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited ({process.returncode}):\n{(tmp / 'app.log').read_text()}")
            try:
                get_json(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not answer:\n{(tmp / 'app.log').read_text()}") from None
                time.sleep(0.3)
        yield url, uploads
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for_model(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = get_json(f"{url}/health")
        if health["model_status"] != "loading" or time.monotonic() > deadline:
            return health
        time.sleep(0.3)


def synthetic_ecg(seconds: float, fs: float, seed: int = 0) -> np.ndarray:
    """[n, 12] millivolts: a 72 bpm spike train with a little noise; a test signal, not a heart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-((t % (60 / 72) - 0.3) ** 2) / (2 * 0.01 ** 2))
    gains = np.linspace(0.4, 1.5, 12)
    return (beats[:, None] * gains[None, :] + 0.02 * rng.standard_normal((t.size, 12))).astype(np.float64)


def write_wfdb(folder: Path, name: str, seconds: float = 12.0, fs: int = 500) -> list[Path]:
    import wfdb

    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=LEADS, p_signal=synthetic_ecg(seconds, fs),
                fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def write_csv(path: Path, seconds: float = 10.0, fs: int = 250) -> Path:
    """Leads only, no time column: the file does not say its sampling rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, synthetic_ecg(seconds, fs, seed=1), delimiter=",", fmt="%.4f",
               header=",".join(LEADS), comments="")
    return path


def probabilities_close(got: dict, expected: dict) -> None:
    assert list(got) == list(LABEL_NAMES)
    np.testing.assert_allclose([got[k] for k in LABEL_NAMES], [expected[k] for k in LABEL_NAMES],
                               rtol=1e-5, atol=1e-6)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_finetuned.pt")


@pytest.fixture(scope="session")
def reference_model(checkpoint):
    return ecgfm.load_model(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoint):
    with running_app(tmp_path_factory.mktemp("app"), ECGFM_CHECKPOINT=str(checkpoint),
                     ECGFM_MAX_FILE_SIZE="2mb") as (url, uploads):
        assert wait_for_model(url)["model_loaded"], (url, get_json(f"{url}/health"))
        yield url, uploads


@pytest.fixture(scope="module")
def client(app) -> Client:
    return Client(app[0] + "/", verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("ecgs")
    return {"wfdb": write_wfdb(folder / "wfdb", "rec12s"),
            "csv": [write_csv(folder / "csv" / "leads_only.csv")]}


# --- with weights --------------------------------------------------------------------------------

def test_health_and_info(app, checkpoint, reference_model):
    url, _ = app
    health = get_json(f"{url}/health")
    assert health == {"status": "ok", "model_loaded": True, "model_status": "loaded", "reason": None}
    info = get_json(f"{url}/info")
    assert [label["name"] for label in info["labels"]] == list(LABEL_NAMES)
    assert all(label["description"] and label["prevalence_pct"] > 0 for label in info["labels"])
    provenance = info["model"]["provenance"]
    assert provenance["file"] == checkpoint.name
    assert provenance["sha256"] == reference_model.provenance["sha256"]
    assert provenance["device"] and provenance["ecgfm_version"] == ecgfm.__version__
    assert info["versions"]["ecgfm"] == ecgfm.__version__ and info["versions"]["gradio"]
    assert "not a medical device" in info["disclaimer"]
    # no run history kept in the browser (clinical data), no page for it
    assert get_json(f"{url}/config")["run_history"] is False
    # the API page's examples are a real ECG and plain numbers, not Gradio's sample PDF
    examples = {p["parameter_name"]: p["example_input"]
                for p in get_json(f"{url}/gradio_api/info")["named_endpoints"]["/predict"]["parameters"]}
    assert [Path(f["path"]).name for f in examples["files"]] == ["HR06000.hea", "HR06000.mat"]
    assert (examples["sampling_rate_hz"], examples["start_s"], examples["leads"]) == ("500", "0", [])


def test_predict_wfdb_pair_matches_the_package(client, files, reference_model):
    result = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/predict")
    assert "not a medical device" in result["disclaimer"]
    (record,) = result["records"]
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]))[0].to_dict()
    assert record["file"] == expected["file"]
    probabilities_close(record["probabilities"], expected["probabilities"])
    assert [(s["start_s"], s["end_s"]) for s in record["segments"]] == [(0.0, 5.0), (5.0, 10.0)]
    for got, want in zip(record["segments"], expected["segments"]):
        probabilities_close(got["probabilities"], want["probabilities"])
    assert record["provenance"]["sha256"] == reference_model.provenance["sha256"]
    assert record["read"]["format"] and record["read"]["fs"] == 500
    assert record["read"]["duration_s"] == pytest.approx(12.0)
    assert any("of the 12.0 s recording" in w for w in record["warnings"])


def test_window_start(client, files, reference_model):
    result = client.predict([handle_file(str(p)) for p in files["wfdb"]], None, 2, api_name="/predict")
    (record,) = result["records"]
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]), start_s=2.0)[0].to_dict()
    probabilities_close(record["probabilities"], expected["probabilities"])
    assert record["read"]["window"] == {"start_s": 2.0, "end_s": 12.0}
    assert [(s["start_s"], s["end_s"]) for s in record["segments"]] == [(2.0, 7.0), (7.0, 12.0)]


def test_csv_needs_and_takes_a_sampling_rate(client, files, reference_model):
    csv = files["csv"][0]
    with pytest.raises(Exception) as missing:
        client.predict([handle_file(str(csv))], api_name="/predict")
    assert csv.name in str(missing.value) and "Traceback" not in str(missing.value)
    result = client.predict([handle_file(str(csv))], 250, 0, api_name="/predict")
    (record,) = result["records"]
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs([csv], fs=250))[0].to_dict()
    probabilities_close(record["probabilities"], expected["probabilities"])
    assert record["read"]["fs"] == 250 and record["read"]["leads"] == LEADS


def test_two_records_at_once(client, files, reference_model):
    paths = files["wfdb"] + files["csv"]
    result = client.predict([handle_file(str(p)) for p in paths], sampling_rate_hz=250, api_name="/predict")
    expected = {p.name: p.to_dict() for p in
                ecgfm.predict(reference_model, ecgfm.read_ecgs(paths, fs=250))}
    assert sorted(r["file"] for r in result["records"]) == sorted(expected) and len(expected) == 2
    for record in result["records"]:
        probabilities_close(record["probabilities"], expected[record["file"]]["probabilities"])


def test_ui_downloads_are_named_after_the_record(files, reference_model, tmp_path, monkeypatch):
    """The page's downloads (written by the same code as the page uses), checked without a browser."""
    import csv
    import importlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    app_module = importlib.import_module("app")
    records = ecgfm.read_ecgs(files["wfdb"], duration_s=10.0)
    entries = [(r, ecgfm.prepare(r)) for r in records]
    predictions = dict(zip(map(id, records), ecgfm.predict(reference_model, records)))
    folder = app_module._results_dir()
    json_path, csv_path = app_module._write_downloads(app_module._payload(entries, predictions), folder)
    assert Path(json_path).parent.parent == tmp_path.resolve()  # in Gradio's cache, swept by delete_cache
    assert (Path(json_path).name, Path(csv_path).name) == ("rec12s-ecgfm.json", "rec12s-ecgfm.csv")
    payload = json.loads(Path(json_path).read_text())
    expected = predictions[id(records[0])]
    assert payload["records"][0]["probabilities"] == expected.probabilities
    assert "not a medical device" in payload["disclaimer"] and payload["records"][0]["read"]["fs"] == 500
    assert payload["records"][0]["input_adequacy"] == {"level": "complete", "reasons": []}
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert [r["scope"] for r in rows] == ["record", "segment", "segment"]
    assert float(rows[0]["Sinus rhythm"]) == pytest.approx(expected.probabilities["Sinus rhythm"])
    assert (rows[2]["start_s"], rows[2]["end_s"]) == ("5.0", "10.0")
    assert rows[0]["input_adequacy"] == "complete" and rows[0]["model_sha256"] == reference_model.provenance["sha256"]
    assert int(rows[0]["warnings"]) == len(expected.warnings)


def test_uploads_of_the_page_stay_while_used_and_go_when_closed(tmp_path, monkeypatch):
    import importlib
    from types import SimpleNamespace

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    app_module = importlib.import_module("app")
    folder = Path(app_module._upload_dir()) / "upload-a"
    folder.mkdir(parents=True)
    kept, closed = folder / "kept.csv", folder / "closed.csv"
    kept.write_text("1"), closed.write_text("1")
    monkeypatch.setattr(app_module, "UPLOAD_GRACE_S", 0.2)
    app_module._keep([str(kept)], 1.5, session="page-1")
    app_module._keep([str(closed)], 1.5, session="page-2")
    time.sleep(0.6)
    app_module._keep([str(kept)], 1.5, session="page-1")  # re-analysed: its idle time starts again
    app_module._release_session(SimpleNamespace(session_hash="page-2"))  # that page was closed
    time.sleep(0.6)
    assert kept.exists() and not closed.exists()
    time.sleep(1.3)
    assert not kept.exists() and folder.is_dir()  # the folder stays: Gradio may be storing into it


def test_one_bad_file_does_not_sink_the_others(client, files, reference_model, tmp_path):
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(os.urandom(2048))
    paths = [garbage, *files["wfdb"]]
    result = client.predict([handle_file(str(p)) for p in paths], api_name="/predict")
    failed, good = result["records"]
    assert failed["file"] == "garbage.xml" and failed["error"].startswith("garbage.xml: ")
    assert "probabilities" not in failed
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]))[0]
    probabilities_close(good["probabilities"], expected.probabilities)
    read = client.predict([handle_file(str(p)) for p in paths], api_name="/read")
    assert [r["file"] for r in read["records"]] == ["garbage.xml", "rec12s.hea"] and "error" in read["records"][0]


def test_inadequate_input_is_judged_before_findings(client, tmp_path):
    one_lead = tmp_path / "one_lead.csv"
    np.savetxt(one_lead, synthetic_ecg(10, 250)[:, 1], fmt="%.4f")
    flat = tmp_path / "flat.csv"
    np.savetxt(flat, np.full((2500, 12), 0.3), delimiter=",", fmt="%.4f", header=",".join(LEADS), comments="")
    (limited,) = client.predict([handle_file(str(one_lead))], 250, 0, ["II"], api_name="/predict")["records"]
    assert limited["input_adequacy"]["level"] == "limited" and limited["probabilities"]
    assert limited["read"]["leads"][:1] == ["II"] and "11 of 12 leads" in limited["input_adequacy"]["reasons"][0]
    (unusable,) = client.predict([handle_file(str(flat))], 250, api_name="/predict")["records"]
    assert unusable["input_adequacy"]["level"] == "unusable" and unusable["probabilities"] is None
    assert unusable["segments"] == [] and "flat" in unusable["input_adequacy"]["reasons"][0]


def test_predict_gives_measurements_quality_the_devices_reading_and_saliency_on_request(client, files,
                                                                                        reference_model):
    from ecgfm.measure import measure

    philips = REPO / "examples" / "philips_pagewriter.xml"
    result = client.predict([handle_file(str(p)) for p in files["wfdb"]] + [handle_file(str(philips))],
                            "", "0", [], "100", api_name="/predict")
    wfdb_record, philips_record = result["records"]
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]), saliency=True)[0]
    assert wfdb_record["measurements"] == json.loads(json.dumps(
        measure(ecgfm.read_ecgs(files["wfdb"])[0].window(0.0, 10.0)).to_dict()))
    assert wfdb_record["signal_quality"] == json.loads(json.dumps(expected.quality.to_dict()))
    saliency = wfdb_record["saliency"]
    assert saliency["rate_hz"] == 100 and [len(row) for row in saliency["per_segment"]] == [500, 500]
    np.testing.assert_allclose(saliency["per_segment"],
                               expected.to_dict(saliency_hz=100)["saliency"]["per_segment"], atol=1e-4)
    device = ecgfm.read_ecg(philips).device_report
    assert philips_record["read"]["device_report"] == json.loads(json.dumps(device.to_dict()))
    plain = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/predict")["records"][0]
    assert "saliency" not in plain and "measurements" in plain
    with pytest.raises(Exception, match="divide 500 Hz"):
        client.predict([handle_file(str(p)) for p in files["wfdb"]], "", "0", [], "300", api_name="/predict")


def test_report_endpoint_gives_a_pdf_named_after_the_record(client, files):
    (pdf,) = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/report")
    assert Path(pdf).name == "rec12s-report.pdf" and Path(pdf).read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("fs, start, expected", [("abc", 0, "must be numbers"), (None, -3, "0 s or later")])
def test_bad_numbers_are_one_sentence(app, client, files, fs, start, expected):
    with pytest.raises(Exception, match=expected):
        client.predict([handle_file(str(p)) for p in files["wfdb"]], fs, start, api_name="/predict")
    log = (Path(app[1]).parent / "app.log").read_text()
    assert "Traceback" not in log


def test_read_says_what_was_read(client, files):
    result = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/read")
    (record,) = result["records"]
    assert record["file"] == "rec12s.hea"
    assert record["leads"] == LEADS and record["recorded_leads"] == LEADS
    assert record["fs"] == 500 and record["duration_s"] == pytest.approx(12.0)
    assert record["units"] and record["format"]
    assert record["window"] == {"start_s": 0.0, "end_s": 10.0}
    assert record["segments"] == [[0.0, 5.0], [5.0, 10.0]]
    assert isinstance(record["warnings"], list) and record["warnings"]
    assert "probabilities" not in record


@pytest.mark.parametrize("name, content", [("garbage.xml", os.urandom(2048)), ("empty.csv", b"")])
def test_bad_files_give_a_readable_error_and_the_app_keeps_serving(app, client, files, tmp_path, name, content):
    bad = tmp_path / name
    bad.write_bytes(content)
    for endpoint in ("/predict", "/read"):
        with pytest.raises(Exception) as failure:
            client.predict([handle_file(str(bad))], api_name=endpoint)
        message = str(failure.value)
        assert name in message, message
        assert "Traceback" not in message and "File \"" not in message
    assert get_json(f"{app[0]}/health")["status"] == "ok"
    result = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/read")
    assert result["records"][0]["file"] == "rec12s.hea"


def test_files_over_the_size_limit_are_refused(app, client, tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(b"0.1," * (3 * 2**20 // 4))
    with pytest.raises(Exception, match="maximum file size"):
        client.predict([handle_file(str(big))], 500, api_name="/read")
    # the server refuses it too, whatever the client does
    import httpx

    response = httpx.post(f"{app[0]}/gradio_api/upload", files={"files": ("big.csv", big.read_bytes())})
    assert response.status_code in (400, 413), response.status_code
    assert get_json(f"{app[0]}/health")["status"] == "ok"
    assert not [p for p in app[1].rglob("big.csv")]


def test_uploads_are_deleted_after_use(app, client, files):
    client.predict([handle_file(str(p)) for p in files["wfdb"] + files["csv"]], 250, api_name="/predict")
    _, uploads = app
    names = ("rec12s.hea", "rec12s.dat", "leads_only.csv", "garbage.xml", "empty.csv")
    deadline = time.monotonic() + 10  # the app keeps an upload ECGFM_UPLOAD_GRACE_S (1 s here) after use
    while True:
        left = [p.name for p in uploads.rglob("*") if p.is_file()]
        if not any(name in left for name in names) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name in names:
        assert name not in left, left
    # The parser's temporary files and the emptied folders (one per upload, named by its hash) go
    # once older than ECGFM_ORPHAN_AGE_S (1 s here), without waiting for another request.
    deadline = time.monotonic() + 10

    def leftovers() -> list[str]:  # Gradio's own folders (vibe_edit_history ...) are not uploads
        return ([p.name for p in uploads.glob("tmp*")]
                + [p.name for p in uploads.iterdir() if p.is_dir() and not any(p.iterdir())
                   and re.fullmatch(r"[0-9a-f]{40,64}|ecgfm-results-[0-9a-f]{32}", p.name)])

    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers()


def test_two_people_sending_the_same_file_at_once_both_get_results(app, files):
    """Gradio stores identical uploads at one path; one request must not delete the other's file."""
    from concurrent.futures import ThreadPoolExecutor

    def send(_):
        return Client(app[0], verbose=False).predict([handle_file(str(p)) for p in files["wfdb"]],
                                                     api_name="/predict")

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, range(4)))
    probabilities = [r["records"][0]["probabilities"] for r in results]
    for other in probabilities[1:]:  # batched with each other or not: the same numbers
        assert other == pytest.approx(probabilities[0], abs=1e-5)


def test_no_patient_data_in_the_log(app, client, files):
    client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/predict")
    log = (Path(app[1]).parent / "app.log").read_text()
    assert "rec12s" not in log and "leads_only" not in log and "garbage" not in log


# --- precision ------------------------------------------------------------------------------------

@pytest.mark.skipif(not cpu_has_native_bf16(), reason="bf16 is refused on CPUs without bfloat16 instructions")
def test_the_faster_precision_is_chosen_by_the_environment_and_named(tmp_path, checkpoint, files, reference_model):
    with running_app(tmp_path, ECGFM_CHECKPOINT=str(checkpoint), ECGFM_PRECISION="bf16") as (url, _):
        assert wait_for_model(url)["model_loaded"]
        assert get_json(f"{url}/info")["model"]["provenance"]["precision"] == "bf16"
        result = Client(url + "/", verbose=False).predict([handle_file(str(p)) for p in files["wfdb"]],
                                                          api_name="/predict")
    (record,) = result["records"]
    assert record["provenance"]["precision"] == "bf16"
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]))[0].probabilities
    differences = [abs(record["probabilities"][k] - expected[k]) for k in LABEL_NAMES]
    assert 0 < max(differences) <= 0.02


def test_an_unknown_precision_is_explained_not_served(tmp_path, checkpoint):
    with running_app(tmp_path, ECGFM_CHECKPOINT=str(checkpoint), ECGFM_PRECISION="fp64") as (url, _):
        health = wait_for_model(url)
    assert health["model_loaded"] is False and health["model_status"] == "unavailable"
    assert "precision must be one of fp32, bf16, fp16" in health["reason"]


# --- a probe of the server owner's own labels -----------------------------------------------------

def _fitted_probe(folder: Path, encoder_path: Path) -> Path:
    """A probe of lead I's polarity, fitted on the tiny encoder's embeddings of made records."""
    from ecgfm.probe import fit_probe
    from tests.test_probe import synthetic_ecg as beats

    classifier = ecgfm.load_model(write_checkpoint(folder / "classifier.pt", seed=1), device="cpu")
    encoder = ecgfm.load_model(encoder_path, device="cpu")
    rng = np.random.default_rng(5)
    flips = [bool(i % 2) for i in range(40)]
    records = [beats(f"r{i}", float(rng.uniform(55, 110)), flip, rng) for i, flip in enumerate(flips)]
    embeddings = np.stack([r.embedding for r in ecgfm.predict(classifier, records, embedder=encoder)])
    probe, _ = fit_probe(embeddings, {"lead_I_inverted": np.array(flips, dtype=int)}, encoder=encoder.provenance,
                         bootstrap=50)
    return probe.save(folder / "my-probe")


def test_a_configured_probe_is_shown_beside_ecgfm_as_the_owners_own(tmp_path, checkpoint, files, reference_model):
    from ecgfm.probe import Probe

    encoder_path = write_checkpoint(tmp_path / "encoder.pt", "wav2vec2_cmsc", seed=2)
    probe_dir = _fitted_probe(tmp_path, encoder_path)
    with running_app(tmp_path / "app", ECGFM_CHECKPOINT=str(checkpoint), ECGFM_PROBE=str(probe_dir),
                     ECGFM_PRETRAINED_CHECKPOINT=str(encoder_path)) as (url, _):
        assert wait_for_model(url)["probe"] == "applied"
        result = Client(url + "/", verbose=False).predict([handle_file(str(p)) for p in files["wfdb"]],
                                                          api_name="/predict")
    (record,) = result["records"]
    encoder = ecgfm.load_model(encoder_path, device="cpu")
    expected = ecgfm.predict(reference_model, ecgfm.read_ecgs(files["wfdb"]), embedder=encoder,
                             probe=Probe.load(probe_dir))[0]
    probabilities_close(record["probabilities"], expected.probabilities)  # ECG-FM's own, unchanged
    assert record["probe_probabilities"] == pytest.approx(expected.probe_probabilities, abs=1e-6)
    assert record["provenance"]["probe"]["labels"] == ["lead_I_inverted"]
    assert record["provenance"]["probe"]["weights_sha256"] == Probe.load(probe_dir).card["weights"]["sha256"]


def test_a_probe_that_does_not_fit_the_encoder_is_not_applied_and_says_why(tmp_path, checkpoint, files):
    probe_dir = _fitted_probe(tmp_path, write_checkpoint(tmp_path / "encoder.pt", "wav2vec2_cmsc", seed=2))
    other_encoder = write_checkpoint(tmp_path / "other.pt", "wav2vec2_cmsc", seed=9)
    with running_app(tmp_path / "app", ECGFM_CHECKPOINT=str(checkpoint), ECGFM_PROBE=str(probe_dir),
                     ECGFM_PRETRAINED_CHECKPOINT=str(other_encoder)) as (url, _):
        health = wait_for_model(url)
        assert health["model_loaded"] and "not applied" in health["probe"] and "sha256" in health["probe"]
        (record,) = Client(url + "/", verbose=False).predict([handle_file(str(p)) for p in files["wfdb"]],
                                                             api_name="/predict")["records"]
    assert set(record["probabilities"]) == set(LABEL_NAMES) and "probe_probabilities" not in record


# --- without weights -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["missing-file", "hub-offline"])
def weightless_app(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("noweights")
    env = {"ECGFM_CHECKPOINT": str(tmp / "nowhere" / "mimic_iv_ecg_finetuned.pt")} \
        if request.param == "missing-file" else {}
    with running_app(tmp, **env) as (url, _):
        yield request.param, url


def test_without_weights_reading_and_plotting_work_and_predict_explains(weightless_app, files):
    kind, url = weightless_app
    health = wait_for_model(url)
    assert health["status"] == "ok" and health["model_loaded"] is False
    assert health["model_status"] == "unavailable" and "mimic_iv_ecg_finetuned.pt" in health["reason"]
    info = get_json(f"{url}/info")
    assert len(info["labels"]) == 17 and info["model"]["provenance"] is None

    client = Client(url + "/", verbose=False)
    read = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/read")
    assert read["records"][0]["leads"] == LEADS

    with pytest.raises(Exception) as failure:
        client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/predict")
    message = str(failure.value)
    assert "mimic_iv_ecg_finetuned.pt" in message, message
    # says how to provide the weights: a path through ECGFM_CHECKPOINT, from the Hub
    assert "ECGFM_CHECKPOINT" in message and "huggingface.co" in message, message
    if kind != "hub-offline":
        assert "does not exist" in message, message
    assert "probabilities" not in message

    # the ECG is still drawn
    (image,) = client.predict([handle_file(str(p)) for p in files["wfdb"]], api_name="/plot")
    assert image["caption"] == "rec12s.hea"
    assert Path(image["image"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_example_label_is_given_only_for_the_example_itself(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    app_module = importlib.import_module("app")
    entry = app_module._catalog()[0]
    copy = tmp_path / "copy" / entry["files"][0]
    copy.parent.mkdir()
    copy.write_bytes((REPO / "examples" / entry["files"][0]).read_bytes())
    impostor = tmp_path / "impostor" / entry["files"][0]  # a user's own file that happens to share the name
    impostor.parent.mkdir()
    impostor.write_bytes(copy.read_bytes() + b"# another record\n")
    assert app_module._is_example_copy(copy) and not app_module._is_example_copy(impostor)
    assert app_module._dataset_label(entry["files"][0]) == entry["dataset_label"]


def test_a_slow_read_keeps_its_files_until_it_is_done(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    app_module = importlib.import_module("app")
    csv_file = write_csv(Path(app_module._upload_dir()) / "upload-slow" / "slow.csv")
    real_read = app_module.ecgfm.read_ecgs
    seen = {}

    def slow_read(paths, **options):
        time.sleep(0.8)  # several times the grace below: the grace timer fires while this reads
        seen["there"] = all(Path(p).exists() for p in paths)
        return real_read(paths, **options)

    monkeypatch.setattr(app_module.ecgfm, "read_ecgs", slow_read)
    ((record, prepared),) = app_module._read([str(csv_file)], 250, 0, None, keep_s=0.2)
    assert seen["there"] and prepared is not None and record.fs == 250
    deadline = time.monotonic() + 5
    while csv_file.exists() and time.monotonic() < deadline:  # and deleted after it, within the grace
        time.sleep(0.1)
    assert not csv_file.exists()


def test_empty_folders_go_but_never_a_results_folder_still_being_written(tmp_path, monkeypatch):
    import importlib

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    app_module = importlib.import_module("app")
    monkeypatch.setattr(app_module, "ORPHAN_AGE_S", 0.0)
    root = app_module._upload_dir()
    emptied = root / ("ab" * 20)  # an upload's hash folder whose file was deleted
    emptied.mkdir(parents=True)
    kept = root / ("cd" * 20)
    kept.mkdir()
    (kept / "still-used.csv").write_text("1\n")
    time.sleep(0.05)
    with app_module._results_folder() as folder:
        app_module._delete_orphans(root)  # while the request is still drawing its results
        assert folder.is_dir() and kept.is_dir() and not emptied.exists()
        (folder / "report.pdf").write_bytes(b"%PDF-")
    (folder / "report.pdf").unlink()  # Gradio's delete_cache removes files, not folders
    app_module._UPLOADS_IN_FLIGHT[0] += 1  # an upload being stored: no folder may go now
    try:
        app_module._delete_orphans(root)
        assert folder.is_dir()
    finally:
        app_module._UPLOADS_IN_FLIGHT[0] -= 1
    app_module._delete_orphans(root)
    assert not folder.exists() and kept.is_dir()
