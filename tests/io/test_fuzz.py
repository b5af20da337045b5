"""Property-based fuzzing of every reader family, with hypothesis.

One small valid file (or WFDB pair) per family is made here; hypothesis then changes its bytes
(flip, set, insert, delete, repeat, truncate), the fields of its header (rates, counts, gains,
scales, lead names ...), and the number of leads, samples and kinds of values it holds. Whatever it
makes, `read_ecgs(paths, errors="raise")` must either return records (a finite float32 signal, a
plausible rate, one lead name per row) or raise ECGReadError with one sentence naming a file given.
Nothing else may escape, no library warning may reach the caller, and no case may run long
(hypothesis deadline, and a hard alarm) or allocate much (tracemalloc peak, and on Linux an
address-space cap turning an attempt at gigabytes into a MemoryError that fails the case rather
than the machine).

Budget: ECGFM_FUZZ_EXAMPLES examples per family and test (25 by default). Examples are derived
from each test's name (derandomize), so every run tries the same cases, unless ECGFM_FUZZ_RANDOM=1;
nothing is written into the repository (database=None). A failure prints the smallest input
hypothesis found; add it below as a regular regression test once fixed. A crash of the interpreter
itself (a segmentation fault in a library) cannot be shrunk: with ECGFM_FUZZ_LAST_CASE=folder, each
case's files are written there before they are read, so the crash leaves its input behind.
"""
from __future__ import annotations

import base64
import io
import os
import re
import signal
import struct
import tempfile
import threading
import tracemalloc
import warnings
import zipfile
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ecgfm.errors import ECGReadError  # noqa: E402
from ecgfm.io import MAX_FS, MIN_FS, read_ecgs  # noqa: E402
from ecgfm.io.record import STANDARD_LEADS, ECGRecord  # noqa: E402

