"""Reading fairseq_signals checkpoints safely, and turning them into an `ECGFM` module.

Everything that knows fairseq's cfg fields and state-dict key names lives here, in one place.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ECGFMError
from .model import HALF_DTYPES, ECGFM, ModelDims, channels_last_taps, configure_threads, use_half_matmuls

CLASSIFIER = "ecg_transformer_classifier"
PRETRAINED = "wav2vec2_cmsc"

# numpy objects that a finetuning run with AUC validation leaves in `extra_state`; plain data, no code.
_NUMPY_DATA_GLOBALS = {
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
}

# Pretraining-only parts of wav2vec2_cmsc that the feature path never uses.
_PRETRAINING_ONLY = ("mask_emb", "quantizer.", "project_q.", "final_proj.", "target_glu.", "project_inp.")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The model cfg and the weights of a fairseq_signals checkpoint, and nothing else.

    The file is memory-mapped and unpickled with `weights_only=True`, so no code inside it can run
    and the optimizer state (two thirds of a release file) is never read from disk.
    """
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CheckpointError(f"{name}: the checkpoint file does not exist.")
    try:
        state = _safe_load(path)
    except CheckpointError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        if _cut_short(path):
            raise CheckpointError(f"{name}: not a readable PyTorch checkpoint, the file ends too early "
                                  "(truncated, or still being copied).") from None
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint ({_first_line(exc)}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{name}: not a fairseq_signals checkpoint (no 'model' weights inside).")
    cfg = state.get("cfg")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{name}: the checkpoint has no model configuration ('cfg.model').")
    weights = {key: value for key, value in state["model"].items() if isinstance(value, torch.Tensor)}
    return dict(cfg["model"]), weights


def _cut_short(path: Path) -> bool:
    """A zip (as torch.save writes) whose end, where the zip's directory is, is missing."""
    import zipfile

    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


def _safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        code = sorted(g for g in unsafe if g not in _NUMPY_DATA_GLOBALS and not g.startswith("numpy.dtypes."))
        if code:
            raise CheckpointError(
                f"{path.name}: refused, the checkpoint carries Python objects that could run code "
                f"({', '.join(code[:3])}).") from None
        import numpy.dtypes
        # Each array's dtype class (Float32DType …) is only named once unpickling reaches it.
        dtype_classes = [c for c in vars(numpy.dtypes).values() if isinstance(c, type)]
        allowed = [_import_global(g) for g in unsafe] + dtype_classes
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _import_global(qualified: str) -> Any:
    module_name, _, attribute = qualified.rpartition(".")
    module = __import__(module_name, fromlist=[attribute])
    return getattr(module, attribute)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def parse_conv_layers(spec: str) -> tuple[tuple[int, int, int], ...]:
    """Evaluate fairseq's `conv_feature_layers` string ("[(256, 2, 2)] * 4") without `eval`.

    Accepts list/tuple literals of (channels, kernel, stride) joined by `+` and repeated by `*`.
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(element) for element in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(left, int):
                left, right = right, left
            if isinstance(left, list) and isinstance(right, int) and 0 < right <= 64:
                return left * right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = value(node.left), value(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        raise ValueError
    try:
        layers = value(ast.parse(spec, mode="eval").body)
        parsed = tuple((int(c), int(k), int(s)) for c, k, s in layers)
        if not parsed or any(v <= 0 for layer in parsed for v in layer):
            raise ValueError
        return parsed
    except (SyntaxError, ValueError, TypeError):
        raise CheckpointError(f"conv_feature_layers {spec!r} is not a list of (channels, kernel, stride).") from None


def dims_from_cfg(cfg: dict[str, Any], name: str = "checkpoint") -> ModelDims:
    """The network's shape from `cfg["model"]`, refusing settings this implementation does not compute."""
    kind = cfg.get("_name")
    if kind not in (CLASSIFIER, PRETRAINED):
        raise CheckpointError(f"{name}: model type {kind!r} is not an ECG-FM model "
                              f"({CLASSIFIER} or {PRETRAINED}).")
    unsupported = {
        "extractor_mode": ("default", cfg.get("extractor_mode", "default")),
        "layer_norm_first": (False, cfg.get("layer_norm_first", False)),
        "quantize_input": (False, cfg.get("quantize_input", False)),
    }
    for field, (expected, actual) in unsupported.items():
        if actual != expected:
            raise CheckpointError(f"{name}: {field}={actual!r} is not supported (ECG-FM uses {expected!r}).")
    try:
        dims = ModelDims(
            in_channels=int(cfg.get("in_d", 12)),
            conv_layers=parse_conv_layers(str(cfg.get("conv_feature_layers", "[(256, 2, 2)] * 4"))),
            conv_bias=bool(cfg.get("conv_bias", False)),
            embed_dim=int(cfg.get("encoder_embed_dim", 768)),
            num_layers=int(cfg.get("encoder_layers", 12)),
            num_heads=int(cfg.get("encoder_attention_heads", 12)),
            ffn_dim=int(cfg.get("encoder_ffn_embed_dim", 3072)),
            pos_conv_kernel=int(cfg.get("conv_pos", 128)),
            pos_conv_groups=int(cfg.get("conv_pos_groups", 16)),
            num_labels=int(cfg["num_labels"]) if kind == CLASSIFIER else None,
        )
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{name}: the model configuration is incomplete or malformed.") from None
    if dims.embed_dim % dims.num_heads or dims.embed_dim % dims.pos_conv_groups:
        raise CheckpointError(f"{name}: encoder width {dims.embed_dim} does not divide into "
                              f"{dims.num_heads} heads and {dims.pos_conv_groups} conv groups.")
    return dims


def _fairseq_key_map(dims: ModelDims) -> dict[str, str]:
    """fairseq key (pretrained naming, no `encoder.` prefix) → our key, for every weight we load."""
    mapping: dict[str, str] = {}
    for i in range(len(dims.conv_layers)):
        mapping[f"feature_extractor.conv_layers.{i}.0.weight"] = f"feature_extractor.convs.{i}.weight"
        if dims.conv_bias:
            mapping[f"feature_extractor.conv_layers.{i}.0.bias"] = f"feature_extractor.convs.{i}.bias"
    for p in ("weight", "bias"):
        mapping[f"feature_extractor.conv_layers.0.2.{p}"] = f"feature_extractor.norm.{p}"
        mapping[f"layer_norm.{p}"] = f"feature_norm.{p}"
        if dims.conv_layers[-1][0] != dims.embed_dim:
            mapping[f"post_extract_proj.{p}"] = f"feature_projection.{p}"
        mapping[f"encoder.layer_norm.{p}"] = f"encoder_norm.{p}"
        for i in range(dims.num_layers):
            src, dst = f"encoder.layers.{i}.", f"layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                mapping[f"{src}self_attn.{proj}.{p}"] = f"{dst}attention.{proj}.{p}"
            mapping[f"{src}self_attn_layer_norm.{p}"] = f"{dst}attention_norm.{p}"
            mapping[f"{src}fc1.{p}"] = f"{dst}fc1.{p}"
            mapping[f"{src}fc2.{p}"] = f"{dst}fc2.{p}"
            mapping[f"{src}final_layer_norm.{p}"] = f"{dst}ffn_norm.{p}"
    mapping["conv_pos.pos_conv.0.bias"] = "positional_conv.conv.bias"
    return mapping


_QKV = ("q_proj", "k_proj", "v_proj")


def _fuse_qkv(converted: dict[str, torch.Tensor], num_layers: int) -> None:
    """fairseq's separate q/k/v projections → our one `qkv_proj` (rows q, k, v), in place."""
    for i in range(num_layers):
        for p in ("weight", "bias"):
            keys = [f"layers.{i}.attention.{proj}.{p}" for proj in _QKV]
            if all(key in converted for key in keys):
                converted[f"layers.{i}.attention.qkv_proj.{p}"] = torch.cat([converted.pop(key) for key in keys])


_POS_CONV = "conv_pos.pos_conv.0."
_POS_CONV_OURS = "positional_conv.conv.weight"
_WEIGHT_NORM_STYLES = (("weight_g", "weight_v"),
                       ("parametrizations.weight.original0", "parametrizations.weight.original1"))


def convert_state_dict(weights: dict[str, torch.Tensor], cfg: dict[str, Any],
                       name: str = "checkpoint") -> tuple[ModelDims, dict[str, torch.Tensor]]:
    """Map fairseq's keys onto ours, strictly: any missing or unexpected key is an error naming it.

    The positional conv's weight norm (dim=2, either key style) is folded into a plain weight here,
    once, so the forward pass never recomputes it.
    """
    dims = dims_from_cfg(cfg, name)
    prefix = "encoder." if dims.num_labels else ""
    source = {}
    unexpected = []
    for key, tensor in weights.items():
        if prefix and not key.startswith(prefix):
            if key in ("proj.weight", "proj.bias"):
                source[key] = tensor
            else:
                unexpected.append(key)
            continue
        short = key[len(prefix):]
        if short.startswith(_PRETRAINING_ONLY):
            continue  # unused at inference: masking embedding, quantizer and contrastive projections
        source[short] = tensor

    mapping = _fairseq_key_map(dims)
    converted = {ours: source.pop(theirs) for theirs, ours in mapping.items() if theirs in source}
    missing = [prefix + theirs for theirs, ours in mapping.items() if ours not in converted]
    for g_key, v_key in _WEIGHT_NORM_STYLES:
        if _POS_CONV + g_key in source and _POS_CONV + v_key in source:
            g, v = source.pop(_POS_CONV + g_key), source.pop(_POS_CONV + v_key)
            norm = v.float().pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
            converted[_POS_CONV_OURS] = (g * v / norm).to(v.dtype)
            break
    else:
        missing.append(prefix + _POS_CONV + "weight_g/weight_v")
    if dims.num_labels:
        for p in ("weight", "bias"):
            if f"proj.{p}" in source:
                converted[f"head.{p}"] = source.pop(f"proj.{p}")
            else:
                missing.append(f"proj.{p}")
    unexpected += [prefix + key for key in source]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(sorted(missing)[:5])}" + (" …" if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(sorted(unexpected)[:5])}"
                         + (" …" if len(unexpected) > 5 else ""))
        raise CheckpointError(f"{name}: the weights do not match an ECG-FM {cfg.get('_name')} "
                              f"({'; '.join(parts)}).")
    _fuse_qkv(converted, dims.num_layers)
    return dims, converted


