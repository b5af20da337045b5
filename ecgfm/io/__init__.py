"""Reading ECG files: one module per format family behind `read_ecg` / `read_ecgs`.

The format modules only decode: they hand over channels with the names, units and rates found in
the file. Everything else happens here, once for all formats: canonical lead names (MLII, 'Lead I
(Einthoven)', PTB's lower case ...), extra and non-ECG channels, units to mV (including raw ADC
counts inferred from strong evidence only), missing samples, the sampling-rate range, the window,
limb-lead derivation and the warnings that say what was done. Nothing identifying a patient
(header comments, demographic fields) is ever copied into a record, a warning or an error.

Vendor formats (GE MUSE, Philips, HL7 aECG, DICOM, SCP-ECG, Contec .ECG) live in `vendor.py`,
which exposes `sniff(path, head) -> bool` and `read(path) -> ECGRecord` (leads as named in the
file, values in mV).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Literal, NamedTuple, Sequence, Union, overload

import numpy as np

from ..errors import ECGReadError
from .leads import (EXTRA, MODIFIED, NON_ECG, STANDARD, UNKNOWN, Channel, RawRecord,
                    classify_lead, complete_limb_leads)
from .record import STANDARD_LEADS, ECGRecord, window_note

__all__ = ["ECGRecord", "STANDARD_LEADS", "read_ecg", "read_ecgs", "MIN_FS", "MAX_FS"]

PathLike = Union[str, os.PathLike]

MIN_FS = 100.0  # Hz; below this an ECG cannot be resampled to ECG-FM's 500 Hz meaningfully
MAX_FS = 10_000.0
MAX_FILES = 200
WFDB_DEFAULT_GAIN = 200.0  # ADC units per mV, WFDB's documented default when a gain is missing
COUNTS_MIN_RANGE = 50.0  # whole numbers spanning more than this are ADC counts, not mV
UV_MIN_MEDIAN = 50.0  # a median |amplitude| above this is not millivolts
# No ECG value comes near this in any unit (1e15 nV is 1000 kV); checked before any arithmetic, so
# that scaling cannot overflow and every sample stays finite as float32.
MAX_ABS_VALUE = 1e15

_ANNOTATION_EXT = {".atr", ".qrs", ".ann", ".ari", ".man", ".pwave", ".pu", ".pu0", ".pu1", ".st",
                   ".stf", ".16a", ".all", ".wqrs", ".sqrs", ".gqrs", ".blh", ".trigger", ".hrv",
                   ".apn", ".qrsc", ".alarm", ".arousal", ".event", ".edr", ".ecg",
                   ".marker", ".q1c", ".q2c", ".qt1", ".qt2", ".beat", ".sleep", ".resp", ".epi",
                   ".rhythm"}
_VENDOR_EXT = {".xml", ".dcm", ".scp", ".ecg", ".dicom"}
_TEXT_EXT = {".csv", ".tsv", ".txt", ".asc", ".ascii", ".tab", ".dat"}


# --- public API ---------------------------------------------------------------------------------

def read_ecg(paths: PathLike | Iterable[PathLike], *, fs: float | None = None,
             leads: Sequence[str] | str | None = None, start_s: float = 0.0,
             duration_s: float | None = None) -> ECGRecord:
    """Read the files that make ONE ECG record (e.g. a WFDB .hea with its .dat).

    `fs` gives the sampling rate for formats that do not store one (plain CSV, .npy); `leads`
    names the file's ECG channels in their order (see `read_ecgs`); `start_s` and `duration_s`
    select a window of a long recording. Raises ECGReadError when the files make no record or
    several.
    """
    records = read_ecgs(paths, fs=fs, leads=leads, start_s=start_s, duration_s=duration_s)
    if len(records) != 1:
        names = ", ".join(r.name for r in records)
        raise ECGReadError(f"The files make {len(records)} records ({names}), not one; read them "
                           "with read_ecgs or give the files of one record.")
    return records[0]


@overload
def read_ecgs(paths: PathLike | Iterable[PathLike], *, fs: float | None = ...,
              leads: Sequence[str] | str | None = ..., start_s: float = ...,
              duration_s: float | None = ..., errors: Literal["raise"] = ...) -> list[ECGRecord]: ...


@overload
def read_ecgs(paths: PathLike | Iterable[PathLike], *, fs: float | None = ...,
              leads: Sequence[str] | str | None = ..., start_s: float = ...,
              duration_s: float | None = ...,
              errors: Literal["return"]) -> list[ECGRecord | ECGReadError]: ...


def read_ecgs(paths: PathLike | Iterable[PathLike], *, fs: float | None = None,
              leads: Sequence[str] | str | None = None, start_s: float = 0.0,
              duration_s: float | None = None,
              errors: str = "raise") -> list[ECGRecord] | list[ECGRecord | ECGReadError]:
    """Read any set of files: one record per recording, each named after its file.

    Files may sit in different folders (as Gradio stores uploads): WFDB headers are matched with
    their signal files by the names the header gives. Zip archives and folders are expanded.
    Annotation files (.atr, .qrs ...) that come with a record are ignored.

    `leads`, when given, names the ECG channels of EVERY record read in this call, in the file's
    channel order (e.g. ["II"] for a one-column CSV without a header, or ["I", "II", "V1"]); the
    names replace those the file gives or lacks. Each is spelt as usual ("ii", "Lead II", "MLII"
    are understood); channels that are not ECGs (PLETH, RESP, ABP ...) are still left out and not
    counted. A record whose ECG channel count differs from the number of names cannot be read. A
    single string is read as comma-separated names ("I, II, V1").

    `errors="raise"` (the default) raises ECGReadError at the first file that cannot be read.
    `errors="return"` reads every file it can and returns, in input order, one entry per record:
    the ECGRecord, or the ECGReadError saying why that record could not be read. Failures that
    concern the whole call (no file at all, too many files, invalid fs, leads or window) raise
    in both modes.
    """
    if errors not in ("raise", "return"):
        raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}.")
    keep = errors == "return"
    files = _as_paths(paths)
    first = files[0].name or _folder_name(files[0])
    _check_options(first, fs, start_s, duration_s)
    user_leads = _check_leads(first, leads)
    with tempfile.TemporaryDirectory(prefix="ecgfm-read-") as tmp:
        tmp_dir = Path(tmp)
        expanded, empty_folders = _expand(files, tmp_dir, keep)
        jobs = _group(expanded, keep, empty_folders)
        entries: list[tuple[int, ECGRecord | ECGReadError]] = []
        for i, job in enumerate(jobs):
            if job.error is not None:
                entries.append((job.pos, job.error))
                continue
            try:
                entries.append((job.pos, _run(job, tmp_dir / f"record{i}", fs, user_leads,
                                              start_s, duration_s)))
            except ECGReadError as err:
                if not keep:
                    raise
                entries.append((job.pos, err))
    if keep:
        entries.sort(key=lambda entry: entry[0])
    return [entry for _, entry in entries]


# --- inputs -------------------------------------------------------------------------------------

def _as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        files = [Path(p) for p in paths]
    except TypeError:
        raise ECGReadError("Give a file path or a list of file paths to read.") from None
    if not files:
        raise ECGReadError("No file was given to read.")
    if len(files) > MAX_FILES:
        raise ECGReadError(f"{len(files)} files were given; at most {MAX_FILES} can be read at once.")
    return files


def _check_options(first: str, fs, start_s, duration_s) -> None:
    if fs is not None:
        try:
            fs_value = float(fs)
        except (TypeError, ValueError):
            fs_value = float("nan")
        if not math.isfinite(fs_value) or not MIN_FS <= fs_value <= MAX_FS:
            raise ECGReadError(f"{first}: the given sampling rate {fs} Hz is outside the "
                               f"{MIN_FS:g} Hz to {MAX_FS / 1000:g} kHz an ECG can be read at.")
    if not math.isfinite(float(start_s)) or start_s < 0:
        raise ECGReadError(f"{first}: the window must start at 0 s or later.")
    if duration_s is not None and (not math.isfinite(float(duration_s)) or duration_s <= 0):
        raise ECGReadError(f"{first}: the window must last more than 0 s.")


class _LeadName(NamedTuple):
    """One lead name given by the caller: as written, and what `classify_lead` makes of it."""

    given: str
    kind: str
    canonical: str


def _check_leads(first: str, leads) -> list[_LeadName] | None:
    """The caller's lead names, classified; an unknown or repeated name fails the whole call."""
    if leads is None:
        return None
    if isinstance(leads, str):
        leads = leads.split(",")
    try:
        given = [str(name).strip() for name in leads]
    except TypeError:
        raise ECGReadError(f"{first}: the lead names must be given as a list of names such as "
                           "['I', 'II', 'V1'].") from None
    if not given or not any(given):
        raise ECGReadError(f"{first}: the list of lead names given is empty.")
    out: list[_LeadName] = []
    seen: dict[str, str] = {}
    for name in given:
        kind, canonical = classify_lead(name)
        if not name or kind in (UNKNOWN, NON_ECG):
            raise ECGReadError(f"{first}: the lead name '{name[:40]}' given is not an ECG lead "
                               "ECG-FM knows (such as I, II, aVR, V1, MLII or V4R).")
        key = canonical if kind in (STANDARD, MODIFIED) else canonical.lower()
        if key in seen:
            raise ECGReadError(f"{first}: the lead names given name lead {canonical} twice "
                               f"({seen[key]} and {name}).")
        seen[key] = name
        out.append(_LeadName(name, kind, canonical))
    return out


