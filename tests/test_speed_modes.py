"""The faster modes against fp32, and the load-time shortcuts (weights cache, threads) being harmless.

Speed itself is measured by benchmarks/bench.py, never asserted here.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import ecgfm
from ecgfm.checkpoint import build_model, convert_state_dict, load_checkpoint
from ecgfm.errors import ECGFMError
from ecgfm.model import allowed_cpus, configure_threads, set_precision, use_half_matmuls
from ecgfm.predict import describe
from tests.fairseq_layout import FULL, model_cfg, random_weights, write_checkpoint

# The largest probability difference from fp32 each half-precision mode may make (issue #5).
TOLERANCES = {"bf16": 0.02, "fp16": 0.01}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CLASSIFIER_FILES = ["tiny_classifier.pt", "tiny_classifier_legacy_wn.pt"]


def synthetic_segments(count: int, seed: int = 0) -> torch.Tensor:
    """Standardised ECG-like segments [count, 12, 2500]: beats at ~70 bpm, lead gains, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(2500) / 500
    out = []
    for _ in range(count):
        beat = np.zeros_like(t)
        period = rng.uniform(0.6, 1.1)
        for start in np.arange(rng.uniform(0, period), 5, period):
            for offset, width, height in ((0.0, 0.025, 0.15), (0.18, 0.01, 1.0), (0.2, 0.01, -0.25),
                                          (0.42, 0.045, 0.3)):
                beat += height * np.exp(-0.5 * ((t - start - offset) / width) ** 2)
        leads = beat[None, :] * rng.uniform(-1.5, 1.5, (12, 1)) + 0.03 * rng.standard_normal((12, 2500))
        leads = (leads - leads.mean(1, keepdims=True)) / leads.std(1, keepdims=True)
        out.append(leads)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def probabilities(model, source, mask=None) -> torch.Tensor:
    with torch.inference_mode():
        return torch.sigmoid(model(source, mask).logits.float())


def largest_difference(half, fp32, source, mask=None) -> float:
    difference = (probabilities(half, source, mask) - probabilities(fp32, source, mask)).abs().max().item()
    assert difference > 0, "the half-precision copy gave fp32's exact numbers: it did not run in half precision"
    return difference


@pytest.fixture
def native_bf16(monkeypatch):
    """Let "bf16" through the hardware check on any CPU (emulated bf16 is slow, not wrong)."""
    monkeypatch.setattr("ecgfm.model.cpu_has_native_bf16", lambda: True)


# Half precision is tested on the CPU through the same code the GPU runs (`use_half_matmuls`); CPU
# kernels round the same inputs the same way, only the order of additions differs.
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("file", CLASSIFIER_FILES)
def test_half_precision_stays_close_to_fp32_on_the_conformance_inputs(conformance_dir, file, precision):
    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    fp32 = load_checkpoint(conformance_dir / file)
    half = use_half_matmuls(load_checkpoint(conformance_dir / file), DTYPES[precision])
    assert half.layers[0].fc1.weight.dtype == DTYPES[precision]
    assert half.feature_extractor.convs[0].weight.dtype == half.head.weight.dtype == torch.float32
    source = torch.from_numpy(ref["source"])
    assert largest_difference(half, fp32, source) <= TOLERANCES[precision]
    padded, mask = torch.from_numpy(ref["padded_source"]), torch.from_numpy(ref["padded_padding_mask"])
    assert largest_difference(half, fp32, padded, mask) <= TOLERANCES[precision]


@pytest.fixture(scope="module")
def full_size_models():
    """The full-size architecture with random weights, built in memory (no 1 GB file)."""
    import copy

    kind = "ecg_transformer_classifier"
    fp32 = build_model(*convert_state_dict(random_weights(kind, FULL), model_cfg(kind, FULL)))
    return fp32, use_half_matmuls(copy.deepcopy(fp32), torch.bfloat16)


def test_bf16_on_the_full_size_architecture(full_size_models):
    # Random full-size weights are a harsher case than the tiny fixtures: 48 rounded products
    # compound through 12 layers. benchmarks/bench.py reports the figure on real ECGs too.
    fp32, bf16 = full_size_models
    assert largest_difference(bf16, fp32, synthetic_segments(4)) <= TOLERANCES["bf16"]


def test_half_precision_attention_maps_stay_close(conformance_dir):
    fp32 = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    bf16 = use_half_matmuls(load_checkpoint(conformance_dir / "tiny_classifier.pt"), torch.bfloat16)
    source = synthetic_segments(2)
    with torch.inference_mode():
        exact, approx = fp32(source, return_attention=True), bf16(source, return_attention=True)
    assert approx.attention.dtype == torch.float32 and approx.hidden.dtype == torch.float32
    torch.testing.assert_close(approx.attention, exact.attention, rtol=0, atol=0.01)


def test_precisions_are_checked_and_shown(tmp_path, monkeypatch, native_bf16):
    path = write_checkpoint(tmp_path / "c.pt")
    assert describe(set_precision(load_checkpoint(path), "fp32"))["precision"] == "fp32"
    model = set_precision(load_checkpoint(path), "bf16")
    assert describe(model)["precision"] == "bf16" and model.layers[-1].fc2.weight.dtype == torch.bfloat16
    assert describe(set_precision(model, "fp32"))["precision"] == "fp32"
    with pytest.raises(ECGFMError, match="CUDA"):
        set_precision(load_checkpoint(path), "fp16")
    with pytest.raises(ECGFMError, match="precision must be one of"):
        set_precision(load_checkpoint(path), "int4")
    monkeypatch.setattr("ecgfm.model.cpu_has_native_bf16", lambda: False)
    with pytest.raises(ECGFMError, match="bfloat16 instructions"):
        ecgfm.load_model(str(path), device="cpu", precision="bf16")


