"""predict: segments → one batched forward → sigmoid → ECG-FM's per-label aggregation."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import ecgfm
from ecgfm.errors import ECGFMError
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.labels import LABELS
from ecgfm.model import pool
from ecgfm.predict import aggregate, predict
from ecgfm.preprocess import prepare
from tests.fairseq_layout import write_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    classifier = ecgfm.load_model(write_checkpoint(folder / "classifier.pt", seed=1), device="cpu")
    encoder = ecgfm.load_model(write_checkpoint(folder / "encoder.pt", "wav2vec2_cmsc", seed=2), device="cpu")
    return classifier, encoder


def synthetic(name="rec.csv", seconds=10.0, fs=500.0, leads=STANDARD_LEADS, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    signal = np.stack([np.sin(2 * np.pi * (1 + i / 7) * t) * 0.5 + rng.normal(0, 0.05, t.size)
                       for i in range(len(leads))])
    return ECGRecord(name, signal, fs, list(leads), "test", "mV")


def reference_probabilities(model, record):
    """The quickstart's own loop, spelt out: prepare, forward, sigmoid, per-label max or mean."""
    prepared = prepare(record)
    mask = None if prepared.padding_mask is None else torch.from_numpy(prepared.padding_mask)
    with torch.no_grad():
        probs = torch.sigmoid(model(torch.from_numpy(prepared.segments), mask).logits).numpy()
    return {label.name: float(probs[:, i].max() if label.aggregation == "max" else probs[:, i].mean())
            for i, label in enumerate(LABELS)}, probs


def test_aggregation_follows_each_labels_rule():
    per_segment = np.array([[0.1] * 17, [0.5] * 17, [0.3] * 17])
    result = aggregate(per_segment)
    assert result["Poor data quality"] == pytest.approx(0.5)      # max
    assert result["Sinus rhythm"] == pytest.approx(0.3)           # mean
    assert result["Electronic pacemaker"] == pytest.approx(0.5)   # max
    assert result["Atrial fibrillation"] == pytest.approx(0.3)    # mean
    assert list(result) == [label.name for label in LABELS]


def test_prediction_equals_the_quickstart_computation(models):
    classifier, _ = models
    record = synthetic()
    result = predict(classifier, record)
    expected, per_segment = reference_probabilities(classifier, record)
    assert len(result.segments) == 2
    for name, value in expected.items():
        assert result.probabilities[name] == pytest.approx(value, abs=1e-6)
    assert result.segments[1].probabilities["Tachycardia"] == pytest.approx(float(per_segment[1, 3]), abs=1e-6)
    assert [(s.start_s, s.end_s) for s in result.segments] == [(0.0, 5.0), (5.0, 10.0)]


def test_several_records_in_one_forward_equal_each_alone(models):
    classifier, _ = models
    records = [synthetic("a", 10.0, seed=1), synthetic("short", 3.0, seed=2),
               synthetic("b", 7.0, fs=360.0, seed=3)]
    together = predict(classifier, records)
    assert [r.name for r in together] == ["a", "short", "b"]
    for record, result in zip(records, together):
        alone = predict(classifier, record)
        for name in alone.probabilities:
            assert result.probabilities[name] == pytest.approx(alone.probabilities[name], abs=1e-5)
    assert together[1].adequacy.level == "limited" and together[0].adequacy.level == "complete"


def test_long_records_are_windowed_and_say_so(models):
    classifier, _ = models
    record = synthetic("holter", 30.0)
    default = predict(classifier, record)
    assert [(s.start_s, s.end_s) for s in default.segments] == [(0.0, 5.0), (5.0, 10.0)]
    assert any("Used 0.0–10.0 s of the 30.0 s" in w for w in default.warnings)
    later = predict(classifier, record, start_s=12.0, duration_s=10.0)
    assert [(s.start_s, s.end_s) for s in later.segments] == [(12.0, 17.0), (17.0, 22.0)]
    whole = predict(classifier, record, duration_s=None)
    assert len(whole.segments) == 6


def test_embedding_and_attention(models):
    classifier, encoder = models
    record = synthetic()
    result = predict(classifier, record, embedder=encoder, attention=True)
    prepared = prepare(record)
    with torch.no_grad():
        out = encoder(torch.from_numpy(prepared.segments))
    expected = pool(out.hidden).mean(dim=0).numpy()
    np.testing.assert_allclose(result.embedding, expected, atol=1e-6)
    assert result.attention.shape == (2, 156, 156)
    np.testing.assert_allclose(result.attention.sum(-1), 1.0, atol=1e-5)
    assert result.provenance["embedder"]["file"] == "encoder.pt"
    assert result.provenance["embedder"]["precision"] == result.provenance["precision"] == "fp32"