def _head(path: Path, n: int = 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _folder_name(path: Path) -> str:
    return path.name or path.resolve().name or str(path)


def _expand(files: list[Path], tmp: Path,
            keep: bool) -> tuple[list[Path | ECGReadError], list[Path]]:
    """Check the files exist and are not empty; expand zip archives and folders.

    Returns the files in input order, with, in `keep` mode, the error of each file that cannot be
    read in its place (otherwise the first such error is raised), and the folders that hold no
    file at all.
    """
    from . import archive

    out: list[Path | ECGReadError] = []
    empty_folders: list[Path] = []

    def fail(err: ECGReadError) -> None:
        if not keep:
            raise err
        out.append(err)

    def add(paths: list[Path], dest_root: Path) -> None:
        for i, path in enumerate(paths):
            if path.is_dir():
                members = sorted(p for p in path.rglob("*") if p.is_file() and not any(
                    part.startswith(".") for part in p.relative_to(path).parts))
                if len(members) > MAX_FILES:
                    raise ECGReadError(f"{_folder_name(path)}: the folder holds more than "
                                       f"{MAX_FILES} files.")
                if not members:
                    empty_folders.append(path)
                add(members, dest_root / f"dir{i}")
                continue
            if not path.is_file():
                fail(ECGReadError(f"{path.name}: the file does not exist."))
                continue
            if path.stat().st_size == 0:
                fail(ECGReadError(f"{path.name}: the file is empty."))
                continue
            head = _head(path)
            ext = path.suffix.lower()
            if ext == ".npz" or not (archive.looks_like_zip(head) or ext == ".zip"):
                out.append(path)
                continue
            dest = dest_root / f"zip{i}"
            dest.mkdir(parents=True)
            try:
                members = archive.extract(path, dest)
            except ECGReadError as err:
                fail(err)
                continue
            if not members:
                fail(ECGReadError(f"{path.name}: the archive holds no files."))
                continue
            for member in members:
                if member.suffix.lower() == ".zip" or archive.looks_like_zip(_head(member)) \
                        and member.suffix.lower() != ".npz":
                    fail(ECGReadError(f"{path.name}: the archive holds another archive "
                                      f"({member.name}); put the ECG files in one zip."))
                elif member.stat().st_size == 0:
                    fail(ECGReadError(f"{member.name} (in {path.name}): the file is empty."))
                else:
                    out.append(member)

    add(files, tmp)
    if len(out) > MAX_FILES:
        raise ECGReadError(f"{len(out)} files were given; at most {MAX_FILES} can be read at once.")
    return out, empty_folders


class _Job:
    """One entry of the result: a WFDB header with its companion files, a single file, or the
    error that stands for a file or record that cannot be read.

    `pos` is the place of the record's first file among the inputs; `aliases` maps a companion
    to the name the header gives it (a renamed signal file); `warnings` go into the record.
    """

    def __init__(self, kind: str, main: Path | None, companions: list[Path] | None = None, *,
                 pos: int = 0, error: ECGReadError | None = None) -> None:
        self.kind = kind
        self.main = main
        self.companions = companions or []
        self.pos = pos
        self.error = error
        self.aliases: dict[Path, str] = {}
        self.warnings: list[str] = []
        self.missing: list[str] = []  # signal files the header names that were not found


def _group(items: list[Path | ECGReadError], keep: bool,
           empty_folders: list[Path] | None = None) -> list[_Job]:
    from . import wfdb_format

    files: list[Path] = []
    pos: dict[Path, int] = {}
    failed: list[_Job] = []  # in `keep` mode: the errors, each at its file's place
    for index, item in enumerate(items):
        if isinstance(item, ECGReadError):
            failed.append(_Job("error", None, pos=index, error=item))
        else:
            files.append(item)
            pos.setdefault(item, index)

    def fail(err: ECGReadError, at: int) -> None:
        if not keep:
            raise err
        failed.append(_Job("error", None, pos=at, error=err))

    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)

    headers = [p for p in files if p.suffix.lower() == ".hea" and wfdb_format.looks_like_header(p)]
    used: set[Path] = set()
    for bad in (p for p in files if p.suffix.lower() == ".hea" and p not in headers):
        used.add(bad)
        fail(ECGReadError(f"{bad.name}: this is not a valid WFDB header."), pos[bad])
    refs = {h: wfdb_format.referenced_files(h) for h in headers}
    segment_headers = {f"{seg}.hea" for (_, segs) in refs.values() for seg in segs}
    roots = [h for h in headers if h.name not in segment_headers]
    referenced = {name for (sigs, _) in refs.values() for name in sigs}

    jobs: list[_Job] = []
    record_stems: set[str] = set()

    def pick(name: str, owner: Path) -> Path | None:
        """A companion of `owner` among the given files, else beside the header on disk."""
        candidates = by_name.get(name, [])
        if len(candidates) > 1:
            raise ECGReadError(f"{owner.name}: {len(candidates)} of the files given are named "
                               f"{name}; give each record's files once.")
        if candidates:
            return candidates[0]
        beside = owner.parent / name
        return beside if beside.is_file() else None

    for header in roots:
        signal_files, segments = refs[header]
        used.add(header)
        record_stems.add(header.stem)
        record_stems.update(segments)
        try:
            job = _wfdb_job(header, signal_files, segments, pick, files, referenced, used)
        except ECGReadError as err:
            # The record's own files are part of its failure, not files of their own.
            used.update(p for name in signal_files for p in by_name.get(name, []))
            fail(err, pos[header])
            continue
        used.update(job.companions)
        job.pos = min(pos.get(p, pos[header]) for p in [header, *job.companions])
        jobs.append(job)
    for header in headers:
        if header not in roots and header not in used:
            used.add(header)  # a segment header whose master header was given without it

    # A signal file named like a given header that the header does not name (rec2.dat with a
    # rec2.hea naming 100.dat, where 100.dat cannot stand in): it belongs to that record, whose
    # error names the missing signal file, rather than asking for a header that was given.
    incomplete = {job.main.stem: job for job in jobs if job.missing}
    for path in files:
        owner = incomplete.get(path.stem)
        if path not in used and owner is not None and path.suffix.lower() in {
                Path(name).suffix.lower() for name in owner.missing}:
            used.add(path)
            owner.companions.append(path)
            owner.pos = min(owner.pos, pos[path])

    leftovers: list[Path] = []
    annotations: list[Path] = []
    for path in files:
        if path in used:
            continue
        ext = path.suffix.lower()
        if ext in _ANNOTATION_EXT and (path.stem in record_stems or ext != ".ecg"):
            annotations.append(path)
            continue
        if ext in (".dat", ".xyz") and not _looks_like_text(_head(path, 4096)):
            namesake = next((h for h in roots if h.stem == path.stem), None)
            if namesake is not None:
                named = ", ".join(refs[namesake][0])
                fail(ECGReadError(f"{path.name}: the header {namesake.name} does not name this "
                                  "signal file" + (f" (it names {named})" if named else "")
                                  + ", so it was not read."), pos[path])
            else:
                fail(ECGReadError(f"{path.name}: this is a WFDB signal file; give its .hea header "
                                  "with it."), pos[path])
            continue
        leftovers.append(path)
    jobs.extend(_Job("file", p, pos=pos[p]) for p in leftovers)
    if not jobs and not failed:
        if annotations:
            raise ECGReadError(f"{annotations[0].name}: this is an annotation file, not an ECG "
                               "signal; give the record's .hea header and signal files with it.")
        if empty_folders:
            raise ECGReadError(f"{_folder_name(empty_folders[0])}: the folder holds no ECG file.")
        raise ECGReadError("No ECG file was given.")
    return jobs + failed


