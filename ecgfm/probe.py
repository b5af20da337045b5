"""Linear probes on ECG-FM embeddings: fit, evaluate, save, load and apply.

A probe is one logistic regression per label on standardized embeddings (ECG-FM's encoder stays
frozen; only a linear layer is learnt), the way ECG-FM's linear-probing experiments adapt it to new
labels. `fit_probe` holds out part of the records (no patient on both sides when patients are
given), fits on the rest, and reports AUROC and AUPRC on the held-out part with percentile
bootstrap 95 % intervals. `Probe.save` writes the weights as safetensors and a JSON card beside them
(labels, sizes, metrics, the encoder's sha256); `Probe.load` reads and checks both; `Probe.predict_proba`
applies the probe, refusing embeddings from another encoder when both sha256s are known.

`fit_from_files` and `predict_from_file` do the same from `ecgfm batch --embeddings` Parquet output
and a labels CSV (one 0/1 column per label, an id column, optionally a patient column).

What this is not: fine-tuning of ECG-FM, or a validated classifier. A probe's metrics describe its
held-out records only; research use, not clinical decisions.

Fitting uses scikit-learn (LogisticRegression, roc_auc_score, average_precision_score); applying a
saved probe needs only numpy and scipy. pandas reads the labels CSV and pyarrow the Parquet file,
both imported only when a file is read.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ECGFMError
from .version import __version__

FORMAT = "ecgfm-probe/1"
WEIGHTS_FILE = "probe.safetensors"
CARD_FILE = "probe.json"
MIN_POSITIVES = 10           # per label, of each class, among the labelled records
_BOOTSTRAP_CELLS = 1_000_000  # resamples x held-out records computed at once (~50 MB)


# ---------------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------------

@dataclass
class Probe:
    """Per label: P(label) = sigmoid(weight · (embedding − mean) / scale + bias).

    `mean` and `scale` [D] standardize the embedding (fitted on the training records only),
    `weight` [L, D] and `bias` [L] are the logistic regressions, one row per name in `labels`.
    `card` says how the probe was made and how well it did (see `fit_probe`).
    """

    labels: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    card: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def encoder_sha256(self) -> str | None:
        """The sha256 of the encoder whose embeddings the probe was fitted on (None when not known)."""
        return (self.card.get("encoder") or {}).get("sha256")

    def check_encoder(self, encoder: Any) -> None:
        """Refuse embeddings from another encoder: `encoder` is a sha256, a provenance dict (the
        encoder's `model.provenance`, or a Prediction's provenance with its "embedder"), a model, or None
        (not known: nothing to check)."""
        theirs, ours = encoder_sha256(encoder), self.encoder_sha256
        if theirs and ours and theirs.lower() != ours.lower():
            raise ECGFMError(f"These embeddings come from the encoder with sha256 {theirs[:12]}…, but the probe "
                             f"was fitted on embeddings of the encoder with sha256 {ours[:12]}…; embed the "
                             "records with that encoder, or fit a probe on these embeddings.")

    def logits(self, embeddings: np.ndarray, *, encoder: Any = None) -> np.ndarray:
        """The probe's logits [N, L] for embeddings [N, D] (checked against the encoder, as above)."""
        self.check_encoder(encoder)
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ECGFMError(f"The probe takes {self.dim}-value embeddings, but these have shape "
                             f"{tuple(x.shape)}; use embeddings of the encoder the probe was fitted on.")
        if not np.isfinite(x).all():
            raise ECGFMError("Some embeddings contain NaN or infinite values; the probe cannot be applied to them.")
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict_proba(self, embeddings: np.ndarray, *, encoder: Any = None
                      ) -> dict[str, np.ndarray] | dict[str, float]:
        """Probabilities per label: {label: array [N]} for embeddings [N, D]; {label: float} for one [D]."""
        from scipy.special import expit

        x = np.asarray(embeddings)
        single = x.ndim == 1
        p = expit(self.logits(x[None] if single else x, encoder=encoder))
        if single:
            return {name: float(p[0, i]) for i, name in enumerate(self.labels)}
        return {name: p[:, i] for i, name in enumerate(self.labels)}

    def identity(self) -> dict:
        """What a result says of the probe that produced it, so that its numbers can be traced and
        judged: its labels, weights' sha256, training size and held-out AUROC per label."""
        metrics = self.card.get("metrics") or {}
        return {"labels": list(self.labels), "weights_sha256": (self.card.get("weights") or {}).get("sha256"),
                "n_train": self.card.get("n_train"), "created": self.card.get("created"),
                "auroc": {name: (metrics.get(name) or {}).get("auroc") for name in self.labels}}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `probe.safetensors` (mean, scale, weight, bias; float64) and `probe.json` (the card)."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            weights = folder / WEIGHTS_FILE
            save_file({"mean": np.ascontiguousarray(self.mean, dtype=np.float64),
                       "scale": np.ascontiguousarray(self.scale, dtype=np.float64),
                       "weight": np.ascontiguousarray(self.weight, dtype=np.float64),
                       "bias": np.ascontiguousarray(self.bias, dtype=np.float64)},
                      weights, metadata={"format": FORMAT, "labels": json.dumps(self.labels)})
            self.card = {**self.card, "format": FORMAT, "labels": list(self.labels), "embedding_dim": self.dim,
                         "weights": {"file": WEIGHTS_FILE, "sha256": _file_sha256(weights)}}
            (folder / CARD_FILE).write_text(json.dumps(self.card, indent=2, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
        except OSError as error:
            raise ECGFMError(f"The probe could not be written to {folder} ({error.strerror or error}).") from error
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Probe":
        """A probe saved by `save`: the folder (or its probe.json), its weights checked against the card."""
        from safetensors.numpy import load_file

        path = Path(folder)
        folder = path.parent if path.name == CARD_FILE else path
        card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
        if not card_path.is_file() or not weights_path.is_file():
            raise ECGFMError(f"{folder} is not a saved probe: it needs {CARD_FILE} and {WEIGHTS_FILE} "
                             "(written by `ecgfm probe fit --out`).")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ECGFMError(f"{card_path} could not be read as JSON ({error}).") from error
        if not isinstance(card, dict) or card.get("format") != FORMAT:
            raise ECGFMError(f"{card_path} is not an ecgfm probe card of format {FORMAT} "
                             f"(it says {card.get('format') if isinstance(card, dict) else None!r}).")
        expected = (card.get("weights") or {}).get("sha256")
        if expected and _file_sha256(weights_path) != expected:
            raise ECGFMError(f"{weights_path} does not match the sha256 its card records; the probe folder was "
                             "altered since it was saved, fit or copy it again.")
        try:
            tensors = load_file(weights_path)
            labels = list(card["labels"])
            probe = cls(labels=labels, mean=tensors["mean"], scale=tensors["scale"], weight=tensors["weight"],
                        bias=tensors["bias"], card=card)
        except Exception as error:  # noqa: BLE001 - any malformed file is one sentence
            raise ECGFMError(f"{weights_path} could not be read as the probe's weights ({error}).") from error
        d, n = probe.dim, len(labels)
        if probe.scale.shape != (d,) or probe.weight.shape != (n, d) or probe.bias.shape != (n,):
            raise ECGFMError(f"{weights_path} holds tensors whose shapes do not fit its card's {n} labels.")
        return probe


def encoder_sha256(encoder: Any) -> str | None:
    """The encoder's sha256 from a sha256 string, a provenance dict, a Prediction's provenance or a model."""
    if encoder is None:
        return None
    if isinstance(encoder, str):
        return encoder or None
    provenance = getattr(encoder, "provenance", encoder)
    if isinstance(provenance, Mapping):
        if isinstance(provenance.get("embedder"), Mapping):
            return provenance["embedder"].get("sha256")
        return provenance.get("sha256")
    return None


# ---------------------------------------------------------------------------------------------------
# Fitting and evaluating
# ---------------------------------------------------------------------------------------------------

def fit_probe(embeddings: np.ndarray, labels: Any, groups: Sequence | np.ndarray | None = None, *,
              encoder: Any = None, seed: int = 0, test_size: float = 0.2, bootstrap: int = 1000,
              C: float = 1.0, min_positives: int = MIN_POSITIVES, max_iter: int = 1000) -> tuple[Probe, dict]:
    """Fit a probe on a training split and evaluate it on the held-out split.

    `embeddings` [N, D]; `labels`: a pandas DataFrame or a {label: array [N]} mapping of 0/1 values
    (NaN or None: not labelled, that record is left out of that label only); `groups` [N]: the
    patient of each record (no patient in both splits; None: each record its own). `encoder`: the
    encoder's provenance (or its sha256), recorded in the card and checked when the probe is applied.
    `test_size` of the records (of the patients' records) are held out, chosen with `seed`, balanced
    so that every label has both classes on both sides; `bootstrap` resamples (0: none) of the
    held-out records (of its patients, when groups are given) give the 95 % intervals. `C` is the
    inverse L2 strength of each logistic regression, as in scikit-learn.

    Returns the probe (fitted on the training split only: the card's metrics describe this very
    probe) and the report {label: {auroc, auroc_ci95, auprc, auprc_ci95, n_test, positives_test, …}}.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ECGFMError(f"The embeddings must be a [records, dimensions] array; these have shape {tuple(x.shape)}.")
    if not np.isfinite(x).all():
        raise ECGFMError("Some embeddings contain NaN or infinite values; remove those records before fitting.")
    if not 0.0 < test_size < 1.0:
        raise ECGFMError(f"The held-out fraction must be between 0 and 1 (exclusive); {test_size} was given.")
    if C <= 0:
        raise ECGFMError(f"The inverse regularization strength C must be positive; {C} was given.")
    names, y = _label_matrix(labels, len(x))
    units = _units(groups, len(x))
    _check_counts(names, y, min_positives)

    test = holdout_split(y, groups, test_size=test_size, seed=seed)
    train = ~test
    counts = {}
    for i, name in enumerate(names):
        counts[name] = {side: {"positives": int(np.sum(y[mask, i] == 1)), "negatives": int(np.sum(y[mask, i] == 0))}
                        for side, mask in (("train", train), ("test", test))}
        for side in ("train", "test"):
            if not counts[name][side]["positives"] or not counts[name][side]["negatives"]:
                missing = "positive" if not counts[name][side]["positives"] else "negative"
                where = "training" if side == "train" else "held-out"
                raise ECGFMError(
                    f"The label '{name}' has no {missing} record in the {where} split (seed {seed}); label more "
                    "records or patients, or change the held-out fraction (--test-size).")

    mean = x[train].mean(axis=0)
    scale = x[train].std(axis=0)
    scale[scale <= 8 * np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1.0)] = 1.0  # constant features
    z = (x - mean) / scale

    weight, bias, converged = np.zeros((len(names), x.shape[1])), np.zeros(len(names)), {}
    for i, name in enumerate(names):
        rows = train & ~np.isnan(y[:, i])
        weight[i], bias[i], converged[name] = _fit_logistic(z[rows], y[rows, i], C, max_iter)

    logits = z[test] @ weight.T + bias
    report = {}
    for i, name in enumerate(names):
        known = ~np.isnan(y[test, i])
        report[name] = evaluate(y[test, i][known], logits[known, i], units[test][known] if groups is not None else None,
                                bootstrap=bootstrap, seed=seed)

    n_units = len(np.unique(units))
    card = {
        "format": FORMAT,
        "what": ("Linear probe on ECG-FM embeddings: one L2-regularized logistic regression per label on "
                 "standardized embeddings. Research use only; not a medical device."),
        "labels": list(names),
        "embedding_dim": int(x.shape[1]),
        "encoder": _encoder_facts(encoder),
        "ecgfm_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "n_records": int(len(x)),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "split": {"by": "patient" if groups is not None else "record", "seed": int(seed), "test_size": float(test_size),
                  "n_train": int(train.sum()), "n_test": int(test.sum()),
                  **({"patients": int(n_units), "patients_train": int(len(np.unique(units[train]))),
                      "patients_test": int(len(np.unique(units[test])))} if groups is not None else {})},
        "counts": counts,
        "training": {"model": "logistic regression", "penalty": "l2", "C": float(C), "solver": "scikit-learn lbfgs",
                     "max_iter": int(max_iter), "standardized": True, "fitted_on": "training split",
                     "converged": converged},
        "metrics": report,
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "interval": "percentile, 95 %",
                      "unit": "patient" if groups is not None else "record",
                      "note": "resamples of the held-out split with a single class are skipped"},
    }
    probe = Probe(labels=list(names), mean=mean, scale=scale, weight=weight, bias=bias, card=card)
    return probe, report


def holdout_split(labels: np.ndarray, groups: Sequence | np.ndarray | None = None, *, test_size: float = 0.2,
                  seed: int = 0) -> np.ndarray:
    """Which records are held out (bool [N]): about `test_size` of them, whole patients only.

    `labels` [N, L] (0/1, NaN when not labelled) are balanced between the sides: patients are taken in
    a random order (from `seed`) and each joins the held-out side when that brings the held-out counts
    (records, and each label's positives and negatives) closer to `test_size` of the totals. The same
    records, labels, patients and seed always give the same split (`fit_probe` uses this one).
    """
    y = np.asarray(labels, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    units = _units(groups, len(y))
    codes, index = np.unique(units, return_inverse=True)
    # per patient: records, then each label's positives, then its negatives
    per_record = np.concatenate([np.ones((len(y), 1)), (y == 1), (y == 0)], axis=1)
    per_unit = np.zeros((len(codes), per_record.shape[1]))
    np.add.at(per_unit, index, per_record)
    target = test_size * per_unit.sum(axis=0)
    weight = 1.0 / np.maximum(target, 1.0) ** 2

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(codes))
    held, chosen = np.zeros(per_unit.shape[1]), np.zeros(len(codes), dtype=bool)
    cost = float(np.sum(weight * target ** 2))
    for unit in order:
        after = held + per_unit[unit]
        new_cost = float(np.sum(weight * (after - target) ** 2))
        if new_cost < cost:
            held, cost, chosen[unit] = after, new_cost, True
    if chosen.all() or not chosen.any():  # a single patient, or one patient holding almost everything
        raise ECGFMError(f"The records cannot be split into training and held-out parts by patient: there are "
                         f"only {len(codes)} patients; give records of more patients.")
    return chosen[index]


def evaluate(y_true: np.ndarray, scores: np.ndarray, groups: Sequence | np.ndarray | None = None, *,
             bootstrap: int = 1000, seed: int = 0) -> dict:
    """AUROC and AUPRC (average precision) of `scores` for 0/1 `y_true`, with percentile bootstrap
    95 % intervals: `bootstrap` resamples with replacement of the records (of the `groups`, whole,
    when given), each resample with a single class skipped; `seed` fixes them."""
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ECGFMError("The labels and scores to evaluate must be two arrays of the same length.")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ECGFMError("The labels to evaluate must be 0 or 1.")
    positives = int(np.sum(y == 1))
    if positives == 0 or positives == len(y):
        raise ECGFMError("AUROC and AUPRC need both positive and negative records; these labels have one class only.")
    auroc, auprc = _ranking_metrics(y, s, np.ones((1, len(y))))
    out = {"auroc": _rounded(auroc[0]), "auroc_ci95": None, "auprc": _rounded(auprc[0]), "auprc_ci95": None,
           "n_test": int(len(y)), "positives_test": positives, "prevalence_test": _rounded(positives / len(y)),
           "bootstrap_used": 0}
    if bootstrap > 0:
        units = _units(groups, len(y))
        _, index = np.unique(units, return_inverse=True)
        n_units = int(index.max()) + 1
        rng = np.random.default_rng(seed)
        rocs, prcs = [], []
        chunk = max(1, _BOOTSTRAP_CELLS // max(len(y), n_units))
        for first in range(0, bootstrap, chunk):
            b = min(chunk, bootstrap - first)
            draws = rng.integers(0, n_units, size=(b, n_units)) + (np.arange(b) * n_units)[:, None]
            times = np.bincount(draws.ravel(), minlength=b * n_units).reshape(b, n_units)
            weights = times[:, index].astype(np.float64)   # each record counts as often as its patient was drawn
            roc, prc = _ranking_metrics(y, s, weights)
            ok = np.isfinite(roc)
            rocs.append(roc[ok])
            prcs.append(prc[ok])
        rocs, prcs = np.concatenate(rocs), np.concatenate(prcs)
        out["bootstrap_used"] = int(len(rocs))
        if len(rocs):
            out["auroc_ci95"] = [_rounded(v) for v in np.percentile(rocs, [2.5, 97.5])]
            out["auprc_ci95"] = [_rounded(v) for v in np.percentile(prcs, [2.5, 97.5])]
    return out


def _ranking_metrics(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's AUROC and average precision [B] for B weightings [B, N] of the same records (a
    weight of k counts the record k times: a bootstrap resample). NaN where a weighting has one class."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    auroc, auprc = np.full(len(weights), np.nan), np.full(len(weights), np.nan)
    for b, w in enumerate(weights):
        kept = w > 0
        if len(np.unique(y[kept])) == 2:
            auroc[b] = roc_auc_score(y[kept], scores[kept], sample_weight=w[kept])
            auprc[b] = average_precision_score(y[kept], scores[kept], sample_weight=w[kept])
    return auroc, auprc


def _fit_logistic(z: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> tuple[np.ndarray, float, bool]:
    """scikit-learn's L2 logistic regression (lbfgs, intercept not penalized) on standardized embeddings."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-10).fit(z, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0]), converged


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------

def _label_matrix(labels: Any, n: int) -> tuple[list[str], np.ndarray]:
    """Label names and values [N, L] as floats: 0, 1 or NaN (not labelled); anything else refused."""
    if hasattr(labels, "columns") and hasattr(labels, "__getitem__"):   # a pandas DataFrame
        columns = {str(name): labels[name].to_numpy() for name in labels.columns}
    elif isinstance(labels, Mapping):
        columns = {str(name): np.asarray(values) for name, values in labels.items()}
    else:
        raise ECGFMError("The labels must be a table (a pandas DataFrame) or a {label: values} mapping.")
    if not columns:
        raise ECGFMError("No label was given: the labels need at least one column of 0/1 values.")
    names = list(columns)
    y = np.full((n, len(names)), np.nan)
    for i, name in enumerate(names):
        values = columns[name]
        if values.ndim != 1 or len(values) != n:
            raise ECGFMError(f"The label '{name}' has {len(values)} values for {n} embeddings; give one per record.")
        y[:, i] = _zero_one(name, values)
    return names, y


def _zero_one(name: str, values: np.ndarray) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, (bool, np.bool_)):
            out[row] = float(value)
            continue
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in {"", "na", "nan", "n/a", "none", "null"}:
                continue
            try:
                value = float(text)
            except ValueError:
                value = text
        if isinstance(value, (int, float, np.integer, np.floating)) and value in (0, 1):
            out[row] = float(value)
        elif isinstance(value, (float, np.floating)) and math.isnan(value):
            continue
        else:
            shown = repr(value) if isinstance(value, str) else str(value)
            raise ECGFMError(f"The label '{name}' has the value {shown} (row {row + 1}); labels must be 0 or 1, "
                             "or left empty where not known.")
    return out


def _units(groups: Sequence | np.ndarray | None, n: int) -> np.ndarray:
    """Each record's patient as text (the same patients give the same split however they are typed);
    without groups, each record is its own."""
    if groups is None:
        return np.arange(n)
    values = list(groups)
    if len(values) != n:
        raise ECGFMError(f"{len(values)} patients were given for {n} records; give one patient per record.")
    empty = [i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))
             or (isinstance(v, str) and not v.strip())]
    if empty:
        raise ECGFMError(f"{len(empty)} records have no patient (the first is row {empty[0] + 1}); every record "
                         "needs its patient for a split by patient.")
    return np.asarray([str(v) for v in values])


