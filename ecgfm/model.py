"""ECG-FM's network in plain PyTorch: the wav2vec 2.0-style ECG encoder and its 17-label head.

This re-expresses fairseq_signals' `ecg_transformer_classifier` (finetuned) and the feature path of
`wav2vec2_cmsc` (pretrained) so that the released checkpoints give the same numbers without
fairseq_signals. Module names are our own; `checkpoint.py` maps fairseq's keys onto them.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ECGFMError


@dataclass(frozen=True)
class ModelDims:
    in_channels: int                           # ECG leads (12)
    conv_layers: tuple[tuple[int, int, int], ...]  # (channels, kernel, stride) of each feature conv
    conv_bias: bool
    embed_dim: int                             # D
    num_layers: int
    num_heads: int
    ffn_dim: int
    pos_conv_kernel: int
    pos_conv_groups: int
    num_labels: int | None                     # None: the pretrained encoder, no classifier head


@dataclass
class ModelOutput:
    logits: Tensor | None        # [B, num_labels], classifier only
    hidden: Tensor               # [B, T, D]; the classifier zeroes padded frames, the encoder does not
    frame_mask: Tensor | None    # [B, T] bool, True at padded frames; None when nothing is padded
    attention: Tensor | None     # [B, layers, T, T] (or [B, 1, T, T]: the last), averaged over heads, when asked for


_CPU_FORWARD_LOCK = threading.RLock()
_GELU_INPLACE = getattr(torch._C._nn, "gelu_", None)
_global_forward_hooks = getattr(nn.modules.module, "_global_forward_hooks", {0: None})  # unknown: assume hooks


def _gelu(x: Tensor, producer: nn.Module | None = None) -> Tensor:
    """Exact (erf) GELU of a temporary, in place when nothing else can see it: same values, and no
    fresh buffer of the FFN's size to allocate and fault in (~10 ms per layer at 16 segments).

    Out of place when a gradient is tracked, or when a forward hook on `producer` (the module whose
    output `x` is) may have kept a reference to it.
    """
    if (_GELU_INPLACE is None or (x.requires_grad and torch.is_grad_enabled())
            or (producer is not None and (producer._forward_hooks or _global_forward_hooks))):
        return F.gelu(x)
    return _GELU_INPLACE(x)


class FeatureExtractor(nn.Module):
    """Strided convolutions from 500 Hz samples to ~31 Hz frames.

    Only the first layer is normalised, per channel over time (GroupNorm with one group per
    channel, in fp32 as fairseq's Fp32GroupNorm); every layer ends in the exact erf GELU.
    """

    def __init__(self, dims: ModelDims):
        super().__init__()
        convs, in_channels = [], dims.in_channels
        for channels, kernel, stride in dims.conv_layers:
            convs.append(nn.Conv1d(in_channels, channels, kernel, stride, bias=dims.conv_bias))
            in_channels = channels
        self.convs = nn.ModuleList(convs)
        first = dims.conv_layers[0][0]
        self.norm = nn.GroupNorm(first, first)

    def forward(self, x: Tensor) -> Tensor:
        for index, conv in enumerate(self.convs):
            x = produced = conv(x)
            if index == 0:  # in fp32 whatever the model's precision, as fairseq's Fp32GroupNorm
                norm = self.norm
                x = F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(),
                                 norm.eps).type_as(x)
            x = _gelu(x, conv if x is produced else None)
        return x

    def output_lengths(self, lengths: Tensor) -> Tensor:
        for conv in self.convs:
            lengths = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
        return lengths


class PositionalConv(nn.Module):
    """A wide grouped convolution whose output is added to the frames as relative position.

    The checkpoint stores it weight-normalised; `checkpoint.py` folds g·v/‖v‖ into one plain weight.
    With an even kernel the symmetric padding yields one frame too many, and the last is dropped.
    """

    def __init__(self, dims: ModelDims):
        super().__init__()
        kernel = dims.pos_conv_kernel
        self.conv = nn.Conv1d(dims.embed_dim, dims.embed_dim, kernel, padding=kernel // 2,
                              groups=dims.pos_conv_groups)
        self.trim = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        # As a 2-D convolution over a [B, D, 1, T] view of the time-major frames, which is already
        # channels-last in memory: oneDNN runs this grouped conv ~1.5x faster than the 1-D form, and
        # no transposed copy of the input is made. Same weights, same sums. The weight is kept in
        # the matching layout (taps outermost, see `channels_last_taps`) so it is not copied per call.
        conv = self.conv
        x = x.to(conv.weight.dtype)  # a no-op unless `use_half_matmuls` made the weight half precision
        y = F.conv2d(x.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                     padding=(0, conv.padding[0]), groups=conv.groups).squeeze(2)
        if self.trim:
            y = y[:, :, :-self.trim]
        return _gelu(y).transpose(1, 2)


def channels_last_taps(weight: Tensor) -> Tensor:
    """A [out, in, K] conv weight with the same values, laid out [out, K, in] in memory."""
    return weight.transpose(1, 2).contiguous().transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; q, k and v come from one fused projection (rows: q, then k, then v),
    which `checkpoint.py` assembles from fairseq's three, so the input is read once per layer."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.num_heads = dims.num_heads
        self.qkv_proj = nn.Linear(dims.embed_dim, 3 * dims.embed_dim)
        self.out_proj = nn.Linear(dims.embed_dim, dims.embed_dim)

    def forward(self, x: Tensor, key_mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        batch, frames, _ = x.shape
        q, k, v = self.qkv_proj(x).view(batch, frames, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # True where a query may look at a key: padded keys are hidden from every query.
        allowed = None if key_mask is None else ~key_mask[:, None, None, :]
        # torch's fused kernel, except where the weights are wanted, and for half precision on the
        # CPU, where two plain matrix products beat it at ECG-FM's ~156 frames (~1.5x per layer).
        if not need_weights and (q.dtype == torch.float32 or q.device.type != "cpu"):
            return self.out_proj(self._merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed))), None
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        probs = scores.float().softmax(dim=-1)  # in fp32 whatever the matmul precision
        out = self.out_proj(self._merge_heads(probs.to(v.dtype) @ v))
        return out, (probs.mean(dim=1) if need_weights else None)

    @staticmethod
    def _merge_heads(out: Tensor) -> Tensor:
        """[B, heads, T, head_dim] → [B, T, D]."""
        batch, heads, frames, head_dim = out.shape
        return out.transpose(1, 2).reshape(batch, frames, heads * head_dim)


class EncoderLayer(nn.Module):
    """A post-LN transformer layer: normalise after each residual add, as ECG-FM was trained."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.attention = SelfAttention(dims)
        self.attention_norm = nn.LayerNorm(dims.embed_dim)
        self.fc1 = nn.Linear(dims.embed_dim, dims.ffn_dim)
        self.fc2 = nn.Linear(dims.ffn_dim, dims.embed_dim)
        self.ffn_norm = nn.LayerNorm(dims.embed_dim)

    def forward(self, x: Tensor, key_mask: Tensor | None, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        # The matrix products run in the dtype of this layer's Linear weights (fp32, or a half
        # precision chosen by `set_precision`); the residual stream and both norms stay in fp32.
        matmul_dtype = self.fc1.weight.dtype
        attended, weights = self.attention(x.to(matmul_dtype), key_mask, need_weights)
        x = self.attention_norm(x + attended.float())
        hidden = _gelu(self.fc1(x.to(matmul_dtype)), self.fc1)
        x = self.ffn_norm(x + self.fc2(hidden).float())
        return x, weights


class ECGFM(nn.Module):
    """The ECG-FM encoder, with the 17-label head when `dims.num_labels` is set.

    Input: standardised 12-lead ECG segments [B, 12, L] (L = 2500: 5 s at 500 Hz), and optionally a
    bool padding mask [B, L] (or [B, 12, L]) that is True at padded samples.
    """

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.feature_extractor = FeatureExtractor(dims)
        conv_channels = dims.conv_layers[-1][0]
        self.feature_norm = nn.LayerNorm(conv_channels)
        self.feature_projection = (nn.Linear(conv_channels, dims.embed_dim)
                                   if conv_channels != dims.embed_dim else nn.Identity())
        self.positional_conv = PositionalConv(dims)
        self.encoder_norm = nn.LayerNorm(dims.embed_dim)
        self.layers = nn.ModuleList(EncoderLayer(dims) for _ in range(dims.num_layers))
        self.head = nn.Linear(dims.embed_dim, dims.num_labels) if dims.num_labels else None
        self.provenance: dict = {}

    def frame_mask(self, padding_mask: Tensor | None, frames: int) -> Tensor | None:
        """Sample-level padding → frame-level padding, by the conv stack's own length arithmetic."""
        if padding_mask is None or not bool(padding_mask.any()):
            return None
        if padding_mask.dim() == 3:
            padding_mask = padding_mask[:, 0]
        lengths = self.feature_extractor.output_lengths((~padding_mask).long().sum(-1))
        mask = torch.arange(frames, device=lengths.device)[None, :] >= lengths[:, None]
        mask[lengths <= 0] = False  # a record shorter than one frame stays unmasked, as in fairseq
        return mask

    def forward(self, source: Tensor, padding_mask: Tensor | None = None,
                return_attention: bool | str = False) -> ModelOutput:
        """`return_attention`: True gives every layer's attention weights, "last" only the last
        layer's (all saliency needs): the layers before it keep torch's fused kernel."""
        if source.device.type == "cpu":
            # One forward at a time per process on the CPU: each already uses every allowed core,
            # so concurrent requests (an app's worker threads) would only oversubscribe them.
            with _CPU_FORWARD_LOCK:
                return self._forward(source, padding_mask, return_attention)
        return self._forward(source, padding_mask, return_attention)

    def _forward(self, source: Tensor, padding_mask: Tensor | None, return_attention: bool | str) -> ModelOutput:
        if source.dim() == 2:
            source = source.unsqueeze(1)
        features = self.feature_extractor(source).transpose(1, 2)
        features = self.feature_norm(features)
        frame_mask = self.frame_mask(padding_mask, features.shape[1])
        x = self.feature_projection(features)
        x = x + self.positional_conv(x)
        if frame_mask is not None:
            x = x.masked_fill(frame_mask[..., None], 0.0)
        x = self.encoder_norm(x)
        attention = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            need = return_attention is True or (return_attention == "last" and i == last)
            x, weights = layer(x, frame_mask, need)
            if need:
                attention.append(weights)
        logits = None
        if self.head is not None:
            if frame_mask is not None:
                x = x.masked_fill(frame_mask[..., None], 0.0)
            logits = self.head(pool(x))
        return ModelOutput(logits=logits, hidden=x, frame_mask=frame_mask,
                           attention=torch.stack(attention, dim=1) if attention else None)


def pool(hidden: Tensor, frame_mask: Tensor | None = None) -> Tensor:
    """ECG-FM's pooling: the mean of each channel over its non-zero frames.

    Padded frames are zeroed first (fairseq's `get_features(aggregate=True)` convention), so they
    never count; for the classifier's `hidden` they are zero already.
    """
    if frame_mask is not None:
        hidden = hidden.masked_fill(frame_mask[..., None], 0.0)
    return hidden.sum(dim=1) / (hidden != 0).sum(dim=1)


# --- Precision modes and threads ------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "fp16")
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX); without it
    oneDNN emulates them, slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: str, device: str | torch.device) -> None:
    """Refuse a precision the device cannot run well, before anything is loaded."""
    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise ECGFMError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    if precision == "fp16" and kind != "cuda":
        raise ECGFMError("precision 'fp16' needs a CUDA device; on the CPU use 'fp32' or 'bf16'.")
    if precision == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        raise ECGFMError("precision 'bf16' needs a CPU with bfloat16 instructions (AVX512-BF16 or AMX); "
                         "this one would run it slower than fp32, so use 'fp32'.")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ECGFMError("precision 'bf16' is not supported by this GPU; use 'fp16' or 'fp32'.")