def _wfdb_job(header: Path, signal_files: list[str], segments: list[str], pick,
              files: list[Path], referenced: set[str], used: set[Path]) -> _Job:
    """The job reading the WFDB record of `header`, its companions found by the names it gives."""
    from . import wfdb_format

    for name in [*signal_files, *segments]:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ECGReadError(f"{header.name}: the header refers to a file outside its folder "
                               f"({name[:60]}).")
    job = _Job("wfdb", header)
    missing: list[str] = []
    for name in signal_files:
        found = pick(name, header)
        if found is None:
            missing.append(name)
        else:
            job.companions.append(found)
    if missing and len(signal_files) == 1 and wfdb_format.single_signal_file(header) == missing[0]:
        # Renamed together: rec2.hea given with rec2.dat while the header still names 100.dat.
        wanted = missing[0]
        stand_ins = [p for p in files if p.stem == header.stem and p != header
                     and p.suffix.lower() == Path(wanted).suffix.lower()
                     and p.name not in referenced and p not in used]
        beside = header.with_suffix(Path(wanted).suffix)
        if not stand_ins and beside != header and beside.is_file() and beside.name not in referenced:
            stand_ins = [beside]  # the header was given alone, its renamed signal file beside it
        if len(stand_ins) == 1:
            job.companions.append(stand_ins[0])
            job.aliases[stand_ins[0]] = wanted
            job.warnings.append(f"The header names the signal file {wanted}, which was not "
                                f"found; {stand_ins[0].name} was read in its place.")
            missing = []
    job.missing = missing
    for seg in segments:
        seg_header = pick(f"{seg}.hea", header)
        if seg_header is None:
            continue
        job.companions.append(seg_header)
        for name in wfdb_format.referenced_files(seg_header)[0]:
            found = pick(name, header)
            if found is not None:
                job.companions.append(found)
    return job