def test_result_is_json_serialisable_with_provenance(models):
    classifier, encoder = models
    data = json.loads(json.dumps(predict(classifier, synthetic(), embedder=encoder).to_dict()))
    assert set(data) >= {"file", "probabilities", "segments", "warnings", "provenance", "embedding"}
    assert len(data["probabilities"]) == 17 and len(data["embedding"]) == 64
    assert data["provenance"]["file"] == "classifier.pt" and len(data["provenance"]["sha256"]) == 64
    assert data["provenance"]["device"] == "cpu" and data["provenance"]["ecgfm_version"] == ecgfm.__version__


def test_models_used_the_wrong_way_round_are_refused(models):
    classifier, encoder = models
    with pytest.raises(ECGFMError, match="finetuned classifier"):
        predict(encoder, synthetic())
    with pytest.raises(ECGFMError, match="pretrained encoder"):
        predict(classifier, synthetic(), embedder=classifier)


def _call_concurrently(batcher, records):
    import threading

    results, errors = {}, {}

    def call(record):
        try:
            results[record.name] = batcher([record])[0]
        except ECGFMError as error:
            errors[record.name] = str(error)

    threads = [threading.Thread(target=call, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


def test_concurrent_callers_share_forward_passes_and_keep_their_own_results(models):
    from ecgfm.predict import BatchingPredictor

    classifier, _ = models
    batch_sizes = []
    hook = classifier.register_forward_hook(lambda m, args, out: batch_sizes.append(args[0].shape[0]))
    records = [synthetic(f"r{i}", 10.0, seed=10 + i) for i in range(6)]
    try:
        results, errors = _call_concurrently(BatchingPredictor(classifier, max_records=8, wait_s=0.05), records)
    finally:
        hook.remove()
    assert not errors and len(batch_sizes) < len(records)  # callers of the same moment ran together
    assert max(batch_sizes) > 2
    for record in records:
        alone = predict(classifier, record)
        assert results[record.name].name == record.name
        assert results[record.name].probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_one_bad_request_does_not_fail_the_others_in_its_batch(models):
    from ecgfm.predict import BatchingPredictor

    classifier, _ = models
    class Broken(ECGRecord):
        def window(self, start_s=0.0, duration_s=None):
            raise ECGFMError(f"{self.name}: broken on purpose.")

    good = synthetic("good", 10.0)
    broken = Broken(**{f.name: getattr(synthetic("broken", 10.0), f.name) for f in dataclasses.fields(ECGRecord)})
    records = [good, broken, synthetic("also good", 6.0)]
    results, errors = _call_concurrently(BatchingPredictor(classifier, wait_s=0.05), records)
    assert errors == {"broken": "broken: broken on purpose."}
    assert set(results) == {"good", "also good"}
    assert results["good"].probabilities == pytest.approx(predict(classifier, records[0]).probabilities, abs=1e-5)


def test_unusable_records_are_answered_without_probabilities(models):
    classifier, encoder = models
    records = [synthetic("tiny", 0.5), synthetic("good", 10.0), synthetic("ends early", 6.0)]
    flat = synthetic("flat", 10.0)
    flat.signal[:] = 0.25
    results = predict(classifier, [*records, flat], embedder=encoder, start_s=7.0)
    by_name = {r.name: r for r in results}
    assert by_name["good"].probabilities is not None and by_name["good"].adequacy.level == "limited"  # 3 s, padded
    for name in ("tiny", "ends early", "flat"):
        assert by_name[name].probabilities is None and by_name[name].segments == []
        assert by_name[name].adequacy.level == "unusable" and by_name[name].embedding is None
    assert "after the end" in by_name["ends early"].adequacy.reasons[0]
    assert by_name["good"].probabilities == pytest.approx(predict(classifier, records[1], start_s=7.0).probabilities, abs=1e-6)
    as_dict = by_name["flat"].to_dict()
    assert as_dict["probabilities"] is None and as_dict["input_adequacy"]["level"] == "unusable"
    json.dumps(as_dict)