def _check_counts(names: list[str], y: np.ndarray, min_positives: int) -> None:
    for i, name in enumerate(names):
        positives, negatives = int(np.sum(y[:, i] == 1)), int(np.sum(y[:, i] == 0))
        if min(positives, negatives) < max(min_positives, 2):
            fewer = "positive" if positives <= negatives else "negative"
            raise ECGFMError(f"The label '{name}' has only {min(positives, negatives)} {fewer} records; a probe needs "
                             f"at least {max(min_positives, 2)} positive and {max(min_positives, 2)} negative "
                             "records per label.")


def _encoder_facts(encoder: Any) -> dict:
    provenance = getattr(encoder, "provenance", encoder)
    if isinstance(provenance, Mapping) and isinstance(provenance.get("embedder"), Mapping):
        provenance = provenance["embedder"]
    if isinstance(provenance, Mapping):
        return {k: provenance[k] for k in ("sha256", "file", "repo", "revision", "source", "precision")
                if provenance.get(k) is not None}
    sha = encoder_sha256(encoder)
    return {"sha256": sha} if sha else {}


@dataclass
class EmbeddingTable:
    """`ecgfm batch --embeddings` output as arrays: the records with an embedding, and what produced them."""

    ids: list[str]
    embeddings: np.ndarray          # [N, D] float32
    provenance: dict                # from the file's metadata ({} when it has none)
    without_embedding: list[str]    # ids of records the batch could not embed (unreadable, unusable)
    status: dict[str, str] = field(default_factory=dict)   # id -> the batch's status ("ok", "limited", ...)

    @property
    def encoder_sha256(self) -> str | None:
        return _find_encoder_sha256(self.provenance)