def _looks_like_text(head: bytes) -> bool:
    """Whether a file's first 4 KB read as delimited text (printable, with digits)."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.98 * len(text) and any(ch.isdigit() for ch in text)


# --- dispatch -----------------------------------------------------------------------------------

def _run(job: _Job, workdir: Path, fs, user_leads, start_s, duration_s) -> ECGRecord:
    name = job.main.name
    try:
        if job.kind == "wfdb":
            raw = _read_wfdb(job, workdir, start_s, duration_s)
        else:
            raw = _read_file(job.main, fs, start_s, duration_s, user_leads is not None)
        if isinstance(raw, ECGRecord):
            raw = _from_record(raw)
        raw.warnings[:0] = job.warnings
        return _finalize(raw, name, fs, start_s, duration_s, job.kind == "wfdb", user_leads)
    except ECGReadError:
        raise
    except MemoryError:
        raise ECGReadError(f"{name}: the recording is too large to read into memory.") from None
    except Exception as err:  # noqa: BLE001 - one plain sentence, never a traceback
        raise ECGReadError(f"{name}: the file could not be read ({type(err).__name__}); it may be "
                           "corrupt or in an unsupported variant of its format.") from None


def _read_wfdb(job: _Job, workdir: Path, start_s, duration_s) -> RawRecord:
    """Bring the header and its companions into one private folder, then read with wfdb."""
    from . import wfdb_format

    workdir.mkdir(parents=True, exist_ok=True)
    for path in [job.main, *job.companions]:
        target = workdir / job.aliases.get(path, path.name)
        if target.exists():
            continue
        try:
            os.symlink(path.resolve(), target)
        except OSError:
            shutil.copyfile(path, target)
    return wfdb_format.read(workdir / job.main.name, start_s=start_s, duration_s=duration_s)


def _read_file(path: Path, fs, start_s, duration_s, names_given: bool = False):
    from . import edf, matlab, numpy_format, text, vendor

    name = path.name
    ext = path.suffix.lower()
    head = _head(path, 4096)
    if edf.looks_like_edf(head) or ext in (".edf", ".bdf"):
        return edf.read(path, start_s=start_s, duration_s=duration_s)
    if head.startswith(b"\x93NUMPY") or ext == ".npy":
        return numpy_format.read_npy(path, fs=fs, names_given=names_given)
    if ext == ".npz":  # any other zip was unpacked by `_expand` before reading
        return numpy_format.read_npz(path, fs=fs, names_given=names_given)
    if head.startswith(b"MATLAB") or ext == ".mat":
        return matlab.read(path, fs=fs, names_given=names_given)
    if (ext in _VENDOR_EXT or ext not in _TEXT_EXT) and vendor.sniff(path, head):
        return vendor.read(path)
    if _looks_like_text(head) and (ext not in _VENDOR_EXT or ext == ".ecg"):
        return text.read(path, fs=fs, names_given=names_given)
    raise ECGReadError(f"{name}: the file format is not recognised as an ECG format ECG-FM reads.")


def _from_record(record: ECGRecord) -> RawRecord:
    """A vendor reader's ECGRecord (leads as named in the file, mV) as channels."""
    channels = [Channel(name=lead, data=np.asarray(row, dtype=np.float64), fs=float(record.fs),
                        unit="mV", scale=1.0) for lead, row in zip(record.leads, record.signal)]
    for lead, row in record.extra_leads.items():
        channels.append(Channel(name=lead, data=np.asarray(row, dtype=np.float64),
                                fs=float(record.fs), unit="mV", scale=1.0))
    raw = RawRecord(name=record.name, format=record.format, channels=channels,
                    warnings=list(record.warnings), start_s=record.start_s,
                    total_duration_s=record.total_duration_s)
    raw.extra["units"] = record.units
    raw.extra["derived"] = list(record.derived_leads)
    raw.extra["device_report"] = record.device_report
    return raw