def use_half_matmuls(model: ECGFM, dtype: torch.dtype) -> ECGFM:
    """Store the transformer's Linear weights (>90% of the work) and the positional conv's in `dtype`,
    in place; those products and attention then run in `dtype`. The feature convolutions, the
    residual stream, every norm, the softmax and the 17-label head stay in fp32, where rounding
    would compound or the work is too small to matter."""
    model.positional_conv.to(dtype)
    for layer in model.layers:
        for module in (layer.attention, layer.fc1, layer.fc2):
            module.to(dtype)
    return model


def set_precision(model: ECGFM, precision: str = "fp32") -> ECGFM:
    """Run `model` in one of PRECISIONS (see `precision_of`).

    "fp32": the reference. "bf16" (CPU with bfloat16 instructions, or CUDA) and "fp16" (CUDA):
    the transformer's matrix products in half precision (`use_half_matmuls`), faster and approximate.
    """
    check_precision(precision, next(model.parameters()).device)
    return use_half_matmuls(model, HALF_DTYPES.get(precision, torch.float32))


def precision_of(model: ECGFM) -> str:
    """The precision `model` runs in, read from its weights, so it can never be misreported."""
    dtype = model.layers[0].fc1.weight.dtype
    return next((name for name, half in HALF_DTYPES.items() if half == dtype), "fp32")


def allowed_cpus() -> int:
    """CPUs this process may use: its affinity mask, further capped by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def configure_threads() -> int:
    """Cap torch's intra-op threads at the CPUs the process is allowed (never more); returns the count."""
    allowed = allowed_cpus()
    if torch.get_num_threads() > allowed:
        torch.set_num_threads(allowed)
    return torch.get_num_threads()
