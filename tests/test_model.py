"""The network against fairseq_signals' own outputs (../shared/conformance), op by op."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ecgfm.checkpoint import load_checkpoint
from ecgfm.model import pool

CLASSIFIER_FILES = ["tiny_classifier.pt", "tiny_classifier_legacy_wn.pt"]
PRETRAINED_FILES = ["tiny_pretrained.pt", "tiny_pretrained_legacy_wn.pt"]


def run_with_intermediates(model, source, padding_mask=None, return_attention=True):
    """Forward pass plus the outputs of each stage, captured with hooks."""
    seen = {}
    hooks = [
        model.feature_extractor.register_forward_hook(lambda m, i, o: seen.__setitem__("feat_conv", o)),
        model.feature_norm.register_forward_hook(lambda m, i, o: seen.__setitem__("feat_ln", o)),
        model.feature_projection.register_forward_hook(lambda m, i, o: seen.__setitem__("feat_proj", o)),
        model.positional_conv.register_forward_hook(lambda m, i, o: seen.__setitem__("pos_conv_out", o)),
    ]
    for index, layer in enumerate(model.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, index=index: seen.__setitem__(f"layer{index}", o[0])))
    with torch.no_grad():
        out = model(torch.from_numpy(source),
                    None if padding_mask is None else torch.from_numpy(padding_mask),
                    return_attention=return_attention)
    for hook in hooks:
        hook.remove()
    seen["encoder_in"] = seen["feat_proj"] + seen["pos_conv_out"]
    seen["layer_outputs"] = torch.stack([seen[f"layer{i}"] for i in range(len(model.layers))])
    return out, {k: v.numpy() for k, v in seen.items() if not k.startswith("layer") or k == "layer_outputs"}


def close(actual, expected, atol=1e-5):
    actual = actual.numpy() if isinstance(actual, torch.Tensor) else actual
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("file", CLASSIFIER_FILES)
def test_classifier_matches_fairseq(conformance_dir, file):
    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    model = load_checkpoint(conformance_dir / file)
    out, inter = run_with_intermediates(model, ref["source"])
    close(out.logits, ref["out"])
    close(torch.sigmoid(out.logits), ref["prob"])
    close(out.hidden, ref["encoder_out"])
    close(out.attention, ref["saliency"], atol=1e-6)
    with torch.inference_mode():
        last_only = model(torch.from_numpy(ref["source"]), return_attention="last")
    close(last_only.attention, ref["saliency"][:, -1:], atol=1e-6)  # the layers before keep the fused kernel
    close(last_only.logits, ref["out"])
    close(pool(out.hidden), ref["emb"])
    assert out.frame_mask is None
    close(inter["feat_conv"], ref["inter_feat_conv"])
    close(inter["feat_ln"], ref["inter_feat_ln"])
    close(inter["feat_proj"], ref["inter_feat_proj"])
    close(inter["pos_conv_out"], ref["inter_pos_conv_out"])
    close(inter["encoder_in"], ref["inter_encoder_in"])
    close(inter["layer_outputs"], ref["inter_layer_outputs"])
    close(out.hidden, ref["inter_transformer_out"])

    with torch.no_grad():  # the fused attention path, used when no weights are asked for
        fused = model(torch.from_numpy(ref["source"]))
    assert fused.attention is None
    close(fused.logits, ref["out_noweights"])
    close(fused.hidden, ref["encoder_out_noweights"])


@pytest.mark.parametrize("file", CLASSIFIER_FILES)
@pytest.mark.parametrize("mask_dims", [2, 3])
def test_classifier_padded_batch_matches_fairseq(conformance_dir, file, mask_dims):
    ref = np.load(conformance_dir / "tiny_classifier_io.npz")
    model = load_checkpoint(conformance_dir / file)
    mask = ref["padded_padding_mask"]
    if mask_dims == 3:  # what fairseq's collator really produces: the same mask for every lead
        mask = np.repeat(mask[:, None, :], 12, axis=1)
    out, inter = run_with_intermediates(model, ref["padded_source"], mask)
    np.testing.assert_array_equal(out.frame_mask.numpy(), ref["padded_padding_mask_out"])
    close(out.logits, ref["padded_out"])
    close(out.hidden, ref["padded_encoder_out"])
    assert (out.hidden.numpy()[ref["padded_padding_mask_out"]] == 0).all()
    close(out.attention, ref["padded_saliency"], atol=1e-6)
    close(pool(out.hidden), ref["padded_emb"])
    close(inter["encoder_in"], ref["padded_inter_encoder_in"])
    close(inter["layer_outputs"], ref["padded_inter_layer_outputs"])
    with torch.no_grad():
        fused = model(torch.from_numpy(ref["padded_source"]), torch.from_numpy(mask))
    close(fused.logits, ref["padded_out"])


@pytest.mark.parametrize("file", PRETRAINED_FILES)
def test_encoder_matches_fairseq(conformance_dir, file):
    ref = np.load(conformance_dir / "tiny_pretrained_io.npz")
    model = load_checkpoint(conformance_dir / file)
    assert model.head is None
    out, inter = run_with_intermediates(model, ref["source"])
    assert out.logits is None
    close(out.hidden, ref["x"])
    close(inter["feat_ln"], ref["features"])
    close(out.attention, ref["saliency"], atol=1e-6)
    close(pool(out.hidden), ref["emb"])
    for name in ("feat_conv", "feat_ln", "feat_proj", "pos_conv_out", "encoder_in", "layer_outputs"):
        close(inter[name], ref[f"inter_{name}"])
    with torch.no_grad():
        close(model(torch.from_numpy(ref["source"])).hidden, ref["x_noweights"])

    padded, inter = run_with_intermediates(model, ref["padded_source"], ref["padded_padding_mask"])
    np.testing.assert_array_equal(padded.frame_mask.numpy(), ref["padded_padding_mask_out"])
    close(padded.hidden, ref["padded_x"])  # not zeroed at padded frames, unlike the classifier
    close(inter["feat_ln"], ref["padded_features"])
    close(padded.attention, ref["padded_saliency"], atol=1e-6)
    close(pool(padded.hidden, padded.frame_mask), ref["padded_emb"])
    close(inter["encoder_in"], ref["padded_inter_encoder_in"])
    close(inter["layer_outputs"], ref["padded_inter_layer_outputs"])