# --- central post-processing --------------------------------------------------------------------

def _names_list(names: list[str]) -> str:
    return ", ".join(names)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _finalize(raw: RawRecord, fname: str, fs_given, start_s, duration_s, is_wfdb: bool,
              user_leads: list[_LeadName] | None = None) -> ECGRecord:
    warnings = list(raw.warnings)

    # 1. What each channel is.
    kinds = []
    dropped = []
    for ch in raw.channels:
        unit_hint = ch.unit if (ch.scale is None and ch.unit) else None
        kind, canonical = classify_lead(ch.name, unit_hint)
        if kind == NON_ECG:
            dropped.append(ch.name.strip() or "unnamed")
        else:
            kinds.append((ch, kind, canonical))
    if dropped:
        warnings.append(f"Left out {len(dropped)} non-ECG {_plural(len(dropped), 'channel', 'channels')} "
                        f"({_names_list(dropped)}); ECG-FM reads only ECG leads.")
    if user_leads is not None:
        kinds = _rename(kinds, user_leads, fname, len(dropped), bool(raw.extra.get("unnamed")),
                        warnings)
    if not kinds:
        raise ECGReadError(f"{fname}: the file holds no ECG leads"
                           + (f" (only {_names_list(dropped)})." if dropped else "."))

    # 2. One sampling rate.
    for ch, _, _ in kinds:
        if not math.isfinite(ch.fs) or ch.fs <= 0:
            raise ECGReadError(f"{fname}: the sampling rate {ch.fs:g} Hz is impossible.")
    fs = max(ch.fs for ch, _, _ in kinds)
    if not MIN_FS <= fs <= MAX_FS:
        raise ECGReadError(f"{fname}: the sampling rate {fs:g} Hz is outside the {MIN_FS:g} Hz to "
                           f"{MAX_FS / 1000:g} kHz an ECG can be read at.")
    if fs_given is not None and raw.extra.get("fs_stated", True) \
            and abs(fs - float(fs_given)) > 1e-3 * fs:
        warnings.append(f"The file states its sampling rate ({fs:g} Hz); the {float(fs_given):g} Hz "
                        "given was not used.")
    resampled = []
    for i, (ch, kind, canonical) in enumerate(kinds):
        if ch.fs != fs and ch.data.size:
            n_new = int(round(ch.data.size * fs / ch.fs))
            t_old = np.arange(ch.data.size) / ch.fs
            data = np.interp(np.arange(n_new) / fs, t_old, ch.data)
            kinds[i] = (replace(ch, data=data, fs=fs), kind, canonical)
            resampled.append(f"{ch.name} ({ch.fs:g} Hz)")
    if resampled:
        warnings.append(f"{_names_list(resampled)} {_plural(len(resampled), 'was', 'were')} "
                        f"interpolated to {fs:g} Hz, the rate of the other leads.")
    lengths = {ch.data.size for ch, _, _ in kinds}
    n = min(lengths)
    if max(lengths) - n > 1:
        warnings.append(f"The leads have different lengths; all were cut to the shortest "
                        f"({n / fs:.1f} s).")
    if n == 0:
        raise ECGReadError(f"{fname}: the file holds no samples.")

    # 3. Missing samples.
    empty = []
    filled = []
    kept = []
    for ch, kind, canonical in kinds:
        data = np.array(ch.data[:n], dtype=np.float64)
        bad = np.isnan(data)  # missing; an infinite value is one too large (an overflow), refused
        if bad.all():
            empty.append(ch.name)
            continue
        _check_magnitude(data[~bad], fname, ch.name)
        if bad.any():
            good = np.flatnonzero(~bad)
            data[bad] = np.interp(np.flatnonzero(bad), good, data[good])
            filled.append(f"{canonical} ({int(bad.sum())})")
        kept.append((replace(ch, data=data), kind, canonical))
    if not kept:
        raise ECGReadError(f"{fname}: the signal holds no valid samples (all are missing).")
    if empty:
        warnings.append(f"{_plural(len(empty), 'Lead', 'Leads')} {_names_list(empty)} "
                        f"{_plural(len(empty), 'holds', 'hold')} no samples (empty or all missing) "
                        f"and {_plural(len(empty), 'was', 'were')} treated as not recorded.")
    if filled:
        warnings.append(f"Missing samples were filled by linear interpolation between their "
                        f"neighbours in {_names_list(filled)}.")

    # 4. Units: known scales as given; unknown ones inferred together, from strong evidence only.
    unit_labels = []
    unknown = [ch for ch, _, _ in kept if ch.scale is None]
    inferred_scale, inferred_label, offsets = 1.0, "mV (assumed)", {}
    if unknown:
        values = np.concatenate([ch.data for ch in unknown])
        integer = bool(np.all(values == np.round(values)))
        span = float(values.max() - values.min())
        if integer and span > COUNTS_MIN_RANGE:
            inferred_scale, inferred_label = 1.0 / WFDB_DEFAULT_GAIN, "ADC counts (inferred)"
            unsigned = values.min() >= 0
            note = ""
            if unsigned:
                for ch in unknown:
                    offsets[id(ch)] = (2.0 ** (raw.adc_bits - 1) if raw.adc_bits
                                       else float(np.median(ch.data)))
                note = (f", after removing the mid-scale offset {2 ** (raw.adc_bits - 1)}"
                        if raw.adc_bits else ", after removing each lead's median (the ADC offset)")
            warnings.append("The file does not state its units; the values are whole numbers "
                            f"spanning {span:.0f} units, so they were taken as raw ADC counts and "
                            f"converted with WFDB's default gain of {WFDB_DEFAULT_GAIN:.0f} units "
                            f"per mV{note}; the amplitude scale is therefore an assumption.")
        elif float(np.median(np.abs(values))) > UV_MIN_MEDIAN:
            inferred_scale, inferred_label = 1e-3, "uV (inferred)"
            warnings.append("The file does not state its units; the median amplitude "
                            f"({float(np.median(np.abs(values))):.0f}) is far too large for mV, so "
                            "the values were taken as microvolts.")
    converted = []
    for ch, kind, canonical in kept:
        if ch.scale is None:
            data = (ch.data - offsets.get(id(ch), 0.0)) * inferred_scale
            label = inferred_label
        else:
            data = (ch.data - ch.offset) * ch.scale
            label = ch.unit or "mV"
        _check_magnitude(data, fname, ch.name)  # an ADC offset or scale from the file may be absurd
        if label not in unit_labels:
            unit_labels.append(label)
        converted.append((data, kind, canonical, ch.name))
    units = raw.extra.get("units") or "; ".join(unit_labels)

    # 5. Names.
    leads: list[str] = []
    rows: list[np.ndarray] = []
    extra: dict[str, np.ndarray] = {}
    modified, unknown_names, duplicates = [], [], []
    for data, kind, canonical, original in converted:
        if kind in (STANDARD, MODIFIED):
            if canonical in leads:
                key = _unique(f"{canonical} ({original})", extra)
                extra[key] = data.astype(np.float32)
                duplicates.append(canonical)
                continue
            if kind == MODIFIED:
                modified.append(f"{original} as {canonical}")
            leads.append(canonical)
            rows.append(data)
        elif kind == EXTRA:
            extra[_unique(original, extra)] = data.astype(np.float32)
        else:
            label = _unique(canonical, dict.fromkeys(leads))
            leads.append(label)
            rows.append(data)
            unknown_names.append(label)
    if modified:
        warnings.append(f"Used {_names_list(modified)}: a modified limb lead (Holter/monitor "
                        "electrode placement), whose shape and amplitude can differ from the "
                        "standard 12-lead one.")
    if unknown_names:
        warnings.append(f"The position of {_plural(len(unknown_names), 'lead', 'leads')} "
                        f"{_names_list(unknown_names)} is not stated in the file; "
                        f"{_plural(len(unknown_names), 'it was', 'they were')} kept under "
                        f"{_plural(len(unknown_names), 'its', 'their')} own name and "
                        f"{_plural(len(unknown_names), 'is not', 'are not')} one of the 12 leads "
                        "ECG-FM reads.")
    if duplicates:
        warnings.append(f"{_plural(len(duplicates), 'Lead', 'Leads')} {_names_list(duplicates)} "
                        "appeared more than once; the first was used and the others kept aside.")
    if extra and leads:
        warnings.append(f"{_plural(len(extra), 'Lead', 'Leads')} {_names_list(list(extra))} "
                        f"{_plural(len(extra), 'is', 'are')} not among the 12 leads ECG-FM was "
                        "trained on and " f"{_plural(len(extra), 'was', 'were')} kept aside.")
    elif extra:
        warnings.append(f"The file holds no lead of the 12-lead ECG (only {_names_list(list(extra))}); "
                        "it can be drawn, but ECG-FM cannot read it.")
    stored = len(leads)
    signal = np.stack(rows).astype(np.float32) if rows else np.zeros((0, n), np.float32)

    record = ECGRecord(name=raw.name, signal=signal, fs=float(fs),
                       leads=leads, format=raw.format, units=units, warnings=warnings,
                       derived_leads=list(raw.extra.get("derived", [])), extra_leads=extra,
                       start_s=raw.start_s, total_duration_s=raw.total_duration_s,
                       device_report=raw.extra.get("device_report"))

    # 6. The window.
    if raw.windowed:
        total = record.total_duration_s
        if total is not None and (record.start_s > 0 or record.duration_s < total - 1.0 / fs):
            end = record.start_s + record.duration_s
            record.warnings.append(window_note(record.start_s, end, total))
    else:
        record = record.window(start_s, duration_s)

    # 7. Limb leads computable from others, standard order.
    record = _ordered(complete_limb_leads(_ordered(record)))

    # 8. Plausibility.
    # Fewer leads than 12 is said once, by the input adequacy of the result (preprocess/adequacy).
    _check_amplitude(record)
    return record


