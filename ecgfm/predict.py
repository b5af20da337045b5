"""From records to ECG-FM's findings: segments → one batched forward → sigmoid → per-label aggregation.

torch is imported by the functions that run the model, so that reading files (the CLI's `info`,
the app's `/read`) never pays for it.
"""
from __future__ import annotations

import csv
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Sequence

import numpy as np

from .adequacy import Adequacy, unusable
from .errors import ECGFMError, ECGReadError
from .io.record import DeviceReport, ECGRecord
from .labels import LABELS
from .measure import QUANTITIES, Measurements, measure
from .preprocess import SAMPLE_RATE, SEGMENT_SAMPLES, PreparedECG, prepare
from .quality import SignalQuality
from .saliency import SALIENCY_NOTE, SALIENCY_OFFSET_S, check_rate, downsampled, segment_saliency

if TYPE_CHECKING:
    import torch

    from .model import ECGFM
    from .probe import Probe

log = logging.getLogger("ecgfm.predict")

DEFAULT_WINDOW_S = 10.0  # ECG-FM was trained on 10 s resting ECGs; longer recordings are windowed
MAX_BATCH_SEGMENTS = 32  # bounds memory for long windows; results do not depend on it


@dataclass
class SegmentResult:
    start_s: float
    end_s: float
    probabilities: dict[str, float]


@dataclass
class Prediction:
    """ECG-FM's reading of one record. Probabilities are the model's sigmoid outputs, nothing more.

    `adequacy` says first whether they should be read at all: None probabilities (and no
    segments) for an unusable input, probabilities marked as not reliable for a limited one.
    `quality` says what in the signal itself may mislead the model, lead by lead (`quality.py`).
    """

    name: str
    probabilities: dict[str, float] | None
    segments: list[SegmentResult]
    lead_status: dict[str, str]
    warnings: list[str]
    provenance: dict
    adequacy: Adequacy
    embedding: np.ndarray | None = None   # [D], from the pretrained encoder, averaged over segments
    attention: np.ndarray | None = None   # [S, T, T], last layer, averaged over heads
    saliency: np.ndarray | None = None    # [S, 2499] in [0, 1], NaN over padding (ecgfm.saliency)
    probe_probabilities: dict[str, float] | None = None  # the user's own probe's, never ECG-FM's
    quality: SignalQuality | None = None  # per-lead signal quality; None for an unusable input
    measurements: Measurements | None = None  # automated, approximate; with predict(..., measure=True)
    device_report: DeviceReport | None = None  # the recording device's own, as stored in the file

    def to_dict(self, saliency_hz: float = SAMPLE_RATE) -> dict:
        """A JSON-serialisable form, as the CLI and the app's API return it; the saliency (when
        computed) at `saliency_hz` (a divisor of 500 Hz; 0 leaves it out)."""
        out = {
            "file": self.name,
            "input_adequacy": self.adequacy.to_dict(),
            "probabilities": self.probabilities,
            "segments": [{"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3),
                          "probabilities": s.probabilities} for s in self.segments],
            "lead_status": self.lead_status,
            "signal_quality": self.quality.to_dict() if self.quality is not None else None,
            "warnings": self.warnings,
            "provenance": self.provenance,
        }
        if self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        if self.attention is not None:
            out["attention"] = self.attention.tolist()
        if self.saliency is not None and saliency_hz:
            # 4 decimals: far finer than any display of it, and a fifth of the JSON.
            factor = check_rate(saliency_hz)
            out["saliency"] = {"note": SALIENCY_NOTE, "rate_hz": saliency_hz,
                               "offset_s": factor * SALIENCY_OFFSET_S,  # the middle of each run
                               "per_segment": [[None if np.isnan(v) else round(float(v), 4) for v in row]
                                               for row in downsampled(self.saliency, saliency_hz)]}
        if self.probe_probabilities is not None:
            out["probe_probabilities"] = self.probe_probabilities
        if self.measurements is not None:
            out["measurements"] = self.measurements.to_dict()
        if self.device_report is not None:
            out["device_report"] = self.device_report.to_dict()
        return out


