"""Safe loading of checkpoints the test suite writes itself, in fairseq_signals' release layout."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from ecgfm.checkpoint import dims_from_cfg, load_checkpoint, parse_conv_layers, read_checkpoint
from ecgfm.errors import CheckpointError
from tests.fairseq_layout import TINY, model_cfg, random_weights, write_checkpoint

SOURCE = torch.randn(2, 12, 2500, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("legacy", [True, False])
def test_both_weight_norm_styles_give_the_same_model(tmp_path, legacy):
    reference = load_checkpoint(write_checkpoint(tmp_path / "legacy.pt", legacy_weight_norm=True))
    model = load_checkpoint(write_checkpoint(tmp_path / "x.pt", legacy_weight_norm=legacy))
    with torch.no_grad():
        logits = model(SOURCE).logits
        assert logits.shape == (2, 17) and torch.isfinite(logits).all()
        assert torch.equal(logits, reference(SOURCE).logits)
    assert not model.training


def test_weight_norm_is_folded_over_every_tap(tmp_path):
    weights = random_weights("ecg_transformer_classifier", TINY)
    g, v = weights["encoder.conv_pos.pos_conv.0.weight_g"], weights["encoder.conv_pos.pos_conv.0.weight_v"]
    model = load_checkpoint(write_checkpoint(tmp_path / "c.pt", weights=weights))
    folded = model.positional_conv.conv.weight
    expected = torch._weight_norm(v, g, dim=2)
    torch.testing.assert_close(folded, expected, rtol=0, atol=1e-7)


def test_pretrained_encoder_ignores_pretraining_modules(tmp_path):
    model = load_checkpoint(write_checkpoint(tmp_path / "p.pt", "wav2vec2_cmsc"))
    assert model.head is None
    with torch.no_grad():
        out = model(SOURCE)
    assert out.logits is None and out.hidden.shape == (2, 156, 64)


def test_optional_mask_embedding_is_accepted(tmp_path):
    weights = random_weights("ecg_transformer_classifier", TINY)
    weights["encoder.mask_emb"] = torch.zeros(64)
    load_checkpoint(write_checkpoint(tmp_path / "m.pt", weights=weights))


def test_numpy_training_metrics_load_through_the_allowlist(tmp_path):
    path = write_checkpoint(tmp_path / "auc.pt", numpy_metrics=True)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # the reason the allowlist exists
    cfg, weights = read_checkpoint(path)
    assert cfg["num_labels"] == 17 and "proj.weight" in weights


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    torch.save({"cfg": {"model": model_cfg("ecg_transformer_classifier", TINY)},
                "model": random_weights("ecg_transformer_classifier", TINY), "extra_state": payload}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_optimizer_state_is_not_kept(tmp_path):
    cfg, weights = read_checkpoint(write_checkpoint(tmp_path / "c.pt"))
    assert set(cfg) >= {"_name", "encoder_embed_dim"}
    assert not any(key.startswith(("last_optimizer_state", "exp_avg")) for key in weights)
    assert len(weights) == 16 * 2 + 2 + 6 + 2 + 2 + 3 + 2  # layers, stack LN, convs, feature LN, proj, pos conv, head


def test_missing_and_unexpected_keys_are_named(tmp_path):
    weights = random_weights("ecg_transformer_classifier", TINY)
    del weights["encoder.encoder.layers.1.fc2.bias"]
    weights["encoder.something_new"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(write_checkpoint(tmp_path / "bad.pt", weights=weights))
    message = str(error.value)
    assert "bad.pt" in message
    assert "missing encoder.encoder.layers.1.fc2.bias" in message
    assert "unexpected encoder.something_new" in message


def test_wrong_shape_is_refused(tmp_path):
    weights = random_weights("ecg_transformer_classifier", TINY)
    weights["proj.weight"] = torch.zeros(5, 64)
    with pytest.raises(CheckpointError, match="head.weight has shape"):
        load_checkpoint(write_checkpoint(tmp_path / "shape.pt", weights=weights))


@pytest.mark.parametrize("field,value", [("extractor_mode", "layer_norm"), ("layer_norm_first", True),
                                         ("_name", "wav2vec2_asr")])
def test_configurations_we_do_not_compute_are_refused(tmp_path, field, value):
    cfg = model_cfg("ecg_transformer_classifier", TINY)
    cfg[field] = value
    with pytest.raises(CheckpointError, match=field if field != "_name" else "not an ECG-FM model"):
        dims_from_cfg(cfg)


def test_stored_model_path_is_never_opened(tmp_path):
    path = write_checkpoint(tmp_path / "c.pt")
    state = torch.load(path, weights_only=True)
    state["cfg"]["model"]["model_path"] = str(tmp_path / "does-not-exist.pt")
    torch.save(state, path)
    assert load_checkpoint(path).head is not None


@pytest.mark.parametrize("spec,expected", [
    ("[(256, 2, 2)] * 4", ((256, 2, 2),) * 4),
    ("[(512, 10, 5)] + [(512, 3, 2)] * 2", ((512, 10, 5), (512, 3, 2), (512, 3, 2))),
    ("2 * [(32, 2, 2)]", ((32, 2, 2),) * 2),
])
def test_conv_layers_spec_is_parsed(spec, expected):
    assert parse_conv_layers(spec) == expected


@pytest.mark.parametrize("spec", ["__import__('os').system('true')", "[(1, 2)]", "[(256, 2, 2)] * 10**9", "", "[]"])
def test_conv_layers_spec_is_never_evaluated(spec):
    with pytest.raises(CheckpointError, match="conv_feature_layers"):
        parse_conv_layers(spec)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None])
def test_unreadable_files_fail_with_one_sentence(tmp_path, content):
    path = tmp_path / "broken.pt"
    if content is None:  # a truncated zip: the first half of a real checkpoint
        data = write_checkpoint(tmp_path / "whole.pt").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"^broken\.pt: "):
        load_checkpoint(path)


def test_a_zip_without_model_weights_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="not a fairseq_signals checkpoint"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
