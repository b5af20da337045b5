"""Scoring a whole dataset into one Parquet file, resumably: `run_batch` (the CLI's `ecgfm batch`).

Inputs are files, folders (walked; the files of each folder grouped into records as `read_ecgs`
groups them), glob patterns and manifest CSVs (a `path` column; optional `fs`, `leads` and record id
columns; any other column is carried into the output). Each input unit (a record's files, or a
manifest row) has a stable `source` key: its main file's path relative to the inputs' common
folder, or the manifest's record id.

The pipeline, with memory bounded whatever the dataset size:

    feeder thread: enumerate units, skip those already done, submit each to the readers
        -> reader processes (spawned; they never import torch): read_ecgs with the window cut
        -> a bounded queue of read units, in input order
    main thread: gather `batch_size` records -> `ecgfm.predict` (the one pipeline) -> rows
        -> writer thread: each part written to a temporary name, fsynced, renamed atomically

`Job` is the output's side (settings, schema and metadata, resuming, parts, merge) and takes the
scoring as a part: `_ScoreHere` above, or the Ray Data pipeline of `ecgfm.batch_ray`, which makes
the same rows with the same `score` and `unit_rows`. A probe (`probe=`) adds its own columns,
`probe:<label>`, and its identity to the metadata.

Resuming: the rows are the manifest. A part file is either whole or absent, and every unit's rows
lie in one part; on start, the `source` column of the committed parts (and of an existing output)
says which units are done, and those are skipped. At the end the parts are merged into the output
through a temporary file renamed over it; a merge killed at any moment is done again by the next
run, which keeps each unit once (parts are filtered by `source` against what is already merged).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import ECGFMError, ECGReadError
from .io import MAX_FS, MIN_FS, read_ecgs
from .io.record import ECGRecord
from .labels import LABELS

OK, LIMITED, REFUSED = "ok", "limited", "refused"
STATUS_OF_LEVEL = {"complete": OK, "limited": LIMITED, "unusable": REFUSED}
DEFAULT_BATCH = 16  # records per forward: 32 segments of 5 s, predict's own chunk
DEFAULT_PART = 256  # records per committed part at most
COMMIT_EVERY_S = 30.0  # and a part at least this often, so that a kill loses little work
MAX_ERRORS_SHOWN = 10
METADATA_KEY = b"ecgfm"
FORMAT = "ecgfm-batch/1"
PART_GLOB = "part-*.parquet"
MANIFEST_ID_COLUMNS = ("id", "record_id", "record id", "record")

# The fixed columns, before the label columns and after them.
BASE_COLUMNS = ("id", "source", "files", "record", "status", "reason", "adequacy", "window_start_s",
                "window_end_s", "segments")
TAIL_COLUMNS = ("warnings",)
PROBE_PREFIX = "probe:"  # the columns of the user's own probe: never to be taken for ECG-FM's findings


def default_workers() -> int:
    """One reader per spare core (the main process runs the forward), at least 1, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(8, cores - 1))


# --- input units --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unit:
    """What one reader task reads: a record's files (or a manifest row), with its stable key.

    `error` is set when the unit is known to be unreadable before reading (a folder's file that
    belongs to no record, a manifest row without a path); `extras` are the manifest's own columns.
    """

    source: str
    files: tuple[str, ...]
    fs: float | None = None
    leads: tuple[str, ...] | None = None
    extras: tuple[tuple[str, object], ...] = ()
    error: str | None = None


@dataclass
class _Manifest:
    path: Path
    path_column: str
    id_column: str | None
    fs_column: str | None
    leads_column: str | None
    extras: dict[str, str]  # output column name -> the manifest's header
    types: dict[str, str]   # output column name -> int | float | string


