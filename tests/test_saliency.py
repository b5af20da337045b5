"""ECG-FM's saliency against its authors' procedure, and through predict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ecgfm
from ecgfm.checkpoint import load_checkpoint
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.predict import predict
from ecgfm.saliency import SALIENCY_NOTE, saliency_track, segment_saliency
from tests.fairseq_layout import write_checkpoint


def authors_saliency(saliency_stack: np.ndarray, sample_size: int) -> np.ndarray:
    """bowang-lab/ECG-FM's procedure, spelt out independently of ecgfm.saliency.

    scripts/saliency.py: `attn = saliency[:, -1]; attn.max(axis=2)` (last layer, max over keys);
    notebooks/saliency.ipynb, prep_saliency_values: `map_coordinates(attn_max, coords)` with coords
    the 'ij' meshgrid of `np.linspace(0, len(attn_max) - 1, sample_size - 1)`, then
    `x - x.min()` and `/ x.max()`.
    """
    from scipy.ndimage import map_coordinates

    attn = torch.from_numpy(saliency_stack)[:, -1]
    attn_max = attn.max(axis=2).values.numpy()
    out = []
    for row in attn_max:
        coords = np.meshgrid(np.linspace(0, row.shape[0] - 1, sample_size - 1), indexing="ij")
        resampled = map_coordinates(row, coords)
        resampled = resampled - resampled.min()
        out.append(resampled / resampled.max())
    return np.stack(out)


def test_saliency_equals_the_authors_procedure_on_fairseq_attention(conformance_dir):
    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    model = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    with torch.no_grad():
        attention = model(torch.from_numpy(ref["source"]), return_attention=True).attention[:, -1].numpy()
    ours = np.stack([segment_saliency(a, 2500) for a in attention])
    expected = authors_saliency(ref["saliency"], 2500)
    assert ours.shape == expected.shape == (4, 2499) and ours.dtype == np.float32
    # Our network's attention equals fairseq's to 1e-6; the 0-1 scaling magnifies that (6.8e-6 here).
    np.testing.assert_allclose(ours, expected, rtol=0, atol=3e-5)
    # On fairseq's own attention the procedure itself agrees to float32 rounding.
    same_input = np.stack([segment_saliency(a, 2500) for a in ref["saliency"][:, -1]])
    np.testing.assert_allclose(same_input, expected, rtol=0, atol=1e-6)
    # Not trivially equal: the segments' maps differ from each other.
    assert np.abs(expected[0] - expected[1]).max() > 0.1


def test_padded_segment_is_scaled_over_its_real_samples_and_empty_after(conformance_dir):
    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    model = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    with torch.no_grad():
        out = model(torch.from_numpy(ref["padded_source"]), torch.from_numpy(ref["padded_padding_mask"]),
                    return_attention=True)
    np.testing.assert_allclose(out.attention.numpy(), ref["padded_saliency"], atol=1e-6)
    for k, valid in enumerate(ref["padded_valid_lengths"]):
        ours = segment_saliency(out.attention[k, -1].numpy(), 2500, int(valid))
        real = int(valid) - 1
        if real >= 2499:
            np.testing.assert_allclose(ours, authors_saliency(ref["padded_saliency"][k:k + 1], 2500)[0], atol=1e-5)
            continue
        assert np.isnan(ours[real:]).all() and not np.isnan(ours[:real]).any()
        # The authors' resampling on the full frame grid, scaled over the real intervals only.
        from scipy.ndimage import map_coordinates

        row = ref["padded_saliency"][k, -1].max(axis=1)
        resampled = map_coordinates(row, [np.linspace(0, row.size - 1, 2499)])[:real]
        resampled = (resampled - resampled.min()) / (resampled.max() - resampled.min())
        np.testing.assert_allclose(ours[:real], resampled, atol=1e-5)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return ecgfm.load_model(write_checkpoint(tmp_path_factory.mktemp("w") / "c.pt", seed=5), device="cpu")


def synthetic(seconds: float, fs: float = 500.0) -> ECGRecord:
    rng = np.random.default_rng(4)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-((t % 0.8 - 0.3) ** 2) / (2 * 0.012 ** 2))
    signal = np.stack([beats * (0.5 + 0.1 * i) + rng.normal(0, 0.02, t.size) for i in range(12)])
    return ECGRecord("rec.csv", signal, fs, list(STANDARD_LEADS), "test", "mV")


def test_predict_returns_saliency_that_follows_the_attention(classifier):
    result = predict(classifier, synthetic(10.0), attention=True, saliency=True)
    assert result.saliency.shape == (2, 2499) and result.saliency.dtype == np.float32
    for values, attention in zip(result.saliency, result.attention):
        assert values.min() == pytest.approx(0.0, abs=1e-6) and values.max() == pytest.approx(1.0, abs=1e-6)
        per_frame = attention.max(axis=1)
        # Frame f sits at interval f * 2498 / 155; the cubic spline passes through the frames' values.
        peak = per_frame.argmax() * 2498 / 155
        assert abs(values.argmax() - peak) <= 2498 / 155
        # Read back at the frames, it is the frames' attention, shifted and scaled.
        at_frames = np.interp(np.arange(156) * 2498 / 155, np.arange(2499), values)
        assert np.corrcoef(at_frames, per_frame)[0, 1] > 0.999
    # Asked for alone, the attention is not kept.
    alone = predict(classifier, synthetic(10.0), saliency=True)
    assert alone.attention is None
    np.testing.assert_allclose(alone.saliency, result.saliency, atol=1e-6)
    assert predict(classifier, synthetic(10.0)).saliency is None


def test_short_record_saliency_stops_where_the_record_does_and_serialises(classifier):
    result = predict(classifier, synthetic(3.0), saliency=True)
    (values,) = result.saliency
    assert not np.isnan(values[:1499]).any() and np.isnan(values[1499:]).all()
    assert np.nanmin(values) == pytest.approx(0.0, abs=1e-6) and np.nanmax(values) == pytest.approx(1.0, abs=1e-6)
    data = json.loads(json.dumps(result.to_dict()))
    block = data["saliency"]
    assert block["note"] == SALIENCY_NOTE and block["rate_hz"] == 500 and block["offset_s"] == pytest.approx(0.001)
    (row,) = block["per_segment"]
    assert len(row) == 2499 and row[1499:] == [None] * 1000
    np.testing.assert_allclose(row[:1499], values[:1499], atol=6e-5)
    assert "saliency" not in predict(classifier, synthetic(3.0)).to_dict()


def test_track_puts_each_segment_on_the_recording_clock(classifier):
    record = synthetic(30.0)
    result = predict(classifier, record, saliency=True, start_s=12.0, duration_s=10.0)
    times, values = saliency_track(result)
    assert times.size == values.size == 2 * 2500 - 1
    assert times[0] == pytest.approx(12.001) and times[-1] == pytest.approx(21.997)
    np.testing.assert_array_equal(values[:2499], result.saliency[0])
    assert np.isnan(values[2499])  # between the last sample of one segment and the first of the next
    np.testing.assert_array_equal(values[2500:], result.saliency[1])
    # A gap between segments is left empty, overlaps keep the larger value.
    result.segments[1].start_s, result.segments[1].end_s = 20.0, 25.0
    times, values = saliency_track(result)
    assert times[-1] == pytest.approx(24.997) and np.isnan(values[2499:4000]).all()
    result.segments[1].start_s = 14.0
    times, values = saliency_track(result)
    overlap = slice(1000, 2499)
    np.testing.assert_array_equal(values[overlap], np.fmax(result.saliency[0][1000:], result.saliency[1][:1499]))


def test_fewer_values_per_second_are_block_means_placed_at_their_middle(classifier):
    result = predict(classifier, synthetic(3.0), saliency=True)
    (values,) = result.saliency
    block = result.to_dict(saliency_hz=100)["saliency"]
    assert block["rate_hz"] == 100 and block["offset_s"] == pytest.approx(0.005)
    (row,) = block["per_segment"]
    assert len(row) == 500  # 2499 values in runs of 5, the last run of 4
    np.testing.assert_allclose(row[:299], values[:1495].reshape(299, 5).mean(axis=1), atol=6e-5)
    assert row[299] == pytest.approx(float(values[1495:1499].mean()), abs=6e-5)  # partly over the record
    assert row[300:] == [None] * 200  # all padding
    assert "saliency" not in result.to_dict(saliency_hz=0)
    for rate in (300, 1000, -5):
        with pytest.raises(ecgfm.ECGFMError, match="divide 500 Hz"):
            result.to_dict(saliency_hz=rate)