def test_load_model_takes_a_precision(tmp_path, monkeypatch, native_bf16):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    path = write_checkpoint(tmp_path / "c.pt")
    model = ecgfm.load_model(str(path), device="cpu", precision="bf16")
    assert describe(model)["precision"] == "bf16" and model.provenance["sha256"]
    assert describe(ecgfm.load_model(str(path), device="cpu"))["precision"] == "fp32"


def test_weights_cache_gives_the_same_model_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    from ecgfm.hub import file_sha256

    path = write_checkpoint(tmp_path / "c.pt")
    digest = file_sha256(path)
    source = synthetic_segments(2)
    reference = probabilities(load_checkpoint(path), source)
    first = load_checkpoint(path, sha256=digest)  # converts and writes the cache
    cached_files = list((tmp_path / "cache" / "weights").glob(f"{digest}.*.safetensors"))
    assert len(cached_files) == 1
    assert torch.equal(probabilities(first, source), reference)

    path.unlink()  # the cached copy alone must now be enough …
    second = load_checkpoint(path, sha256=digest)
    assert torch.equal(probabilities(second, source), reference)
    assert second.positional_conv.conv.weight.shape == first.positional_conv.conv.weight.shape

    other = write_checkpoint(tmp_path / "other.pt", seed=5)  # … and only for the file it was made from
    cached_files[0].rename(cached_files[0].with_name(f"{file_sha256(other)}.{cached_files[0].name.split('.', 1)[1]}"))
    assert torch.equal(probabilities(load_checkpoint(other, sha256=file_sha256(other)), source),
                       probabilities(load_checkpoint(other), source))


def test_a_damaged_weights_cache_falls_back_to_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    from ecgfm.hub import file_sha256

    path = write_checkpoint(tmp_path / "c.pt")
    digest = file_sha256(path)
    load_checkpoint(path, sha256=digest)
    for cached in (tmp_path / "cache" / "weights").iterdir():
        cached.write_bytes(b"truncated")
    source = synthetic_segments(1)
    assert torch.equal(probabilities(load_checkpoint(path, sha256=digest), source),
                       probabilities(load_checkpoint(path), source))


def test_threads_never_exceed_the_allowed_cpus():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(allowed_cpus() + 3)
        assert configure_threads() == allowed_cpus() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_concurrent_forwards_give_the_sequential_results(conformance_dir):
    model = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    inputs = [synthetic_segments(2, seed=s) for s in range(4)]
    expected = [probabilities(model, x) for x in inputs]
    results = [None] * len(inputs)

    def run(i):
        results[i] = probabilities(model, inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert torch.equal(got, want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), *TOLERANCES.items()])
def test_cuda_stays_close_to_cpu_fp32(conformance_dir, full_size_models, precision, tolerance):
    import copy

    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    tiny = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    fp32_full = full_size_models[0]
    # cuDNN runs fp32 convolutions in TF32 by default on recent GPUs (as it did for fairseq_signals);
    # off here, so that fp32 is compared with fp32 and the test checks our code, not that default.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for model, source in ((tiny, torch.from_numpy(ref["source"])), (fp32_full, synthetic_segments(4))):
            on_gpu = set_precision(copy.deepcopy(model).to("cuda"), precision)
            expected = probabilities(model, source)
            got = probabilities(on_gpu, source.to("cuda")).cpu()
            assert (got - expected).abs().max() <= tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_is_chosen_automatically_in_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    info = describe(ecgfm.load_model(str(write_checkpoint(tmp_path / "c.pt"))))
    assert info["device"].startswith("cuda") and info["precision"] == "fp32"


def test_half_precision_cache_gives_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "cache"))
    from ecgfm.hub import file_sha256

    path = write_checkpoint(tmp_path / "c.pt")
    digest = file_sha256(path)
    source = synthetic_segments(2)
    first = load_checkpoint(path, sha256=digest, precision="bf16")  # converts, writes both caches
    weights = tmp_path / "cache" / "weights"
    assert sorted(f.name.split(".")[1] for f in weights.glob(f"{digest}.*.safetensors")) == [
        "ecgfm-weights-3", "ecgfm-weights-3-bf16"]
    path.unlink()
    second = load_checkpoint(path, sha256=digest, precision="bf16")
    assert second.layers[0].attention.qkv_proj.weight.dtype == torch.bfloat16
    assert torch.equal(probabilities(second, source), probabilities(first, source))


def test_in_place_gelu_leaves_hooked_outputs_alone(conformance_dir):
    model = load_checkpoint(conformance_dir / "tiny_classifier.pt")
    seen = {}
    fc1 = model.layers[0].fc1
    handles = [fc1.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o)),
               model.feature_extractor.convs[1].register_forward_hook(lambda m, i, o: seen.update(conv=o, conv_in=i[0]))]
    with torch.inference_mode():
        model(synthetic_segments(1))
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(seen["out"], torch.nn.functional.linear(seen["inp"], fc1.weight, fc1.bias))
    torch.testing.assert_close(seen["conv"], model.feature_extractor.convs[1](seen["conv_in"]))