def _is_manifest(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "path" in {name.strip().lower() for name in header}


def _parse_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def _parse_float(text: str) -> bool:
    try:
        return math.isfinite(float(text)) or text.lower() in ("nan", "inf", "-inf")
    except ValueError:
        return False


def _read_manifest_header(path: Path, reserved: set[str]) -> _Manifest:
    """The manifest's columns, and the type of each carried column from one streaming pass."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        lower = {name.lower(): name for name in header}
        id_column = next((lower[name] for name in MANIFEST_ID_COLUMNS if name in lower), None)
        known = {lower["path"], id_column, lower.get("fs"), lower.get("leads")} - {None}
        extras: dict[str, str] = {}
        for name in header:
            if name in known or not name:
                continue
            taken = name in reserved or name.startswith(PROBE_PREFIX) or name in extras
            column = f"manifest_{name}" if taken else name
            extras[column] = name
        index = {name: header.index(name) for name in extras.values()}
        can_int = dict.fromkeys(extras, True)
        can_float = dict.fromkeys(extras, True)
        for row in reader:
            for column, name in extras.items():
                value = row[index[name]].strip() if index[name] < len(row) else ""
                if value:
                    can_int[column] = can_int[column] and _parse_int(value)
                    can_float[column] = can_float[column] and _parse_float(value)
    types = {column: "int" if can_int[column] else "float" if can_float[column] else "string"
             for column in extras}
    return _Manifest(path, lower["path"], id_column, lower.get("fs"), lower.get("leads"), extras, types)


def _typed(value: str, kind: str):
    value = value.strip()
    if not value:
        return None
    return int(value) if kind == "int" else float(value) if kind == "float" else value


def _leads_of(text: str) -> tuple[str, ...] | None:
    names = [name for name in re.split(r"[,;|\s]+", text.strip()) if name]
    return tuple(names) or None


def _manifest_units(manifest: _Manifest) -> Iterator[Unit]:
    folder = manifest.path.parent
    with open(manifest.path, newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):  # line 1 is the header
            row = {(key or "").strip(): (value or "") for key, value in row.items()}
            written = row.get(manifest.path_column, "").strip()
            given_id = row.get(manifest.id_column, "").strip() if manifest.id_column else ""
            source = given_id or written or f"{manifest.path.name}:{number}"
            extras = tuple((column, _typed(row.get(name, ""), manifest.types[column]))
                           for column, name in manifest.extras.items())
            if not written:
                yield Unit(source, (), extras=extras,
                           error=f"{manifest.path.name}, line {number}: the row gives no path.")
                continue
            files = tuple(_manifest_path(folder, part.strip()) for part in written.split(";") if part.strip())
            fs = None
            fs_text = row.get(manifest.fs_column, "").strip() if manifest.fs_column else ""
            if fs_text:
                try:
                    fs = float(fs_text)
                except ValueError:
                    yield Unit(source, files, extras=extras,
                               error=f"{manifest.path.name}, line {number}: the sampling rate "
                                     f"{fs_text[:40]!r} is not a number.")
                    continue
            leads_text = row.get(manifest.leads_column, "") if manifest.leads_column else ""
            yield Unit(source, files, fs=fs, leads=_leads_of(leads_text), extras=extras)


def _manifest_path(folder: Path, written: str) -> str:
    """A manifest's path, relative to the manifest's folder; a WFDB record named without its
    extension (as PhysioNet's own tables name them) is its header."""
    path = Path(written).expanduser()
    if not path.is_absolute():
        path = folder / path
    if not path.exists() and path.with_name(path.name + ".hea").is_file():
        path = path.with_name(path.name + ".hea")
    return str(path)


def _group_folder(files: list[Path]) -> list[tuple[Path, list[Path], str | None]]:
    """The records the files of one folder make, as read_ecgs groups them: (main file, its files,
    or the error that stands for a file belonging to no readable record), in input order."""
    from . import io

    try:
        jobs = io._group(list(files), True)  # read_ecgs' own grouping (errors kept in place)
    except Exception:  # noqa: BLE001 - nothing groups: each file is read, and judged, alone
        return [(path, [path], None) for path in files]
    out = []
    for job in sorted(jobs, key=lambda job: job.pos):
        if job.error is not None:
            path = files[job.pos]
            out.append((path, [path], str(job.error)))
        else:
            out.append((job.main, [job.main, *job.companions], None))
    return out


def _has_magic(text: str) -> bool:
    return glob.has_magic(text)


def _glob_root(pattern: str) -> str:
    """The folder a glob pattern starts from: its parts before the first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _has_magic(part):
            break
        fixed.append(part)
    return os.path.abspath(os.path.join(*fixed)) if fixed else os.path.abspath(".")


class Inputs:
    """The units of the inputs, enumerated lazily, as often as asked (the feeder and the counter)."""

    def __init__(self, inputs: Sequence[str | os.PathLike], exclude: Sequence[Path] = ()):
        if not inputs:
            raise ECGFMError("No input was given: name files, folders, glob patterns or a manifest CSV.")
        self.inputs = [str(item) for item in inputs]
        self.exclude = {os.path.realpath(path) for path in exclude}
        self.manifests: dict[str, _Manifest] = {}
        roots = []
        reserved = set(BASE_COLUMNS) | set(TAIL_COLUMNS) | {label.name for label in LABELS} | {"embedding"}
        for item in self.inputs:
            path = Path(item)
            if _has_magic(item) and not path.exists():
                roots.append(_glob_root(item))
            elif path.is_dir():
                roots.append(os.path.abspath(path))
            elif path.is_file():
                roots.append(os.path.abspath(path.parent))
                if _is_manifest(path):
                    try:
                        self.manifests[item] = _read_manifest_header(path, reserved)
                    except (OSError, UnicodeDecodeError, csv.Error) as error:
                        raise ECGFMError(f"{path.name}: the manifest cannot be read ({error}).") from None
            else:
                raise ECGFMError(f"{path.name or item}: no such file or folder, and not a glob pattern.")
        self.root = os.path.commonpath(roots)
        self.extra_columns: dict[str, str] = {}
        for manifest in self.manifests.values():
            for column, kind in manifest.types.items():
                known = self.extra_columns.get(column)
                self.extra_columns[column] = kind if known in (None, kind) else (
                    "float" if {known, kind} == {"int", "float"} else "string")

    def source_of(self, path: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(path), self.root)).as_posix()

    def _excluded(self, path: str) -> bool:
        return os.path.realpath(path) in self.exclude

    def __iter__(self) -> Iterator[Unit]:
        pending: list[Path] = []  # consecutive plain files of one folder, grouped together
        for item in self.inputs:
            path = Path(item)
            if item in self.manifests:
                yield from self._flush(pending)
                yield from self._manifest(self.manifests[item])
            elif _has_magic(item) and not path.exists():
                for match in glob.iglob(item, recursive=True):
                    yield from self._file_or_folder(Path(match), pending)
            else:
                yield from self._file_or_folder(path, pending)
        yield from self._flush(pending)

    def _manifest(self, manifest: _Manifest) -> Iterator[Unit]:
        for unit in _manifest_units(manifest):
            # A manifest's carried columns cover every manifest given: absent ones are null.
            have = dict(unit.extras)
            extras = tuple((column, have.get(column)) for column in self.extra_columns)
            yield Unit(unit.source, unit.files, unit.fs, unit.leads, extras, unit.error)

    def _file_or_folder(self, path: Path, pending: list[Path]) -> Iterator[Unit]:
        if self._excluded(str(path)):
            return
        if path.is_dir():
            yield from self._flush(pending)
            yield from self._walk(path)
        elif path.is_file():
            if pending and pending[-1].parent != path.parent:
                yield from self._flush(pending)
            pending.append(path)

    def _flush(self, pending: list[Path]) -> Iterator[Unit]:
        if pending:
            files = list(pending)
            pending.clear()
            yield from self._units(files)

    def _walk(self, top: Path) -> Iterator[Unit]:
        for folder, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and not self._excluded(os.path.join(folder, d)))
            files = [Path(folder, name) for name in sorted(names) if not name.startswith(".")
                     and not self._excluded(os.path.join(folder, name))
                     and os.path.isfile(os.path.join(folder, name))]
            if files:
                yield from self._units(files)

    def _units(self, files: list[Path]) -> Iterator[Unit]:
        for main, members, error in _group_folder(files):
            yield Unit(self.source_of(main), tuple(str(path) for path in members), error=error)


# --- reading (in the reader processes) ----------------------------------------------------------

def read_unit(task: tuple) -> list:
    """A reader process's work: one unit read with the window cut, as a list of entries, each an
    ECGRecord or the sentence saying why that record could not be read. Never raises."""
    files, fs, leads, start_s, duration_s = task
    first = Path(files[0]).name if files else "?"
    try:
        entries = read_ecgs(list(files), fs=fs, leads=list(leads) if leads else None, start_s=start_s,
                            duration_s=duration_s, errors="return")
    except ECGReadError as error:
        return [str(error)]
    except MemoryError:
        return [f"{first}: the recording is too large to read into memory."]
    except Exception as error:  # noqa: BLE001 - one sentence for the row, never a traceback
        return [f"{first}: the file could not be read ({type(error).__name__})."]
    return [entry if isinstance(entry, ECGRecord) else str(entry) for entry in entries]


def _reader_started() -> None:
    """A reader process leaves Ctrl-C to the main process, which stops the job and keeps its parts."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Readers:
    """The reader processes (spawned, so no torch and no inherited threads), or none (`workers=0`:
    read in the calling thread). A unit whose process died (a crash in a file's decoder) is read
    again alone in a fresh process; if that one dies too, the unit is refused, never the job."""

    def __init__(self, workers: int, task: Callable = read_unit):
        self.workers, self.task = workers, task
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._read_any = workers == 0  # until a process has read something, a death is the pool's, not a file's
        self._closed = False

    @staticmethod
    def _context():
        import multiprocessing

        return multiprocessing.get_context("spawn")

    def submit(self, args) -> Future:
        if self.workers == 0:
            future: Future = Future()
            future.set_result(self.task(args))
            return future
        with self._lock:
            if self._closed:
                raise ECGFMError("the readers were closed.")
            for _ in range(2):
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context(),
                                                     initializer=_reader_started)
                try:
                    return self._pool.submit(self.task, args)
                except BrokenProcessPool:
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
            raise ECGFMError("the reader processes cannot be started.")

    def result(self, future: Future, args):
        """The task's result; None when reading it killed its process, even alone."""
        try:
            out = future.result()
        except BrokenProcessPool:
            if not self._read_any:
                raise ECGFMError(
                    "the reader processes stopped before reading anything; from a script, call run_batch "
                    "under `if __name__ == '__main__':` (each reader imports the main module), or read in "
                    "this process with workers=0 (--workers 0).") from None
        else:
            self._read_any = True
            return out
        with ProcessPoolExecutor(1, mp_context=self._context(), initializer=_reader_started) as alone:
            try:
                return alone.submit(self.task, args).result()
            except BrokenProcessPool:
                return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


# --- rows ---------------------------------------------------------------------------------------

def probe_column(label: str) -> str:
    """The output column of a probe's label: `probe:<label>`, apart from ECG-FM's 17 findings."""
    return f"{PROBE_PREFIX}{label}"


def score(model, records: list[ECGRecord], *, embedder=None, probe=None, duration_s: float | None = None,
          prepared: list | None = None) -> dict[int, object]:
    """Each record's Prediction (by id()), or the sentence saying why the model failed on it.

    The records go through `ecgfm.predict` in one forward; when that fails, each record alone, so
    that one record never takes the others down. `prepared`: each record's window prepared
    elsewhere (see `predict`), or the sentence saying why it could not be prepared.
    """
    from .predict import predict

    out: dict[int, object] = {}
    if prepared is not None:
        out = {id(record): window for record, window in zip(records, prepared) if isinstance(window, str)}
        pairs = [(record, window) for record, window in zip(records, prepared) if not isinstance(window, str)]
        records, prepared = [record for record, _ in pairs], [window for _, window in pairs]
    options = dict(embedder=embedder, probe=probe, start_s=0.0, duration_s=duration_s)

    def run(chosen: list[int]) -> list:
        windows = None if prepared is None else [prepared[i] for i in chosen]
        return predict(model, [records[i] for i in chosen], prepared=windows, **options)

    if not records:
        return out
    try:
        out.update(zip(map(id, records), run(list(range(len(records))))))
        return out
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 - find the record at fault by running each alone
        if len(records) == 1:
            out[id(records[0])] = _model_failure(records[0], error)
            return out
    for i, record in enumerate(records):
        try:
            out[id(record)] = run([i])[0]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - that record is refused, the job goes on
            out[id(record)] = _model_failure(record, error)
    return out


def unit_rows(unit: Unit, entries: list, predictions: dict[int, object]) -> list[dict]:
    """The output rows of one unit: a row per entry (a record read, or the sentence saying why it
    could not be), with its Prediction or model failure from `predictions` (see `score`). The one
    way a row is made, wherever the model ran."""
    rows = []
    names: dict[str, int] = {}
    extras = dict(unit.extras)
    for entry in entries:
        row = {"source": unit.source, "files": list(unit.files), **extras}
        if isinstance(entry, ECGRecord):
            row["record"] = entry.name
            name = entry.name
        else:
            name = entry.split(": ", 1)[0] if ": " in entry else "?"
        if len(entries) == 1:
            row["id"] = unit.source
        else:
            names[name] = names.get(name, 0) + 1
            row["id"] = f"{unit.source}/{name}" + (f"#{names[name]}" if names[name] > 1 else "")
        if not isinstance(entry, ECGRecord):
            row.update(status=REFUSED, reason=entry, warnings=[])
            rows.append(row)
            continue
        row.update(window_start_s=entry.start_s, window_end_s=entry.start_s + entry.duration_s)
        prediction = predictions[id(entry)]
        if isinstance(prediction, str):  # the model failed on this record
            row.update(status=REFUSED, reason=prediction, warnings=list(entry.warnings),
                       adequacy=_adequacy_level(entry))
            rows.append(row)
            continue
        adequacy = prediction.adequacy
        row.update(status=STATUS_OF_LEVEL[adequacy.level], adequacy=adequacy.level,
                   reason="; ".join(adequacy.reasons) or None, warnings=list(prediction.warnings),
                   segments=len(prediction.segments))
        if prediction.probabilities is not None:
            row.update(prediction.probabilities)
        if prediction.embedding is not None:
            row["embedding"] = prediction.embedding
        if prediction.probe_probabilities is not None:
            row.update({probe_column(label): value for label, value in prediction.probe_probabilities.items()})
        rows.append(row)
    return rows


def _not_read(row: dict) -> bool:
    """A row standing for a record that could not be read (no record name: nothing was read)."""
    return row["status"] == REFUSED and row.get("record") is None


# --- output -------------------------------------------------------------------------------------

def _schema(embedding_dim: int | None, probe_labels: Sequence[str], extra_columns: dict[str, str],
            metadata: dict):
    import pyarrow as pa

    kinds = {"int": pa.int64(), "float": pa.float64(), "string": pa.string()}
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("files", pa.list_(pa.string())),
        pa.field("record", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("adequacy", pa.string()),
        pa.field("window_start_s", pa.float64()),
        pa.field("window_end_s", pa.float64()),
        pa.field("segments", pa.int32()),
        *(pa.field(label.name, pa.float32()) for label in LABELS),
        pa.field("warnings", pa.list_(pa.string())),
    ]
    if embedding_dim:
        fields.append(pa.field("embedding", pa.list_(pa.float32(), embedding_dim)))
    fields += [pa.field(probe_column(label), pa.float32()) for label in probe_labels]
    fields += [pa.field(column, kinds[kind]) for column, kind in extra_columns.items()]
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata).encode()})


