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
    t30 = np.arange(15000) / 500
    long = np.stack([0.6 * np.sin(2 * np.pi * 1.2 * t30 + i) + rng.normal(0, 0.03, t30.size) for i in range(12)])
    wfdb.wrsamp("long", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=long.T,
                fmt=["16"] * 12, write_dir=str(folder))
    wfdb.wrsamp("flat", fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=np.zeros((5000, 12)),
                fmt=["16"] * 12, write_dir=str(folder))
    two = np.stack([0.8 * np.sin(2 * np.pi * 1.2 * t + 0.3 * i) + rng.normal(0, 0.03, t.size) for i in range(2)])
    np.savetxt(folder / "two_columns.csv", two.T, delimiter=",", fmt="%.4f")  # no header: no lead names
    return {"dir": folder, "checkpoint": write_checkpoint(folder / "tiny.pt", seed=7),
            "encoder": write_checkpoint(folder / "tiny_encoder.pt", "wav2vec2_cmsc", seed=3),
            "first": [folder / "first.hea", folder / "first.dat"],
            "second": [folder / "second.hea", folder / "second.dat"], "garbage": folder / "garbage.xyz",
            "long": [folder / "long.hea", folder / "long.dat"], "flat": [folder / "flat.hea", folder / "flat.dat"],
            "two_columns": folder / "two_columns.csv"}


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
    assert list(rows[0]) == ["file", "scope", "start_s", "end_s", "input_adequacy", "warnings", "model_sha256",
                             *(label.name for label in ecgfm.LABELS)]
    sha256 = json.loads(run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                                "--json")[1])["provenance"]["sha256"]
    for row in rows:
        assert (row["file"], row["input_adequacy"], row["warnings"], row["model_sha256"]) == \
               ("first.hea", "complete", "0", sha256)
    assert (rows[0]["start_s"], rows[0]["end_s"]) == ("0.0", "10.0")
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


def fresh_process(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env, **kwargs)


# --- the command itself --------------------------------------------------------------------------

def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"ecgfm {ecgfm.__version__}\n"
    done = fresh_process("-m", "ecgfm", "--version")
    assert done.returncode == 0 and done.stdout == f"ecgfm {ecgfm.__version__}\n"


