"""ECG-FM, the ECG foundation model, in plain PyTorch: read ECG files, predict findings, embed.

    import ecgfm
    model = ecgfm.load_model("finetuned")   # or "pretrained", or a path to a .pt file
    ecg = ecgfm.read_ecg("rec.hea")
    result = ecgfm.predict(model, ecg)

Research use only: ECG-FM is not a medical device and its outputs are not diagnoses.
torch is imported when a model is loaded, plotting (matplotlib) on first use: reading files alone
stays light.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .errors import CheckpointError, ECGFMError, ECGReadError, WeightsUnavailableError
from .io import ECGRecord, read_ecg, read_ecgs
from .labels import LABEL_NAMES, LABELS
from .predict import Prediction, predict  # after the submodule import, so the function wins the name
from .preprocess import prepare
from .version import __version__

if TYPE_CHECKING:
    from .model import ECGFM


def __getattr__(name: str):
    if name == "plot_ecg":
        from .plot import plot_ecg
        return plot_ecg
    raise AttributeError(f"module 'ecgfm' has no attribute {name!r}")


def load_model(checkpoint: str | os.PathLike = "finetuned", device: str | None = None,
               precision: str = "fp32") -> "ECGFM":
    """ECG-FM ready to run: "finetuned" (17 findings), "pretrained" (embeddings) or a checkpoint path.

    Named checkpoints come from the Hugging Face Hub cache (wanglab/ecg-fm, revision from
    ECGFM_REVISION) unless ECGFM_CHECKPOINT / ECGFM_PRETRAINED_CHECKPOINT names a local file.
    The model records where its weights came from in `model.provenance`.
    `precision`: "fp32" (default, the reference), "bf16" (the transformer's matrix products in
    bfloat16: ~1.9x faster on a CPU with bfloat16 instructions, approximate, see the README) or
    "fp16" (the same in float16, CUDA only); results name it in their provenance ("precision").
    """
    import torch

    from .checkpoint import load_checkpoint
    from .hub import locate_checkpoint
    from .model import check_precision, set_precision

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ECGFMError(f"The device {device} was asked for, but torch finds no CUDA GPU on this "
                         "machine; use the CPU (device 'cpu').")
    check_precision(precision, device)
    path, provenance = locate_checkpoint(checkpoint)
    model = load_checkpoint(path, sha256=provenance.get("sha256"), precision=precision)
    model.provenance = provenance
    return set_precision(model.to(device), precision)


__all__ = ["load_model", "read_ecg", "read_ecgs", "predict", "prepare", "plot_ecg", "ECGRecord", "Prediction",
           "LABELS", "LABEL_NAMES", "ECGFMError", "ECGReadError", "CheckpointError", "WeightsUnavailableError",
           "__version__"]