def read_metadata(path: str | os.PathLike) -> dict:
    """The provenance and settings `run_batch` stored in a result (or part) file's schema metadata."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise ECGFMError(f"{Path(path).name}: this Parquet file was not written by ecgfm batch.")
    return json.loads(metadata[METADATA_KEY])


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _write_atomically(table, path: Path) -> None:
    """`path` appears whole or not at all: written beside it, flushed to disk, then renamed."""
    import pyarrow.parquet as pq

    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_folder(path.parent)


class _Writer(threading.Thread):
    """Commits parts in the background, so the forward never waits on the disk."""

    def __init__(self, folder: Path, first_number: int):
        super().__init__(name="ecgfm-batch-writer", daemon=True)
        self.folder, self.number = folder, first_number
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.committed_rows = 0

    def run(self) -> None:
        while True:
            table = self.queue.get()
            if table is None:
                return
            if self.error is not None:
                continue
            try:
                _write_atomically(table, self.folder / f"part-{self.number:05d}.parquet")
                self.number += 1
                self.committed_rows += table.num_rows
            except BaseException as error:  # noqa: BLE001 - raised by the main thread
                self.error = error

    def put(self, table) -> None:
        self.check()
        self.queue.put(table)

    def check(self) -> None:
        if self.error is not None:
            raise ECGFMError(f"a part of the results could not be written ({self.error}).")

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        self.check()



# --- the job ------------------------------------------------------------------------------------

@dataclass
class Summary:
    """What the output holds at the end (all runs together), and what this run added."""

    out: Path
    records: int = 0
    read: int = 0
    scored: int = 0
    limited: int = 0
    refused: int = 0
    unreadable: int = 0
    unusable: int = 0
    new: int = 0  # rows this run added
    skipped: int = 0  # inputs already done by an earlier run
    duplicates: int = 0  # inputs given twice (scored once)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # the first reading failures
    error_count: int = 0  # all of this run's

    def lines(self) -> list[str]:
        rate = f", {self.new / self.seconds:.1f} records/s" if self.seconds > 0 and self.new else ""
        earlier = f"; {self.skipped} already done by an earlier run" if self.skipped else ""
        earlier += f"; {self.duplicates} given twice, scored once" if self.duplicates else ""
        return [f"{self.records} records in {self.out} ({self.new} added by this run{rate}{earlier}):",
                f"  read {self.read}, scored {self.scored} ({self.limited} with limited input), "
                f"refused {self.refused} ({self.unreadable} could not be read, {self.unusable} unusable input"
                + (f", {self.refused - self.unreadable - self.unusable} failed in the model"
                   if self.refused - self.unreadable - self.unusable else "") + ")."]


def parts_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _merging_path(out: Path) -> Path:
    return out.with_name(out.name + ".merging")


def _key(metadata: dict) -> dict:
    return metadata.get("key", {})


def _describe_key(key: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in key.items() if name != "columns")


# Scoring: the units still to do -> (how many units, their rows), batch after batch. Two exist: the
# reader processes and forwards of this module (`_ScoreHere`), and the Ray Data pipeline of batch_ray.
Scoring = Callable[[Iterator[Unit]], Iterator[tuple[int, list[dict]]]]


class Job:
    """One output and its settings: which units are done, rows into committed parts, the merge.

    What scores the units is given to `run`; everything that makes the output what it is (its
    schema, metadata and key, resuming, the summary) is here, so that every way of scoring writes
    the same file.
    """

    def __init__(self, inputs, out, provenance: dict, *, embedding_dim: int | None, probe: dict | None,
                 start_s: float, duration_s: float | None, fs: float | None, leads, part_size: int,
                 progress: bool, on_error, explain):
        self.out = Path(out)
        self.parts = parts_folder(self.out)
        self.start_s, self.duration_s, self.fs = float(start_s), duration_s, fs
        self.leads = tuple(leads) if leads else None
        self.part_size, self.progress, self.on_error = part_size, progress, on_error
        self.explain = explain or (lambda text: text)
        self.inputs = Inputs(inputs, exclude=[self.out, self.parts, _merging_path(self.out)])
        self.embedding_dim = embedding_dim
        probe_labels = probe["labels"] if probe else []
        classifier = {k: provenance.get(k) for k in ("source", "repo", "revision", "file", "sha256")}
        encoder = None
        if provenance.get("embedder") is not None:
            encoder = {k: provenance["embedder"].get(k) for k in ("source", "repo", "revision", "file", "sha256")}
        columns = _schema(embedding_dim, probe_labels, self.inputs.extra_columns, {})
        key = {"classifier_sha256": classifier["sha256"], "encoder_sha256": encoder and encoder["sha256"],
               "precision": provenance["precision"], "ecgfm_version": provenance["ecgfm_version"],
               "start_s": self.start_s, "duration_s": duration_s, "fs": fs,
               "leads": list(self.leads) if self.leads else None,
               "columns": [f"{f.name}:{f.type}" for f in columns]}
        if probe:
            key["probe_sha256"] = probe["sha256"]
        self.metadata = {
            "format": FORMAT, "ecgfm_version": provenance["ecgfm_version"], "precision": provenance["precision"],
            "device": provenance["device"], "classifier": classifier, "encoder": encoder,
            "window": {"start_s": self.start_s, "duration_s": duration_s},
            "fs": fs, "leads": key["leads"], "labels": [label.name for label in LABELS],
            "embedding_dim": embedding_dim,
            "status": {OK: "complete input, scored", LIMITED: "limited input, scored but not reliable",
                       REFUSED: "not scored: unreadable, unusable input, or the model failed"},
            "started": _now(), "key": key,
        }
        if probe:
            self.metadata["probe"] = probe
        self.schema = _schema(embedding_dim, probe_labels, self.inputs.extra_columns, self.metadata)
        self.errors: list[str] = []
        self.error_count = 0

    def task(self, unit: Unit) -> tuple:
        """What `read_unit` reads for this unit: its files with the job's window, rate and leads."""
        return (unit.files, unit.fs if unit.fs is not None else self.fs, unit.leads or self.leads,
                self.start_s, self.duration_s)

    # -- resuming --

    def _check(self, path: Path) -> dict:
        try:
            metadata = read_metadata(path)
        except ECGFMError:
            raise ECGFMError(f"{path} exists and was not written by ecgfm batch; give another --out "
                             "or move it away.") from None
        except Exception as error:  # noqa: BLE001 - a damaged file, named in one sentence
            raise ECGFMError(f"{path} cannot be read as Parquet ({type(error).__name__}); "
                             "give another --out or move it away.") from None
        if _key(metadata) != self.metadata["key"]:
            raise ECGFMError(f"{path} holds results made with other settings ({_describe_key(_key(metadata))}); "
                             f"this run uses {_describe_key(self.metadata['key'])}. Give another --out, or "
                             "run with the same weights, probe, precision, window and inputs' columns.")
        return metadata

    def _sources(self, path: Path) -> set[str]:
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=["source"]).column("source")
        return set(column.to_pylist())

    def _committed_parts(self) -> list[Path]:
        return sorted(self.parts.glob(PART_GLOB))

    def _resume(self) -> tuple[set[str], int]:
        """The sources already done (in the output or in committed parts), and the next part number."""
        for leftover in [*self.parts.glob("*.tmp"), _merging_path(self.out)]:
            leftover.unlink(missing_ok=True)  # a write or merge that was cut short
        done: set[str] = set()
        if self.out.exists():
            self._check(self.out)
            done |= self._sources(self.out)
        number = 0
        for part in self._committed_parts():
            self._check(part)
            done |= self._sources(part)
            number = max(number, int(re.findall(r"\d+", part.stem)[-1]) + 1)
        return done, number

    def _pending(self, done: set[str], summary: Summary) -> Iterator[Unit]:
        """The units to score, each once; those done by an earlier run, and repeats, are counted."""
        issued: set[str] = set()
        for unit in self.inputs:
            if unit.source in done:
                summary.skipped += 1
            elif unit.source in issued:  # the same record given twice: scored once
                summary.duplicates += 1
            else:
                issued.add(unit.source)
                yield unit

    # -- rows --

    def _error(self, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_SHOWN:
            self.errors.append(reason)
            if self.on_error is not None:
                self.on_error(reason)

    def _table(self, rows: list[dict]):
        import pyarrow as pa

        columns = {}
        for column in self.schema:
            values = [row.get(column.name) for row in rows]
            if column.name == "embedding":
                dim = self.embedding_dim
                flat = np.zeros((len(rows), dim), dtype=np.float32)
                missing = np.array([value is None for value in values], dtype=bool)
                for i, value in enumerate(values):
                    if value is not None:
                        flat[i] = value
                columns[column.name] = pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.reshape(-1)), dim, mask=pa.array(missing))
            else:
                columns[column.name] = pa.array(values, type=column.type)
        return pa.table(columns, schema=self.schema)

    # -- the run --

    def run(self, scoring: Scoring) -> Summary:
        began = time.monotonic()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        created = not self.parts.exists()
        self.parts.mkdir(exist_ok=True)
        lock = _lock(self.parts)
        try:
            try:
                done, number = self._resume()
            except ECGFMError:
                if created:  # refused before anything was done: leave no trace
                    shutil.rmtree(self.parts, ignore_errors=True)
                raise
            summary = Summary(self.out)
            try:
                self._pipeline(scoring, done, number, summary)
            except BaseException:
                if created and not self._committed_parts():  # nothing was kept: leave no trace
                    shutil.rmtree(self.parts, ignore_errors=True)
                raise
            if not (summary.new or summary.skipped or summary.duplicates or self.out.exists()):
                shutil.rmtree(self.parts, ignore_errors=True)
                raise ECGFMError(f"the inputs ({_shorten(self.inputs.inputs)}) hold no file to read.")
            self._merge()
        finally:
            _unlock(lock)
        summary.seconds = time.monotonic() - began
        _count(self.out, summary)
        summary.errors, summary.error_count = self.errors, self.error_count
        return summary

    def _pipeline(self, scoring: Scoring, done: set[str], number: int, summary: Summary) -> None:
        """The scored rows into parts: one committed every `part_size` rows or COMMIT_EVERY_S seconds."""
        stop = threading.Event()
        total = {"count": None, "so_far": 0}

        def count() -> None:  # the bar's total, for its ETA (inputs given twice are counted twice)
            try:
                for unit in self.inputs:
                    if stop.is_set():
                        return
                    if unit.source not in done:
                        total["so_far"] += 1
                total["count"] = total["so_far"]
            except Exception:  # noqa: BLE001 - the bar then shows no total; the scoring reports the problem
                pass

        bar = self._bar()
        if bar is not None:
            threading.Thread(target=count, name="ecgfm-batch-counter", daemon=True).start()
        writer = _Writer(self.parts, number)
        writer.start()
        pending_rows: list[dict] = []
        last_commit = time.monotonic()
        scored = scoring(self._pending(done, summary))
        try:
            for units, rows in scored:
                for row in rows:
                    if _not_read(row):
                        row["reason"] = self.explain(row["reason"])
                        self._error(row["reason"])
                pending_rows += rows
                writer.check()
                if pending_rows and (len(pending_rows) >= self.part_size
                                     or time.monotonic() - last_commit >= COMMIT_EVERY_S):
                    writer.put(self._table(pending_rows))
                    pending_rows, last_commit = [], time.monotonic()
                if bar is not None:
                    bar.total = total["count"] if total["count"] is not None else max(total["so_far"], bar.n)
                    bar.update(units)
            if pending_rows:
                writer.put(self._table(pending_rows))
                pending_rows = []
        except KeyboardInterrupt:
            # What is scored is kept: the next run of the same command goes on from there.
            if pending_rows:
                writer.put(self._table(pending_rows))
            raise
        finally:
            stop.set()
            try:
                scored.close()  # the scoring stops and lets its workers go
            finally:
                try:
                    writer.finish()
                finally:
                    if bar is not None:
                        bar.close()
        summary.new = writer.committed_rows

    def _bar(self):
        if not self.progress:
            return None
        import sys

        from tqdm import tqdm

        try:  # a terminal that reports no size (some ptys) would get no bar at all
            size = os.get_terminal_size(sys.stderr.fileno())
            sized = size.columns > 0 and size.lines > 0
        except (OSError, ValueError, AttributeError):
            sized = False
        fixed = {} if sized else {"ncols": 100, "nrows": 20}
        return tqdm(total=None, unit="rec", file=sys.stderr, dynamic_ncols=sized, smoothing=0.1,
                    desc="ecgfm batch", **fixed)

    def _merge(self) -> None:
        """The output and the committed parts into one file, each unit once; then the parts go."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        parts = self._committed_parts()
        if not parts and self.out.exists():
            shutil.rmtree(self.parts, ignore_errors=True)
            return
        sources: set[str] = set()  # of the files already merged; a unit's rows all lie in one file
        started, devices = [self.metadata["started"]], {self.metadata["device"]}
        inputs = ([self.out] if self.out.exists() else []) + parts
        for path in inputs:
            metadata = read_metadata(path)
            started.append(metadata.get("started", started[0]))
            devices.update(metadata.get("devices", [metadata.get("device")]))
        metadata = {**self.metadata, "started": min(started), "completed": _now(),
                    "devices": sorted(d for d in devices if d)}
        schema = self.schema.with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
        temporary = _merging_path(self.out)
        with open(temporary, "wb") as handle:
            with pq.ParquetWriter(handle, schema) as writer:
                for path in inputs:  # a batch at a time: memory stays that of one row group
                    merged = pa.array(list(sources), pa.string())
                    own: set[str] = set()
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
                        table = pa.Table.from_batches([batch]).cast(schema)
                        column = table.column("source")
                        kept = table.filter(pc.invert(pc.is_in(column, value_set=merged))) if sources else table
                        if kept.num_rows:
                            writer.write_table(kept)
                        own.update(column.to_pylist())
                    sources |= own
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.out)
        _fsync_folder(self.out.parent)
        shutil.rmtree(self.parts, ignore_errors=True)


class _ScoreHere:
    """Scoring on this machine: reader processes read the units (in input order, a bounded number
    in flight) while this process runs the batched forwards.

        feeder thread: submit each unit to the readers -> a bounded queue of read units
        this thread: gather `batch_size` records -> `score` (ecgfm.predict) -> rows
    """

    def __init__(self, job: Job, model, embedder, probe, *, workers: int, batch_size: int):
        self.job, self.model, self.embedder, self.probe = job, model, embedder, probe
        self.workers, self.batch_size = workers, batch_size
        self.max_in_flight = max(2 * batch_size, 4 * max(workers, 1))

    def __call__(self, units: Iterator[Unit]) -> Iterator[tuple[int, list[dict]]]:
        stop = threading.Event()
        futures: queue.Queue = queue.Queue(maxsize=self.max_in_flight)
        readers = Readers(self.workers)
        feeder_error: list[BaseException] = []

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    futures.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def feed() -> None:
            try:
                for unit in units:
                    if stop.is_set():
                        return
                    task = self.job.task(unit)
                    future = None if unit.error else readers.submit(task)
                    if not put((unit, task, future)):
                        return
            except BaseException as error:  # noqa: BLE001 - raised by the consuming thread
                feeder_error.append(error)
            finally:
                put(None)

        feeder = threading.Thread(target=feed, name="ecgfm-batch-feeder", daemon=True)
        feeder.start()
        try:
            finished = False
            while not finished:
                batch, records = [], 0
                while records < self.batch_size:
                    item = futures.get()
                    if item is None:
                        finished = True
                        break
                    unit, task, future = item
                    if future is None:
                        entries = [unit.error]
                    else:
                        entries = readers.result(future, task)
                        if entries is None:
                            first = Path(unit.files[0]).name if unit.files else unit.source
                            entries = [f"{first}: reading this file stopped its reader process (a crash "
                                       "in its decoder); it was not read."]
                    batch.append((unit, entries))
                    records += sum(isinstance(entry, ECGRecord) for entry in entries)
                if feeder_error:
                    raise feeder_error[0]
                predictions = score(self.model, [e for _, entries in batch for e in entries
                                                 if isinstance(e, ECGRecord)],
                                    embedder=self.embedder, probe=self.probe, duration_s=self.job.duration_s)
                yield len(batch), [row for unit, entries in batch for row in unit_rows(unit, entries, predictions)]
        finally:
            stop.set()
            feeder.join(timeout=30)  # it stops at its next unit; then nothing is submitted any more
            readers.close()


def _shorten(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _adequacy_level(record: ECGRecord) -> str | None:
    from .preprocess import prepare

    try:
        return prepare(record).adequacy.level
    except Exception:  # noqa: BLE001 - only a fact for the row
        return None


def _model_failure(record: ECGRecord, error: BaseException) -> str:
    if isinstance(error, ECGFMError):
        return str(error)
    return f"{record.name}: the model failed on this record ({type(error).__name__}); it was not scored."


def _lock(folder: Path):
    """An exclusive lock on the parts folder: two runs writing the same output would mix their parts."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    handle = open(folder / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ECGFMError(f"another ecgfm batch is writing {folder.name.removesuffix('.parts')} now; "
                         "wait for it, or give another --out.") from None
    return handle