EXAMPLES = int(os.environ.get("ECGFM_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("ECGFM_FUZZ_RANDOM", "") == "1"
DEADLINE_S = float(os.environ.get("ECGFM_FUZZ_DEADLINE_S", "5"))
HARD_LIMIT_S = 60  # a case still running after this is stopped and fails
PEAK_BYTES = 300 * 2**20  # tracemalloc peak of one case (numpy's buffers are traced too)
CAP_BYTES = 2 * 2**30  # address space a case may add (Linux): beyond it, MemoryError, a failure
FS = 500.0

FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=DEADLINE_S),
                derandomize=not RANDOM, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------------------------
# The property
# --------------------------------------------------------------------------------------------

class _RanTooLong(BaseException):
    """Not an Exception, so that no reader's broad `except Exception` can swallow it."""


@contextmanager
def _hard_limit(seconds: float):
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _RanTooLong(f"one case ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextmanager
def _memory_cap(extra: int):
    """Cap the address space at its current size plus `extra` while a case runs (Linux), so that
    a reader that tries to allocate gigabytes gets a MemoryError instead of the machine being
    brought to the out-of-memory killer (a header claiming 1e11 signals once was)."""
    try:
        import resource
    except ImportError:
        yield
        return
    used = _address_space()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if used is None:
        yield
        return
    limit = used + extra if hard == resource.RLIM_INFINITY else min(hard, used + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _ran_out_of_memory(error: BaseException | None) -> bool:
    """Whether a MemoryError caused `error` (readers turn one into an ECGReadError)."""
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, MemoryError):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _member_names(paths: list[Path]) -> list[str]:
    """The file names inside the zip archives given: an error may name the member it concerns."""
    names = []
    for path in paths:
        try:
            with zipfile.ZipFile(path) as zf:
                names += [PurePosixPath(n.replace("\\", "/")).name for n in zf.namelist()]
        except Exception:  # noqa: BLE001 - not a readable zip
            continue
    return [n for n in names if n]


_IMPORTED: list[bool] = []


def _import_readers() -> None:
    """Import the readers and their libraries once, untraced: under tracemalloc a first import
    takes seconds, and no case should pay for it."""
    if not _IMPORTED:
        import pandas  # noqa: F401
        import pydicom  # noqa: F401
        import pyedflib  # noqa: F401
        import scipy.io  # noqa: F401
        import wfdb  # noqa: F401

        from ecgfm.io import archive, edf, matlab, numpy_format, text, vendor  # noqa: F401
        for kind in ("muse", "philips", "hl7", "scp"):
            vendor._parser(kind)
        _IMPORTED.append(True)


def check_read(paths: list[Path], **kwargs) -> list[ECGRecord] | ECGReadError:
    """Read `paths` and assert the property; return the records or the error."""
    _import_readers()
    names = [p.name for p in paths] + _member_names(paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracemalloc.start()
        try:
            with _hard_limit(HARD_LIMIT_S), _memory_cap(CAP_BYTES):
                try:
                    result = read_ecgs(paths, errors="raise", **kwargs)
                except ECGReadError as err:
                    result = err
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert not _ran_out_of_memory(result if isinstance(result, ECGReadError) else None), \
        f"reading {names} tried to allocate more than {CAP_BYTES / 2**30:.0f} GB"
    assert peak < PEAK_BYTES, f"reading {names} allocated {peak / 2**20:.0f} MB at its peak"
    leaked = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not leaked, f"warnings reached the caller: {leaked}"
    if isinstance(result, ECGReadError):
        message = str(result)
        assert any(name in message for name in names), message
        assert message.endswith(".") and "\n" not in message and "Traceback" not in message, message
        assert tempfile.gettempdir() not in message, message
        return result
    assert isinstance(result, list) and result
    for rec in result:
        assert isinstance(rec, ECGRecord)
        sig = rec.signal
        assert sig.dtype == np.float32 and sig.ndim == 2, (sig.dtype, sig.shape)
        assert sig.shape[0] == len(rec.leads) and len(set(rec.leads)) == len(rec.leads)
        assert rec.leads or rec.extra_leads
        assert sig.shape[1] > 0
        assert np.isfinite(sig).all(), f"{rec.name}: non-finite samples in the signal"
        for lead, row in rec.extra_leads.items():
            assert np.asarray(row).shape == (sig.shape[1],), lead
            assert np.isfinite(row).all(), f"{rec.name}: non-finite samples in {lead}"
        assert MIN_FS <= rec.fs <= MAX_FS, rec.fs
        assert all(isinstance(w, str) and "\n" not in w for w in rec.warnings)
    return result


# --------------------------------------------------------------------------------------------
# Valid files, built here
# --------------------------------------------------------------------------------------------

TWELVE = list(STANDARD_LEADS)
MORE = TWELVE + ["V7", "V3R", "X", "PLETH", "MLII", "V4R"]


def _mv(n_leads: int, n: int, seed: int = 0) -> np.ndarray:
    """An ECG-like [leads, samples] signal in mV."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return np.stack([0.6 * np.sin(2 * np.pi * 1.1 * t + k) + rng.normal(0, 0.03, n)
                     for k in range(n_leads)])


def _values(kind: str, n_leads: int, n: int, seed: int) -> np.ndarray:
    """[leads, samples] mV values of a kind a file may hold."""
    x = _mv(n_leads, n, seed)
    rng = np.random.default_rng(seed + 1)
    hit = rng.random(x.shape) < 0.2
    if kind == "nan":
        x[hit] = np.nan
    elif kind == "all_nan":
        x[:] = np.nan
    elif kind == "inf":
        x[hit] = rng.choice([np.inf, -np.inf], size=int(hit.sum()))
    elif kind == "huge":
        x[hit] = rng.choice([1e30, -1e38, 3.5e38, 1e300, -1.7e308], size=int(hit.sum()))
    elif kind == "tiny":
        x *= 1e-30
    elif kind == "constant":
        x[:] = 0.25
    elif kind == "counts":
        x = np.round(x * 1000 + 2048)
    elif kind == "microvolts":
        x = x * 1000
    return x


def _ints(x: np.ndarray, lo: int = -32767, hi: int = 32767, gain: float = 200.0,
          missing: int = 0) -> np.ndarray:
    """mV to stored integer codes, clipped to the format's range; NaN to `missing`."""
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.clip(np.nan_to_num(x * gain, nan=missing, posinf=hi, neginf=lo), lo, hi)
    return np.round(y).astype(np.int64)


def build_wfdb(fmt: str, x: np.ndarray, names: list[str]) -> dict[str, bytes]:
    import wfdb

    lo, hi, missing = (-2047, 2047, -2048) if fmt == "212" else (-32767, 32767, -32768)
    codes = _ints(x, lo, hi, missing=missing)
    with tempfile.TemporaryDirectory() as tmp:
        wfdb.wrsamp("rec", fs=FS, units=["mV"] * len(names), sig_name=list(names),
                    d_signal=codes.T.copy(), fmt=[fmt] * len(names), adc_gain=[200.0] * len(names),
                    baseline=[0] * len(names), write_dir=tmp)
        return {name: (Path(tmp) / name).read_bytes() for name in ("rec.hea", "rec.dat")}


def _fmt(v: float) -> str:
    return "nan" if np.isnan(v) else repr(float(v)) if abs(v) > 1e6 or 0 < abs(v) < 1e-4 \
        else f"{v:.4f}"


def build_csv(x: np.ndarray, names: list[str] | None, time: bool = True) -> bytes:
    rows = []
    if names is not None:
        rows.append(",".join((["time"] if time else []) + list(names)))
    for i in range(x.shape[1]):
        cells = [f"{i / FS:.3f}"] if time else []
        rows.append(",".join(cells + [_fmt(v) for v in x[:, i]]))
    return ("\n".join(rows) + "\n").encode()


def build_npy(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def build_npz(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def build_mat(variables: dict) -> bytes:
    import scipy.io as sio

    buf = io.BytesIO()
    sio.savemat(buf, variables)
    return buf.getvalue()


def build_edf(x: np.ndarray, names: list[str]) -> bytes:
    from pyedflib import highlevel

    with np.errstate(over="ignore", invalid="ignore"):
        uv = np.clip(np.nan_to_num(x * 1000, nan=0, posinf=5000, neginf=-5000), -5000, 5000)
    headers = [highlevel.make_signal_header(name, dimension="uV", sample_frequency=FS,
                                            physical_min=-5000, physical_max=5000)
               for name in names]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyedflib warns when a signal reaches its physical range
        path = Path(tmp) / "rec.edf"
        # a fixed start date: the same seed every day
        highlevel.write_edf(str(path), list(uv), headers,
                            header={"startdate": datetime(2020, 1, 2, 3, 4, 5)})
        return path.read_bytes()


def build_muse(x: np.ndarray, names: list[str]) -> bytes:
    leads = []
    for name, row in zip(names, _ints(x, gain=1000 / 4.88)):
        payload = row.astype("<i2").tobytes()
        leads.append(
            f"<LeadData><LeadByteCountTotal>{len(payload)}</LeadByteCountTotal>"
            f"<LeadTimeOffset>0</LeadTimeOffset><LeadSampleCountTotal>{row.size}</LeadSampleCountTotal>"
            "<LeadAmplitudeUnitsPerBit>4.88</LeadAmplitudeUnitsPerBit>"
            "<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits><LeadHighLimit>32767</LeadHighLimit>"
            f"<LeadLowLimit>-32768</LeadLowLimit><LeadID>{name}</LeadID>"
            "<LeadOffsetFirstSample>0</LeadOffsetFirstSample><FirstSampleBaseline>0</FirstSampleBaseline>"
            "<LeadSampleSize>2</LeadSampleSize><LeadOff>FALSE</LeadOff>"
            f"<WaveFormData>{base64.b64encode(payload).decode()}</WaveFormData></LeadData>")
    text = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
            "<RestingECG><MuseInfo><MuseVersion>9.0.7</MuseVersion></MuseInfo>"
            "<TestDemographics><AcquisitionDate>01-02-2020</AcquisitionDate>"
            "<AcquisitionTime>10:11:12</AcquisitionTime></TestDemographics>"
            "<Waveform><WaveformType>Rhythm</WaveformType><WaveformStartTime>0</WaveformStartTime>"
            f"<NumberofLeads>{len(names)}</NumberofLeads><SampleType>CONTINUOUS_SAMPLES</SampleType>"
            f"<SampleBase>{FS:g}</SampleBase><SampleExponent>0</SampleExponent>"
            + "".join(leads) + "</Waveform></RestingECG>\n")
    return text.encode("iso-8859-1")


def build_philips(x: np.ndarray, names: list[str]) -> bytes:
    codes = _ints(x, gain=1000 / 5).astype("<i2")
    n = codes.shape[1]
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<restingecgdata xmlns="http://www3.medical.philips.com">'
            "<documentinfo><documentname>r.xml</documentname><documenttype>SierraECG</documenttype>"
            "<documentversion>1.03</documentversion></documentinfo>"
            '<dataacquisition date="2020-01-02" time="10:11:12"><machine machineid="1">Cart</machine>'
            f"<signalcharacteristics><samplingrate>{FS:g}</samplingrate>"
            "<signalresolution>5</signalresolution><acquisitiontype>STD-12</acquisitiontype>"
            "<bitspersample>16</bitspersample><signaloffset>0</signaloffset>"
            f"<signalsigned>True</signalsigned><numberchannelsallocated>{len(names)}"
            f"</numberchannelsallocated><numberchannelsvalid>{len(names)}</numberchannelsvalid>"
            "</signalcharacteristics></dataacquisition>"
            f'<waveforms><parsedwaveforms durationperchannel="{int(n * 1000 / FS)}" '
            f'samplespersecond="{FS:g}" leadlabels="{" ".join(names)}" numberofleads="{len(names)}" '
            'dataencoding="Base64" compression="Uncompressed">'
            f"{base64.b64encode(codes.reshape(-1).tobytes()).decode()}</parsedwaveforms></waveforms>"
            "</restingecgdata>\n")
    return text.encode("utf-8")


def build_hl7(x: np.ndarray, names: list[str]) -> bytes:
    codes = _ints(x, gain=1000 / 2.5)
    seqs = ['<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
            '<value xsi:type="GLIST_TS"><head value="20200102101112.000"/>'
            f'<increment value="{1 / FS:g}" unit="s"/></value></sequence></component>']
    for name, row in zip(names, codes):
        seqs.append(f'<component><sequence><code code="MDC_ECG_LEAD_{name.upper()}" '
                    'codeSystem="2.16.840.1.113883.6.24"/><value xsi:type="SLIST_PQ">'
                    '<origin value="0" unit="uV"/><scale value="2.5" unit="uV"/>'
                    f'<digits>{" ".join(str(int(v)) for v in row)}</digits></value></sequence></component>')
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<id root="11111111-2222-3333-4444-555555555555"/>'
            '<code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
            '<effectiveTime><low value="20200102101112"/><high value="20200102101122"/></effectiveTime>'
            '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
            '<effectiveTime><low value="20200102101112"/><high value="20200102101122"/></effectiveTime>'
            "<component><sequenceSet>" + "".join(seqs) + "</sequenceSet></component>"
            "</series></component></AnnotatedECG>\n")
    return text.encode("utf-8")


_DICOM_CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8, "V7": 9,
                "V3R": 11, "V4R": 12, "X": 16, "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}


def build_dicom(x: np.ndarray, names: list[str], overrides: dict | None = None,
                channel_overrides: dict | None = None, data_bytes: int | None = None,
                groups: str = "median+rhythm", big_endian: bool = False) -> bytes:
    """A 12-lead ECG waveform dataset; `overrides` set rhythm-group fields to any value."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values set on purpose
        return _build_dicom(x, names, overrides or {}, channel_overrides or {}, data_bytes,
                            groups, big_endian)


def _build_dicom(x, names, overrides, channel_overrides, data_bytes, groups, big_endian) -> bytes:
    from pydicom import config
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    overrides = dict(overrides)
    codes = _ints(x, gain=1000 / 2.5)
    sop = "1.2.840.10008.5.1.4.1.1.9.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    meta.TransferSyntaxUID = ExplicitVRBigEndian if big_endian else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = overrides.pop("SOPClassUID", sop)
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"

    def group(label: str, data: np.ndarray, fields: dict) -> Dataset:
        g = Dataset()
        g.MultiplexGroupLabel = label
        g.WaveformOriginality = "ORIGINAL"
        g.NumberOfWaveformChannels = data.shape[0]
        g.NumberOfWaveformSamples = data.shape[1]
        g.SamplingFrequency = f"{FS:g}"
        g.WaveformBitsAllocated = 16
        g.WaveformSampleInterpretation = "SS"
        channels = []
        for name in names[: data.shape[0]]:
            ch = Dataset()
            src = Dataset()
            src.CodeValue = f"5.6.3-9-{_DICOM_CODES.get(name, 1)}"
            src.CodingSchemeDesignator = "SCPECG"
            src.CodeMeaning = f"Lead {name}"
            ch.ChannelSourceSequence = [src]
            ch.ChannelSensitivity = "2.5"
            unit = Dataset()
            unit.CodeValue = channel_overrides.get("unit", "uV")
            unit.CodingSchemeDesignator = "UCUM"
            unit.CodeMeaning = "microvolt"
            ch.ChannelSensitivityUnitsSequence = [unit]
            ch.ChannelSensitivityCorrectionFactor = "1"
            ch.ChannelBaseline = "0"
            ch.WaveformBitsStored = 16
            for key, value in channel_overrides.items():
                if key != "unit":
                    setattr(ch, key, value)
            channels.append(ch)
        g.ChannelDefinitionSequence = channels
        raw = np.ascontiguousarray(data.T.astype(">i2" if big_endian else "<i2")).tobytes()
        if data_bytes is not None:
            raw = (raw * (1 + data_bytes // max(1, len(raw))))[:data_bytes]
            raw += b"\x00" * (len(raw) % 2)
        g.WaveformData = raw
        for key, value in fields.items():
            setattr(g, key, value)
        return g

    median = np.full((codes.shape[0], 50), 555, dtype=np.int64)
    made = {"rhythm": group("RHYTHM", codes, overrides),
            "median": group("MEDIAN BEAT", median, {})}
    ds.WaveformSequence = [made[k] for k in groups.split("+") if k in made]
    previous = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = previous
    return buf.getvalue()


def build_contec(x: np.ndarray) -> bytes:
    # II, III, V1 ... V6 as (value - 2048) * 5 uV; a frame of zeros would end the data
    codes = np.clip(_ints(x[:8], gain=200.0) + 2048, 1, 65535).astype("<u2")
    header = (b"0000042\x00" + b"\x00\x00" + b"2021-05-06 07:08:09\x00" + b"\x00\x00"
              + b"\x00" * 8 + bytes([1, 60, 70]))
    return header + codes.T.tobytes() + bytes(37)


def build_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, blob in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 2, 3, 4, 5))
            info.compress_type = compression
            zf.writestr(info, blob)
    return buf.getvalue()


def _scp_sample() -> bytes | None:
    folder = Path(os.environ.get("ECGFM_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    folder = folder / "ecg-samples" / "scp"
    files = sorted(folder.glob("*.[sS][cC][pP]"), key=lambda p: p.stat().st_size) \
        if folder.is_dir() else []
    return files[0].read_bytes() if files else None


class Seed:
    """A valid record's files, the ones worth mutating, and how to read them; `head` is roughly
    where the header ends (byte mutations favour it)."""

    def __init__(self, files: dict[str, bytes], targets: list[str], kwargs: dict | None = None,
                 head: int = 512) -> None:
        self.files, self.targets, self.kwargs, self.head = files, targets, kwargs or {}, head

    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing case: keep it short
        return f"Seed({', '.join(self.files)})"


N = 600  # samples per lead in the seeds: 1.2 s at 500 Hz


def _seed(family: str) -> Seed:
    x = _mv(12, N)
    if family in ("wfdb16", "wfdb212"):
        return Seed(build_wfdb(family[4:], x, TWELVE), ["rec.hea", "rec.dat"])
    if family == "csv_header":
        return Seed({"rec.csv": build_csv(x, TWELVE)}, ["rec.csv"], {"fs": FS}, 200)
    if family == "csv_plain":
        return Seed({"rec.csv": build_csv(x, None, time=False)}, ["rec.csv"], {"fs": FS}, 200)
    if family == "npy":
        return Seed({"rec.npy": build_npy(x)}, ["rec.npy"], {"fs": FS}, 128)
    if family == "npz":
        return Seed({"rec.npz": build_npz({"signal": x, "fs": FS, "leads": np.array(TWELVE),
                                           "units": np.array(["mV"])})}, ["rec.npz"])
    if family == "mat":
        return Seed({"rec.mat": build_mat({"ecg": x, "fs": FS,
                                           "leads": np.array(TWELVE, dtype=object)})}, ["rec.mat"])
    if family == "edf":
        return Seed({"rec.edf": build_edf(_mv(12, 1000), TWELVE)}, ["rec.edf"], head=256 * 14)
    if family == "muse":
        return Seed({"rec.xml": build_muse(x, TWELVE)}, ["rec.xml"], head=700)
    if family == "philips":
        return Seed({"rec.xml": build_philips(x, TWELVE)}, ["rec.xml"], head=1200)
    if family == "hl7":
        return Seed({"rec.xml": build_hl7(x, TWELVE)}, ["rec.xml"], head=1000)
    if family == "scp":
        blob = _scp_sample()
        if blob is None:
            pytest.skip("no SCP-ECG sample in ../shared/ecg-samples/scp to start from")
        return Seed({"rec.scp": blob}, ["rec.scp"], head=400)
    if family == "dicom":
        return Seed({"rec.dcm": build_dicom(x, TWELVE)}, ["rec.dcm"], head=1500)
    if family == "contec":
        return Seed({"rec.ECG": build_contec(x)}, ["rec.ECG"], head=43)
    if family == "zip_csv":
        return Seed({"rec.zip": build_zip({"rec.csv": build_csv(x, TWELVE)})}, ["rec.zip"],
                    {"fs": FS}, 64)
    raise ValueError(family)


FAMILIES = ["wfdb16", "wfdb212", "csv_header", "csv_plain", "npy", "npz", "mat", "edf", "muse",
            "philips", "hl7", "scp", "dicom", "contec", "zip_csv"]
_SEEDS: dict[str, Seed] = {}


def seed_of(family: str) -> Seed:
    """The family's seed, checked once to read as a valid record (which also warms the imports,
    so that no example's deadline pays for them)."""
    if family not in _SEEDS:
        seed = _seed(family)
        with tempfile.TemporaryDirectory() as tmp:
            records = check_read(_write(Path(tmp), seed.files), **seed.kwargs)
        assert not isinstance(records, ECGReadError), f"the {family} seed does not read: {records}"
        _SEEDS[family] = seed
    return _SEEDS[family]


def _write(folder: Path, files: dict[str, bytes]) -> list[Path]:
    paths = []
    for name, blob in files.items():
        path = folder / name
        path.write_bytes(blob)
        paths.append(path)
    return paths


LAST_CASE = os.environ.get("ECGFM_FUZZ_LAST_CASE")


def run_case(files: dict[str, bytes], **kwargs):
    if LAST_CASE:  # a crash of the interpreter itself (a library's C code) leaves its input here
        folder = Path(LAST_CASE)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        _write(folder, files)
    with tempfile.TemporaryDirectory(prefix="ecgfm-fuzz-") as tmp:
        return check_read(_write(Path(tmp), files), **kwargs)


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

# Numbers (as text) that break parsers: zero, signs, limits of integer types, float extremes,
# non-numbers, and digits that Python's int() accepts but a format does not.
NUMBERS = ["0", "-0", "1", "-1", "2", "3", "7", "12", "13", "100", "255", "256", "500", "1000",
           "32767", "-32768", "65535", "65536", "2147483647", "-2147483648", "4294967296",
           "9223372036854775807", "18446744073709551616", "99999999", "1e3", "1e9", "1e12",
           "1e308", "1e309", "-1e309", "1e-300", "5e-324", "0.5", "0.001", "1.5", "-500",
           "nan", "NaN", "inf", "-inf", "Infinity", "abc", "", " ", "1,5", "0x10", "1_000",
           "\u0661\u0662", "\uff15\uff10\uff10", "500Hz", "--1", "+5", ".", "e"]


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NUMBERS),
                     st.integers(-2**40, 2**40).map(str),
                     st.floats(allow_nan=True, allow_infinity=True).map(repr))