def build_model(dims: ModelDims, state: dict[str, torch.Tensor], name: str = "checkpoint",
                precision: str = "fp32", copy: bool = True) -> ECGFM:
    """An `ECGFM` holding these weights, built without a throwaway random initialisation.

    Each weight is cast to the dtype `precision` gives it (`model.use_half_matmuls`), so `state` may
    be fp32 weights or a cached half-precision copy. `copy=False` keeps tensors memory-mapped from
    ecgfm's own weights cache as they are (no second copy of 361 MB); everything else is copied.
    """
    with torch.device("meta"):
        model = use_half_matmuls(ECGFM(dims), HALF_DTYPES.get(precision, torch.float32))
    expected = model.state_dict()
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{name}: weight {key} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[key].shape)} from the configuration.")
    # Copied unless mapped from our own cache: tensors memory-mapped from the user's checkpoint file
    # would crash the process (SIGBUS) or change silently if that file were truncated or rewritten.
    state = {k: v.to(expected[k].dtype, copy=copy) if k in expected and v.is_floating_point()
             else (v.clone() if copy else v) for k, v in state.items()}
    state[_POS_CONV_OURS] = channels_last_taps(state[_POS_CONV_OURS])  # a no-op for a cached copy
    model.load_state_dict(state, strict=True, assign=True)
    configure_threads()
    return model.eval().requires_grad_(False)