def _unlock(handle) -> None:
    if handle is not None:
        handle.close()


def _count(out: Path, summary: Summary) -> None:
    import pyarrow.parquet as pq

    if not out.exists():
        return
    for batch in pq.ParquetFile(out).iter_batches(columns=["status", "adequacy"]):
        status, adequacy = batch.column(0).to_pylist(), batch.column(1).to_pylist()
        for state, level in zip(status, adequacy):
            summary.records += 1
            summary.read += level is not None
            summary.scored += state in (OK, LIMITED)
            summary.limited += state == LIMITED
            summary.refused += state == REFUSED
            summary.unreadable += state == REFUSED and level is None
            summary.unusable += level == "unusable"


# --- checks shared by every way of running a job ------------------------------------------------

def check_settings(*, start_s: float, duration_s: float | None, fs: float | None, leads, batch_size: int,
                   part_size: int) -> list[str] | None:
    """Refuse settings that would fail every record, in one sentence; the leads as a list of names."""
    if not math.isfinite(float(start_s)) or start_s < 0:
        raise ECGFMError("the window must start at 0 s or later.")
    if duration_s is not None and (not math.isfinite(float(duration_s)) or duration_s <= 0):
        raise ECGFMError("the window must last more than 0 s.")
    if fs is not None and not (math.isfinite(float(fs)) and MIN_FS <= float(fs) <= MAX_FS):
        raise ECGFMError(f"the sampling rate {fs} Hz is outside the {MIN_FS:g} Hz to {MAX_FS / 1000:g} kHz "
                         "an ECG can be read at.")
    for name, value in (("batch size", batch_size), ("part size", part_size)):
        if int(value) < 1:
            raise ECGFMError(f"the {name} must be 1 or more.")
    if leads is None:
        return None
    from . import io

    leads = [name.strip() for name in (leads.split(",") if isinstance(leads, str) else leads)]
    io._check_leads("leads", leads)  # read_ecgs' own check: a wrong name fails the job, not each record
    return leads


