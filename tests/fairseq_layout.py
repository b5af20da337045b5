"""Writes checkpoints laid out exactly as fairseq_signals' trainer writes ECG-FM's release files.

Independent of `ecgfm.checkpoint` on purpose: the key names and the file layout come from
`../shared/conformance/ARCHITECTURE.md` (section c), so a wrong key map in the package cannot agree
with a wrong writer here. The weights are random: these files test loading, never medicine.
"""
from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(encoder_embed_dim=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_embed_dim=128,
            conv_feature_layers="[(32, 2, 2)] * 4", conv_pos=16, conv_pos_groups=4, final_dim=32)
FULL = dict(encoder_embed_dim=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_embed_dim=3072,
            conv_feature_layers="[(256, 2, 2)] * 4", conv_pos=128, conv_pos_groups=16, final_dim=256)


def model_cfg(kind: str, size: dict) -> dict:
    cfg = {
        "_name": kind, "all_gather": False, "normalize": False, "filter": False, "data": "/path/to/data",
        "args": None, "layer_norm_first": False, "saliency": False, "dropout": 0.0, "attention_dropout": 0.0,
        "activation_dropout": 0.1, "encoder_layerdrop": 0.0, "dropout_input": 0.0, "dropout_features": 0.0,
        "apply_mask": False, "mask_length": 10, "mask_prob": 0.0, "extractor_mode": "default", "in_d": 12,
        "conv_bias": False, "feature_grad_mult": 0.0, **{k: v for k, v in size.items() if k != "final_dim"},
    }
    if kind == "ecg_transformer_classifier":
        cfg.update(model_path="/path/to/ckpts/pretrained.pt", no_pretrained_weights=False,
                   freeze_finetune_updates=0, final_dropout=0.0, num_labels=17)
    else:
        cfg.update(apply_mask=True, quantize_targets=True, quantize_input=False, latent_vars=320,
                   latent_groups=2, latent_dim=0, final_dim=size["final_dim"], latent_temp=[2.0, 0.5, 0.999995])
    return cfg


def random_weights(kind: str, size: dict, *, legacy_weight_norm: bool = True, seed: int = 0) -> dict:
    """fairseq's state dict for `kind`, with small random values (N(0, 0.02), norms near 1)."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen) * 0.02  # noqa: E731
    ones = lambda n: 1 + rand(n)  # noqa: E731
    d, f, n_layers = size["encoder_embed_dim"], size["encoder_ffn_embed_dim"], size["encoder_layers"]
    c = int(size["conv_feature_layers"].split("(")[1].split(",")[0])
    k, groups = size["conv_pos"], size["conv_pos_groups"]
    p = "encoder." if kind == "ecg_transformer_classifier" else ""
    w = {}
    for i in range(n_layers):
        layer = f"{p}encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            w[f"{layer}self_attn.{proj}.weight"] = rand(d, d)
            w[f"{layer}self_attn.{proj}.bias"] = rand(d)
        w[f"{layer}self_attn_layer_norm.weight"], w[f"{layer}self_attn_layer_norm.bias"] = ones(d), rand(d)
        w[f"{layer}fc1.weight"], w[f"{layer}fc1.bias"] = rand(f, d), rand(f)
        w[f"{layer}fc2.weight"], w[f"{layer}fc2.bias"] = rand(d, f), rand(d)
        w[f"{layer}final_layer_norm.weight"], w[f"{layer}final_layer_norm.bias"] = ones(d), rand(d)
    w[f"{p}encoder.layer_norm.weight"], w[f"{p}encoder.layer_norm.bias"] = ones(d), rand(d)
    w[f"{p}feature_extractor.conv_layers.0.0.weight"] = rand(c, 12, 2) * 25
    w[f"{p}feature_extractor.conv_layers.0.2.weight"], w[f"{p}feature_extractor.conv_layers.0.2.bias"] = ones(c), rand(c)
    for i in (1, 2, 3):
        w[f"{p}feature_extractor.conv_layers.{i}.0.weight"] = rand(c, c, 2) * 25
    w[f"{p}post_extract_proj.weight"], w[f"{p}post_extract_proj.bias"] = rand(d, c) * 5, rand(d)
    w[f"{p}conv_pos.pos_conv.0.bias"] = rand(d)
    g, v = ones(k).reshape(1, 1, k), rand(d, d // groups, k)
    if legacy_weight_norm:
        w[f"{p}conv_pos.pos_conv.0.weight_g"], w[f"{p}conv_pos.pos_conv.0.weight_v"] = g, v
    else:
        w[f"{p}conv_pos.pos_conv.0.parametrizations.weight.original0"] = g
        w[f"{p}conv_pos.pos_conv.0.parametrizations.weight.original1"] = v
    w[f"{p}layer_norm.weight"], w[f"{p}layer_norm.bias"] = ones(c), rand(c)
    if kind == "ecg_transformer_classifier":
        w["proj.weight"], w["proj.bias"] = rand(17, d) * 10, rand(17)
    else:
        fd = size["final_dim"]
        w["mask_emb"] = rand(d)
        w["quantizer.vars"] = rand(1, 640, fd // 2)
        w["quantizer.weight_proj.weight"], w["quantizer.weight_proj.bias"] = rand(640, c), rand(640)
        w["project_q.weight"], w["project_q.bias"] = rand(fd, fd), rand(fd)
        w["final_proj.weight"], w["final_proj.bias"] = rand(fd, d), rand(fd)
    return w


def write_checkpoint(path: Path, kind: str = "ecg_transformer_classifier", size: dict = TINY, *,
                     legacy_weight_norm: bool = True, seed: int = 0, numpy_metrics: bool = False,
                     weights: dict | None = None) -> Path:
    """A file with the trainer's 8 top-level keys, Adam state for every weight included."""
    weights = weights if weights is not None else random_weights(
        kind, size, legacy_weight_norm=legacy_weight_norm, seed=seed)
    gnorm = torch.tensor(1.5)
    valid = []
    if numpy_metrics:  # an AUCMeter, as a finetuning run with report_auc leaves in extra_state
        import numpy as np
        valid = [(0, "auc", "AUCMeter", {"scores": [np.zeros(3, np.float32)], "targets": [np.ones(3, np.float32)]})]
    state = {
        "args": None,
        "cfg": {"_name": None, "common": {"seed": 1}, "common_eval": {}, "distributed_training": {},
                "dataset": {}, "optimization": {"lr": [5e-5]}, "checkpoint": {}, "model": model_cfg(kind, size),
                "task": {"_name": "ecg_classification"}, "criterion": {}, "lr_scheduler": {},
                "optimizer": {"adam_betas": "(0.9, 0.98)"}, "job_logging_cfg": {}},
        "model": weights,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "BinaryCrossEntropyCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {"lr": 5e-5}, "num_updates": 4}],
        "task_state": {},
        "extra_state": {"metrics": {"train": [(0, "gnorm", "AverageMeter", {"val": gnorm, "sum": gnorm})],
                                    **({"valid": valid} if valid else {})},
                        "previous_training_time": 1.0,
                        "train_iterator": {"version": 2, "epoch": 1, "iterations_in_epoch": 4, "shuffle": True},
                        "val_loss": None},
        "last_optimizer_state": {
            "state": {i: {"step": 4, "exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)}
                      for i, t in enumerate(weights.values())},
            "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0,
                              "amsgrad": False, "params": list(range(len(weights)))}],
        },
    }
    path = Path(path)
    torch.save(state, path)
    return path