def load_checkpoint(path: str | Path, sha256: str | None = None, precision: str = "fp32") -> ECGFM:
    """A ready-to-run model from a fairseq_signals ECG-FM checkpoint (finetuned or pretrained).

    With the file's `sha256` (as `ecgfm.hub` reports it), the converted weights are also kept as a
    weights-only safetensors file in the ecgfm cache, named by that hash, and later loads read that
    file instead: nothing to unpickle or convert, and only the weights the network uses are read.
    A half `precision` is cached the same way, so a later load in it never touches the fp32 weights.
    When the checkpoint itself is read, its sha256 is checked again afterwards (the remembered hash,
    unless the file changed or was never hashed here, e.g. a Hub download named by its hash: then it
    is hashed once), so a file changed while loading is refused and never cached under the old hash.
    The model never reads the checkpoint file once loaded: its weights are mapped from ecgfm's own
    cache, or copied when there is no cache, so the checkpoint may change or go (`source_change`
    then says so).
    """
    from .hub import file_identity

    path = Path(path)
    name = path.name
    try:
        identity = file_identity(path)
    except OSError:
        identity = None  # the cached copy alone may be enough
    layout = _CACHE_LAYOUT if precision == "fp32" else f"{_CACHE_LAYOUT}-{precision}"
    model = None
    if sha256 and precision != "fp32":
        hit = _read_cached(_cache_path(sha256, layout), sha256, layout)
        if hit is not None:
            model = build_model(*hit, name, precision, copy=False)
    if model is None:
        cached = _cache_path(sha256, _CACHE_LAYOUT)
        hit = _read_cached(cached, sha256, _CACHE_LAYOUT) if sha256 else None
        if hit is None:
            cfg, weights = read_checkpoint(path)
            converted = convert_state_dict(weights, cfg, name)
            del cfg, weights
            if sha256:
                identity = _check_unchanged(path, sha256)
                _write_cached(cached, sha256, *converted, _CACHE_LAYOUT)
                # Served from our own cache from now on, never from the user's file.
                hit = _read_cached(cached, sha256, _CACHE_LAYOUT)
            if hit is None:  # no cache (no hash, or a read-only disk): the model owns a copy
                model = build_model(*converted, name, precision, copy=True)
            del converted  # the memory maps of the checkpoint go with it
        if model is None:
            model = build_model(*hit, name, precision, copy=False)
        del hit
        if sha256 and precision != "fp32":
            _write_cached(_cache_path(sha256, layout), sha256, model.dims, model.state_dict(), layout)
    model.source = (path.resolve(), identity)
    return model