def check_models(model, embedder, probe):
    """Refuse models (and a probe) that cannot make the output, before any work; returns the probe
    (loaded when a folder was given) and the facts the output records about it, or (None, None)."""
    if model.head is None:
        raise ECGFMError("batch needs the finetuned classifier (load_model('finetuned')); the pretrained "
                         "encoder only gives embeddings, pass it as embedder=.")
    if embedder is not None and embedder.head is not None:
        raise ECGFMError("embedder must be the pretrained encoder (load_model('pretrained')).")
    if probe is None:
        return None, None
    from .probe import Probe

    name = None
    if not isinstance(probe, Probe):
        name = Path(probe).name
        probe = Probe.load(probe)
    if embedder is None:
        raise ECGFMError("a probe reads ECG-FM's embeddings: give the pretrained encoder too (embedder=, "
                         "or --encoder).")
    try:
        probe.check_encoder(embedder.provenance)
    except ECGFMError:
        raise ECGFMError(f"the probe{f' {name}' if name else ''} was fitted on embeddings of the encoder with "
                         f"sha256 {probe.encoder_sha256[:12]}…, but the encoder given has sha256 "
                         f"{embedder.provenance['sha256'][:12]}…; give the probe's encoder (--encoder PATH), "
                         "or fit a probe on this encoder's embeddings.") from None
    if probe.dim != embedder.dims.embed_dim:
        raise ECGFMError(f"the probe takes {probe.dim}-value embeddings, but this encoder gives "
                         f"{embedder.dims.embed_dim}; give the encoder the probe was fitted on.")
    identity = probe.identity()
    sha256 = identity["weights_sha256"]
    if not sha256:
        raise ECGFMError("the probe has no saved weights for the output to name it by; save it first "
                         "(Probe.save) and give it, or its folder.")
    facts = {"name": name, "labels": identity["labels"], "columns": [probe_column(label) for label in probe.labels],
             "sha256": sha256, "encoder_sha256": probe.encoder_sha256, "created": identity["created"],
             "format": probe.card.get("format")}
    return probe, facts