def test_the_program_is_named_ecgfm(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert capsys.readouterr().out.startswith("usage: ecgfm predict ")


def test_info_never_imports_torch(files):
    script = ("import sys\nfrom ecgfm.__main__ import main\n"
              f"code = main(['info', {str(files['first'][0])!r}, {str(files['first'][1])!r}])\n"
              "print('torch loaded' if 'torch' in sys.modules else 'no torch', code)\n")
    done = fresh_process("-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "no torch 0"
    assert done.stdout.startswith("first.hea: WFDB, 12 leads")


# Never on `predict`'s path for these files: plotting, the app, the probe's and the examples' tools,
# the readers of other formats, and (for 500 Hz records, nothing to resample) scipy and ecg-transform.
NEVER_ON_PREDICT = {"matplotlib", "gradio", "sklearn", "neurokit2", "scipy", "ecg_transform", "pyedflib",
                    "ecgdatakit", "pydicom", "h5py"}


def test_predict_imports_only_what_each_format_needs(files, tmp_path):
    """The CLI's cold start and memory are measured targets: a CSV is read without pandas, wfdb or
    pyarrow, and predicting on it or on a WFDB record loads nothing of plotting, the app, or other
    formats' readers (the top-level packages in sys.modules, in a fresh process, after each step)."""
    signal = wfdb.rdrecord(str(files["dir"] / "first")).p_signal
    table = tmp_path / "twelve.csv"  # 12 named leads at 500 Hz
    np.savetxt(table, signal, delimiter=",", fmt="%.4f", header=",".join(STANDARD_LEADS), comments="")
    checkpoint, (hea, dat) = str(files["checkpoint"]), map(str, files["first"])
    script = ("import json, sys\n"
              "from ecgfm.__main__ import main\n"
              "from ecgfm.io import read_ecgs\n"
              "loaded = lambda: sorted({name.split('.')[0] for name in sys.modules})\n"
              f"read_ecgs([{str(table)!r}], fs=500)\n"
              "stages = {'read csv': loaded()}\n"
              f"codes = [main(['predict', {str(table)!r}, '--fs', '500', '--checkpoint', {checkpoint!r}, '--json'])]\n"
              "stages['predict csv'] = loaded()\n"
              f"codes.append(main(['predict', {hea!r}, {dat!r}, '--checkpoint', {checkpoint!r}, '--json']))\n"
              "stages['predict wfdb'] = loaded()\n"
              "print(json.dumps({'codes': codes, 'stages': stages}))\n")
    done = fresh_process("-c", script)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["codes"] == [0, 0]
    stages = {stage: set(modules) for stage, modules in report["stages"].items()}
    for stage, modules in stages.items():
        assert not modules & NEVER_ON_PREDICT, (stage, modules & NEVER_ON_PREDICT)
    assert not stages["read csv"] & {"torch", "pandas", "wfdb", "pyarrow", "tqdm"}
    assert "torch" in stages["predict csv"] and not stages["predict csv"] & {"pandas", "wfdb", "pyarrow"}
    # a plain WFDB record is decoded with numpy: wfdb (which brings pandas, and pandas pyarrow) is not loaded
    assert "torch" in stages["predict wfdb"] and not stages["predict wfdb"] & {"pandas", "wfdb", "pyarrow"}


def test_a_reader_that_goes_away_ends_the_command_quietly(files):
    """`ecgfm predict ... | head -1`: the pipe closes before the results are written."""
    process = subprocess.Popen([sys.executable, "-m", "ecgfm", "predict", *map(str, files["first"]),
                                *map(str, files["second"]), "--checkpoint", str(files["checkpoint"])],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # no reader left: every write the command makes meets a broken pipe
    _, err = process.communicate(timeout=120)
    assert process.returncode in (0, 141), err
    assert err == ""


def test_a_pipeline_through_head_keeps_its_first_line(files):
    command = (f"{sys.executable} -m ecgfm predict {' '.join(map(str, files['first'] + files['second']))} "
               f"--checkpoint {files['checkpoint']} --json | head -1")
    done = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["file"] == "first.hea"


def test_cuda_without_a_gpu_is_one_sentence(files, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--device", "cuda")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "CUDA" in err and "cpu" in err


def test_an_unknown_precision_is_one_sentence(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--precision", "fp8")
    assert code == 2 and out == ""
    assert err.strip() == "error: precision must be one of fp32, bf16, fp16, not 'fp8'."


# --- embeddings and weights ----------------------------------------------------------------------

def test_embedding_is_a_flag_that_never_takes_a_file(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--embedding", *files["second"],
                             "--checkpoint", files["checkpoint"], "--encoder", files["encoder"], "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == ["first.hea", "second.hea"]
    assert all(len(line["embedding"]) == 64 for line in lines)  # the tiny encoder's width
    assert lines[0]["provenance"]["embedder"]["file"] == "tiny_encoder.pt"
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--embedding", "--checkpoint", files["checkpoint"],
                           "--encoder", files["encoder"])
    assert code == 0 and "embedding: 64 values" in out


def test_a_missing_encoder_names_the_option_that_gives_it(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--embedding", "--encoder", files["dir"] / "no_encoder.pt")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no_encoder.pt" in err and "does not exist" in err
    assert "the pretrained encoder for --embedding was not found" in err and "--encoder PATH" in err
    assert "--checkpoint" not in err


def test_the_encoder_needs_the_embedding_flag(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--encoder", files["encoder"])
    assert code == 2 and out == "" and "--embedding" in err


def test_models_given_the_wrong_way_round(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["encoder"])
    assert code == 2 and out == "" and "pretrained encoder" in err and "--checkpoint finetuned" in err
    code, out, err = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"],
                             "--embedding", "--encoder", files["checkpoint"])
    assert code == 2 and out == "" and "finetuned classifier" in err and "--encoder pretrained" in err


def test_missing_hub_weights_name_the_options_for_each_model(files, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"),
           "ECGFM_CACHE": str(tmp_path / "c")}
    env.pop("ECGFM_PRETRAINED_CHECKPOINT", None)
    done = fresh_process("-m", "ecgfm", "predict", *files["first"], "--checkpoint", files["checkpoint"],
                         "--embedding", env=env)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "the pretrained encoder for --embedding was not found" in done.stderr
    assert "--encoder PATH" in done.stderr and "ECGFM_PRETRAINED_CHECKPOINT=PATH" in done.stderr
    assert "--checkpoint" not in done.stderr


# --- reading: leads, windows, files that cannot be read --------------------------------------------

def test_leads_name_the_channels_of_a_file_that_does_not(files, capsys):
    code, out, err = run_cli(capsys, "info", files["two_columns"], "--fs", "500", "--leads", "I, II", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["recorded_leads"] == ["I", "II"] and "III" in info["derived_leads"]
    code, out, err = run_cli(capsys, "predict", files["two_columns"], "--fs", "500", "--leads", "I,II",
                             "--checkpoint", files["checkpoint"], "--json")
    assert code == 0, err
    status = json.loads(out)["lead_status"]
    assert (status["I"], status["II"], status["III"]) == ("recorded", "recorded", "derived")


def test_without_leads_or_fs_the_advice_names_the_options(files, capsys):
    code, out, err = run_cli(capsys, "info", files["two_columns"])
    assert code == 2 and out == "" and "--fs HZ" in err and "(fs)" not in err
    code, out, err = run_cli(capsys, "info", files["two_columns"], "--fs", "500")
    assert code == 2 and out == "" and "--leads" in err and "(leads)" not in err


def test_bad_lead_lists_are_refused_by_the_parser(files, capsys):
    with pytest.raises(SystemExit) as done:
        main(["info", str(files["two_columns"]), "--leads", "I,,II"])
    assert done.value.code == 2 and "--leads" in capsys.readouterr().err


def test_the_window_is_read_not_the_whole_recording(files, capsys, monkeypatch):
    import ecgfm.io

    calls = []
    real = ecgfm.io.read_ecgs

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ecgfm.io, "read_ecgs", spy)
    code, out, err = run_cli(capsys, "predict", *files["long"], "--start", "12", "--duration", "10",
                             "--checkpoint", files["checkpoint"], "--json")
    assert code == 0, err
    assert calls[0]["start_s"] == 12 and calls[0]["duration_s"] == 10 and calls[0]["errors"] == "return"
    result = json.loads(out)
    assert [(s["start_s"], s["end_s"]) for s in result["segments"]] == [(12.0, 17.0), (17.0, 22.0)]
    assert any("Used 12.0–22.0 s of the 30.0 s recording." == w for w in result["warnings"])
    # the same probabilities as the Python API's window of the whole record
    model = ecgfm.load_model(files["checkpoint"], device="cpu")
    expected = ecgfm.predict(model, ecgfm.read_ecg(files["long"]), start_s=12, duration_s=10)
    for label, value in expected.probabilities.items():
        assert result["probabilities"][label] == pytest.approx(value, abs=1e-5)


def test_a_window_after_the_end_is_that_record_s_failure(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], "--start", "20",
                             "--checkpoint", files["checkpoint"], "--json")
    assert code == 2 and err.startswith("error: first.hea: ") and "20" in err
    assert json.loads(out)["error"] == err.strip().removeprefix("error: ")


def test_one_bad_file_does_not_sink_the_batch_json(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["first"], files["garbage"], *files["second"],
                             "--checkpoint", files["checkpoint"], "--json")
    assert code == 2
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == ["first.hea", "garbage.xyz", "second.hea"]
    assert set(lines[1]) == {"file", "error"} and lines[1]["error"].startswith("garbage.xyz: ")
    assert "probabilities" in lines[0] and "probabilities" in lines[2]
    assert err == f"error: {lines[1]['error']}\n"


def test_one_bad_file_does_not_sink_the_batch_text_and_csv(files, capsys):
    code, out, err = run_cli(capsys, "predict", files["garbage"], *files["first"], *files["second"],
                             "--checkpoint", files["checkpoint"])
    assert code == 2 and err.startswith("error: garbage.xyz: ") and len(err.strip().splitlines()) == 1
    assert out.startswith("first.hea ") and "\nsecond.hea " in out and "not a medical device" in out
    code, out, err = run_cli(capsys, "predict", *files["first"], files["garbage"], "--checkpoint",
                             files["checkpoint"], "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 2 and {row["file"] for row in rows} == {"first.hea"} and len(rows) == 3
    assert err.startswith("error: garbage.xyz: ")


def test_when_nothing_can_be_read_no_model_is_loaded(files, capsys):
    code, out, err = run_cli(capsys, "predict", files["garbage"], "--checkpoint", files["dir"] / "absent.pt")
    assert code == 2 and out == "" and err.startswith("error: garbage.xyz: ") and "absent.pt" not in err


def test_info_reads_what_it_can(files, capsys):
    code, out, err = run_cli(capsys, "info", files["garbage"], *files["first"], "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 2 and lines[0]["file"] == "garbage.xyz" and "error" in lines[0]
    assert lines[1]["file"] == "first.hea" and lines[1]["fs"] == 500
    assert err.startswith("error: garbage.xyz: ")


# --- what the text output says about the input ------------------------------------------------------

def test_text_output_states_the_input_adequacy(files, capsys):
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"])
    assert code == 0 and out.splitlines()[1] == "  input: complete 12-lead"
    code, out, _ = run_cli(capsys, "predict", files["two_columns"], "--fs", "500", "--leads", "I,II",
                           "--checkpoint", files["checkpoint"])
    line = out.splitlines()[1]
    assert code == 0 and line.startswith("  input: limited — 6 of 12 leads not recorded")
    assert "prevalence" in out  # a limited record still shows its findings


def test_an_unusable_record_is_not_analysed_and_shows_no_findings(files, capsys):
    code, out, err = run_cli(capsys, "predict", *files["flat"], *files["first"], "--checkpoint", files["checkpoint"])
    assert code == 0, err
    flat, first = out.split("\n\n")[:2]
    assert flat.splitlines()[0] == "flat.hea"
    assert flat.splitlines()[1].startswith("  not analysed: every lead is flat or missing")
    assert "prevalence" not in flat and "Atrial fibrillation" not in flat
    assert "prevalence" in first
    code, out, _ = run_cli(capsys, "predict", *files["flat"], "--checkpoint", files["checkpoint"], "--json")
    assert code == 0 and json.loads(out)["input_adequacy"]["level"] == "unusable"


def test_nothing_the_cli_prints_speaks_of_uploads(files, capsys, tmp_path):
    (tmp_path / "alone.hea").write_text("alone 12 500 5000\\n" + "".join(
        f"alone.dat 16 200/mV 16 0 0 0 0 {lead}\\n" for lead in STANDARD_LEADS))
    (tmp_path / "empty.csv").write_bytes(b"")
    cases = [
        ["info", files["garbage"]], ["info", tmp_path / "alone.hea"], ["info", tmp_path / "empty.csv"],
        ["info", files["two_columns"]], ["info", files["two_columns"], "--fs", "500"],
        ["info", files["first"][0], "--fs", "5"], ["info", tmp_path / "nowhere.hea"],
        ["predict", *files["first"], "--checkpoint", tmp_path / "none.pt"],
        ["predict", *files["first"], "--start", "99", "--checkpoint", files["checkpoint"]],
        ["predict", *files["first"], "--duration", "0", "--checkpoint", files["checkpoint"]],
        ["predict", *files["first"], "--checkpoint", files["checkpoint"], "--embedding", "--encoder", tmp_path / "x.pt"],
    ]
    for case in cases:
        code, out, err = run_cli(capsys, *case)
        assert code == 2 and err.startswith("error: "), (case, err)
        assert "upload" not in (out + err).lower(), (case, err)


def test_report_writes_a_pdf_and_png_per_record_named_after_it(files, capsys, tmp_path):
    out = tmp_path / "reports"
    code, _, err = run_cli(capsys, "predict", *files["first"], *files["second"], "--checkpoint",
                           files["checkpoint"], "--report", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["first-ecg.png", "first-report.pdf",
                                                     "second-ecg.png", "second-report.pdf"]
    pdf = (out / "first-report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"/Count 1" in pdf  # one page
    assert (out / "second-ecg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measurements_and_the_devices_own_reading_in_every_output(files, capsys):
    from ecgfm.measure import measure

    pair = [REPO / "examples" / "HR06000.hea", REPO / "examples" / "HR06000.mat"]
    philips = REPO / "examples" / "philips_pagewriter.xml"
    code, out, err = run_cli(capsys, "predict", *pair, philips, "--checkpoint", files["checkpoint"], "--json",
                             "--measure")
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    expected = measure(ecgfm.read_ecg(pair).window(0.0, 10.0)).to_dict()
    assert first["measurements"]["note"] == "automated, approximate"
    assert first["measurements"]["values"] == pytest.approx(expected["values"])
    assert first["measurements"]["absent"] == expected["absent"]
    device = ecgfm.read_ecg(philips).device_report
    assert second["device_report"] == json.loads(json.dumps(device.to_dict())) and device.measurements
    assert "device_report" not in first  # a PhysioNet record stores no cart reading
    code, out, _ = run_cli(capsys, "predict", *pair, "--checkpoint", files["checkpoint"], "--csv", "--measure")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert float(rows[0]["heart_rate_bpm"]) == pytest.approx(expected["values"]["heart_rate"])
    assert rows[1]["heart_rate_bpm"] == ""  # segments carry no measurements
    code, out, _ = run_cli(capsys, "predict", *pair, "--checkpoint", files["checkpoint"])
    wander = ecgfm.predict(ecgfm.load_model(files["checkpoint"], device="cpu"), ecgfm.read_ecg(pair)).quality
    assert wander.sentences() and all(f"signal quality: {line}" in out for line in wander.sentences())
    code, out, _ = run_cli(capsys, "predict", philips, "--checkpoint", files["checkpoint"], "--measure")
    assert "measurements (automated, approximate): Heart rate" in out
    assert f"stored in the file by the recording device ({device.source})" in out
    code, out, _ = run_cli(capsys, "predict", *pair, "--checkpoint", files["checkpoint"], "--json")
    assert "measurements" not in json.loads(out)  # asked for only


def test_saliency_is_given_when_asked_for(files, capsys):
    code, out, _ = run_cli(capsys, "predict", *files["first"], "--checkpoint", files["checkpoint"], "--json",
                           "--saliency")
    block = json.loads(out)["saliency"]
    assert code == 0 and block["rate_hz"] == 500 and [len(row) for row in block["per_segment"]] == [2499, 2499]
    assert min(block["per_segment"][0]) == 0.0 and max(block["per_segment"][0]) == 1.0


@pytest.mark.parametrize("argv, one_shot", [(["predict", "absent.hea"], True), (["info", "absent.hea"], False),
                                            (["batch", "absent.hea", "--out", "out.parquet"], False)])
def test_only_predict_runs_as_a_one_shot_process(argv, one_shot, monkeypatch, tmp_path, capsys):
    import ecgfm.runtime
    from ecgfm.__main__ import cli

    chosen = []
    monkeypatch.setattr(ecgfm.runtime, "return_freed_memory", lambda one_shot=False: chosen.append(one_shot))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ecgfm", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli()
    assert chosen == [one_shot]
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("error: ")  # the command ran