def _check_unchanged(path: Path, sha256: str) -> tuple[int, ...]:
    """The file's identity, if it still has this sha256 (hashed again only if it changed since)."""
    from .hub import sha256_and_identity

    try:
        digest, identity = sha256_and_identity(path)
    except (OSError, ECGFMError):
        digest, identity = None, None
    if digest != sha256:
        raise CheckpointError(f"{path.name}: the checkpoint file changed while it was being loaded (its sha256 "
                              f"is no longer {sha256[:12]}…); load it again once it is complete.")
    return identity


def source_change(model: ECGFM) -> str | None:
    """One sentence if the checkpoint file `model` was loaded from has been changed or deleted since; else None.

    The model keeps its own copy of the weights, so it goes on giving the same results either way:
    this only says that the file no longer holds what is in memory.
    """
    path, identity = getattr(model, "source", (None, None))
    if path is None or identity is None:
        return None
    from .hub import file_identity

    try:
        now = file_identity(path)
    except OSError:
        now = None
    if now == identity:
        return None
    digest = (getattr(model, "provenance", None) or {}).get("sha256")
    held = f" (sha256 {digest[:12]}…)" if digest else ""
    return (f"{path.name}: the weights file was {'deleted' if now is None else 'changed'} after it was loaded; "
            f"the weights in memory{held} are still the ones used, until the model is loaded again.")


# Bump when the converted key layout changes, so stale caches are ignored rather than misread.
# Half-precision copies add "-bf16" / "-fp16" to it.
_CACHE_LAYOUT = "ecgfm-weights-3"  # ours: q/k/v fused, weight norm folded, pos conv [out, K, in]


def _cache_path(sha256: str | None, layout: str) -> Path | None:
    if not sha256 or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        return None
    from .hub import cache_dir
    return cache_dir() / "weights" / f"{sha256}.{layout}.safetensors"


def _read_cached(path: Path | None, sha256: str, layout: str) -> tuple[ModelDims, dict[str, torch.Tensor]] | None:
    """(dims, state) from a cache file made from the checkpoint with this sha256; None if unusable."""
    if path is None or not path.is_file():
        return None
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:  # memory-mapped, nothing copied
            meta = handle.metadata() or {}
            if meta.get("source_sha256") != sha256 or meta.get("layout") != layout:
                return None
            raw = json.loads(meta["dims"])
            raw["conv_layers"] = tuple(tuple(layer) for layer in raw["conv_layers"])
            dims = ModelDims(**raw)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
        state[_POS_CONV_OURS] = state[_POS_CONV_OURS].transpose(1, 2)  # stored [out, K, in], see below
        return dims, state
    except Exception:  # a damaged or foreign cache file: fall back to the checkpoint itself
        return None


def _write_cached(path: Path | None, sha256: str, dims: ModelDims, state: dict[str, torch.Tensor],
                  layout: str) -> None:
    """Best effort: a read-only or full disk only costs the speed-up, never the prediction."""
    if path is None:
        return
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        from safetensors.torch import save_file
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"source_sha256": sha256, "layout": layout, "dims": json.dumps(dataclasses.asdict(dims))}
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        tensors[_POS_CONV_OURS] = state[_POS_CONV_OURS].transpose(1, 2).contiguous()  # the layout conv2d uses
        save_file(tensors, str(partial), metadata=meta)
        os.replace(partial, path)
    except Exception:
        try:
            partial.unlink(missing_ok=True)
        except Exception:
            pass