def read_embeddings(path: str | os.PathLike, *, id_column: str = "id",
                    embedding_column: str = "embedding") -> EmbeddingTable:
    """The ids, embeddings and provenance of a Parquet file written by `ecgfm batch --embeddings`."""
    path = Path(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ECGFMError("Reading Parquet files needs pyarrow, which is not installed; `pip install pyarrow` "
                         "(it comes with ecgfm's requirements).") from error
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise ECGFMError(f"{path.name} could not be read as a Parquet file ({error}).") from error
    for column, hint in ((id_column, "name the id column"), (embedding_column, "run `ecgfm batch` with --embeddings")):
        if column not in table.column_names:
            raise ECGFMError(f"{path.name} has no column '{column}' ({hint}); its columns are "
                             f"{', '.join(table.column_names)}.")
    ids = [None if v is None else str(v) for v in table.column(id_column).to_pylist()]
    if any(i is None for i in ids):
        raise ECGFMError(f"{path.name} has records without an id in its column '{id_column}'.")
    vectors, valid = _vectors(table.column(embedding_column), path.name)
    provenance = {}
    for key, value in (table.schema.metadata or {}).items():
        if key.startswith(b"ARROW:") or key == b"pandas":
            continue
        try:
            provenance[key.decode("utf-8", "replace")] = json.loads(value)
        except ValueError:
            provenance[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    status = {}
    if "status" in table.column_names:
        status = {i: str(v) for i, v in zip(ids, table.column("status").to_pylist()) if v is not None}
    return EmbeddingTable(ids=[i for i, ok in zip(ids, valid) if ok], embeddings=vectors[valid],
                          provenance=provenance, without_embedding=[i for i, ok in zip(ids, valid) if not ok],
                          status=status)


def _vectors(column, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column as ([N, D] float32, zeros where null; which rows have one [N])."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size   # the child array holds a slot for every row, null rows included
        flat = array.values.slice(array.offset * size, len(array) * size)
        return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(array), size), valid
    rows = [None if v is None else np.asarray(v, dtype=np.float32) for v in array.to_pylist()]
    sizes = {len(v) for v in rows if v is not None}
    if len(sizes) > 1:
        raise ECGFMError(f"{name} holds embeddings of different lengths ({', '.join(map(str, sorted(sizes)))}); "
                         "all must come from the same encoder.")
    size = sizes.pop() if sizes else 0
    matrix = np.zeros((len(rows), size), np.float32)
    for row, vector in enumerate(rows):
        if vector is not None:
            matrix[row] = vector
    return matrix, valid


def _find_encoder_sha256(meta: Any) -> str | None:
    """The encoder's sha256 anywhere in a file's provenance: an "embedder" (or "encoder") entry's sha256."""
    if isinstance(meta, Mapping):
        for key in ("embedder", "encoder", "encoder_sha256", "embedder_sha256"):
            value = meta.get(key)
            if isinstance(value, Mapping) and isinstance(value.get("sha256"), str):
                return value["sha256"]
            if isinstance(value, str) and len(value) == 64:
                return value
        for value in meta.values():
            found = _find_encoder_sha256(value)
            if found:
                return found
    elif isinstance(meta, list):
        for value in meta:
            found = _find_encoder_sha256(value)
            if found:
                return found
    return None


def _encoder_provenance(meta: Any) -> dict | None:
    """The embedder's provenance dict in a file's metadata, when there is one."""
    if isinstance(meta, Mapping):
        for key in ("embedder", "encoder"):
            if isinstance(meta.get(key), Mapping) and meta[key].get("sha256"):
                return dict(meta[key])
        for value in meta.values():
            found = _encoder_provenance(value)
            if found:
                return found
    return None


def read_labels(path: str | os.PathLike, *, id_column: str = "id", patient_column: str | None = None,
                label_columns: Sequence[str] | None = None):
    """A labels CSV as (ids, labels DataFrame of 0/1/NaN, patients or None), its columns checked."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ECGFMError(f"{path.name} could not be read as a CSV file ({error}).") from error
    table.columns = [str(c).strip() for c in table.columns]
    columns = ", ".join(table.columns)
    if id_column not in table.columns:
        raise ECGFMError(f"{path.name} has no column '{id_column}' for the record ids (its columns are {columns}); "
                         "name the id column with --id-column.")
    if patient_column is not None and patient_column not in table.columns:
        raise ECGFMError(f"{path.name} has no column '{patient_column}' for the patients (its columns are {columns}).")
    ids = [v.strip() for v in table[id_column]]
    if any(not v for v in ids):
        raise ECGFMError(f"{path.name} has rows without an id in its column '{id_column}'.")
    duplicated = sorted(v for v, count in Counter(ids).items() if count > 1)
    if duplicated:
        raise ECGFMError(f"{path.name} lists the id '{duplicated[0]}' more than once ({len(duplicated)} ids repeat); "
                         "give each record one row.")
    inferred = label_columns is None
    if inferred:
        label_columns = [c for c in table.columns if c not in (id_column, patient_column)]
    else:
        absent = [c for c in label_columns if c not in table.columns]
        if absent:
            raise ECGFMError(f"{path.name} has no label column '{absent[0]}' (its columns are {columns}).")
    if not label_columns:
        raise ECGFMError(f"{path.name} has no label column: besides '{id_column}' it needs one 0/1 column per label.")
    try:
        labels = pd.DataFrame({c: _zero_one(c, table[c].to_numpy(dtype=object)) for c in label_columns})
    except ECGFMError as error:
        if not inferred:
            raise
        raise ECGFMError(f"{path.name}: {str(error)[:-1]}; every column but the id (and patient) column is read as "
                         "a label, so name the patient column or leave other columns out.") from None
    patients = None if patient_column is None else [v.strip() for v in table[patient_column]]
    return ids, labels, patients


def fit_from_files(embeddings: str | os.PathLike | EmbeddingTable, labels: str | os.PathLike, *, id_column: str = "id",
                   patient_column: str | None = None, label_columns: Sequence[str] | None = None,
                   out: str | os.PathLike | None = None, seed: int = 0, test_size: float = 0.2,
                   bootstrap: int = 1000, C: float = 1.0, min_positives: int = MIN_POSITIVES) -> tuple[Probe, dict]:
    """`ecgfm probe fit`: join a batch's embeddings (Parquet) to a labels CSV on `id_column`, fit and
    evaluate a probe (see `fit_probe`), and save it to `out` when given.

    Every id in the labels must name a record of the embeddings file; records the batch could not embed
    are left out (the card counts them), records without a label row are not used. `embeddings` may
    also be an EmbeddingTable already read.
    """
    table = embeddings if isinstance(embeddings, EmbeddingTable) else read_embeddings(embeddings)
    label_ids, label_table, patients = read_labels(labels, id_column=id_column, patient_column=patient_column,
                                                   label_columns=label_columns)
    labels_name = Path(labels).name
    embeddings_name = "the embeddings" if isinstance(embeddings, EmbeddingTable) else Path(embeddings).name
    repeated = [i for i, count in Counter(table.ids + table.without_embedding).items() if count > 1]
    if repeated:
        raise ECGFMError(f"{embeddings_name} holds the id '{repeated[0]}' more than once; ids must name one "
                         "record each.")
    row_of = {record_id: row for row, record_id in enumerate(table.ids)}
    unembedded = set(table.without_embedding)
    unknown = [i for i in label_ids if i not in row_of and i not in unembedded]
    if unknown:
        raise ECGFMError(f"{len(unknown)} of the {len(label_ids)} ids in {labels_name} match no record in "
                         f"{embeddings_name} (the first is '{unknown[0]}'); check the --id-column and that both "
                         "files describe the same records.")
    keep = [k for k, i in enumerate(label_ids) if i in row_of]
    if not keep:
        raise ECGFMError(f"None of the records labelled in {labels_name} has an embedding in {embeddings_name}.")
    x = table.embeddings[[row_of[label_ids[k]] for k in keep]]
    y = label_table.iloc[keep].reset_index(drop=True)
    groups = None if patients is None else [patients[k] for k in keep]
    encoder = _encoder_provenance(table.provenance) or table.encoder_sha256
    probe, report = fit_probe(x, y, groups, encoder=encoder, seed=seed, test_size=test_size, bootstrap=bootstrap,
                              C=C, min_positives=min_positives)
    probe.card["inputs"] = {"embeddings": embeddings_name, "labels": labels_name, "id_column": id_column,
                            "patient_column": patient_column,
                            "left_out_without_embedding": len(label_ids) - len(keep),
                            "status": dict(Counter(table.status[label_ids[k]] for k in keep
                                                   if label_ids[k] in table.status))}
    if out is not None:
        probe.save(out)
    return probe, report


def predict_from_file(probe: Probe | str | os.PathLike, embeddings: str | os.PathLike | EmbeddingTable, *,
                      id_column: str = "id"):
    """`ecgfm probe predict`: the probe's probabilities for every record of a batch's Parquet file, as a
    pandas DataFrame (the id column, then one column per label; empty for records without an embedding).
    Refused when the file's encoder is not the probe's (both sha256s known)."""
    import pandas as pd

    probe = probe if isinstance(probe, Probe) else Probe.load(probe)
    table = embeddings if isinstance(embeddings, EmbeddingTable) else read_embeddings(embeddings, id_column=id_column)
    probe.check_encoder(table.encoder_sha256)
    frame = pd.DataFrame({id_column: table.ids + table.without_embedding})
    if len(table.ids):
        probabilities = probe.predict_proba(table.embeddings)
    else:
        probabilities = {name: np.zeros(0) for name in probe.labels}
    for name in probe.labels:
        frame[name] = np.concatenate([probabilities[name], np.full(len(table.without_embedding), np.nan)])
    return frame


def format_report(card_or_report: Mapping) -> str:
    """The metrics as a few lines of text, for the command line."""
    report = card_or_report.get("metrics", card_or_report)
    lines = []
    if "metrics" in card_or_report:
        split = card_or_report.get("split", {})
        lines.append(f"Fitted on {card_or_report.get('n_train')} records, evaluated on {card_or_report.get('n_test')} "
                     f"held-out records (split by {split.get('by', 'record')}, seed {split.get('seed')}).")
    width = max([len("label")] + [len(name) for name in report])
    lines.append(f"{'label':<{width}}  {'AUROC (95% CI)':<22}  {'AUPRC (95% CI)':<22}  positives/held out")
    for name, m in report.items():
        lines.append(f"{name:<{width}}  {_with_ci(m['auroc'], m.get('auroc_ci95')):<22}  "
                     f"{_with_ci(m['auprc'], m.get('auprc_ci95')):<22}  {m['positives_test']}/{m['n_test']}")
    return "\n".join(lines)


def _with_ci(value: float, ci: Sequence[float] | None) -> str:
    return f"{value:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _rounded(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["Probe", "fit_probe", "evaluate", "holdout_split", "encoder_sha256", "read_embeddings", "read_labels",
           "fit_from_files", "predict_from_file", "format_report", "EmbeddingTable", "FORMAT", "WEIGHTS_FILE",
           "CARD_FILE"]
