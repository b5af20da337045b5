"""`ecgfm batch`: a row per record, the numbers of `ecgfm.predict`, provenance, and resuming after a kill.

The records are written here: WFDB records (complete, in a subfolder, 30 s long, all flat), a file
that is no ECG, and CSV files described by a manifest (sampling rate, record id, carried columns)
that give limited input. The models are tiny random checkpoints in the release layout.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import wfdb

import ecgfm
import ecgfm.batch as batch
from ecgfm.__main__ import main
from ecgfm.batch import Readers, read_metadata, run_batch
from ecgfm.errors import ECGFMError
from ecgfm.io.record import STANDARD_LEADS
from tests.fairseq_layout import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
LABEL_NAMES = [label.name for label in ecgfm.LABELS]


def _ecg(rng, seconds: float, fs: float, leads: int, rate: float) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.stack([0.6 * np.sin(2 * np.pi * rate * t + i) + rng.normal(0, 0.03, t.size) for i in range(leads)])


def _wfdb(folder: Path, name: str, signal_: np.ndarray, fs: float = 500) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(signal_), sig_name=list(STANDARD_LEADS[:len(signal_)]),
                p_signal=signal_.T, fmt=["16"] * len(signal_), write_dir=str(folder))


def _csv(path: Path, signal_: np.ndarray, leads) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(leads)
        writer.writerows(np.round(signal_.T, 4).tolist())


def make_dataset(root: Path, more_complete: int = 0) -> dict:
    """A folder of WFDB records (two levels, a 30 s one, a flat one, a file that is no ECG), a manifest
    of CSV files (complete, two leads, 3 s, 200 Hz, one missing) and `more_complete` more complete
    WFDB records in wfdb/more; the tiny classifier and encoder."""
    rng = np.random.default_rng(11)
    records = root / "wfdb"
    for i in range(4):
        _wfdb(records / ("sub" if i % 2 else ""), f"r{i}", _ecg(rng, 10, 500, 12, 1 + i / 4))
    _wfdb(records, "long", _ecg(rng, 30, 500, 12, 1.3))
    _wfdb(records, "flat", np.zeros((12, 5000)))
    (records / "garbage.bin").write_bytes(b"\x00\x01\x02 this is not an ECG at all")
    tabular = root / "tabular"
    tabular.mkdir()
    _csv(tabular / "a.csv", _ecg(rng, 10, 500, 12, 1.1), STANDARD_LEADS)           # complete
    _csv(tabular / "b.csv", _ecg(rng, 10, 500, 2, 1.4), ["I", "II"])               # limited: no chest leads
    _csv(tabular / "c.csv", _ecg(rng, 3, 500, 12, 1.2), STANDARD_LEADS)            # limited: 3 s
    _csv(tabular / "d.csv", _ecg(rng, 10, 200, 12, 0.9), STANDARD_LEADS)           # limited: 200 Hz
    manifest = tabular / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_id", "path", "fs", "age", "label"])
        writer.writerow(["A", "a.csv", "500", "61", "sinus"])
        writer.writerow(["B", "b.csv", "500", "70", "two leads"])
        writer.writerow(["C", "c.csv", "500", "", "short"])
        writer.writerow(["D", "d.csv", "200", "45", "slow"])
        writer.writerow(["E", "missing.csv", "500", "50", "no file"])
    for i in range(more_complete):
        _wfdb(records / "more", f"m{i:02d}", _ecg(rng, 10, 500, 12, 0.8 + i / 20))
    checkpoint = write_checkpoint(root / "tiny.pt", seed=7)
    encoder = write_checkpoint(root / "tiny_encoder.pt", "wav2vec2_cmsc", seed=3)
    model = ecgfm.load_model(checkpoint, device="cpu")
    embedder = ecgfm.load_model(encoder, device="cpu")
    return {"root": root, "wfdb": records, "manifest": manifest, "checkpoint": checkpoint, "encoder": encoder,
            "model": model, "embedder": embedder, "inputs": [str(records), str(manifest)]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("batch"))


EXPECTED = {  # id -> (status, adequacy); None: could not be read
    "wfdb/r0.hea": ("ok", "complete"), "wfdb/sub/r1.hea": ("ok", "complete"), "wfdb/r2.hea": ("ok", "complete"),
    "wfdb/sub/r3.hea": ("ok", "complete"), "wfdb/long.hea": ("ok", "complete"),
    "wfdb/flat.hea": ("refused", "unusable"), "wfdb/garbage.bin": ("refused", None),
    "A": ("ok", "complete"), "B": ("limited", "limited"), "C": ("limited", "limited"), "D": ("limited", "limited"),
    "E": ("refused", None),
}


def _rows(path: Path) -> dict[str, dict]:
    rows = pq.read_table(path).to_pylist()
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), "a record appears twice"
    return {row["id"]: row for row in rows}


@pytest.fixture(scope="module")
def complete(data, tmp_path_factory):
    """One uninterrupted run, in this process, with embeddings."""
    out = tmp_path_factory.mktemp("complete") / "results.parquet"
    errors: list[str] = []
    summary = run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], workers=0, batch_size=4,
                        part_size=3, on_error=errors.append)
    return {"out": out, "summary": summary, "rows": _rows(out), "errors": errors}


def test_every_record_gets_one_row_with_its_status(complete):
    rows, summary = complete["rows"], complete["summary"]
    assert {key: (row["status"], row["adequacy"]) for key, row in rows.items()} == EXPECTED
    assert (summary.records, summary.read, summary.scored, summary.limited, summary.refused) == (12, 10, 9, 3, 3)
    assert (summary.unreadable, summary.unusable) == (2, 1)
    assert len(complete["errors"]) == 2 and any("missing.csv" in e for e in complete["errors"])
    for row in rows.values():
        scored = row["status"] != "refused"
        assert all((row[name] is not None) == scored for name in LABEL_NAMES)
        assert (row["embedding"] is not None) == scored
        assert (row["reason"] is None) == (row["status"] == "ok")
    assert "no signal" in rows["wfdb/flat.hea"]["reason"] and rows["wfdb/flat.hea"]["segments"] == 0
    assert rows["wfdb/garbage.bin"]["reason"].startswith("garbage.bin: ")
    assert rows["E"]["reason"].startswith("missing.csv: ") and rows["E"]["files"][0].endswith("missing.csv")
    assert "200 Hz" in rows["D"]["reason"] and "padded" in rows["C"]["reason"]
    long = rows["wfdb/long.hea"]
    assert (long["window_start_s"], long["window_end_s"], long["segments"]) == (0.0, 10.0, 2)
    assert any("of the 30.0 s recording" in w for w in long["warnings"])
    assert sorted(Path(f).name for f in rows["wfdb/sub/r1.hea"]["files"]) == ["r1.dat", "r1.hea"]
    assert not batch.parts_folder(complete["out"]).exists()


def test_numbers_equal_ecgfm_predict_record_by_record(data, complete):
    checked = 0
    for key, row in complete["rows"].items():
        if row["status"] == "refused" and row["adequacy"] is None:
            continue
        fs = 200 if key == "D" else 500 if key in "ABC" else None
        record = ecgfm.read_ecg(row["files"], fs=fs)
        expected = ecgfm.predict(data["model"], record, embedder=data["embedder"])
        assert row["adequacy"] == expected.adequacy.level and row["warnings"] == expected.warnings
        assert row["segments"] == len(expected.segments)
        if expected.probabilities is None:
            continue
        for name in LABEL_NAMES:
            assert row[name] == pytest.approx(expected.probabilities[name], abs=1e-6), (key, name)
        np.testing.assert_allclose(np.asarray(row["embedding"]), expected.embedding, atol=1e-6)
        checked += 1
    assert checked == 9


def test_manifest_columns_are_carried_with_their_types(complete):
    schema = pq.read_schema(complete["out"])
    assert str(schema.field("age").type) == "int64" and str(schema.field("label").type) == "string"
    rows = complete["rows"]
    assert [(rows[k]["age"], rows[k]["label"]) for k in "ABCDE"] == [
        (61, "sinus"), (70, "two leads"), (None, "short"), (45, "slow"), (50, "no file")]
    assert rows["wfdb/r0.hea"]["age"] is None and rows["wfdb/r0.hea"]["label"] is None
    assert str(schema.field("embedding").type) == "fixed_size_list<element: float>[64]"
    assert list(schema.names[:10]) == list(batch.BASE_COLUMNS) and schema.names[10:27] == LABEL_NAMES


def test_provenance_is_in_the_parquet_metadata(data, complete):
    metadata = read_metadata(complete["out"])
    assert metadata["classifier"]["sha256"] == data["model"].provenance["sha256"]
    assert metadata["encoder"]["sha256"] == data["embedder"].provenance["sha256"]
    assert len(metadata["classifier"]["sha256"]) == 64 and metadata["classifier"]["file"] == "tiny.pt"
    assert metadata["ecgfm_version"] == ecgfm.__version__ and metadata["precision"] == "fp32"
    assert metadata["window"] == {"start_s": 0.0, "duration_s": 10.0}
    assert metadata["labels"] == LABEL_NAMES and metadata["devices"] == ["cpu"]
    assert metadata["started"] <= metadata["completed"] and metadata["completed"].endswith("Z")


def _same_numbers(rows: dict, reference: dict) -> None:
    assert set(rows) == set(reference)
    for key, row in rows.items():
        want = reference[key]
        assert (row["status"], row["adequacy"], row["reason"]) == (want["status"], want["adequacy"], want["reason"])
        for name in LABEL_NAMES:
            assert (row[name] is None) == (want[name] is None)
            if row[name] is not None:
                assert row[name] == pytest.approx(want[name], abs=1e-6)
        if want.get("embedding") is not None:
            np.testing.assert_allclose(row["embedding"], want["embedding"], atol=1e-6)


def test_a_run_killed_with_sigkill_continues_where_it_stopped(data, complete, tmp_path):
    """The CLI in a subprocess, one record per forward and per part, killed once its first part is
    committed; the same command again gives every record exactly once, with the numbers of a run
    never killed."""
    out = tmp_path / "killed.parquet"
    command = [sys.executable, "-m", "ecgfm", "batch", *data["inputs"], "--out", str(out),
               "--checkpoint", str(data["checkpoint"]), "--embeddings", "--encoder", str(data["encoder"]),
               "--workers", "0", "--batch-size", "1", "--part-size", "1", "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts = batch.parts_folder(out)
    first = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.parquet")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read().decode()[-2000:]
    committed = sorted(parts.glob("part-*.parquet"))
    assert committed and not out.exists(), "the run was not stopped in the middle"
    done_before = {row["id"] for part in committed for row in pq.read_table(part).to_pylist()}
    assert len(done_before) < 12

    again = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stderr  # two records cannot be read, as for predict
    assert f"{len(done_before)} already done by an earlier run" in again.stdout and "12 records" in again.stdout
    rows = _rows(out)
    assert done_before <= set(rows) and not parts.exists()
    _same_numbers(rows, complete["rows"])


class _Killed(BaseException):
    """Stands for the process dying at that instant."""


def test_a_merge_killed_at_any_point_is_done_again(data, complete, tmp_path, monkeypatch):
    out = tmp_path / "merged.parquet"
    options = dict(embedder=data["embedder"], workers=0, batch_size=4, part_size=4)
    real_replace, real_rmtree = os.replace, batch.shutil.rmtree

    def killed_before_the_rename(src, dst, *args, **kwargs):
        if Path(dst) == out:
            raise _Killed()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(_Killed):
        run_batch(data["inputs"], out, data["model"], **options)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not out.exists() and batch._merging_path(out).exists() and len(list(batch.parts_folder(out).glob("*.parquet"))) == 3

    def killed_before_the_parts_are_removed(path, *args, **kwargs):
        raise _Killed()

    monkeypatch.setattr(batch.shutil, "rmtree", killed_before_the_parts_are_removed)
    with pytest.raises(_Killed):
        run_batch(data["inputs"], out, data["model"], **options)
    monkeypatch.setattr(batch.shutil, "rmtree", real_rmtree)
    assert out.exists() and batch.parts_folder(out).exists() and not batch._merging_path(out).exists()

    summary = run_batch(data["inputs"], out, data["model"], **options)
    assert summary.new == 0 and summary.skipped == 12 and summary.records == 12
    _same_numbers(_rows(out), complete["rows"])
    assert not batch.parts_folder(out).exists()


def test_more_inputs_later_are_added_to_the_output_once(data, complete, tmp_path):
    out = tmp_path / "grown.parquet"
    first = run_batch([data["manifest"]], out, data["model"], embedder=data["embedder"], workers=0)
    assert first.records == 5
    # A glob naming some of the same records, the folder, and a record given twice.
    pattern = str(data["wfdb"] / "r*.hea")
    summary = run_batch([data["manifest"], pattern, data["wfdb"], data["wfdb"] / "r0.hea"], out, data["model"],
                        embedder=data["embedder"], workers=0)
    assert summary.skipped == 5 and summary.duplicates == 3 and summary.records == 12
    rows = _rows(out)
    _same_numbers(rows, complete["rows"])


def test_an_output_inside_the_input_folder_is_not_read_as_input(data, tmp_path):
    import shutil

    folder = tmp_path / "tabular"
    shutil.copytree(data["manifest"].parent, folder)
    out = folder / "results.parquet"
    first = run_batch([folder], out, data["model"], workers=0, fs=500)
    # The folder's own files, the manifest among them (a CSV, read as one), and nothing of the output.
    ids = set(_rows(out))
    assert ids == {"a.csv", "b.csv", "c.csv", "d.csv", "manifest.csv"} and first.records == 5
    again = run_batch([folder], out, data["model"], workers=0, fs=500)
    assert again.new == 0 and again.skipped == 5 and set(_rows(out)) == ids


def test_a_record_the_model_fails_on_is_refused_and_the_job_goes_on(data, complete, tmp_path, monkeypatch):
    predict_module = sys.modules["ecgfm.predict"]
    real_predict = predict_module.predict

    def failing(model, records, **options):
        if any(record.name == "r2.hea" for record in records):
            raise RuntimeError("simulated failure")
        return real_predict(model, records, **options)

    monkeypatch.setattr(predict_module, "predict", failing)
    out = tmp_path / "failing.parquet"
    summary = run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], workers=0, batch_size=4)
    rows = _rows(out)
    failed = rows.pop("wfdb/r2.hea")
    assert failed["status"] == "refused" and failed["adequacy"] == "complete" and failed["Sinus rhythm"] is None
    assert "the model failed on this record (RuntimeError)" in failed["reason"]
    assert summary.refused == 4 and summary.unreadable == 2  # the model's failure is not a reading one
    _same_numbers(rows, {k: v for k, v in complete["rows"].items() if k != "wfdb/r2.hea"})


def test_inputs_with_nothing_to_read_are_one_sentence(data, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "nothing.parquet"
    with pytest.raises(ECGFMError, match="hold no file to read"):
        run_batch([tmp_path / "empty", str(tmp_path / "nomatch*.hea")], out, data["model"], workers=0)
    assert not out.exists() and not batch.parts_folder(out).exists()


def test_reader_processes_give_the_same_rows(data, complete, tmp_path):
    out = tmp_path / "spawned.parquet"
    summary = run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], workers=2, batch_size=3)
    assert summary.records == 12
    _same_numbers(_rows(out), complete["rows"])


def test_other_settings_on_the_same_output_are_refused(data, complete, tmp_path):
    out = tmp_path / "settings.parquet"
    run_batch([data["manifest"]], out, data["model"], workers=0)
    with pytest.raises(ECGFMError, match="other settings"):
        run_batch([data["manifest"]], out, data["model"], workers=0, start_s=1.0)
    with pytest.raises(ECGFMError, match="other settings"):
        run_batch([data["manifest"]], out, data["model"], embedder=data["embedder"], workers=0)
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(ECGFMError, match="cannot be read as Parquet"):
        run_batch([data["manifest"]], tmp_path / "other.parquet", data["model"], workers=0)


def test_readers_never_import_torch(data):
    """What a spawned reader imports: ecgfm.batch, the CLI module, then read_unit at work."""
    code = ("import sys, ecgfm.batch as b, ecgfm.__main__\n"
            "heavy = [m for m in ('torch', 'pyarrow', 'tqdm') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            f"entries = b.read_unit(([{str(data['wfdb'] / 'r0.hea')!r}], None, None, 0.0, 10.0))\n"
            "assert entries[0].signal.shape == (12, 5000), entries\n"
            "assert 'torch' not in sys.modules\n")  # (pandas, under wfdb, brings pyarrow)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


CRASHY = '''
import os

def task(name):
    if name == "bad":
        os._exit(3)
    return [name.upper()]
'''


def test_a_reader_that_dies_refuses_its_record_only(tmp_path, monkeypatch):
    (tmp_path / "crashy_reader.py").write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashy_reader

    readers = Readers(1, task=crashy_reader.task)
    try:
        tasks = ["one", "bad", "two"]
        futures = [readers.submit(task) for task in tasks]
        results = [readers.result(future, task) for future, task in zip(futures, tasks)]
        assert results == [["ONE"], None, ["TWO"]]
        assert readers.result(readers.submit("three"), "three") == ["THREE"]  # a fresh pool
    finally:
        readers.close()
    # Processes that die before reading anything (a script calling run_batch unguarded): the job stops.
    readers = Readers(1, task=crashy_reader.task)
    try:
        with pytest.raises(ECGFMError, match="before reading anything"):
            readers.result(readers.submit("bad"), "bad")
    finally:
        readers.close()


def test_cli_batch(data, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    code = main(["batch", str(data["manifest"]), "--out", str(out), "--checkpoint", str(data["checkpoint"]),
                 "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 2  # missing.csv
    assert "5 records in" in captured.out and "refused 1 (1 could not be read" in captured.out
    assert "error: missing.csv: " in captured.err and "not a medical device" in captured.out
    assert "embedding" not in pq.read_schema(out).names
    assert read_metadata(out)["encoder"] is None


def test_cli_batch_failures_are_one_sentence(data, tmp_path, capsys):
    code = main(["batch", str(data["manifest"]), "--out", str(tmp_path / "x.parquet"),
                 "--checkpoint", str(tmp_path / "nope.pt")])
    captured = capsys.readouterr()
    assert code == 2 and "nope.pt" in captured.err and "--checkpoint" in captured.err
    code = main(["batch", str(tmp_path / "absent"), "--out", str(tmp_path / "x.parquet"),
                 "--checkpoint", str(data["checkpoint"])])
    captured = capsys.readouterr()
    assert code == 2 and "absent: no such file or folder" in captured.err
    code = main(["batch", str(data["manifest"]), "--out", str(tmp_path / "x.parquet"),
                 "--checkpoint", str(data["checkpoint"]), "--leads", "I,XYZ"])
    captured = capsys.readouterr()
    assert code == 2 and "XYZ" in captured.err and not (tmp_path / "x.parquet").exists()
    with pytest.raises(SystemExit):
        main(["batch", str(data["manifest"])])  # --out is required
    assert "--out" in capsys.readouterr().err


# --- a probe of the user's own labels ------------------------------------------------------------

def _probe(folder: Path, encoder_sha256: str, seed: int, dim: int = 64) -> Path:
    """A saved probe with random weights: what is tested is how batch applies it, not what it learnt.
    One of its labels has the name of an ECG-FM finding, to show that the two never mix."""
    from ecgfm.probe import Probe

    rng = np.random.default_rng(seed)
    labels = ["mine", "Sinus rhythm"]
    probe = Probe(labels=labels, mean=rng.normal(0, 0.1, dim), scale=rng.uniform(0.5, 2, dim),
                  weight=rng.normal(0, 0.5, (len(labels), dim)), bias=rng.normal(0, 0.5, len(labels)),
                  card={"encoder": {"sha256": encoder_sha256}})
    probe.save(folder)
    return folder


@pytest.fixture(scope="module")
def probed(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("probed")
    folder = _probe(root / "my-probe", data["embedder"].provenance["sha256"], seed=5)
    out = root / "probed.parquet"
    summary = run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], probe=folder, workers=0,
                        batch_size=4)
    return {"folder": folder, "out": out, "summary": summary, "rows": _rows(out)}


def test_probe_columns_equal_ecgfm_predict_with_the_probe(data, complete, probed):
    from ecgfm.probe import Probe

    probe = Probe.load(probed["folder"])
    schema = pq.read_schema(probed["out"])
    columns = ["probe:mine", "probe:Sinus rhythm"]
    assert schema.names[schema.names.index("embedding") + 1:][:2] == columns
    assert schema.names[10:27] == LABEL_NAMES  # ECG-FM's own findings, unchanged, in their place
    rows, checked = probed["rows"], 0
    _same_numbers(rows, complete["rows"])
    for key, row in rows.items():
        if row["status"] == "refused":
            assert row["probe:mine"] is None and row["probe:Sinus rhythm"] is None
            continue
        fs = 200 if key == "D" else 500 if key in "ABC" else None
        expected = ecgfm.predict(data["model"], ecgfm.read_ecg(row["files"], fs=fs), embedder=data["embedder"],
                                 probe=probe)
        for label in probe.labels:
            assert row[f"probe:{label}"] == pytest.approx(expected.probe_probabilities[label], abs=1e-6), (key, label)
        assert row["Sinus rhythm"] == pytest.approx(expected.probabilities["Sinus rhythm"], abs=1e-6)
        assert row["probe:Sinus rhythm"] != pytest.approx(row["Sinus rhythm"], abs=1e-3)
        checked += 1
    assert checked == 9


def test_the_probe_is_named_in_the_metadata(data, probed):
    metadata = read_metadata(probed["out"])
    card = json.loads((probed["folder"] / "probe.json").read_text())
    assert metadata["probe"]["name"] == "my-probe" and metadata["probe"]["labels"] == ["mine", "Sinus rhythm"]
    assert metadata["probe"]["columns"] == ["probe:mine", "probe:Sinus rhythm"]
    assert metadata["probe"]["sha256"] == card["weights"]["sha256"] and len(card["weights"]["sha256"]) == 64
    assert metadata["probe"]["encoder_sha256"] == data["embedder"].provenance["sha256"]
    assert metadata["key"]["probe_sha256"] == card["weights"]["sha256"]


def test_a_probe_of_another_encoder_is_refused_before_any_work(data, tmp_path):
    folder = _probe(tmp_path / "other-probe", "ab" * 32, seed=6)
    out = tmp_path / "refused.parquet"
    with pytest.raises(ECGFMError, match="was fitted on embeddings of the encoder with sha256 abababababab") as refused:
        run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], probe=folder, workers=0)
    assert str(refused.value).count(". ") == 0  # one sentence
    assert not out.exists() and not batch.parts_folder(out).exists()
    with pytest.raises(ECGFMError, match="embeddings"):
        run_batch(data["inputs"], out, data["model"], probe=_probe(tmp_path / "p", "", seed=7), workers=0)
    with pytest.raises(ECGFMError, match="64"):
        wide = _probe(tmp_path / "wide", data["embedder"].provenance["sha256"], seed=8, dim=32)
        run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], probe=wide, workers=0)
    assert not out.exists() and not batch.parts_folder(out).exists()


def test_resuming_with_another_probe_is_refused(data, probed, tmp_path):
    out = tmp_path / "resume.parquet"
    first = run_batch([data["manifest"]], out, data["model"], embedder=data["embedder"], probe=probed["folder"],
                      workers=0)
    assert first.records == 5
    other = _probe(tmp_path / "other", data["embedder"].provenance["sha256"], seed=9)
    for probe in (other, None):
        with pytest.raises(ECGFMError, match="other settings"):
            run_batch([data["manifest"]], out, data["model"], embedder=data["embedder"], probe=probe, workers=0)
    again = run_batch(data["inputs"], out, data["model"], embedder=data["embedder"], probe=probed["folder"],
                      workers=0)
    assert again.skipped == 5 and again.records == 12
    _same_numbers(_rows(out), probed["rows"])
    # Scored in other batches than the reference: the last bits of a matrix product may differ.
    assert [_rows(out)[key]["probe:mine"] for key in "ABCD"] == pytest.approx(
        [probed["rows"][key]["probe:mine"] for key in "ABCD"], abs=1e-6)


def test_cli_batch_probe(data, probed, tmp_path, capsys):
    out = tmp_path / "cli-probe.parquet"
    code = main(["batch", str(data["manifest"]), "--out", str(out), "--checkpoint", str(data["checkpoint"]),
                 "--encoder", str(data["encoder"]), "--probe", str(probed["folder"]), "--workers", "0"])
    assert code == 2, capsys.readouterr().err  # missing.csv
    rows = _rows(out)
    assert {"embedding", "probe:mine", "probe:Sinus rhythm"} <= set(pq.read_schema(out).names)
    for key in "ABCD":
        assert rows[key]["probe:mine"] == pytest.approx(probed["rows"][key]["probe:mine"], abs=1e-6)
    code = main(["batch", str(data["manifest"]), "--out", str(tmp_path / "x.parquet"), "--checkpoint",
                 str(data["checkpoint"]), "--encoder", str(data["encoder"]), "--probe", str(tmp_path / "nowhere")])
    assert code == 2 and "not a saved probe" in capsys.readouterr().err