def predict(model: ECGFM, records: ECGRecord | Sequence[ECGRecord], *, embedder: ECGFM | None = None,
            attention: bool = False, saliency: bool = False, start_s: float = 0.0, duration_s: float | None = DEFAULT_WINDOW_S,
            probe: Probe | None = None, measure: bool = False, prepared: Sequence[PreparedECG] | None = None
            ) -> Prediction | list[Prediction]:
    """ECG-FM's probabilities for one record (→ a Prediction) or several (→ a list, one forward).

    Each record is cut to the window [start_s, start_s + duration_s) first (None: all of it).
    `embedder` (the pretrained encoder) adds ECG-FM's 768-d embedding; `attention` adds the last
    layer's attention map per segment; `saliency` adds ECG-FM's saliency computed from it
    (`ecgfm.saliency`: per segment, value k at start_s + (k + 0.5) / 500 s). `probe` (a linear
    probe of your own labels, `ecgfm.probe`) adds its probabilities from that embedding, kept apart
    from ECG-FM's (`Prediction.probe_probabilities`). `measure` adds the automated, approximate
    measurements of the window (`ecgfm.measure`; the first call imports scipy.signal, ~1 s).
    `prepared`: the records' windows already prepared by `prepare_window` elsewhere (`ecgfm batch
    --ray` prepares them in its reading tasks, away from the model); the window arguments then play
    no part in the prediction (the measurements, asked for, still cut the window).
    """
    if model.head is None:
        raise ECGFMError("predict needs the finetuned classifier (load_model('finetuned')); the pretrained "
                         "encoder only gives embeddings, pass it as embedder=.")
    if probe is not None:
        if embedder is None:
            raise ECGFMError("a probe reads ECG-FM's embeddings: give the pretrained encoder as embedder= too.")
        probe.check_encoder(embedder.provenance)
    single = isinstance(records, ECGRecord)
    batch = [records] if single else list(records)
    if prepared is None:
        prepared = [prepare_window(record, start_s, duration_s) for record in batch]
    elif len(prepared) != len(batch):
        raise ECGFMError(f"{len(prepared)} prepared windows were given for {len(batch)} records.")
    probabilities, attn = _forward(model, prepared, need_attention=attention or saliency)
    embeddings = None
    if embedder is not None:
        embeddings = _pooled(embedder, prepared)

    results, first = [], 0
    provenance = describe(model, embedder)
    if probe is not None:
        provenance["probe"] = probe.identity()
    for record, prep in zip(batch, prepared):
        count = len(prep.segments)
        per_segment = probabilities[first:first + count]
        results.append(Prediction(
            name=record.name,
            probabilities=aggregate(per_segment) if count else None,
            segments=[SegmentResult(start, end, _as_dict(row)) for (start, end), row in zip(prep.spans_s, per_segment)],
            lead_status=prep.lead_status,
            warnings=prep.warnings,
            provenance=provenance,
            adequacy=prep.adequacy,
            quality=prep.quality,
            embedding=None if embeddings is None or not count else embeddings[first:first + count].mean(axis=0),
            attention=None if not attention or not count else attn[first:first + count],
            saliency=None if not saliency or not count else _saliency(attn[first:first + count], prep.padding_mask),
            measurements=_measured(record, start_s, duration_s) if measure else None,
            device_report=record.device_report,
        ))
        if probe is not None and results[-1].embedding is not None:
            results[-1].probe_probabilities = probe.predict_proba(results[-1].embedding)
        first += count
    return results[0] if single else results


def prepare_window(record: ECGRecord, start_s: float = 0.0, duration_s: float | None = DEFAULT_WINDOW_S
                   ) -> PreparedECG:
    """The window's preparation; a window that leaves nothing of the record is unusable input."""
    try:
        window = record.window(start_s, duration_s)
    except ECGReadError as error:
        reason = str(error).removeprefix(f"{record.name}: ").rstrip(".")
        return PreparedECG(segments=np.zeros((0, 12, 2500), dtype=np.float32), padding_mask=None, spans_s=[],
                           lead_status={}, warnings=list(record.warnings), adequacy=unusable(reason))
    return prepare(window)


def _measured(record: ECGRecord, start_s: float, duration_s: float | None) -> Measurements | None:
    try:
        return measure(record.window(start_s, duration_s))
    except ECGReadError:  # nothing left after cutting the window: said by the adequacy
        return None