def mutate_bytes(data, blob: bytes, head: int = 512) -> bytes:
    """1 to 4 byte edits; positions anywhere, in the header, or near the end."""
    buf = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        n = len(buf)
        if n == 0:
            break
        region = data.draw(st.sampled_from(["any", "head", "tail"]), label="region")
        lo, hi = {"any": (0, n - 1), "head": (0, min(n, head) - 1),
                  "tail": (max(0, n - 256), n - 1)}[region]
        pos = data.draw(st.integers(lo, hi), label="position")
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "truncate"]),
                       label="op")
        if op == "flip":
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 0x20, 0x2D, 0x2E, 0x30, 0x39,
                                                  0x0A, 0x22, 0x3C, 0x3E]) | st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del buf[pos:pos + data.draw(st.integers(1, 512))]
        elif op == "repeat":
            chunk = bytes(buf[pos:pos + data.draw(st.integers(1, 512))])
            buf[pos:pos] = chunk * data.draw(st.integers(1, 8))
        else:
            del buf[pos:]
    return bytes(buf)


def _replace_group(text: str, pattern: str, value: str, which: str) -> str:
    """Replace group 2 of `pattern` (prefix, value, suffix) in the first, last or every match."""
    matches = list(re.finditer(pattern, text, flags=re.S))
    if not matches:
        return text
    chosen = {"first": matches[:1], "last": matches[-1:], "all": matches}[which]
    for m in reversed(chosen):
        text = text[:m.start(2)] + value + text[m.end(2):]
    return text