def run_batch(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, model, *, embedder=None,
              probe=None, workers: int | None = None, start_s: float = 0.0, duration_s: float | None = 10.0,
              fs: float | None = None, leads: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH,
              part_size: int = DEFAULT_PART, progress: bool = False,
              on_error: Callable[[str], None] | None = None,
              explain: Callable[[str], str] | None = None) -> Summary:
    """Score every record of `inputs` into the Parquet file `out`, resumably; returns the Summary.

    `model` is the finetuned classifier, `embedder` the pretrained encoder (adds the `embedding`
    column). `probe` (an `ecgfm.probe.Probe`, or its folder; needs `embedder`) adds its probabilities
    as `probe:<label>` columns. Each record is read with the window [start_s, start_s + duration_s)
    cut and scored by `ecgfm.predict`, exactly as `ecgfm predict` scores it. `workers` reader
    processes (default: one per spare core; 0 reads in this process); `batch_size` records per
    forward; a part is committed every `part_size` records or COMMIT_EVERY_S seconds. `on_error`
    hears the first reading failures (the others are in the output's `reason` column); `explain`
    rewords a reader's sentence.

    The reader processes are spawned and import the main module, as multiprocessing's do: from a
    script, call run_batch under `if __name__ == "__main__":`.
    """
    from .predict import describe

    probe, probe_facts = check_models(model, embedder, probe)
    leads = check_settings(start_s=start_s, duration_s=duration_s, fs=fs, leads=leads, batch_size=batch_size,
                           part_size=part_size)
    if workers is not None and int(workers) < 0:
        raise ECGFMError("the number of workers must be 0 (read in this process) or more.")
    job = Job(inputs, out, describe(model, embedder),
              embedding_dim=embedder.dims.embed_dim if embedder is not None else None, probe=probe_facts,
              start_s=start_s, duration_s=duration_s, fs=fs, leads=leads, part_size=int(part_size),
              progress=progress, on_error=on_error, explain=explain)
    scoring = _ScoreHere(job, model, embedder, probe, workers=default_workers() if workers is None else int(workers),
                         batch_size=int(batch_size))
    return job.run(scoring)