class BatchingPredictor:
    """`predict` for concurrent callers (a web app's requests), several callers per forward pass.

    A worker thread waits `wait_s` after the first caller arrives, then runs everything queued (up
    to `max_records` records) as one batch. If a batch fails, each caller's records are run alone,
    so one bad request never fails another. A caller whose own records fail gets an ECGFMError of
    one sentence (running out of memory included), never the raw exception.
    """

    def __init__(self, model: ECGFM, max_records: int = 8, wait_s: float = 0.02, **options):
        self.model, self.max_records, self.wait_s, self.options = model, max_records, wait_s, options
        self._pending: list[tuple[list[ECGRecord], Future]] = []
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None

    def __call__(self, records: Sequence[ECGRecord]) -> list[Prediction]:
        future: Future = Future()
        with self._ready:
            self._pending.append((list(records), future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="ecgfm-batcher", daemon=True)
                self._worker.start()
            self._ready.notify()
        return future.result()

    def _work(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._pending)
            time.sleep(self.wait_s)  # let the callers of the same moment join this batch
            with self._ready:
                batch, count = [], 0
                while self._pending and (not batch or count + len(self._pending[0][0]) <= self.max_records):
                    batch.append(self._pending.pop(0))
                    count += len(batch[-1][0])
            try:
                self._run(batch)
            except BaseException as error:  # noqa: BLE001 - the worker must outlive any batch
                for records, future in batch:
                    if not future.done():
                        future.set_exception(_forward_failed(records, error))

    def _run(self, batch: list[tuple[list[ECGRecord], Future]]) -> None:
        try:
            results = predict(self.model, [r for records, _ in batch for r in records], **self.options)
        except Exception as error:  # noqa: BLE001 - find whose records failed by running each caller alone
            _release_memory(error)
            if len(batch) == 1:  # alone already: the same input would fail the same way
                batch[0][1].set_exception(_forward_failed(batch[0][0], error))
                return
            for records, future in batch:
                try:
                    future.set_result(predict(self.model, records, **self.options))
                except Exception as own_error:  # noqa: BLE001 - handed to that caller, as one sentence
                    _release_memory(own_error)
                    future.set_exception(_forward_failed(records, own_error))
            return
        first = 0
        for records, future in batch:
            future.set_result(results[first:first + len(records)])
            first += len(records)


def _out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "not enough memory" in text


def _release_memory(error: BaseException) -> None:
    """After running out of GPU memory, give the cached blocks back before trying smaller batches."""
    if _out_of_memory(error):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _forward_failed(records: Sequence[ECGRecord], error: BaseException) -> ECGFMError:
    """The caller's one sentence for its records' failure; an ECGFMError (a bad record) is passed on as it is.

    The log gets the kind of failure only: nothing from the records, not even their names.
    """
    if isinstance(error, ECGFMError):
        return error
    names = [record.name for record in records]
    named = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    these = "this record" if len(names) == 1 else f"these {len(names)} records"
    if _out_of_memory(error):
        log.warning("A request's forward pass ran out of memory (%s); that request alone got an error.",
                    type(error).__name__)
        message = (f"{named}: the server ran out of memory analysing {these}; send fewer records at once, "
                   "or try again later.")
    else:
        log.error("A request's forward pass failed (%s); that request alone got an error.", type(error).__name__)
        message = (f"{named}: the model failed while analysing {these} ({type(error).__name__}); try again, "
                   "and tell the server's administrator if it happens again.")
    failure = ECGFMError(message)
    failure.__cause__ = error if isinstance(error, Exception) else None
    return failure


CSV_COLUMNS = ("file", "scope", "start_s", "end_s", "input_adequacy", "warnings", "model_sha256",
               *(label.name for label in LABELS))


def write_csv(results: Sequence[dict], handle: IO[str]) -> None:
    """Results (`Prediction.to_dict()` form) as CSV: per record, its aggregated row then one per segment.

    An unusable record still gets its row, with its adequacy and no probabilities. Measured records
    (`measure=True`) add one column per measurement (key_unit, e.g. qt_ms), on the record's row only;
    a measurement that could not be made is empty.
    """
    measured = any("measurements" in result for result in results)
    extra = [f"{key}_{'deg' if unit == '°' else unit}" for key, _, unit in QUANTITIES] if measured else []
    writer = csv.writer(handle)
    writer.writerow([*CSV_COLUMNS, *extra])
    for result in results:
        segments = result["segments"]
        facts = [result["input_adequacy"]["level"], len(result["warnings"]), result["provenance"].get("sha256")]
        probabilities = result["probabilities"] or {}
        values = (result.get("measurements") or {}).get("values", {})
        writer.writerow([result["file"], "record", segments[0]["start_s"] if segments else "",
                         segments[-1]["end_s"] if segments else "", *facts,
                         *(probabilities.get(label.name, "") for label in LABELS),
                         *(values.get(key, "") for key, _, _ in QUANTITIES if extra)])
        for segment in segments:
            writer.writerow([result["file"], "segment", segment["start_s"], segment["end_s"], *facts,
                             *(segment["probabilities"][label.name] for label in LABELS), *[""] * len(extra)])


def aggregate(per_segment: np.ndarray) -> dict[str, float]:
    """One probability per label for the record, by ECG-FM's rule: max or mean over segments."""
    return {label.name: float(per_segment[:, i].max() if label.aggregation == "max" else per_segment[:, i].mean())
            for i, label in enumerate(LABELS)}


def _saliency(attention: np.ndarray, padding_mask: np.ndarray | None) -> np.ndarray:
    """Each segment's saliency [S, 2499]; a padded segment's real length comes from its mask."""
    return np.stack([segment_saliency(segment, SEGMENT_SAMPLES,
                                      None if padding_mask is None else int((~padding_mask[k]).sum()))
                     for k, segment in enumerate(attention)])


def _as_dict(row: np.ndarray) -> dict[str, float]:
    return {label.name: float(value) for label, value in zip(LABELS, row)}


def _batches(model: ECGFM, prepared: list[PreparedECG]):
    """All records' segments as [B, 12, 2500] tensors with their padding masks, in chunks."""
    import torch

    segments = np.concatenate([p.segments for p in prepared])
    if any(p.padding_mask is not None for p in prepared):
        masks = np.concatenate([p.padding_mask if p.padding_mask is not None
                                else np.zeros(p.segments.shape[::2], dtype=bool) for p in prepared])
    else:
        masks = None
    parameter = next(model.parameters())
    for first in range(0, len(segments), MAX_BATCH_SEGMENTS):
        chunk = torch.from_numpy(segments[first:first + MAX_BATCH_SEGMENTS]).to(parameter.device, parameter.dtype)
        mask = None if masks is None else torch.from_numpy(masks[first:first + MAX_BATCH_SEGMENTS]).to(parameter.device)
        yield chunk, mask


def _forward(model: ECGFM, prepared: list[PreparedECG], need_attention: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Sigmoid probabilities [S, 17] for all segments (and the last layer's attention if asked)."""
    import torch

    probabilities, attention = [np.zeros((0, len(LABELS)), dtype=np.float32)], []
    with torch.inference_mode():
        for chunk, mask in _batches(model, prepared):
            out = model(chunk, mask, return_attention="last" if need_attention else False)
            probabilities.append(torch.sigmoid(out.logits.float()).cpu().numpy())
            if need_attention:
                attention.append(out.attention[:, -1].float().cpu().numpy())
    return np.concatenate(probabilities), (np.concatenate(attention) if attention else None)


def _pooled(encoder: ECGFM, prepared: list[PreparedECG]) -> np.ndarray:
    import torch

    from .model import pool

    if encoder.head is not None:
        raise ECGFMError("embedder must be the pretrained encoder (load_model('pretrained')): ECG-FM's "
                         "embeddings come from it, not from the finetuned classifier.")
    pooled = [np.zeros((0, encoder.dims.embed_dim), dtype=np.float32)]
    with torch.inference_mode():
        for chunk, mask in _batches(encoder, prepared):
            out = encoder(chunk, mask)
            pooled.append(pool(out.hidden, out.frame_mask).float().cpu().numpy())
    return np.concatenate(pooled)


def describe(model: ECGFM, embedder: ECGFM | None = None) -> dict:
    """What produced a result: the weights' origin and hash, the device and precision, our version."""
    from .model import precision_of
    from .version import __version__

    info = {**model.provenance, "device": str(next(model.parameters()).device), "precision": precision_of(model),
            "ecgfm_version": __version__}
    if embedder is not None:
        info["embedder"] = {**embedder.provenance, "precision": precision_of(embedder)}
    return info
