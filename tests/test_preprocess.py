"""`prepare` against ECG-FM's quickstart pipeline, run independently with ecg-transform."""
from __future__ import annotations

import numpy as np
import pytest
from ecg_transform.inp import ECGInput, ECGInputSchema, ECGMetadata
from ecg_transform.sample import ECGSample
from ecg_transform.t.common import HandleConstantLeads, LinearResample, ReorderLeads
from ecg_transform.t.cut import SegmentNonoverlapping
from ecg_transform.t.scale import Standardize

from ecgfm.errors import ECGFMError
from ecgfm.io.record import STANDARD_LEADS, ECGRecord
from ecgfm.preprocess import SAMPLE_RATE, SEGMENT_SAMPLES, PreparedECG, prepare

LEADS = list(STANDARD_LEADS)


def quickstart(signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """ECG-FM's notebooks/infer_quickstart.ipynb, as it builds its schema and transforms."""
    schema = ECGInputSchema(sample_rate=500, expected_lead_order=LEADS, required_num_samples=2500)
    transforms = [
        ReorderLeads(expected_order=LEADS, missing_lead_strategy="raise"),
        LinearResample(desired_sample_rate=500),
        HandleConstantLeads(strategy="zero"),
        Standardize(),
        SegmentNonoverlapping(segment_length=2500),
    ]
    meta = ECGMetadata(sample_rate=fs, num_samples=signal.shape[1], lead_names=list(leads),
                       unit=None, input_start=0, input_end=signal.shape[1])
    sample = ECGSample(ECGInput(signal, meta), schema, transforms)
    return sample.out.astype(np.float32)  # torch.from_numpy(sample.out).float()


def synthetic(fs: float, seconds: float, n_leads: int = 12, seed: int = 0) -> np.ndarray:
    """ECG-ish float32 signals in mV: a QRS-like spike train on a wandering baseline, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(fs * seconds))) / fs
    beats = np.zeros_like(t)
    for beat in np.arange(0.3, seconds, 60 / 72):
        beats += np.exp(-0.5 * ((t - beat) / 0.012) ** 2)
    rows = [rng.normal(0.2, 1.0) * beats + 0.1 * np.sin(2 * np.pi * 0.3 * t + i)
            + 0.02 * rng.standard_normal(t.size) for i in range(n_leads)]
    return np.asarray(rows, dtype=np.float32)


def record(signal, fs, leads=LEADS, **kw) -> ECGRecord:
    return ECGRecord(name="test.ecg", signal=signal, fs=fs, leads=list(leads), format="test",
                     units="mV", **kw)


@pytest.mark.parametrize("fs, seconds", [(500, 10), (400, 7.3), (360, 10), (1000, 10), (500, 20),
                                         (400, 10.24), (250, 12.0)])
def test_matches_quickstart(fs, seconds):
    sig = synthetic(fs, seconds, seed=int(fs))
    prepared = prepare(record(sig, fs))
    expected = quickstart(sig, fs, LEADS)
    assert prepared.segments.dtype == np.float32
    assert prepared.segments.shape == expected.shape
    same_as_ecg_transform(prepared.segments, expected)
    assert prepared.padding_mask is None
    assert prepared.lead_status == {lead: "recorded" for lead in LEADS}


def test_shuffled_leads_match_quickstart():
    rng = np.random.default_rng(3)
    order = list(rng.permutation(LEADS))
    sig = synthetic(400, 10, seed=3)
    prepared = prepare(record(sig, 400, order))
    same_as_ecg_transform(prepared.segments, quickstart(sig, 400, order))
    # Each output row is the standardized version of the lead with that name.
    row = order.index("V3")
    own = quickstart(sig[[row]].repeat(12, axis=0), 400, LEADS)[:, 0]
    np.testing.assert_allclose(prepared.segments[:, LEADS.index("V3")], own, atol=1e-6)


def test_constant_lead_is_zero_as_quickstart():
    sig = synthetic(500, 10, seed=4)
    sig[LEADS.index("V2")] = 0.37
    prepared = prepare(record(sig, 500))
    same_as_ecg_transform(prepared.segments, quickstart(sig, 500, LEADS))
    assert not prepared.segments[:, LEADS.index("V2")].any()
    assert any("V2" in w and "flat" in w for w in prepared.warnings)
    assert prepared.lead_status["V2"] == "flat"
    assert prepared.adequacy.level == "limited"
    assert any("V2" in r and "flat" in r for r in prepared.adequacy.reasons)


@pytest.mark.parametrize("offset", [0.0, 1.7, -0.4])
def test_near_constant_lead_is_flat_and_zeroed(offset):
    """A disconnected cart can report an offset with an LSB of noise: flat, not a signal."""
    sig = synthetic(500, 10, seed=14)
    rng = np.random.default_rng(1)
    sig[LEADS.index("V5")] = offset + rng.integers(-1, 2, sig.shape[1]) * 0.005  # +-1 LSB of 5 uV
    prepared = prepare(record(sig, 500))
    assert prepared.lead_status["V5"] == "flat"
    assert not prepared.segments[:, LEADS.index("V5")].any()
    others = [i for i, lead in enumerate(LEADS) if lead != "V5"]
    same_as_ecg_transform(prepared.segments[:, others], quickstart(sig, 500, LEADS)[:, others])


def test_low_amplitude_lead_is_not_flat():
    sig = synthetic(500, 10, seed=15)
    sig[LEADS.index("aVL")] *= 0.05 / np.ptp(sig[LEADS.index("aVL")])  # 50 uV peak to peak: small, real
    prepared = prepare(record(sig, 500))
    assert prepared.lead_status["aVL"] == "recorded"
    assert prepared.adequacy.level == "complete" and prepared.adequacy.reasons == ()


def test_every_lead_constant_is_unusable():
    sig = np.tile(np.linspace(-0.5, 0.6, 12, dtype=np.float32)[:, None], (1, 5000))
    prepared = prepare(record(sig, 500))
    assert prepared.adequacy.level == "unusable" and len(prepared.segments) == 0
    assert "flat or missing" in prepared.adequacy.reasons[0]


def test_all_zero_recording_is_unusable():
    prepared = prepare(record(np.zeros((12, 5000), dtype=np.float32), 500))
    assert prepared.adequacy.level == "unusable" and prepared.spans_s == []


def test_complete_record_is_complete():
    prepared = prepare(record(synthetic(500, 10, seed=16), 500))
    assert prepared.adequacy.level == "complete" and prepared.adequacy.usable


def test_standardized_per_lead_over_whole_record():
    sig = synthetic(500, 10, seed=5)
    prepared = prepare(record(sig, 500))
    whole = np.concatenate(list(prepared.segments), axis=1)  # [12, 5000]
    np.testing.assert_allclose(whole.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(whole.std(axis=1), 1, atol=1e-5)


def test_short_record_is_padded_with_mask():
    sig = synthetic(500, 3, seed=6)
    prepared = prepare(record(sig, 500, start_s=2.0))
    assert prepared.segments.shape == (1, 12, SEGMENT_SAMPLES)
    mask = prepared.padding_mask
    assert mask.shape == (1, SEGMENT_SAMPLES) and mask.dtype == bool
    assert not mask[0, :1500].any() and mask[0, 1500:].all()
    real = prepared.segments[0, :, :1500]
    # Standardized over the real samples only, then padded with zeros.
    np.testing.assert_allclose(real.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=1), 1, atol=1e-5)
    assert not prepared.segments[0, :, 1500:].any()
    expected = (sig - sig.mean(axis=1, keepdims=True)) / (sig.std(axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(real, expected, atol=1e-5)
    assert prepared.spans_s == [(2.0, 5.0)]
    assert prepared.adequacy.level == "limited"
    assert any("padded" in r and "3.0 s" in r for r in prepared.adequacy.reasons)


def test_short_record_resampled_and_padded():
    sig = synthetic(400, 4.0, seed=7)
    prepared = prepare(record(sig, 400))
    n_real = int(sig.shape[1] * 500 / 400)
    assert prepared.padding_mask[0].sum() == SEGMENT_SAMPLES - n_real
    assert prepared.spans_s == [(0.0, 4.0)]


def test_too_short_record_is_unusable():
    prepared = prepare(record(synthetic(500, 0.5), 500))
    assert prepared.adequacy.level == "unusable" and "0.50 s" in prepared.adequacy.reasons[0]
    assert prepared.segments.shape == (0, 12, SEGMENT_SAMPLES)


def test_eight_lead_record_gets_limb_leads_derived():
    full = synthetic(500, 10, seed=8)
    i, ii = full[0], full[1]
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    sig8 = full[[LEADS.index(lead) for lead in eight]]
    prepared = prepare(record(sig8, 500, eight))
    einthoven = np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2]).astype(np.float32)
    full_derived = np.concatenate([einthoven, full[6:]])
    np.testing.assert_allclose(prepared.segments, quickstart(full_derived, 500, LEADS), atol=1e-6)
    for lead in ("III", "aVR", "aVL", "aVF"):
        assert prepared.lead_status[lead] == "derived"
    for lead in eight:
        assert prepared.lead_status[lead] == "recorded"
    assert any("derived from I and II" in w for w in prepared.warnings)


def test_missing_precordial_lead_zero_filled():
    sig = synthetic(500, 10, seed=9)
    leads = [lead for lead in LEADS if lead != "V4"]
    sig11 = np.delete(sig, LEADS.index("V4"), axis=0)
    prepared = prepare(record(sig11, 500, leads))
    assert prepared.lead_status["V4"] == "zero-filled"
    assert sum(s == "zero-filled" for s in prepared.lead_status.values()) == 1
    assert not prepared.segments[:, LEADS.index("V4")].any()
    assert prepared.adequacy.level == "limited"
    assert prepared.adequacy.reasons == ("1 of 12 leads not recorded and given to the model as zeros (lead V4)",)
    assert not any("V4" in w for w in prepared.warnings)  # said once, in the adequacy
    # The other leads are as the quickstart makes them.
    other = [LEADS.index(lead) for lead in leads]
    same_as_ecg_transform(prepared.segments[:, other], quickstart(sig, 500, LEADS)[:, other])


def test_limb_leads_without_i_cannot_be_derived():
    sig = synthetic(500, 10, n_leads=7, seed=10)
    leads = ["II", "V1", "V2", "V3", "V4", "V5", "V6"]
    prepared = prepare(record(sig, 500, leads))
    for lead in ("I", "III", "aVR", "aVL", "aVF"):
        assert prepared.lead_status[lead] == "zero-filled"
    assert any("I, III, aVR, aVL, aVF" in r for r in prepared.adequacy.reasons)


def test_reader_zero_and_derived_leads_reported():
    sig = synthetic(500, 10, seed=11)
    sig[LEADS.index("V5")] = 0
    prepared = prepare(record(sig, 500, zero_leads=["V5"], derived_leads=["III"],
                              warnings=["from the reader"]))
    assert prepared.lead_status["V5"] == "zero-filled"
    assert prepared.lead_status["III"] == "derived"
    assert prepared.warnings[0] == "from the reader"


def test_spans_and_tail_warning():
    sig = synthetic(500, 12.3, seed=12)
    prepared = prepare(record(sig, 500, start_s=30.0))
    assert prepared.segments.shape[0] == 2
    assert prepared.spans_s == [(30.0, 35.0), (35.0, 40.0)]
    tail = [w for w in prepared.warnings if "not analysed" in w]
    assert len(tail) == 1 and "2.3 s" in tail[0]


def test_small_tail_not_mentioned():
    prepared = prepare(record(synthetic(500, 10.3), 500))
    assert not any("not analysed" in w for w in prepared.warnings)
    assert prepared.warnings == []


def test_nan_is_unusable():
    sig = synthetic(500, 10)
    sig[LEADS.index("aVL"), 100:120] = np.nan
    prepared = prepare(record(sig, 500))
    assert prepared.adequacy.level == "unusable" and "aVL" in prepared.adequacy.reasons[0]


def test_nan_in_extra_leads_ignored():
    sig = synthetic(500, 10)
    extra = np.full(sig.shape[1], np.nan, dtype=np.float32)
    prepared = prepare(record(sig, 500, extra_leads={"V7": extra}))
    assert np.isfinite(prepared.segments).all()


def test_no_standard_lead_is_unusable():
    prepared = prepare(record(synthetic(500, 10, n_leads=1), 500, ["X"]))
    assert prepared.adequacy.level == "unusable"
    assert "none of the 12" in prepared.adequacy.reasons[0] and "X" in prepared.adequacy.reasons[0]


def test_low_sampling_rate_is_limited():
    prepared = prepare(record(synthetic(200, 10, seed=17), 200))
    assert prepared.adequacy.level == "limited" and "200 Hz" in prepared.adequacy.reasons[0]


def test_record_not_modified():
    sig = synthetic(400, 10)
    rec = record(sig.copy(), 400, ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR",
                                   "aVL", "aVF"])
    prepare(rec)
    np.testing.assert_array_equal(rec.signal, sig)
    assert rec.warnings == []


def test_real_code15_record(samples_dir):
    from scipy.io import loadmat

    path = samples_dir / "mat" / "code_15_1238362.mat"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    mat = loadmat(path)
    feats = mat["feats"]
    fs = int(mat["org_sample_rate"][0, 0])
    prepared = prepare(record(feats, fs))
    expected = quickstart(feats, fs, LEADS)
    assert isinstance(prepared, PreparedECG)
    same_as_ecg_transform(prepared.segments, expected)
    assert prepared.segments.shape[1:] == (12, SEGMENT_SAMPLES) and SAMPLE_RATE == 500


def same_as_ecg_transform(ours: np.ndarray, theirs: np.ndarray, name: str = "") -> None:
    """Equal to float32 rounding: the numpy steps do ecg-transform's operations in its order, so on
    this machine they agree bit for bit; another CPU's vector loops may round a sum differently in
    one of the two, so the tests allow a float32 step of a standardized value and no more."""
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-6, err_msg=name)


def ecg_transform_pipeline(signal: np.ndarray, fs: float, leads: list[str]) -> np.ndarray:
    """Everything `prepare` does after its own checks, as ecg-transform's transforms do it: lead
    order with zero fill, resampling, constant leads, standardization, then segments or padding."""
    from ecg_transform.t.cut import Pad

    meta = ECGMetadata(sample_rate=fs, num_samples=signal.shape[1], lead_names=list(leads), unit="mV",
                       input_start=0, input_end=signal.shape[1])
    inps = [ECGInput(signal, meta)]
    for step in (ReorderLeads(expected_order=LEADS, missing_lead_strategy="zero"),
                 LinearResample(desired_sample_rate=500), HandleConstantLeads(strategy="zero"), Standardize()):
        inps = step(inps)
    last = (Pad(pad_to_num_samples=2500, value=0.0, direction="right") if inps[0].signal.shape[1] < 2500
            else SegmentNonoverlapping(segment_length=2500))
    return np.stack([inp.signal for inp in last(inps)]).astype(np.float32)


@pytest.mark.parametrize("fs, seconds, leads, constant", [
    (500, 3.0, LEADS, None),                                  # padded, not resampled
    (400, 4.0, LEADS, "V1"),                                  # resampled and padded, a constant lead
    (257, 12.0, [lead for lead in LEADS if lead != "V4"], None),  # resampled, a lead zero-filled
    (500, 10.0, LEADS[::-1], "aVL"),                          # reordered, a constant lead
    (1000, 2.5, ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL", "aVF"], None),
])
def test_every_step_matches_ecg_transform(fs, seconds, leads, constant):
    """The steps `prepare` runs with numpy give ecg-transform's numbers, including padding,
    zero-filled, constant and reordered leads, float32 and resampled (float64) inputs."""
    sig = synthetic(fs, seconds, n_leads=len(leads), seed=int(fs + seconds))
    if constant:
        sig[leads.index(constant)] = 0.5  # exactly constant: zeroed by both, not "flat" (0.02 mV)
    prepared = prepare(record(sig, fs, leads))
    same_as_ecg_transform(prepared.segments, ecg_transform_pipeline(sig, fs, leads))


def test_real_records_match_ecg_transform(samples_dir):
    """Every real file that reads: `prepare` gives what ecg-transform's transforms give on the same
    leads (limb leads derived and flat leads zeroed first, as `prepare` does before the pipeline)."""
    from ecgfm.io import read_ecgs
    from ecgfm.io.leads import derive_missing_limb_leads
    from ecgfm.preprocess import FLAT_PEAK_TO_PEAK_MV

    files = sorted(str(p) for p in samples_dir.rglob("*") if p.is_file()
                   and p.suffix.lower() not in (".csv", ".md", ".atr", ".txt") and "licenses" not in p.parts)
    compared = set()
    for entry in read_ecgs(files, errors="return", duration_s=10):
        if not hasattr(entry, "signal") or not entry.leads or not np.isfinite(entry.signal).all():
            continue
        prepared = prepare(entry)
        if not len(prepared.segments):
            continue
        entry = derive_missing_limb_leads(entry)
        sig = entry.signal.copy()
        sig[np.ptp(sig, axis=1) < FLAT_PEAK_TO_PEAK_MV] = 0.0
        same_as_ecg_transform(prepared.segments, ecg_transform_pipeline(sig, entry.fs, entry.leads), entry.name)
        compared.add(entry.fs)
    assert 500 in compared and len(compared) >= 3, compared  # at least two rates that are resampled
