"""Linear probes on ECG-FM embeddings: they learn what the records show, and nothing from noise.

The embeddings come from a tiny random encoder (tests/fairseq_layout.py) run by `ecgfm.predict` on
synthetic ECGs whose heart rate and lead I polarity the tests choose: a probe must find "rate above
90 bpm" and "lead I inverted" in them, and must not find the same labels shuffled.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import ecgfm
from ecgfm.errors import ECGFMError
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.probe import (CARD_FILE, FORMAT, WEIGHTS_FILE, EmbeddingTable, Probe, _fit_logistic, _ranking_metrics,
                         evaluate, fit_from_files, fit_probe, format_report, holdout_split, predict_from_file)
from tests.fairseq_layout import write_checkpoint

PATIENTS, RECORDS_PER_PATIENT = 80, 2
N = PATIENTS * RECORDS_PER_PATIENT
FAST_BPM = 90.0


def synthetic_ecg(name: str, rate_bpm: float, lead_i_inverted: bool, rng: np.random.Generator,
                  seconds: float = 5.0, fs: float = 500.0) -> ECGRecord:
    """Beats of P, QRS and T waves at `rate_bpm`, each lead its own gain, lead I upside down if asked."""
    t = np.arange(int(seconds * fs)) / fs
    rr = 60.0 / rate_bpm
    beat = np.zeros_like(t)
    for at in np.arange(rng.uniform(0.0, rr), seconds + rr, rr):
        beat += (0.15 * np.exp(-((t - at + 0.16) / 0.02) ** 2) + np.exp(-((t - at) / 0.012) ** 2)
                 + 0.3 * np.exp(-((t - at - 0.25) / 0.05) ** 2))
    signal = np.stack([gain * beat + rng.normal(0.0, 0.03, t.size) for gain in rng.uniform(0.5, 1.5, 12)])
    if lead_i_inverted:
        signal[0] *= -1.0
    return ECGRecord(name, signal, fs, list(STANDARD_LEADS), "test", "mV")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """160 records of 80 patients: embeddings, rates, lead I polarity, patients, and the encoder."""
    folder = tmp_path_factory.mktemp("probe-ckpt")
    classifier = ecgfm.load_model(write_checkpoint(folder / "classifier.pt", seed=1), device="cpu")
    encoder = ecgfm.load_model(write_checkpoint(folder / "encoder.pt", "wav2vec2_cmsc", seed=2), device="cpu")
    rng = np.random.default_rng(7)
    patient_rate = rng.uniform(50.0, 130.0, PATIENTS)
    records, rates, inverted, patients = [], [], [], []
    for p in range(PATIENTS):
        for r in range(RECORDS_PER_PATIENT):
            rate = float(np.clip(patient_rate[p] + rng.normal(0.0, 5.0), 45.0, 140.0))
            flip = bool(rng.random() < 0.5)
            records.append(synthetic_ecg(f"p{p}-r{r}", rate, flip, rng))
            rates.append(rate)
            inverted.append(flip)
            patients.append(f"patient-{p}")
    results = ecgfm.predict(classifier, records, embedder=encoder)
    embeddings = np.stack([result.embedding for result in results])
    return {"ids": [r.name for r in records], "embeddings": embeddings, "rates": np.array(rates),
            "inverted": np.array(inverted), "patients": np.array(patients), "provenance": results[0].provenance,
            "encoder_sha256": encoder.provenance["sha256"]}


@pytest.fixture(scope="module")
def fitted(cohort):
    labels = {"fast": (cohort["rates"] > FAST_BPM).astype(int), "lead_I_inverted": cohort["inverted"].astype(int)}
    return fit_probe(cohort["embeddings"], labels, cohort["patients"], encoder=cohort["provenance"], bootstrap=500)


def test_probe_learns_rate_and_lead_inversion_from_the_embeddings(fitted, cohort):
    probe, report = fitted
    assert cohort["embeddings"].shape == (N, 64)
    fast, flipped = report["fast"], report["lead_I_inverted"]
    # the thresholds asserted: AUROC > 0.8 for the rate, > 0.95 for the polarity, intervals clear of 0.5
    assert fast["auroc"] > 0.8 and fast["auroc_ci95"][0] > 0.65, fast
    assert flipped["auroc"] > 0.95 and flipped["auroc_ci95"][0] > 0.85, flipped
    for m in (fast, flipped):
        assert m["auprc"] > m["prevalence_test"] + 0.2
        assert m["auroc_ci95"][0] <= m["auroc"] <= m["auroc_ci95"][1]
        assert m["auprc_ci95"][0] <= m["auprc"] <= m["auprc_ci95"][1]
        assert m["bootstrap_used"] == 500
    assert probe.card["n_train"] + probe.card["n_test"] == N and 0.15 * N <= probe.card["n_test"] <= 0.25 * N
    assert probe.card["training"]["converged"] == {"fast": True, "lead_I_inverted": True}
    text = format_report(probe.card)
    assert "fast" in text and "lead_I_inverted" in text and f"{fast['auroc']:.3f}" in text


def test_probe_does_not_learn_shuffled_labels(cohort):
    fast = (cohort["rates"] > FAST_BPM).astype(int)
    rng = np.random.default_rng(11)
    aurocs, covered = [], 0
    for _ in range(5):
        _, report = fit_probe(cohort["embeddings"], {"shuffled": rng.permutation(fast)}, cohort["patients"],
                              bootstrap=300)
        m = report["shuffled"]
        aurocs.append(m["auroc"])
        covered += m["auroc_ci95"][0] <= 0.5 <= m["auroc_ci95"][1]
    assert all(abs(a - 0.5) < 0.2 for a in aurocs), aurocs
    assert abs(np.mean(aurocs) - 0.5) < 0.1, aurocs
    assert covered >= 4, aurocs


def test_save_and_load_give_identical_probabilities(fitted, cohort, tmp_path):
    probe, _ = fitted
    probe.save(tmp_path / "my-probe")
    assert sorted(p.name for p in (tmp_path / "my-probe").iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    loaded = Probe.load(tmp_path / "my-probe")
    before, after = probe.predict_proba(cohort["embeddings"]), loaded.predict_proba(cohort["embeddings"])
    assert list(after) == ["fast", "lead_I_inverted"]
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])
    one = loaded.predict_proba(cohort["embeddings"][3], encoder=cohort["provenance"])
    expected = {name: float(values[3]) for name, values in before.items()}
    assert one == pytest.approx(expected, rel=1e-12)   # one row alone takes another BLAS path: last bits only

    card = json.loads((tmp_path / "my-probe" / CARD_FILE).read_text())
    assert card["format"] == FORMAT and card["labels"] == ["fast", "lead_I_inverted"]
    assert card["encoder"]["sha256"] == cohort["encoder_sha256"] and card["encoder"]["file"] == "encoder.pt"
    assert card["ecgfm_version"] == ecgfm.__version__ and card["embedding_dim"] == 64
    assert card["split"]["by"] == "patient" and card["split"]["seed"] == 0 and card["split"]["test_size"] == 0.2
    assert card["n_train"] == card["split"]["n_train"] and card["n_test"] == card["split"]["n_test"]
    assert set(card["metrics"]["fast"]) >= {"auroc", "auroc_ci95", "auprc", "auprc_ci95", "n_test", "positives_test"}
    assert card["counts"]["fast"]["test"]["positives"] == card["metrics"]["fast"]["positives_test"]
    assert card["bootstrap"]["resamples"] == 500 and card["bootstrap"]["unit"] == "patient"
    assert len(card["weights"]["sha256"]) == 64 and card["created"].endswith("+00:00")

    assert Probe.load(tmp_path / "my-probe" / CARD_FILE).labels == loaded.labels   # the card's path works too
    weights = tmp_path / "my-probe" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ECGFMError, match="altered"):
        Probe.load(tmp_path / "my-probe")
    with pytest.raises(ECGFMError, match="not a saved probe"):
        Probe.load(tmp_path)


def test_embeddings_of_another_encoder_are_refused(fitted, cohort):
    probe, _ = fitted
    x = cohort["embeddings"]
    assert probe.encoder_sha256 == cohort["encoder_sha256"]
    probe.predict_proba(x, encoder=cohort["encoder_sha256"])          # the same encoder, named three ways
    probe.predict_proba(x, encoder=cohort["provenance"])
    probe.predict_proba(x, encoder={"sha256": cohort["encoder_sha256"], "file": "encoder.pt"})
    probe.predict_proba(x)                                            # not known: nothing to check
    other = "0" * 64
    for encoder in (other, {"sha256": other}, {"sha256": "f" * 64, "embedder": {"sha256": other}}):
        with pytest.raises(ECGFMError, match="another|fitted on embeddings of the encoder"):
            probe.predict_proba(x, encoder=encoder)
    with pytest.raises(ECGFMError, match="64-value embeddings"):
        probe.predict_proba(np.zeros((2, 768)))
    table = EmbeddingTable(ids=cohort["ids"], embeddings=x, provenance={"ecgfm": {"embedder": {"sha256": other}}},
                           without_embedding=[])
    with pytest.raises(ECGFMError, match="sha256"):
        predict_from_file(probe, table)


def test_grouped_split_never_puts_a_patient_on_both_sides():
    rng = np.random.default_rng(3)
    for seed in range(20):
        n = int(rng.integers(60, 400))
        patients = rng.integers(0, n // int(rng.integers(1, 6)), n).astype(str)
        labels = np.stack([rng.random(n) < 0.3, rng.random(n) < 0.08], axis=1).astype(float)
        labels[rng.random(n) < 0.1, 0] = np.nan
        test = holdout_split(labels, patients, test_size=0.2, seed=seed)
        assert not set(patients[test]) & set(patients[~test])
        assert 0.1 < test.mean() < 0.3
        for column in labels.T:
            for side in (test, ~test):
                assert {0.0, 1.0} <= set(column[side][~np.isnan(column[side])])
        np.testing.assert_array_equal(test, holdout_split(labels, patients, test_size=0.2, seed=seed))


def test_split_by_patient_in_the_fitted_card(fitted, cohort):
    probe, _ = fitted
    split = probe.card["split"]
    assert split["patients"] == PATIENTS and split["patients_train"] + split["patients_test"] == PATIENTS
    test = holdout_split(np.stack([(cohort["rates"] > FAST_BPM), cohort["inverted"]], 1), cohort["patients"])
    assert test.sum() == probe.card["n_test"]


def test_bootstrap_weights_count_records_as_often_as_drawn():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    weights = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 1, 1, 1, 0], [1, 1, 0, 0, 1, 0]], dtype=float)
    auroc, auprc = _ranking_metrics(y, scores, weights)
    assert auroc[0] == pytest.approx(8 / 9)  # one positive (0.35) ranked below one negative (0.4)
    repeated = _ranking_metrics(np.array([0, 0, 1, 1, 0]), np.array([0.1, 0.1, 0.35, 0.8, 0.2]), np.ones((1, 5)))
    assert (auroc[1], auprc[1]) == pytest.approx((repeated[0][0], repeated[1][0]))
    assert np.isnan(auroc[2]) and np.isnan(auprc[2])  # that resample drew no positive


def test_regression_is_a_calibrated_linear_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 5))
    target = (rng.random(2000) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0)))).astype(float)
    w, b, converged = _fit_logistic(x, target, 100.0, 1000)
    assert converged
    assert w[0] == pytest.approx(2.0, abs=0.25) and b == pytest.approx(-1.0, abs=0.2)
    assert np.abs(w[1:]).max() < 0.2


def test_bootstrap_is_reproducible_and_skips_resamples_of_one_class():
    y = np.array([1, 1] + [0] * 18, dtype=float)
    scores = np.linspace(1, 0, 20)
    first = evaluate(y, scores, bootstrap=400, seed=5)
    assert first == evaluate(y, scores, bootstrap=400, seed=5)
    assert first["auroc"] == 1.0 and first["auroc_ci95"] == [1.0, 1.0]
    assert 0 < first["bootstrap_used"] < 400        # (18/20)^20 of the resamples have no positive
    assert evaluate(y, scores, bootstrap=0)["auroc_ci95"] is None
    groups = np.repeat(np.arange(10), 2)
    assert evaluate(y, scores, groups, bootstrap=400, seed=5)["bootstrap_used"] < first["bootstrap_used"]


def test_user_errors_are_one_sentence(cohort):
    x = cohort["embeddings"]
    fast = (cohort["rates"] > FAST_BPM).astype(int)
    cases = [
        ({"fast": np.where(fast == 1, 2, 0)}, None, "value 2.*must be 0 or 1"),
        ({"fast": np.array(["yes"] * N)}, None, "'yes'.*must be 0 or 1"),
        ({"rare": np.r_[np.ones(5), np.zeros(N - 5)]}, None, "only 5 positive records"),
        ({"fast": fast[:10]}, None, f"10 values for {N}"),
        ({}, None, "at least one column"),
        # one patient has every positive record: it cannot be on both sides
        ({"one": np.r_[np.ones(20), np.zeros(N - 20)]}, ["a"] * 20 + [f"p{i}" for i in range(N - 20)],
         "no positive record in the (training|held-out) split"),
    ]
    for labels, groups, message in cases:
        with pytest.raises(ECGFMError, match=message) as caught:
            fit_probe(x, labels, groups, bootstrap=0)
        assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def _table(cohort, without=()):
    keep = [i for i, name in enumerate(cohort["ids"]) if name not in without]
    return EmbeddingTable(ids=[cohort["ids"][i] for i in keep], embeddings=cohort["embeddings"][keep],
                          provenance={"ecgfm": {"encoder": {"sha256": cohort["encoder_sha256"], "file": "encoder.pt"}}},
                          without_embedding=list(without))


def _labels_csv(cohort, path, **extra):
    frame = pd.DataFrame({"record": cohort["ids"], "patient": cohort["patients"],
                          "fast": (cohort["rates"] > FAST_BPM).astype(int), **extra})
    frame.to_csv(path, index=False)
    return path


def test_fit_from_files_joins_on_ids_and_refuses_what_does_not_fit(cohort, tmp_path):
    labels = _labels_csv(cohort, tmp_path / "labels.csv")
    table = _table(cohort, without=("p0-r0",))
    probe, report = fit_from_files(table, labels, id_column="record", patient_column="patient",
                                   out=tmp_path / "probe", bootstrap=100)
    assert probe.labels == ["fast"] and report["fast"]["auroc"] > 0.8
    assert probe.card["inputs"]["left_out_without_embedding"] == 1 and probe.card["n_records"] == N - 1
    assert probe.card["encoder"]["sha256"] == cohort["encoder_sha256"]
    frame = predict_from_file(tmp_path / "probe", table, id_column="record")
    assert list(frame.columns) == ["record", "fast"] and len(frame) == N
    assert np.isnan(frame["fast"].iloc[-1]) and frame["record"].iloc[-1] == "p0-r0"
    np.testing.assert_allclose(frame["fast"].to_numpy()[:-1], probe.predict_proba(table.embeddings)["fast"],
                               rtol=1e-9, atol=0)  # a product of other shapes may round its last bits otherwise

    with pytest.raises(ECGFMError, match="no column 'id' for the record ids"):
        fit_from_files(table, labels)
    with pytest.raises(ECGFMError, match="no column 'subject'"):
        fit_from_files(table, labels, id_column="record", patient_column="subject")
    unknown = pd.read_csv(labels)
    unknown.loc[5, "record"] = "nobody"
    unknown.to_csv(tmp_path / "unknown.csv", index=False)
    with pytest.raises(ECGFMError, match=f"1 of the {N} ids in unknown.csv match no record.*'nobody'"):
        fit_from_files(table, tmp_path / "unknown.csv", id_column="record", patient_column="patient")
    with pytest.raises(ECGFMError, match="'patient' has the value 'patient-0' .*name the patient column"):
        fit_from_files(table, labels, id_column="record")
    blank = pd.read_csv(labels)
    blank["fast"] = blank["fast"].astype(object)
    blank.loc[:9, "fast"] = ""                         # not known: left out of that label
    blank.loc[10, "fast"] = "maybe"
    blank.to_csv(tmp_path / "blank.csv", index=False)
    with pytest.raises(ECGFMError, match="'maybe' \\(row 11\\)"):
        fit_from_files(table, tmp_path / "blank.csv", id_column="record", patient_column="patient")
    blank.loc[10, "fast"] = "1"
    blank.to_csv(tmp_path / "blank.csv", index=False)
    probe, _ = fit_from_files(table, tmp_path / "blank.csv", id_column="record", patient_column="patient",
                              bootstrap=0)
    counts = probe.card["counts"]["fast"]
    assert sum(side["positives"] + side["negatives"] for side in counts.values()) == N - 1 - 9


def test_parquet_written_as_the_batch_writes_it(cohort, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    ids = cohort["ids"] + ["unreadable.xml"]
    vectors = np.concatenate([cohort["embeddings"], np.zeros((1, 64), np.float32)]).astype(np.float32)
    values = pa.array(vectors.ravel(), pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(values, 64, mask=pa.array([False] * N + [True]))
    table = pa.table({"id": ids, "status": ["ok"] * (N - 50) + ["limited"] * 50 + ["refused"], "embedding": embedding})
    embedder = cohort["provenance"]["embedder"]           # ecgfm/batch.py's metadata: b"ecgfm" -> JSON
    meta = {b"ecgfm": json.dumps({"format": "ecgfm-batch/1", "classifier": {"sha256": cohort["provenance"]["sha256"]},
                                  "encoder": {k: embedder[k] for k in ("source", "repo", "revision", "file", "sha256")},
                                  "key": {"encoder_sha256": embedder["sha256"]}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "results.parquet")
    labels = _labels_csv(cohort, tmp_path / "labels.csv")
    probe, _ = fit_from_files(tmp_path / "results.parquet", labels, id_column="record", patient_column="patient",
                              out=tmp_path / "probe", bootstrap=100)
    assert probe.encoder_sha256 == cohort["encoder_sha256"] and probe.card["encoder"]["file"] == "encoder.pt"
    assert probe.card["inputs"]["status"] == {"ok": N - 50, "limited": 50}
    frame = predict_from_file(tmp_path / "probe", tmp_path / "results.parquet")
    assert frame["id"].tolist() == ids and np.isnan(frame["fast"].iloc[-1])
    np.testing.assert_allclose(frame["fast"].to_numpy()[:-1], probe.predict_proba(cohort["embeddings"])["fast"],
                               rtol=1e-6)
    pq.write_table(table.drop_columns(["embedding"]).replace_schema_metadata(meta), tmp_path / "no-embeddings.parquet")
    with pytest.raises(ECGFMError, match="no column 'embedding' \\(run `ecgfm batch` with --embeddings\\)"):
        fit_from_files(tmp_path / "no-embeddings.parquet", labels, id_column="record")
    (tmp_path / "not.parquet").write_text("id,embedding\n")
    with pytest.raises(ECGFMError, match="could not be read as a Parquet file"):
        predict_from_file(tmp_path / "probe", tmp_path / "not.parquet")


def test_dataset_workflow_from_the_command_line(tmp_path, capsys):
    """batch --embeddings -> Parquet -> probe fit -> probe predict, as the README shows it."""
    import wfdb

    from ecgfm.__main__ import main

    rng = np.random.default_rng(11)
    folder = tmp_path / "ecgs"
    folder.mkdir()
    rows = []
    for i in range(48):
        flip = i % 2 == 1
        record = synthetic_ecg(f"rec{i:02d}", rng.uniform(55, 110), flip, rng, seconds=5.0)
        wfdb.wrsamp(record.name, fs=500, units=["mV"] * 12, sig_name=list(STANDARD_LEADS),
                    p_signal=record.signal.T.astype(np.float64), fmt=["16"] * 12, write_dir=str(folder))
        rows.append({"id": f"rec{i:02d}.hea", "patient": f"p{i // 2}", "lead_I_inverted": int(flip)})
    classifier = write_checkpoint(tmp_path / "classifier.pt", seed=1)
    encoder = write_checkpoint(tmp_path / "encoder.pt", "wav2vec2_cmsc", seed=2)
    out = tmp_path / "results.parquet"
    assert main(["batch", str(folder), "--out", str(out), "--checkpoint", str(classifier), "--embeddings",
                 "--encoder", str(encoder), "--workers", "0", "--quiet"]) == 0, capsys.readouterr().err
    table = pd.read_parquet(out)
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    labels_by_id = {row["id"]: row["lead_I_inverted"] for row in rows}
    assert sorted(table["id"]) == sorted(labels_by_id)
    capsys.readouterr()
    assert main(["probe", "fit", "--embeddings", str(out), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "probe"), "--patient-column", "patient", "--bootstrap", "200",
                 "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["labels"] == ["lead_I_inverted"] and card["metrics"]["lead_I_inverted"]["auroc"] > 0.9
    assert card["encoder"]["sha256"] == ecgfm.load_model(encoder, device="cpu").provenance["sha256"]
    assert main(["probe", "predict", "--probe", str(tmp_path / "probe"), "--embeddings", str(out),
                 "--out", str(tmp_path / "probabilities.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "probabilities.csv")
    assert len(predicted) == 48 and list(predicted.columns) == ["id", "lead_I_inverted"]
    truth = predicted["id"].map(labels_by_id)
    assert predicted.loc[truth == 1, "lead_I_inverted"].mean() > predicted.loc[truth == 0, "lead_I_inverted"].mean() + 0.3


def test_predict_applies_a_probe_apart_from_ecgfms_findings(tmp_path, fitted, cohort):
    probe, _ = fitted
    folder = tmp_path
    classifier = ecgfm.load_model(write_checkpoint(folder / "classifier.pt", seed=1), device="cpu")
    encoder = ecgfm.load_model(write_checkpoint(folder / "encoder.pt", "wav2vec2_cmsc", seed=2), device="cpu")
    assert encoder.provenance["sha256"] == cohort["encoder_sha256"]
    rng = np.random.default_rng(3)
    records = [synthetic_ecg("upright", 70.0, False, rng), synthetic_ecg("flipped", 70.0, True, rng)]
    results = ecgfm.predict(classifier, records, embedder=encoder, probe=probe)
    for result in results:
        expected = probe.predict_proba(result.embedding)
        assert result.probe_probabilities == pytest.approx(expected)
        assert set(result.probe_probabilities) == {"fast", "lead_I_inverted"}
        assert set(result.probabilities) == set(ecgfm.LABEL_NAMES)  # ECG-FM's own, unchanged
        assert result.to_dict()["probe_probabilities"] == result.probe_probabilities
    assert results[1].probe_probabilities["lead_I_inverted"] > results[0].probe_probabilities["lead_I_inverted"]
    with pytest.raises(ECGFMError, match="embedder"):
        ecgfm.predict(classifier, records[0], probe=probe)
    other = ecgfm.load_model(write_checkpoint(folder / "other.pt", "wav2vec2_cmsc", seed=9), device="cpu")
    with pytest.raises(ECGFMError):
        ecgfm.predict(classifier, records[0], embedder=other, probe=probe)