def mutate_xml(data, blob: bytes, fields: dict[str, tuple[str, list[str]]], encoding: str) -> bytes:
    """Change the value of 1 to 3 elements or attributes (sample rates, counts, scales, data ...).

    `fields` maps a name to (a pattern with three groups: prefix, value, suffix; values to try
    besides the generic numbers). Values are escaped: the document stays well-formed XML.
    """
    text = blob.decode(encoding)
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        key = data.draw(st.sampled_from(sorted(fields)), label="field")
        pattern, choices = fields[key]
        value = data.draw(st.one_of(numbers(), st.sampled_from(choices),
                                    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())),
                          label="value")
        which = data.draw(st.sampled_from(["first", "last", "all"]), label="which")
        text = _replace_group(text, pattern, xml_escape(value, {'"': "&quot;"}), which)
    return text.encode(encoding, errors="replace")


def _elements(table: dict[str, list[str]]) -> dict[str, tuple[str, list[str]]]:
    return {tag: (rf"(<{tag}>)(.*?)(</{tag}>)", values) for tag, values in table.items()}


def _attributes(table: dict[str, list[str]]) -> dict[str, tuple[str, list[str]]]:
    return {f"@{name}": (rf'(\b{name}=")([^"]*)(")', values) for name, values in table.items()}


_MUSE_FIELDS = _elements({
    "SampleBase": ["250", "1000", "0", "-500", "10001", "99"],
    "SampleExponent": ["1", "-1", "3", "-300"],
    "NumberofLeads": ["0", "1", "8", "13", "100000"],
    "LeadSampleCountTotal": ["0", "1", "599", "601", "2400", "99999999999"],
    "LeadByteCountTotal": ["0", "1", "1199", "1201", "99999999999"],
    "LeadAmplitudeUnitsPerBit": ["0", "-4.88", "1e300", "0.0000001"],
    "LeadAmplitudeUnits": ["MILLIVOLTS", "VOLTS", "NANOVOLTS", "MMHG", "", "microvolts"],
    "LeadID": ["II", "V7", "", "X", "PLETH", "MLII", "I"],
    "LeadSampleSize": ["1", "4", "0", "3"],
    "FirstSampleBaseline": ["100", "-32768"],
    "LeadOffsetFirstSample": ["1", "-1", "600"],
    "WaveformType": ["Median", "rhythm", ""],
    "WaveFormData": ["", "!!!!", "AAA", "AAAA" * 3, "////"],
    "SampleType": ["SPIKES", ""],
    "LeadOff": ["TRUE"],
})
_PHILIPS_FIELDS = {**_elements({
    "samplingrate": ["250", "0", "-1", "1000", "99999"],
    "signalresolution": ["0", "-5", "1e300", "0.001"],
    "bitspersample": ["8", "12", "24", "32", "0"],
    "signaloffset": ["1", "-100000"],
    "signalsigned": ["False", "no"],
    "numberchannelsvalid": ["0", "8", "15", "16"],
    "numberchannelsallocated": ["0", "8", "15", "16"],
    "documentversion": ["1.04", "1.04.01", "2.0", "x"],
    "acquisitiontype": ["STD-15", "RHYTHM"],
}), **_attributes({
    "samplespersecond": ["250", "0", "-1", "1000"],
    "durationperchannel": ["0", "1", "10000", "99999999999"],
    "leadlabels": ["I II", "I II III aVR aVL aVF V1 V2 V3 V4 V5 V6 V7 V8 V9",
                   "I I I I I I I I I I I I", ""],
    "numberofleads": ["0", "1", "15", "16", "100000"],
    "dataencoding": ["Base32", "", "Hex"],
    "compression": ["XLI", "xli", "Zip", ""],
}), "parsedwaveforms": (r"(<parsedwaveforms[^>]*>)(.*?)(</parsedwaveforms>)", ["", "AAAA", "!!!!"])}
_HL7_FIELDS = {
    "increment": (r'(<increment value=")([^"]*)(")', ["0", "-0.002", "1e-12", "1e12", "0.001"]),
    "increment unit": (r'(<increment value="[^"]*" unit=")([^"]*)(")', ["ms", "us", "", "Hz"]),
    "head": (r'(<head value=")([^"]*)(")', ["0", "x", "20200102"]),
    "scale": (r'(<scale value=")([^"]*)(")', ["0", "-2.5", "1e300", "1e-300"]),
    "scale unit": (r'(<scale value="[^"]*" unit=")([^"]*)(")', ["mV", "V", "nV", "mm", "", "uv"]),
    "origin": (r'(<origin value=")([^"]*)(")', ["1e300", "-5", "x"]),
    "origin unit": (r'(<origin value="[^"]*" unit=")([^"]*)(")', ["mV", "V", "mmHg"]),
    "digits": (r"(<digits>)(.*?)(</digits>)", ["", "1 2 3", "1 x 3", "1e400 2", "1.5 2.5", "- -"]),
    "lead code": (r'(code=")(MDC_ECG_LEAD_[^"]*)(")',
                  ["MDC_ECG_LEAD_II", "MDC_ECG_LEAD_V7", "MDC_ECG_LEAD_X", "", "TIME_ABSOLUTE"]),
    "series code": (r'(<series><code code=")([^"]*)(")', ["REPRESENTATIVE_BEAT", "", "x"]),
    "value type": (r'(xsi:type=")([^"]*)(")', ["GLIST_PQ", "SLIST_INT", "GLIST_TS", "x"]),
}