def _check_magnitude(data: np.ndarray, fname: str, lead: str) -> None:
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if not peak <= MAX_ABS_VALUE:
        name = str(lead).strip()[:40] or "unnamed"
        raise ECGReadError(f"{fname}: lead {name} holds values of magnitude {peak:.3g}, far too "
                           "large for an ECG; the file may be corrupt.")


def _rename(kinds: list, user_leads: list[_LeadName], fname: str, n_other: int, unnamed: bool,
            warnings: list[str]) -> list:
    """The file's ECG channels under the names the caller gave, in the file's order."""
    if len(user_leads) != len(kinds):
        given = len(user_leads)
        has = (f"{len(kinds)} ECG {_plural(len(kinds), 'channel', 'channels')}" if kinds
               else "no ECG channel")
        other = (f" (its {n_other} other {_plural(n_other, 'channel is', 'channels are')} not ECG)"
                 if n_other else "")
        raise ECGReadError(f"{fname}: {given} lead {_plural(given, 'name was', 'names were')} "
                           f"given but the file holds {has}{other}.")
    file_names = ["unnamed" if unnamed or not ch.name.strip() else ch.name.strip()
                  for ch, _, _ in kinds]
    file_part = "unnamed" if all(name == "unnamed" for name in file_names) else _names_list(file_names)
    warnings.append(f"Lead names given by the user ({_names_list([n.given for n in user_leads])}) "
                    f"were used in place of the file's ({file_part}).")
    return [(replace(ch, name=lead.given), lead.kind, lead.canonical)
            for (ch, _, _), lead in zip(kinds, user_leads)]


def _unique(name: str, taken) -> str:
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def _ordered(record: ECGRecord) -> ECGRecord:
    """Standard leads in the standard order first, then any others as they came."""
    order = [lead for lead in STANDARD_LEADS if lead in record.leads]
    order += [lead for lead in record.leads if lead not in STANDARD_LEADS]
    if order == record.leads:
        return record
    idx = [record.leads.index(lead) for lead in order]
    return replace(record, signal=record.signal[idx], leads=order)


def _check_amplitude(record: ECGRecord) -> None:
    spans = []
    for row in record.signal:
        lo, hi = np.percentile(row, [0.5, 99.5])
        if row.max() > row.min():
            spans.append(float(hi - lo))
    if not spans:
        return
    typical = float(np.median(spans))
    if typical > 20.0:
        record.warnings.append(f"The amplitudes (typically {typical:.0f} mV peak to peak) are "
                               "implausibly large for an ECG in mV; the file's units may be wrong.")
    elif typical < 0.02:
        record.warnings.append(f"The amplitudes (typically {typical * 1000:.1f} µV peak to peak) are "
                               "implausibly small for an ECG in mV; the file's units may be wrong.")
