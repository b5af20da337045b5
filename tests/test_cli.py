"""`python -m ecgfm` end to end: JSON, CSV and text output, and one-sentence failures."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

import ecgfm
from ecgfm.__main__ import main
from ecgfm.io.record import STANDARD_LEADS
from tests.fairseq_layout import write_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(5)
    t = np.arange(5000) / 500
    for name, rate in (("first", 1.1), ("second", 1.9)):
        signal = np.stack([0.6 * np.sin(2 * np.pi * rate * t + i) + rng.normal(0, 0.03, t.size) for i in range(12)])
        wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=signal.T,
                    fmt=["16"] * 12, write_dir=str(folder))
    (folder / "garbage.xyz").write_bytes(b"\x00\x01 definitely not an ECG")
    return {"dir": folder, "checkpoint": write_checkpoint(folder / "tiny.pt", seed=7),
            "first": [folder / "first.hea", folder / "first.dat"],
            "second": [folder / "second.hea", folder / "second.dat"], "garbage": folder / "garbage.xyz"}


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_json_equals_the_python_api(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], *files["second"],
                             "--checkpoint", files["checkpoint"], "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == ["first.hea", "second.hea"] or \
           [line["file"] for line in lines] == ["first", "second"]
    model = ecgfm.load_model(files["checkpoint"], device="cpu")
    expected = ecgfm.predict(model, ecgfm.read_ecg(files["second"]))
    for label, value in expected.probabilities.items():
        assert lines[1]["probabilities"][label] == pytest.approx(value, abs=1e-6)
    assert len(lines[1]["segments"]) == 2 and "warnings" in lines[1]
    assert lines[0]["provenance"]["file"] == "tiny.pt"


def test_predict_csv_has_a_record_row_then_segment_rows(files, capsys):
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"], "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [row["scope"] for row in rows] == ["record", "segment", "segment"]
    assert list(rows[0])[:5] == ["file", "scope", "start_s", "end_s", "Poor data quality"] and len(rows[0]) == 4 + 17
    assert (rows[2]["start_s"], rows[2]["end_s"]) == ("5.0", "10.0")
    segment_max = max(float(rows[1]["Poor data quality"]), float(rows[2]["Poor data quality"]))
    assert float(rows[0]["Poor data quality"]) == pytest.approx(segment_max)  # a "max" label


def test_predict_text_shows_findings_and_disclaimer(files, capsys):
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"])
    assert code == 0
    assert "Atrial fibrillation" in out and "prevalence" in out
    assert "not a medical device" in out


def test_precision_is_chosen_and_shown_in_the_provenance(files, capsys, monkeypatch):
    monkeypatch.setattr("ecgfm.model.cpu_has_native_bf16", lambda: True)  # emulated where it is not
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"], "--json",
                           "--precision", "bf16")
    assert code == 0 and json.loads(out)["provenance"]["precision"] == "bf16"
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--precision", "fp16", "--device", "cpu")
    assert code == 2 and out == "" and "fp16" in err and "CUDA" in err


def test_info_json(files, capsys):
    code, out, _ = run_cli(capsys, "info", *files["first"], "--json")
    info = json.loads(out)
    assert code == 0
    assert info["leads"] == list(STANDARD_LEADS) and info["fs"] == 500
    assert info["duration_s"] == pytest.approx(10.0) and info["units"]
    assert isinstance(info["warnings"], list)


def test_unreadable_file_is_one_sentence_and_nothing_else(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], files["garbage"],
                             "--checkpoint", files["checkpoint"], "--json")
    assert code != 0 and out == ""
    assert err.startswith("error: ") and "garbage.xyz" in err and len(err.strip().splitlines()) == 1


def test_missing_checkpoint(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["dir"] / "nope.pt")
    assert code != 0 and out == "" and "nope.pt" in err and "does not exist" in err


def test_fresh_process_without_weights_says_how_to_provide_them(files, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"),
           "ECGFM_CACHE": str(tmp_path / "c")}
    env.pop("ECGFM_CHECKPOINT", None)
    done = subprocess.run([sys.executable, "-m", "ecgfm", "predict", *map(str, files["first"])],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert "ECGFM_CHECKPOINT=PATH" in done.stderr and "--checkpoint PATH" in done.stderr


def test_an_unexpected_failure_is_still_one_sentence(files, capsys, monkeypatch):
    import ecgfm.io

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail that must not reach the user")

    monkeypatch.setattr(ecgfm.io, "read_ecgs", broken)
    code, out, err = run_cli(capsys, "info", *files["first"])
    assert code == 1 and out == ""
    assert err.strip() == "error: unexpected RuntimeError; please report it with the command you ran."