def _edf_fields(blob: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, width) of the EDF header fields, signal fields for each signal."""
    fields = [("version", 0, 8), ("start date", 168, 8), ("start time", 176, 8),
              ("header bytes", 184, 8), ("reserved", 192, 44), ("records", 236, 8),
              ("record duration", 244, 8), ("signals", 252, 4)]
    ns = int(blob[252:256])
    offset = 256
    for name, width in [("label", 16), ("transducer", 80), ("dimension", 8), ("physical min", 8),
                        ("physical max", 8), ("digital min", 8), ("digital max", 8),
                        ("prefilter", 80), ("samples per record", 8), ("signal reserved", 32)]:
        fields += [(f"{name} {i}", offset + i * width, width) for i in range(ns)]
        offset += ns * width
    return fields


_EDF_VALUES = ["uV", "mV", "V", "nV", "degC", "", "ECG II", "EDF Annotations", "EDF+D", "BIOSEMI",
               "24BIT", "-8388608", "8388607", "0.0001", "-0.0"]


def mutate_edf(data, blob: bytes) -> bytes:
    buf = bytearray(blob)
    fields = _edf_fields(blob)
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        name, offset, width = data.draw(st.sampled_from(fields), label="field")
        value = data.draw(st.one_of(numbers(), st.sampled_from(_EDF_VALUES)), label="value")
        raw = value.encode("utf-8", errors="replace")[:width].ljust(width)
        buf[offset:offset + width] = raw
    return bytes(buf)


_WFDB_TOKENS = {
    (0, 0): ["rec", "other", "rec/2", "rec/0", "rec/99999999999", "a/b"],
    (0, 1): ["0", "1", "11", "13", "100000", "-1", "12.5"],
    (0, 2): ["0", "-500", "1e-9", "99", "100", "10000", "10001", "1e12", "500/0", "500/-3",
             "500/1e300", "500(7)", "500(-1)/250", "360/500", "500/500(0)", "500.000001"],
    (0, 3): ["0", "1", "2", "599", "601", "1200", "-5", "1e3", "99999999999999999999",
             "40000001", "20000000"],
    (1, 0): ["rec.dat", "other.dat", "../rec.dat", "/etc/hosts", "~", "rec.hea", "a/b.dat", "."],
    (1, 1): ["8", "16", "24", "32", "61", "80", "160", "212", "310", "311", "508", "516", "0",
             "7", "999", "16x2", "16x0", "16x100000", "16+1", "16+99999999", "16+-5", "16:3",
             "212x2", "16x2:1+3", "16x99999999999"],
    (1, 2): ["0", "-200", "200", "1e-300", "1e308", "200(0)/mV", "200(32767)/uV",
             "200(-99999999999)/mV", "200/V", "200/", "200(0)/µV", "(0)/mV", "0.000001/mV",
             "200/mmHg", "200/nV"],
    (1, 3): ["0", "1", "16", "64", "1000", "-1"],
}


def mutate_wfdb_header(data, blob: bytes) -> bytes:
    lines = blob.decode("latin-1").splitlines()
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        kind = data.draw(st.sampled_from(["record", "signal", "signal", "line"]), label="kind")
        if kind == "line":
            i = data.draw(st.integers(0, len(lines) - 1))
            op = data.draw(st.sampled_from(["delete", "duplicate", "garbage", "comment"]))
            if op == "delete" and len(lines) > 1:
                del lines[i]
            elif op == "duplicate":
                lines.insert(i, lines[i])
            elif op == "garbage":
                lines.insert(i, data.draw(st.text(max_size=40)))
            else:
                lines.insert(i, "# " + data.draw(st.text(max_size=40)))
            continue
        i = 0 if kind == "record" else data.draw(st.integers(1, max(1, len(lines) - 1)))
        if i >= len(lines):
            continue
        tokens = lines[i].split()
        position = data.draw(st.integers(0, 3 if kind == "record" else 8), label="token")
        pool = _WFDB_TOKENS.get((0 if kind == "record" else 1, position), [])
        value = data.draw(st.one_of(numbers(), st.sampled_from(pool)) if pool else numbers(),
                          label="value")
        if position < len(tokens):
            tokens[position] = value
        else:
            tokens.append(value)
        lines[i] = " ".join(tokens)
    return ("\n".join(lines) + "\n").encode("latin-1", errors="replace")


def mutate_npy(data, blob: bytes) -> bytes:
    """Rewrite the .npy header dictionary (dtype, order, shape); the data stay as they are."""
    header_len = struct.unpack("<H", blob[8:10])[0]
    header = blob[10:10 + header_len].decode("latin-1")
    body = blob[10 + header_len:]
    descr = data.draw(st.sampled_from(["<f8", "<f4", ">f8", "<i2", "|u1", "<c16", "|O", "<U8",
                                       "|V16", "|b1", "<M8[s]", "<f2", "|S4", "<m8[ns]", "<f16"]))
    shape = data.draw(st.sampled_from(["()", "(0,)", "(12,)", "(600, 12)", "(12, 600, 1)",
                                       "(1, 1, 12, 600)", "(12, 99999999999)", "(-1, 600)",
                                       "(12, 0)", "(7200,)", "(3, 2400)", "(12, 600)",
                                       "(2, 2, 2, 900)", "(99999999999, 99999999999)"]))
    order = data.draw(st.sampled_from(["False", "True", "1", "None"]))
    header = re.sub(r"'descr': '[^']*'", f"'descr': '{descr}'", header)
    header = re.sub(r"'shape': \([^)]*\)", f"'shape': {shape}", header)
    header = re.sub(r"'fortran_order': \w+", f"'fortran_order': {order}", header)
    header = header.rstrip() + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


_ODD_ARRAYS = {
    "nan": np.nan, "inf": np.inf, "zero": 0.0, "negative": -500.0, "huge": 1e300, "tiny": 1e-300,
    "int": 500, "text": "500", "empty": np.zeros(0), "matrix": np.full((2, 2), 500.0),
    "bool": True, "complex": 500 + 1j,
}


def _odd(data, label: str):
    key = data.draw(st.sampled_from(sorted(_ODD_ARRAYS)), label=label)
    return _ODD_ARRAYS[key]


def mutate_npz(data, _blob: bytes) -> bytes:
    x = _mv(12, N)
    arrays = {"signal": x, "fs": FS, "leads": np.array(TWELVE), "units": np.array(["mV"])}
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["fs", "leads", "units", "signal", "key", "extra"]))
        if what == "fs":
            arrays["fs"] = _odd(data, "fs")
        elif what == "leads":
            arrays["leads"] = data.draw(st.sampled_from([
                np.array(TWELVE[:3]), np.array(TWELVE + ["V7"]), np.array(["I"] * 12),
                np.array([""] * 12), np.arange(12), np.array(["x" * 5000] * 12),
                np.array(TWELVE[::-1]), np.array([b"I", b"II"] * 6)]))
        elif what == "units":
            arrays["units"] = np.array([data.draw(st.sampled_from(["uV", "V", "nV", "mmHg", "",
                                                                    "µV", "mV", "counts"]))])
        elif what == "signal":
            arrays["signal"] = data.draw(st.sampled_from([
                x.T, x[:1], x[:, :1], x.astype(np.float16), (x * 1000).astype(np.int16),
                x.astype(np.complex64), x[None], np.zeros((12, 0)), np.zeros(0),
                x.astype(bool), np.array(["a"] * 10), x.astype(">f8")]))
        elif what == "key" and "signal" in arrays:
            arrays[data.draw(st.sampled_from(["ecg", "data", "x", "val", "feats", "other"]))] = \
                arrays.pop("signal")
        else:
            arrays[data.draw(st.sampled_from(["sampling_rate", "freq", "ch_names", "unit"]))] = \
                _odd(data, "extra")
    return build_npz(arrays)


def mutate_mat(data, _blob: bytes) -> bytes:
    x = _mv(12, N)
    variables = {"ecg": x, "fs": FS, "leads": np.array(TWELVE, dtype=object)}
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["fs", "leads", "signal", "key", "layout"]))
        if what == "fs":
            variables["fs"] = _odd(data, "fs")
        elif what == "leads":
            variables["leads"] = data.draw(st.sampled_from([
                np.array(TWELVE[:3], dtype=object), "I II III", np.array(["I"] * 12, dtype=object),
                np.arange(12), np.array([""] * 12, dtype=object), "",
                np.array([np.zeros(0)] * 12, dtype=object)]))
        elif what == "signal":
            variables["ecg"] = data.draw(st.sampled_from([
                x.T, x[:1], x[None], np.zeros((12, 0)), (x * 1000).astype(np.int16),
                x.astype(np.complex128), np.array("text"), x.astype(np.float32), np.zeros((0, 0))]))
        elif what == "key" and "ecg" in variables:
            variables[data.draw(st.sampled_from(["val", "feats", "data", "signal", "x1"]))] = \
                variables.pop("ecg")
        else:  # the dataset layouts the reader recognises
            variables = data.draw(st.sampled_from([
                {"ECG": {"data": x, "sex": "F", "age": 50}},
                {"ECG": {"data": x.T[:5]}},
                {"ECG": {"nodata": x}},
                {"feats": x, "org_sample_rate": 400.0, "curr_sample_rate": 500.0,
                 "curr_sample_size": 4096},
                {"feats": x, "org_sample_rate": np.nan, "curr_sample_rate": 0.0,
                 "curr_sample_size": -1},
                {"val": x}]))
    try:
        return build_mat(variables)
    except Exception:  # noqa: BLE001 - scipy cannot write this combination: not a case
        reject()


def mutate_dicom(data, _blob: bytes) -> bytes:
    x = _mv(12, N)
    overrides: dict = {}
    channel: dict = {}
    kwargs: dict = {}
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["group", "channel", "data", "groups", "endian"]))
        if what == "group":
            key = data.draw(st.sampled_from(["NumberOfWaveformChannels", "NumberOfWaveformSamples",
                                             "SamplingFrequency", "WaveformBitsAllocated",
                                             "WaveformSampleInterpretation", "MultiplexGroupLabel",
                                             "SOPClassUID"]))
            overrides[key] = data.draw(st.one_of(numbers(), st.sampled_from(
                ["SS", "US", "SB", "UB", "SL", "UL", "MB", "AB", "XX", "MEDIAN", "rhythm",
                 "1.2.840.10008.5.1.4.1.1.9.1.2", "1.2.840.10008.5.1.4.1.1.9.4.1"])))
        elif what == "channel":
            key = data.draw(st.sampled_from(["ChannelSensitivity", "ChannelBaseline",
                                             "ChannelSensitivityCorrectionFactor", "unit",
                                             "ChannelSampleSkew"]))
            channel[key] = data.draw(st.one_of(numbers(), st.sampled_from(
                ["uV", "mV", "V", "nV", "mm[Hg]", "%", ""])))
        elif what == "data":
            kwargs["data_bytes"] = data.draw(st.sampled_from([0, 1, 2, 100, 14398, 14402, 28800]))
        elif what == "groups":
            kwargs["groups"] = data.draw(st.sampled_from(["", "median", "rhythm+rhythm",
                                                          "rhythm+median"]))
        else:
            kwargs["big_endian"] = True
    try:
        return build_dicom(x, TWELVE, overrides, channel, **kwargs)
    except Exception:  # noqa: BLE001 - pydicom cannot even write this value: not a case
        reject()


def mutate_scp(data, blob: bytes) -> bytes:
    """Change record, section and pointer lengths and the first fields of any section."""
    buf = bytearray(blob)
    positions = [2]  # the record length
    pointer_table = 6 + 16
    section0_len = struct.unpack_from("<I", buf, 6 + 4)[0] if len(buf) > 14 else 0
    for entry in range(pointer_table, min(len(buf) - 10, 6 + section0_len), 10):
        positions += [entry + 2, entry + 6]  # section length, section start
        start = struct.unpack_from("<I", buf, entry + 6)[0]
        if 0 < start < len(buf) - 40:
            positions += [start - 1 + 4] + [start - 1 + 16 + 2 * k for k in range(12)]
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.sampled_from(positions), label="field")
        width = data.draw(st.sampled_from([1, 2, 4]))
        value = data.draw(st.sampled_from([0, 1, 2, 0x7F, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                                           0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1))
        value &= (1 << (8 * width)) - 1
        if pos + width <= len(buf):
            buf[pos:pos + width] = value.to_bytes(width, "little")
    return bytes(buf)


def mutate_contec(data, blob: bytes) -> bytes:
    buf = bytearray(blob)
    frames = (len(buf) - 43 - 37) // 16
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["frame", "header", "size"]))
        if what == "frame":
            i = data.draw(st.integers(0, frames - 1))
            value = data.draw(st.sampled_from([0, 0x6800, 0xFFFF, 2048]))
            buf[43 + 16 * i:43 + 16 * i + 16] = struct.pack("<8H", *[value] * 8)
        elif what == "header":
            pos = data.draw(st.integers(0, 42))
            buf[pos] = data.draw(st.sampled_from([0, 0x30, 0x39, 0x20, 0xFF]))
        else:
            extra = data.draw(st.sampled_from([-16, -15, 1, 16, 37, -len(buf) + 43 + 37 + 16]))
            buf = buf + bytes(extra) if extra > 0 else buf[:len(buf) + extra]
    return bytes(buf)


def mutate_zip(data, _blob: bytes) -> bytes:
    csv = build_csv(_mv(12, N), TWELVE)
    members = {"rec.csv": csv}
    compression = zipfile.ZIP_DEFLATED
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["name", "member", "compression", "sizes"]))
        if what == "name":
            members = {data.draw(st.sampled_from(
                ["../rec.csv", "/abs/rec.csv", "a/b/rec.csv", "C:rec.csv", "__MACOSX/rec.csv",
                 ".hidden.csv", "rec.zip", "rec", "rec.hea", "rec.dat", "a\\..\\..\\rec.csv",
                 "rec.csv/", "r" * 300 + ".csv", "\u00e9cg.csv"])): csv}
        elif what == "member":
            members[data.draw(st.sampled_from(["b.csv", "x/rec.csv", "empty.csv", "inner.zip",
                                               "rec.hea", "r.npy"]))] = data.draw(st.sampled_from(
                [csv, b"", build_zip({"a.csv": csv}), b"rec 1 500 10\nrec.dat 16 200 16 0 0 0 0 II\n",
                 build_npy(_mv(12, N))]))
        elif what == "compression":
            compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_BZIP2,
                                                     zipfile.ZIP_LZMA]))
    blob = bytearray(build_zip(members, compression))
    if data.draw(st.booleans(), label="patch sizes"):
        # the sizes and flags stated in the local header and the central directory
        for start in [m.start() for m in re.finditer(rb"PK\x03\x04|PK\x01\x02", bytes(blob))]:
            local = blob[start:start + 4] == b"PK\x03\x04"
            offsets = [6, 18, 22] if local else [8, 20, 24]
            pos = start + data.draw(st.sampled_from(offsets))
            value = data.draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            width = 2 if pos - start in (6, 8) else 4
            blob[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(blob)


def field_mutation(family: str, data, seed: Seed) -> dict[str, bytes]:
    files = dict(seed.files)
    if family in ("wfdb16", "wfdb212"):
        files["rec.hea"] = mutate_wfdb_header(data, files["rec.hea"])
    elif family in ("csv_header", "csv_plain"):
        files["rec.csv"] = mutate_csv(data, files["rec.csv"], family == "csv_header")
    elif family == "npy":
        files["rec.npy"] = mutate_npy(data, files["rec.npy"])
    elif family == "npz":
        files["rec.npz"] = mutate_npz(data, files["rec.npz"])
    elif family == "mat":
        files["rec.mat"] = mutate_mat(data, files["rec.mat"])
    elif family == "edf":
        files["rec.edf"] = mutate_edf(data, files["rec.edf"])
    elif family == "muse":
        files["rec.xml"] = mutate_xml(data, files["rec.xml"], _MUSE_FIELDS, "iso-8859-1")
    elif family == "philips":
        files["rec.xml"] = mutate_xml(data, files["rec.xml"], _PHILIPS_FIELDS, "utf-8")
    elif family == "hl7":
        files["rec.xml"] = mutate_xml(data, files["rec.xml"], _HL7_FIELDS, "utf-8")
    elif family == "scp":
        files["rec.scp"] = mutate_scp(data, files["rec.scp"])
    elif family == "dicom":
        files["rec.dcm"] = mutate_dicom(data, files["rec.dcm"])
    elif family == "contec":
        files["rec.ECG"] = mutate_contec(data, files["rec.ECG"])
    elif family == "zip_csv":
        files["rec.zip"] = mutate_zip(data, files["rec.zip"])
    else:
        raise ValueError(family)
    return files


_CSV_NAMES = ["I", "ii", "Lead II", "V1 (mV)", "II [uV]", "V2_uV", "time", "t (ms)", "Time (s)",
              "index", "sample", "PLETH", "", "\"V3\"", "x" * 500, "# I", "aVR;aVL", "1", "nan"]
_CSV_COMMENTS = ["# Sampling Rate (Hz):= {v}", "# fs = {v}", "# Labels:= I II {v}",
                 "# Resolution:= {v}", "# Units: {v}", "% frequency: {v} kHz", "// sample rate {v}"]


def mutate_csv(data, blob: bytes, has_header: bool) -> bytes:
    lines = blob.decode().splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        what = data.draw(st.sampled_from(["cell", "name", "comment", "row", "delimiter"]))
        if what == "cell":
            i = data.draw(st.integers(1 if has_header else 0, len(lines) - 1))
            cells = lines[i].split(",")
            j = data.draw(st.integers(0, len(cells) - 1))
            cells[j] = data.draw(numbers())
            lines[i] = ",".join(cells)
        elif what == "name" and has_header:
            cells = lines[0].split(",")
            j = data.draw(st.integers(0, len(cells) - 1))
            cells[j] = data.draw(st.sampled_from(_CSV_NAMES) | st.text(max_size=12))
            lines[0] = ",".join(cells)
        elif what == "comment":
            line = data.draw(st.sampled_from(_CSV_COMMENTS)).format(v=data.draw(numbers()))
            lines.insert(0, line)
        elif what == "row":
            i = data.draw(st.integers(0, len(lines) - 1))
            op = data.draw(st.sampled_from(["delete", "short", "long", "empty", "text"]))
            if op == "delete":
                del lines[i]
            elif op == "short":
                lines[i] = lines[i].rsplit(",", 1)[0]
            elif op == "long":
                lines[i] += "," + data.draw(numbers())
            elif op == "empty":
                lines[i] = ","
            else:
                lines[i] = data.draw(st.text(max_size=30))
        else:
            delim = data.draw(st.sampled_from([";", "\t", " ", "|", ",,"]))
            lines = [line.replace(",", delim) for line in lines]
    return ("\n".join(lines) + "\n").encode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# Shapes and values
# --------------------------------------------------------------------------------------------

VALUE_KINDS = ["normal", "nan", "all_nan", "inf", "huge", "tiny", "constant", "counts",
               "microvolts"]


def shaped_files(family: str, n_leads: int, n: int, kind: str, seed: int) -> tuple[dict, dict]:
    """A record of `family` with `n_leads` leads of `n` samples of `kind` values, and read kwargs."""
    x = _values(kind, n_leads, n, seed)
    names = MORE[:n_leads]
    if family in ("wfdb16", "wfdb212"):
        return build_wfdb(family[4:], x, names), {}
    if family == "csv_header":
        return {"rec.csv": build_csv(x, names)}, {"fs": FS}
    if family == "csv_plain":
        return {"rec.csv": build_csv(x, None, time=False)}, {"fs": FS}
    if family == "npy":
        return {"rec.npy": build_npy(x)}, {"fs": FS}
    if family == "npz":
        return {"rec.npz": build_npz({"signal": x, "fs": FS, "leads": np.array(names)})}, {}
    if family == "mat":
        return {"rec.mat": build_mat({"ecg": x, "fs": FS})}, {"fs": FS}
    if family == "edf":
        return {"rec.edf": build_edf(x, names)}, {}
    if family == "muse":
        return {"rec.xml": build_muse(x, names)}, {}
    if family == "philips":
        return {"rec.xml": build_philips(x, names)}, {}
    if family == "hl7":
        return {"rec.xml": build_hl7(x, names)}, {}
    if family == "dicom":
        return {"rec.dcm": build_dicom(x, names)}, {}
    if family == "contec":
        return {"rec.ECG": build_contec(_values(kind, 8, n, seed))}, {}
    if family == "zip_csv":
        return {"rec.zip": build_zip({"rec.csv": build_csv(x, names)})}, {"fs": FS}
    raise ValueError(family)


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------

WINDOWS = st.sampled_from([{}, {}, {}, {"start_s": 0.4}, {"duration_s": 0.5},
                           {"start_s": 0.2, "duration_s": 0.3}, {"start_s": 5.0}])


@pytest.fixture
def seed(family) -> Seed:
    return seed_of(family)


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_byte_mutations(family, seed, data):
    files = dict(seed.files)
    target = data.draw(st.sampled_from(seed.targets), label="file")
    files[target] = mutate_bytes(data, files[target], seed.head)
    run_case(files, **seed.kwargs, **data.draw(WINDOWS, label="window"))


@pytest.mark.parametrize("family", FAMILIES)
@FUZZ
@given(data=st.data())
def test_header_field_mutations(family, seed, data):
    run_case(field_mutation(family, data, seed), **seed.kwargs,
             **data.draw(WINDOWS, label="window"))


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "scp"])
@FUZZ
@given(n_leads=st.integers(1, 15), n=st.sampled_from([1, 2, 3, 7, 64, 499, 500, 501, 1500]),
       kind=st.sampled_from(VALUE_KINDS), rng_seed=st.integers(0, 2**16))
def test_lengths_and_values(family, seed, n_leads, n, kind, rng_seed):
    try:
        files, kwargs = shaped_files(family, n_leads, n, kind, rng_seed)
    except Exception:  # noqa: BLE001 - the writing library refuses this shape: not a case
        reject()
    run_case(files, **kwargs)


# --------------------------------------------------------------------------------------------
# Regressions: the smallest failing cases the fuzzing found, as plain tests
# --------------------------------------------------------------------------------------------

def test_values_too_large_for_float32_are_refused_in_one_sentence():
    # Found by test_lengths_and_values[csv_header] ("huge"): 1e300 became an infinite float32 sample
    # with numpy overflow warnings. Also through an absurd ADC offset (Resolution:= 1000 bits).
    x = _mv(2, 50)
    x[1, 7] = 1e300
    for files, kwargs in [({"rec.csv": build_csv(x, ["I", "II"])}, {}),
                          ({"rec.npz": build_npz({"signal": x, "fs": FS,
                                                  "leads": np.array(["I", "II"])})}, {}),
                          ({"rec.txt": b"# Resolution:= 1000\n" + b"\n".join(
                              str(v).encode() for v in range(100, 400))}, {"fs": FS})]:
        error = run_case(files, **kwargs)
        assert isinstance(error, ECGReadError) and "far too large for an ECG" in str(error)
    x[1, 7] = 1e9  # a mere implausible amplitude is still read, and said to be implausible
    records = run_case({"rec.csv": build_csv(x, ["I", "II"])})
    assert not isinstance(records, ECGReadError)
    assert any("implausibly large" in w for w in records[0].warnings)


def test_dicom_damaged_length_field_does_not_allocate_it():
    # Found by test_byte_mutations[dicom]: one byte inserted at offset 150 (in the file meta
    # group) made pydicom read a 1.3 GB element length and allocate 1.3 GB for a 20 kB file.
    blob = build_dicom(_mv(12, N), TWELVE)
    error = run_case({"rec.dcm": blob[:150] + b"\x00" + blob[150:]})  # peak memory is checked
    assert isinstance(error, ECGReadError)


def _mat_with_element_type(code: int) -> bytes:
    blob = bytearray(build_mat({"ecg": _mv(12, 50)}))
    tag = blob.index(b"\x01\x00\x03\x00ecg\x00") + 8  # the real part's tag after the name
    assert blob[tag] == 9  # miDOUBLE
    blob[tag:tag + 4] = code.to_bytes(4, "little")
    return bytes(blob)


def test_mat_element_of_unknown_type_is_refused_not_a_crash(tmp_path):
    # Found by test_byte_mutations[mat]: the data type byte 9 -> 0xFF crashed the interpreter
    # (segmentation fault in scipy 1.17's loadmat, which indexes a C table with the code). The
    # reads run in a child process, so that a regression fails this test instead of the run.
    import subprocess
    import sys

    codes = [0, 8, 10, 11, 14, 15, 19, 20, 255]
    paths = []
    for code in codes:
        paths.append(tmp_path / f"type{code}.mat")
        paths[-1].write_bytes(_mat_with_element_type(code))
    # scipy reads a file as v5 from its version bytes, whatever its first bytes say: a damaged
    # "MATLAB" text once let the file past the check (test_byte_mutations[mat], a random run)
    paths.append(tmp_path / "text.mat")
    paths[-1].write_bytes(b"9" + _mat_with_element_type(255)[1:])
    script = ("import sys; from ecgfm.io import read_ecgs; from ecgfm.errors import ECGReadError\n"
              "for path in sys.argv[1:]:\n"
              "    try:\n        read_ecgs(path, fs=500)\n"
              "    except ECGReadError as e:\n        print(e, flush=True)")
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, f"the reader crashed the interpreter ({done.returncode})"
    assert done.stdout.splitlines() == [
        f"{path.name}: this MATLAB .mat file is damaged (its contents do not hold together), "
        "so it cannot be read." for path in paths]


def test_mat_valid_layouts_still_read():
    # The structure check that prevents the crash above must pass what savemat writes.
    import scipy.sparse

    x = _mv(12, 300)
    for compression in (False, True):
        for extra in ({}, {"leads": np.array(TWELVE, dtype=object)}, {"note": "text"},
                      {"meta": {"a": np.arange(3), "b": "x"}}, {"flags": np.array([True])},
                      {"z": np.array([1 + 2j])}, {"s": scipy.sparse.csc_matrix(np.eye(2))},
                      {"e": np.zeros((0, 0))}):
            buf = io.BytesIO()
            import scipy.io as sio

            sio.savemat(buf, {"ecg": x, "fs": FS, **extra}, do_compression=compression)
            records = run_case({"rec.mat": buf.getvalue()})
            assert not isinstance(records, ECGReadError), (extra, records)


def test_mat_complex_rate_leaks_no_warning():
    # Found by test_header_field_mutations[mat]: fs = 500+1j leaked numpy's ComplexWarning.
    error = run_case({"rec.mat": build_mat({"ecg": _mv(12, N), "fs": 500 + 1j})})
    assert isinstance(error, ECGReadError) and "sampling rate" in str(error)


def test_scp_declared_sample_count_beyond_the_file_does_not_allocate_it():
    # Found by test_header_field_mutations[scp]: a lead's end sample set to 2**31 - 1 made
    # ecgdatakit allocate 16 GB (np.empty of the declared count) before decoding 6000 samples.
    blob = _scp_sample()
    if blob is None:
        pytest.skip("no SCP-ECG sample in ../shared/ecg-samples/scp to start from")
    blob = bytearray(blob)
    for pos in range(22, 6 + struct.unpack_from("<I", blob, 10)[0] - 9, 10):
        sid, _, index = struct.unpack_from("<HII", blob, pos)
        if sid == 3:
            end_sample = index - 1 + 16 + 2 + 4  # Section 3: leads, flags, then start, end, id
            blob[end_sample:end_sample + 4] = (2**31 - 1).to_bytes(4, "little")
    error = run_case({"rec.scp": bytes(blob)})  # peak memory is checked
    assert isinstance(error, ECGReadError) and "declares more samples" in str(error)


def test_damaged_zip_archives_fail_in_one_sentence():
    # Found by test_byte_mutations[zip_csv] and test_header_field_mutations[zip_csv]: these
    # escaped read_ecgs as NotImplementedError, zlib.error and OSError (ENAMETOOLONG, EEXIST).
    csv = build_csv(_mv(12, N), TWELVE)
    blob = bytearray(build_zip({"rec.csv": csv}))
    central = blob.index(b"PK\x01\x02")
    version = bytearray(blob)
    version[central + 6] = 84  # "version needed to extract": 8.4
    shifted = bytearray(blob)
    shifted[28] ^= 1  # the local header's extra-field length: the data start one byte late
    cases = {
        "version.zip": (bytes(version), "not a readable zip archive"),
        "shifted.zip": (bytes(shifted), "cannot be extracted"),
        "long.zip": (build_zip({"r" * 300 + ".csv": csv}), "name is too long"),
        "clash.zip": (build_zip({"rec": csv, "rec/x.csv": csv}), "both as a file and as a folder"),
    }
    for name, (archive, words) in cases.items():
        error = run_case({name: archive}, fs=FS)
        assert isinstance(error, ECGReadError) and words in str(error), (name, error)


def test_npy_shape_whose_size_overflows_leaks_no_warning():
    # Found by test_header_field_mutations[npy]: shape (99999999999, 99999999999) leaked numpy's
    # "overflow encountered in scalar multiply" before the file was refused.
    blob = build_npy(_mv(12, N))
    size = struct.unpack("<H", blob[8:10])[0]
    header = blob[10:10 + size].decode().replace("(12, 600)", "(99999999999, 99999999999)")
    header = header.rstrip() + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + blob[10 + size:]
    assert isinstance(run_case({"rec.npy": blob}, fs=FS), ECGReadError)


def test_npz_complex_rate_leaks_no_warning():
    # Found by test_header_field_mutations[npz]: fs = 500+1j leaked numpy's ComplexWarning.
    error = run_case({"rec.npz": build_npz({"signal": _mv(12, N), "fs": 500 + 1j})})
    assert isinstance(error, ECGReadError) and "sampling rate 'fs' is not a number" in str(error)


def test_absurd_vendor_scales_are_refused_not_filled_in():
    # Found by test_header_field_mutations[muse] (LeadAmplitudeUnitsPerBit 1e308) and [hl7]
    # (scale 1e300): numpy overflow warnings reached the caller, and the infinite samples would
    # have been "filled in" from the few finite ones as if they were missing.
    x = _mv(12, N)
    muse = build_muse(x, TWELVE).replace(b"<LeadAmplitudeUnitsPerBit>4.88<",
                                         b"<LeadAmplitudeUnitsPerBit>1e308<", 1)
    hl7 = build_hl7(x, TWELVE).replace(b'<scale value="2.5"', b'<scale value="1e300"', 1)
    dcm = build_dicom(x, TWELVE, channel_overrides={"ChannelSensitivity": "1e308"})
    for files in ({"rec.xml": muse}, {"rec.xml": hl7}, {"rec.dcm": dcm},
                  {"rec.csv": build_csv(x[:2], ["I", "II"]).replace(b"\n0.010,", b"\n0.010,inf,")}):
        error = run_case(files, fs=FS)
        assert isinstance(error, ECGReadError) and "far too large for an ECG" in str(error), error


def test_mat_that_is_not_v5_is_read_from_memory():
    # Found by test_byte_mutations[mat]: a null byte inserted before "MATLAB" made scipy take the
    # file for MAT v4, whose damaged header then made it allocate 1.6 GB for a 58 kB file.
    blob = build_mat({"ecg": _mv(12, N), "fs": FS, "leads": np.array(TWELVE, dtype=object)})
    assert isinstance(run_case({"rec.mat": b"\x00" + blob}), ECGReadError)


def test_wfdb_header_declaring_more_signals_or_segments_than_it_lists():
    # Found by test_header_field_mutations[wfdb16]: the record line "rec 99999999999 500 600"
    # (12 signal lines) made wfdb build a list of 1e11 channel numbers, 23 GB before the
    # out-of-memory killer ended the run. A master header's segment count does the same.
    files = build_wfdb("16", _mv(12, N), TWELVE)
    lines = files["rec.hea"].decode().splitlines()
    for record_line, words in [("rec 99999999999 500 600", "declares 99999999999 signals"),
                               ("rec 13 500 600", "declares 13 signals but describes 12"),
                               ("rec 1 500 600", "declares 1 signal but describes 12")]:
        header = "\n".join([record_line, *lines[1:]]) + "\n"
        error = run_case({**files, "rec.hea": header.encode()})
        assert isinstance(error, ECGReadError) and words in str(error), error
    segments = {f"seg{i}{ext}": blob for i in (1, 2)
                for ext, blob in zip((".hea", ".dat"), build_wfdb("16", _mv(2, N), ["I", "II"]).values())}
    for i in (1, 2):
        segments[f"seg{i}.hea"] = segments[f"seg{i}.hea"].replace(b"rec", f"seg{i}".encode())
    for master, words in [(b"multi/2 2 500 1200\nseg1 600\nseg2 600\n", None),
                          (b"multi/99999999999 2 500 1200\nseg1 600\nseg2 600\n",
                           "declares 99999999999 segments but lists 2"),
                          (b"multi/2 99999999999 500 1200\nseg1 600\nseg2 600\n",
                           "segments hold at most 2")]:
        result = run_case({"multi.hea": master, **segments})
        if words is None:
            assert not isinstance(result, ECGReadError) and result[0].signal.shape[1] == 1200
        else:
            assert isinstance(result, ECGReadError) and words in str(result), result


def test_mat_read_as_v4_after_damage_says_one_clean_sentence():
    # Found by test_byte_mutations[mat] (a random run): with the first 118 or 127 bytes gone,
    # scipy reads the file as MAT v4; its UserWarning ("byte ordering 'VAX G-float'") reached the
    # caller, and the error quoted a "variable name" of binary bytes, newlines included.
    blob = build_mat({"ecg": _mv(12, N), "fs": FS, "leads": np.array(TWELVE, dtype=object)})
    for cut in (118, 127):
        error = run_case({"rec.mat": blob[cut:]})  # one sentence, no warning: checked
        assert isinstance(error, ECGReadError)


def test_float32_signalling_nans_leak_no_warning():
    # Found by test_header_field_mutations[npy] (a random run): float64 data read as '<f4' holds
    # signalling NaNs, and widening them to float64 leaked "invalid value encountered in cast".
    x = _mv(12, N).astype(np.float32)
    x.view(np.uint32)[0, :5] = 0x7FA00000  # signalling NaN
    for files in ({"rec.npy": build_npy(x)}, {"rec.mat": build_mat({"ecg": x, "fs": FS})}):
        records = run_case(files, fs=FS)  # no warning reaches the caller: checked
        assert not isinstance(records, ECGReadError), records
        assert any("Missing samples were filled" in w for w in records[0].warnings)
