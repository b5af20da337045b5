"""Patient identifiers never leave the file, whatever path the file takes.

Files are made here with distinctive identifiers in every field their format has for them (names,
IDs, birth date, accession number, institution, department, physicians, technician, room): GE MUSE,
Philips and HL7 aECG XML, DICOM, SCP-ECG (section 1 of a shared sample rewritten), EDF+, WFDB
header comments, CSV comment lines, MATLAB variables, and damaged copies of each. The project's
sample recordings are read for the identifiers they carry (parsed here with ElementTree, pydicom and
plain bytes, never with ecgfm). Every file then goes through the library (read, prepare, predict,
`to_dict`, report HTML and PDF), the CLI (`info`, `predict --json/--csv/--report`), the app's API
(/read, /predict, /report, /plot) and its page, with every log record at DEBUG (pydicom's
element-by-element debugging on, in process and in the app), every warning, stdout and stderr (and
file descriptors 1 and 2) captured; no identifier may appear in any output, file name, download,
log, warning or error message.

Each check is shown able to fail: every identifier is first found in its input file, every PDF
searched first shows the record's name in its page text (matplotlib writes it kerned, glyph by
glyph), every file must be read, and the search runs once on outputs that do carry identifiers.

The uploads' lifetime is checked with the app's times made short (ECGFM_UPLOAD_GRACE_S,
ECGFM_PAGE_IDLE_S). Results are checked to be written only inside Gradio's upload folder; their
removal by `delete_cache=(300, 900)` takes up to 20 minutes and is not waited for here.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import importlib
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import ecgfm
from ecgfm import report as reports
from ecgfm.io.record import STANDARD_LEADS
from tests.fairseq_layout import write_checkpoint
from tests.test_app import free_port, get_json

REPO = Path(__file__).resolve().parents[1]
LEADS = list(STANDARD_LEADS)
FS = 500

# --- the identifiers written into the files made here ---------------------------------------------

FIRST, LAST = "Zyxwvut", "Qwertyson"
SECOND_LAST = "Vexhollow"
MRN = "MRN-98765-4321"
ACCESSION = "ACN-77123-90551"  # 15 characters: DICOM's AccessionNumber (SH) holds 16
HOSPITAL = "St. Placeholder Infirmary"
DEPARTMENT = "Brumblewick Cardiology Wing"
PHYSICIAN = ("Ozymandias", "Quillfeather")
TECHNICIAN = "Snodgrasse"
ROOM = "Ward Marigold-7"
BIRTH = date(1931, 7, 4)
BIRTH_FORMS = ("1931-07-04", "19310704", "07-04-1931", "04.07.1931", "04-JUL-1931", "04-Jul-1931",
               "07/04/1931", "04/07/1931", "4 July 1931")
# What must never be found, matched without regard to case, "_" or "^" (EDF and DICOM join words so).
SECRETS = (FIRST, LAST, SECOND_LAST, "98765-4321", "77123-90551", "Placeholder Infirmary", "Brumblewick",
           *PHYSICIAN, TECHNICIAN, "Marigold-7", *BIRTH_FORMS)

# The app's ECGFM_UPLOAD_GRACE_S in these tests. It must exceed the time one request takes to read
# its files: the app counts the grace from the start of the read (app.py `_read` claims the files
# with `_keep` before reading, and `_delete_unused` deletes them once the grace has passed since),
# so a read longer than the grace finds its later files deleted ("the file does not exist").
# Requests here send at most BATCH_FILES files, read in well under a second.
GRACE_S = 4.0
BATCH_FILES = 8
# Uploads no request has claimed yet are deleted ECGFM_UNUSED_UPLOAD_S after they arrive (default:
# the page's idle time): longer than sending one request's files takes on a busy machine.
UNUSED_UPLOAD_S = 60.0
PAGE_IDLE_S = 3.0
APP_START_S = 90


# --- outputs, and finding identifiers in them ---------------------------------------------------

def _normal(text: str) -> str:
    return text.lower().replace("_", " ").replace("^", " ")


_PDF_LITERAL = re.compile(rb"\((?:\\.|[^\\()])*\)", re.S)
_PDF_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(literal: bytes) -> bytes:
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        if body[i:i + 1] == b"\\" and i + 1 < len(body):
            octal = re.match(rb"[0-7]{1,3}", body[i + 1:i + 4])
            if octal:
                out.append(int(octal.group(0), 8) & 0xFF)
                i += 1 + len(octal.group(0))
                continue
            out += _PDF_ESCAPES.get(body[i + 1:i + 2], body[i + 1:i + 2])
            i += 2
            continue
        out += body[i:i + 1]
        i += 1
    return bytes(out)


def pdf_layers(data: bytes) -> dict[str, str]:
    """What a PDF holds as text: its raw bytes, every FlateDecode stream decompressed (images
    aside: pixels, not text), and the text shown on the page. matplotlib writes each line as one
    text object (BT ... ET) whose glyphs are literal strings between kerning numbers, `[(Q) -0.5
    (w) ...] TJ` with Type 3 fonts: the strings of one text object are joined, one object per line."""
    layers = {"raw": data.decode("latin-1")}
    shown = []
    for i, match in enumerate(re.finditer(rb"stream\r?\n", data)):
        header = data[data.rfind(b" obj", 0, match.start()):match.start()]
        if b"/Subtype /Image" in header:
            continue
        end = data.find(b"endstream", match.end())
        try:
            decoded = zlib.decompressobj().decompress(data[match.end():end])
        except zlib.error:
            continue
        layers[f"stream {i}"] = decoded.decode("latin-1")
        for block in re.finditer(rb"\bBT\b(.*?)\bET\b", decoded, re.S):
            shown.append(b"".join(_unescape(s) for s in _PDF_LITERAL.findall(block.group(1))).decode("latin-1"))
    layers["shown text"] = "\n".join(shown)
    return layers


def png_text(data: bytes) -> str:
    """The text a PNG carries (tEXt, zTXt, iTXt chunks): its pixels are no text to search."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    texts, at = [], 8
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + size]
        if kind == b"tEXt":
            texts.append(body.decode("latin-1"))
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            texts.append(key.decode("latin-1") + ": " + zlib.decompress(rest[1:]).decode("latin-1"))
        elif kind == b"iTXt":
            texts.append(body.decode("utf-8", errors="replace"))
        at += 12 + size
    return "\n".join(texts)


_DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


class Outputs:
    """Everything produced from the files, each piece with where it came from."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, content) -> None:
        if isinstance(content, bytes):
            if content[:5] == b"%PDF-":
                for layer, text in pdf_layers(content).items():
                    self.items.append((f"{where} [{layer}]", text))
                return
            if content[:8] == b"\x89PNG\r\n\x1a\n":
                self.items.append((f"{where} [PNG text chunks]", png_text(content)))
                return
            content = content.decode("utf-8", errors="replace")
        content = str(content)
        for i, image in enumerate(_DATA_URI.findall(content)):  # images inside HTML: their text chunks
            self.items.append((f"{where} [image {i}]", png_text(base64.b64decode(image))))
        self.items.append((where, _DATA_URI.sub("data:image/png;base64,...", content)))

    def add_pdf(self, where: str, data: bytes, record_name: str) -> None:
        """A PDF, after proving that the record's name, which it does show, is found in its text."""
        assert data[:5] == b"%PDF-", where
        shown = pdf_layers(data)["shown text"]
        assert f"ECG-FM report: {record_name}" in shown, f"the PDF search does not find the record's name ({where})"
        self.add(where, data)

    def add_file(self, where: str, path: Path, record_name: str | None = None) -> None:
        self.add(f"{where}: file name", path.name)
        data = path.read_bytes()
        if data[:5] == b"%PDF-" and record_name is not None:
            self.add_pdf(f"{where}: {path.name}", data, record_name)
        else:
            self.add(f"{where}: {path.name}", data)

    def leaks(self, secrets, exact: bool = False) -> list[str]:
        """(identifier, where, context) for each identifier found. `exact`: as written and as a whole
        token, not inside a word or a number (0.99991 holds no ID 9999), for the samples' own
        values; otherwise ignoring case, "_" and "^". One pattern for all, each text read once."""
        secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        if not secrets:
            return []
        if exact:
            pattern = re.compile(r"(?<![A-Za-z0-9])(?<![0-9]\.)(" + "|".join(map(re.escape, secrets))
                                 + r")(?![A-Za-z0-9])(?!\.[0-9])")
        else:
            pattern = re.compile("|".join(re.escape(_normal(s)) for s in secrets))
        named = {s if exact else _normal(s): s for s in secrets}
        found = []
        for where, text in self.items:
            text = text if exact else _normal(text)
            for match in pattern.finditer(text):
                context = text[max(0, match.start() - 60):match.end() + 60]
                found.append(f"{named.get(match.group(0), match.group(0))!r} in {where}: ...{context!r}...")
        return found


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append(logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record))
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted is still evidence
            self.records.append(f"{record.name}: unformattable {record.msg!r} {record.args!r} ({exc})")


@contextlib.contextmanager
def captured(outputs: Outputs, where: str):
    """Every log record of every logger at DEBUG, pydicom's element-by-element debugging on, every
    warning ("always"), and stdout and stderr; all of it added to `outputs` afterwards."""
    import pydicom.config

    handler = _Collect()
    root = logging.getLogger()
    loggers = [root] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved = {lg: lg.level for lg in loggers}
    detached = [lg for lg in loggers if not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in [root, *detached]:
        lg.addHandler(handler)
    pydicom_debugging = pydicom.config.debugging
    pydicom.config.debug(True, default_handler=False)
    out, err = io.StringIO(), io.StringIO()
    native = _NativeOutput()  # what C libraries (pyedflib ...) print on file descriptors 1 and 2
    try:
        with warnings.catch_warnings(record=True) as caught, native, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            yield SimpleNamespace(out=out, err=err)
    finally:
        pydicom.config.debug(pydicom_debugging, default_handler=False)
        for lg in [root, *detached]:
            lg.removeHandler(handler)
        for lg, level in saved.items():
            lg.setLevel(level)
        outputs.add(f"{where}: log records", "\n".join(handler.records))
        outputs.add(f"{where}: warnings", "\n".join(f"{w.category.__name__}: {w.message} ({w.filename})"
                                                     for w in caught))
        outputs.add(f"{where}: stdout", out.getvalue())
        outputs.add(f"{where}: stderr", err.getvalue())
        outputs.add(f"{where}: file descriptors 1 and 2", native.text)


class _NativeOutput:
    """File descriptors 1 and 2 sent to a file while inside, C stdio buffers flushed on the way out."""

    def __enter__(self):
        self.file = tempfile.TemporaryFile()
        sys.stdout.flush(), sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            import ctypes
            ctypes.CDLL(None).fflush(None)
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", errors="replace")
        self.file.close()


# --- files carrying identifiers ------------------------------------------------------------------

@dataclass
class Case:
    """The files of one record, the identifiers they carry, and how they are read."""

    label: str
    files: list[Path]
    secrets: tuple[str, ...] = SECRETS
    fs: float | None = None  # for files that do not state their sampling rate
    readable: bool = True
    exact: bool = False  # the samples' own values: matched as written, as whole tokens
    in_file: list[str] = field(default_factory=list)  # what must be found in the input bytes

    @property
    def record_name(self) -> str:
        return next((p.name for p in self.files if p.suffix == ".hea"), self.files[0].name)


def synthetic_ecg(seconds: float = 10.0, fs: int = FS, seed: int = 0) -> np.ndarray:
    """[12, n] millivolts: a 72 bpm spike train with a little noise; a test signal, not a heart."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-((t % (60 / 72) - 0.3) ** 2) / (2 * 0.012 ** 2)) - 0.15 * np.exp(
        -((t % (60 / 72) - 0.55) ** 2) / (2 * 0.04 ** 2))
    gains = np.linspace(0.4, 1.5, 12)
    return gains[:, None] * beats[None, :] + 0.02 * rng.standard_normal((12, t.size))


def _counts(mv: np.ndarray, uv_per_unit: float) -> np.ndarray:
    return np.round(mv * 1000 / uv_per_unit).astype("<i2")


def muse_xml(mv: np.ndarray) -> bytes:
    eight = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rows = _counts(mv[[0, 1, 6, 7, 8, 9, 10, 11]], 4.88)

    def waveform(kind: str, data: np.ndarray) -> str:
        parts = [f"<Waveform><WaveformType>{kind}</WaveformType><WaveformStartTime>0</WaveformStartTime>"
                 f"<NumberofLeads>8</NumberofLeads><SampleType>CONTINUOUS_SAMPLES</SampleType>"
                 f"<SampleBase>{FS}</SampleBase><SampleExponent>0</SampleExponent>"]
        for name, lead in zip(eight, data):
            payload = lead.tobytes()
            parts.append(
                f"<LeadData><LeadByteCountTotal>{len(payload)}</LeadByteCountTotal><LeadTimeOffset>0</LeadTimeOffset>"
                f"<LeadSampleCountTotal>{lead.size}</LeadSampleCountTotal><LeadAmplitudeUnitsPerBit>4.88"
                f"</LeadAmplitudeUnitsPerBit><LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits>"
                f"<LeadHighLimit>32767</LeadHighLimit><LeadLowLimit>-32768</LeadLowLimit><LeadID>{name}</LeadID>"
                f"<LeadOffsetFirstSample>0</LeadOffsetFirstSample><FirstSampleBaseline>0</FirstSampleBaseline>"
                f"<LeadSampleSize>2</LeadSampleSize><LeadOff>FALSE</LeadOff><LeadDataCRC32>{zlib.crc32(payload)}"
                f"</LeadDataCRC32><WaveFormData>{base64.b64encode(payload).decode()}</WaveFormData>"
                "</LeadData>")
        return "".join(parts) + "</Waveform>"

    text = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n'
            "<RestingECG><MuseInfo><MuseVersion>9.0.9.18167</MuseVersion></MuseInfo>"
            f"<PatientDemographics><PatientID>{MRN}</PatientID><PatientAge>92</PatientAge>"
            f"<AgeUnits>YEARS</AgeUnits><DateofBirth>{BIRTH:%m-%d-%Y}</DateofBirth><Gender>FEMALE</Gender>"
            f"<PatientLastName>{LAST}</PatientLastName><PatientFirstName>{FIRST}</PatientFirstName>"
            "</PatientDemographics>"
            f"<TestDemographics><DataType>RESTING</DataType><Site>12</Site><SiteName>{HOSPITAL}</SiteName>"
            f"<Location>3</Location><LocationName>{DEPARTMENT}</LocationName><RoomID>{ROOM}</RoomID>"
            f"<AcquisitionTechLastName>{TECHNICIAN}</AcquisitionTechLastName>"
            f"<ReferringMDLastName>{PHYSICIAN[1]}</ReferringMDLastName>"
            f"<ReferringMDFirstName>{PHYSICIAN[0]}</ReferringMDFirstName>"
            f"<OrderingMDLastName>{PHYSICIAN[1]}</OrderingMDLastName>"
            "<AcquisitionDate>01-17-2024</AcquisitionDate><AcquisitionTime>09:30:00</AcquisitionTime>"
            "</TestDemographics>"
            f"<Order><AccessionNumber>{ACCESSION}</AccessionNumber></Order>"
            + waveform("Median", np.zeros((8, 600), "<i2")) + waveform("Rhythm", rows) + "</RestingECG>\n")
    return text.encode("iso-8859-1")


def philips_xml(mv: np.ndarray) -> bytes:
    data = base64.b64encode(_counts(mv, 5.0).reshape(-1).tobytes()).decode()
    n = mv.shape[1]
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n<restingecgdata xmlns="http://www3.medical.philips.com">'
            "<documentinfo><documentname>ecg.xml</documentname><documenttype>SierraECG</documenttype>"
            "<documentversion>1.03</documentversion></documentinfo>"
            '<dataacquisition date="2024-01-17" time="09:30:00"><machine machineid="1">Cart</machine>'
            f'<acquirer><operator id="{TECHNICIAN}">{TECHNICIAN}</operator><departmentid>7</departmentid>'
            f"<departmentname>{DEPARTMENT}</departmentname><institutionid>1</institutionid>"
            f"<institutionname>{HOSPITAL}</institutionname><facilityname>{HOSPITAL}</facilityname>"
            f"<roomid>{ROOM}</roomid></acquirer>"
            f"<signalcharacteristics><samplingrate>{FS}</samplingrate><signalresolution>5</signalresolution>"
            "<acquisitiontype>STD-12</acquisitiontype><bitspersample>16</bitspersample>"
            "<signaloffset>0</signaloffset><signalsigned>True</signalsigned>"
            "<numberchannelsallocated>12</numberchannelsallocated><numberchannelsvalid>12</numberchannelsvalid>"
            "</signalcharacteristics></dataacquisition>"
            f"<patient><generalpatientdata><patientid>{MRN}</patientid><uniquepatientid>{MRN}</uniquepatientid>"
            f"<MRN>{MRN}</MRN><name><lastname>{LAST}</lastname><firstname>{FIRST}</firstname>"
            f"<middlename>{SECOND_LAST}</middlename></name>"
            f"<age><dateofbirth>{BIRTH:%Y-%m-%d}</dateofbirth></age><sex>Female</sex></generalpatientdata></patient>"
            f"<orderinfo><ordernumber>{ACCESSION}</ordernumber><reasonfororder>Referred by {PHYSICIAN[1]}"
            "</reasonfororder></orderinfo>"
            f'<waveforms><parsedwaveforms durationperchannel="{n * 1000 // FS}" samplespersecond="{FS}" '
            f'leadlabels="{" ".join(LEADS)}" numberofleads="12" dataencoding="Base64" '
            f'compression="Uncompressed">{data}</parsedwaveforms></waveforms></restingecgdata>\n')
    return text.encode("utf-8")


def hl7_xml(mv: np.ndarray) -> bytes:
    order = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "AVR", "AVL", "AVF"]
    rows = _counts(mv[[LEADS.index(n if n[:2] != "AV" else "aV" + n[2]) for n in order]], 2.5)
    seqs = ['<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
            '<value xsi:type="GLIST_TS"><head value="20240117093000.000"/><increment value="0.002" unit="s"/>'
            "</value></sequence></component>"]
    for name, lead in zip(order, rows):
        seqs.append(f'<component><sequence><code code="MDC_ECG_LEAD_{name}" codeSystem="2.16.840.1.113883.6.24"/>'
                    '<value xsi:type="SLIST_PQ"><origin value="0" unit="uV"/><scale value="2.5" unit="uV"/>'
                    f'<digits>{" ".join(map(str, lead.tolist()))}</digits></value></sequence></component>')
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            '<id root="11111111-2222-3333-4444-555555555555"/><code code="93000" codeSystem="2.16.840.1.113883.6.12"/>'
            '<effectiveTime><low value="20240117093000"/><high value="20240117093010"/></effectiveTime>'
            '<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>'
            f'<id root="2.16.840.1.113883.3.5" extension="{MRN}"/>'
            f"<subjectDemographicPerson><name><given>{FIRST}</given><family>{LAST}</family>"
            f"<family>{SECOND_LAST}</family></name>"
            '<administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>'
            f'<birthTime value="{BIRTH:%Y%m%d}"/></subjectDemographicPerson></trialSubject></subject>'
            "<definition><treatmentGroupAssignment><code code=\"A\"/></treatmentGroupAssignment></definition>"
            '<componentOf><clinicalTrial><id root="2.16.840.1.113883.3.6" extension="TRIAL-1"/>'
            f'<location><trialSite><id root="2.16.840.1.113883.3.7" extension="{ACCESSION}"/>'
            f"<location><name>{HOSPITAL}</name></location>"
            f"<responsibleParty><trialInvestigator><investigatorPerson><name><given>{PHYSICIAN[0]}</given>"
            f"<family>{PHYSICIAN[1]}</family></name></investigatorPerson></trialInvestigator></responsibleParty>"
            "</trialSite></location></clinicalTrial></componentOf>"
            "</subjectAssignment></componentOf></timepointEvent></componentOf>"
            f"<performer><studyEventPerformer><assignedPerson><name>{TECHNICIAN}</name></assignedPerson>"
            "</studyEventPerformer></performer>"
            '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
            '<effectiveTime><low value="20240117093000"/><high value="20240117093010"/></effectiveTime>'
            "<component><sequenceSet>" + "".join(seqs) + "</sequenceSet></component>"
            "</series></component></AnnotatedECG>\n")
    return text.encode("utf-8")


def dicom_file(path: Path, mv: np.ndarray) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop = "1.2.840.10008.5.1.4.1.1.9.1.1"  # 12-lead ECG Waveform Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop, meta.MediaStorageSOPInstanceUID, "ECG"
    ds.PatientName = f"{LAST}^{FIRST}^{SECOND_LAST}"
    ds.PatientID = MRN
    ds.OtherPatientIDs = MRN
    ds.PatientBirthDate = f"{BIRTH:%Y%m%d}"
    ds.PatientAddress = f"{ROOM}, {HOSPITAL}"
    ds.AccessionNumber = ACCESSION
    ds.InstitutionName = HOSPITAL
    ds.InstitutionalDepartmentName = DEPARTMENT
    ds.ReferringPhysicianName = f"{PHYSICIAN[1]}^{PHYSICIAN[0]}"
    ds.NameOfPhysiciansReadingStudy = f"{PHYSICIAN[1]}^{PHYSICIAN[0]}"
    ds.OperatorsName = TECHNICIAN
    ds.StudyDate, ds.StudyTime = "20240117", "093000"
    codes = [1, 2, 61, 62, 63, 64, 3, 4, 5, 6, 7, 8]
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = 12, mv.shape[1]
    group.SamplingFrequency = str(FS)
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    channels = []
    for i, lead in enumerate(LEADS):
        channel, source, unit = Dataset(), Dataset(), Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = \
            f"5.6.3-9-{codes[i]}", "SCPECG", f"Lead {lead}"
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSourceSequence, channel.ChannelSensitivityUnitsSequence = [source], [unit]
        channel.ChannelSensitivity, channel.ChannelSensitivityCorrectionFactor = "2.5", "1"
        channel.ChannelBaseline, channel.WaveformBitsStored = "0", 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = np.ascontiguousarray(_counts(mv, 2.5).T).tobytes()
    ds.WaveformSequence = [group]
    ds.save_as(path, enforce_file_format=True)
    return path


def _crc_ccitt(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _scp_sections(data: bytes) -> list[tuple[int, bytes]]:
    """(section id, section bytes) in the order section 0 lists them (empty ones as b"")."""
    length = struct.unpack_from("<I", data, 10)[0]
    pointers = [struct.unpack_from("<HII", data, offset) for offset in range(22, 6 + length, 10)]
    return [(sid, data[index - 1:index - 1 + size] if size else b"") for sid, size, index in pointers]


def _scp_tags(section1: bytes) -> list[tuple[int, bytes]]:
    tags, at = [], 16
    while at + 3 <= len(section1):
        tag, size = section1[at], struct.unpack_from("<H", section1, at + 1)[0]
        if tag == 255:
            break
        tags.append((tag, section1[at + 3:at + 3 + size]))
        at += 3 + size
    return tags


def scp_with_patient(template: bytes) -> bytes:
    """`template` (an SCP-ECG file) with section 1 rewritten: identifiers in every tag that holds
    one, the other tags (device, acquisition date, filters ...) kept; section 0's pointers, every
    section CRC and the record's size and CRC computed again."""
    def text(tag: int, value: str) -> bytes:
        raw = value.encode("latin-1") + b"\0"
        return struct.pack("<BH", tag, len(raw)) + raw

    identifying = {0, 1, 2, 3, 5, 13, 16, 17, 18, 19, 20, 21, 22, 23, 30, 31, 35}
    body = (text(0, LAST) + text(1, FIRST) + text(2, MRN) + text(3, SECOND_LAST)
            + struct.pack("<BHHBB", 5, 4, BIRTH.year, BIRTH.month, BIRTH.day)
            + text(13, f"Referred by {PHYSICIAN[1]}") + text(16, HOSPITAL) + text(17, HOSPITAL)
            + text(18, DEPARTMENT) + text(19, DEPARTMENT) + text(20, f"{PHYSICIAN[0]} {PHYSICIAN[1]}")
            + text(21, PHYSICIAN[1]) + text(22, TECHNICIAN) + text(23, ROOM)
            + text(30, f"{FIRST} {LAST}, born {BIRTH:%d.%m.%Y}") + text(31, ACCESSION)
            + b"".join(struct.pack("<BH", tag, len(value)) + value
                       for tag, value in _scp_tags(dict(_scp_sections(template))[1]) if tag not in identifying)
            + struct.pack("<BH", 255, 0))
    body += b"\0" * (len(body) % 2)  # sections are an even number of bytes

    def section(sid: int, content: bytes, header: bytes) -> bytes:
        rest = struct.pack("<HI", sid, 16 + len(content)) + header[8:16] + content
        return struct.pack("<H", _crc_ccitt(rest)) + rest

    sections = _scp_sections(template)
    rebuilt = {sid: (section(1, body, raw[:16]) if sid == 1 else raw) for sid, raw in sections}
    index, pointers = 7, []  # 1-based: the record's CRC and size take 6 bytes
    sec0_size = len(rebuilt[0])
    for sid, _ in sections:
        size = sec0_size if sid == 0 else len(rebuilt[sid])
        pointers.append(struct.pack("<HII", sid, size, index if size else 0))
        index += size
    rebuilt[0] = section(0, b"".join(pointers), rebuilt[0][:16])
    record = b"".join(rebuilt[sid] for sid, _ in sections)
    rest = struct.pack("<I", 6 + len(record)) + record
    return struct.pack("<H", _crc_ccitt(rest)) + rest


def edf_file(path: Path, mv: np.ndarray) -> Path:
    import pyedflib

    writer = pyedflib.EdfWriter(str(path), 12, file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders(pyedflib.highlevel.make_signal_headers(
            LEADS, dimension="mV", sample_frequency=FS, physical_min=-10, physical_max=10))
        writer.setPatientName(f"{LAST}_{FIRST}")  # EDF+ joins words with "_"
        writer.setPatientCode(MRN)
        writer.setBirthdate(BIRTH)
        writer.setSex(0)
        writer.setPatientAdditional(SECOND_LAST)
        writer.setAdmincode(ACCESSION)
        writer.setTechnician(TECHNICIAN)
        writer.setEquipment("Placeholder_Infirmary")
        writer.writeSamples(list(mv.astype(np.float64)))
    finally:
        writer.close()
    return path


def wfdb_files(folder: Path, name: str, mv: np.ndarray) -> list[Path]:
    import wfdb

    wfdb.wrsamp(name, fs=FS, units=["mV"] * 12, sig_name=LEADS, p_signal=mv.T, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder),
                comments=[f"Name: {FIRST} {LAST}", f"MRN: {MRN}", f"DOB: {BIRTH:%Y-%m-%d}",
                          f"Hospital: {HOSPITAL}", f"Accession: {ACCESSION}",
                          f"Referring: {PHYSICIAN[0]} {PHYSICIAN[1]}", f"Technician: {TECHNICIAN}"])
    return [folder / f"{name}.hea", folder / f"{name}.dat"]


def _patient_comments() -> list[str]:
    return [f"Patient name: {FIRST} {LAST}", f"Patient ID: {MRN}", f"Date of birth: {BIRTH:%Y-%m-%d}",
            f"DOB: {BIRTH:%d.%m.%Y}", f"Institution: {HOSPITAL}", f"Department: {DEPARTMENT}",
            f"Accession number: {ACCESSION}", f"Referring physician: Dr {PHYSICIAN[0]} {PHYSICIAN[1]}",
            f"Room: {ROOM}", f"Sampling rate (Hz): {FS}"]


def csv_file(path: Path, mv: np.ndarray) -> Path:
    """Comment lines with the patient's details above a header row and 12 columns."""
    lines = [f"# {c}" for c in _patient_comments()] + [",".join(LEADS)]
    lines += [",".join(f"{v:.4f}" for v in row) for row in mv.T]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_lead_csv(path: Path, mv: np.ndarray) -> Path:
    """A single-lead export without a header row, whose comments name staff after words a lead list
    may start with (lead, signal, channel)."""
    comments = _patient_comments() + [f"Lead technician: {TECHNICIAN}", f"Channel checked by: {PHYSICIAN[1]}",
                                      f"Signal reviewed by: {LAST}"]
    lines = [f"# {c}" for c in comments] + [f"{v:.4f}" for v in mv[1]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mat_file(path: Path, mv: np.ndarray) -> Path:
    import scipy.io

    scipy.io.savemat(path, {  # the patient's variables first, so that a damaged copy keeps them
        "patient_name": f"{FIRST} {LAST}", "patient_id": MRN, "birth_date": f"{BIRTH:%Y-%m-%d}",
        "institution": HOSPITAL, "accession": ACCESSION,
        "patient": {"name": f"{LAST}, {FIRST}", "id": MRN, "dob": f"{BIRTH:%Y%m%d}",
                    "physician": PHYSICIAN[1]},
        "signal": mv.astype(np.float32), "fs": float(FS), "leads": np.array(LEADS, dtype=object), "units": "mV",
    })
    return path


def _cut(path: Path, target: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    target.write_bytes(data[:int(len(data) * fraction)])
    return target


def _shared_scp() -> Path | None:
    from tests.conftest import SHARED

    path = SHARED / "ecg-samples" / "scp" / "ecgtoolkit_Example.scp"
    return path if path.is_file() else None


def make_synthetic(folder: Path) -> list[Case]:
    folder.mkdir(parents=True, exist_ok=True)
    mv = synthetic_ecg()
    cases: list[Case] = []

    def add(label: str, files: list[Path], *, readable: bool = True, in_file=(LAST, FIRST, MRN)) -> None:
        cases.append(Case(label, files, readable=readable, in_file=list(in_file)))

    muse = folder / "privacy_muse.xml"
    muse.write_bytes(muse_xml(mv))
    add("GE MUSE XML", [muse], in_file=(LAST, FIRST, MRN, "07-04-1931", HOSPITAL, ACCESSION, PHYSICIAN[1]))
    philips = folder / "privacy_philips.xml"
    philips.write_bytes(philips_xml(mv))
    add("Philips XML", [philips], in_file=(LAST, FIRST, MRN, "1931-07-04", HOSPITAL, ACCESSION))
    hl7 = folder / "privacy_hl7.xml"
    hl7.write_bytes(hl7_xml(mv))
    add("HL7 aECG", [hl7], in_file=(LAST, FIRST, MRN, "19310704", HOSPITAL, PHYSICIAN[1], TECHNICIAN))
    dcm = dicom_file(folder / "privacy_dicom.dcm", mv)
    add("DICOM", [dcm], in_file=(LAST, FIRST, MRN, "19310704", HOSPITAL, ACCESSION, PHYSICIAN[1]))
    template = _shared_scp()
    if template is not None:  # SCP-ECG: a real file's section 1 rewritten (needs ../shared)
        scp = folder / "privacy_scp.scp"
        scp.write_bytes(scp_with_patient(template.read_bytes()))
        add("SCP-ECG", [scp], in_file=(LAST, FIRST, MRN, HOSPITAL, ACCESSION, PHYSICIAN[1], TECHNICIAN))
    edf = edf_file(folder / "privacy_edf.edf", mv)
    add("EDF+", [edf], in_file=(f"{LAST}_{FIRST}", MRN, "04-JUL-1931", ACCESSION, TECHNICIAN))
    add("WFDB", wfdb_files(folder, "privacy_wfdb", mv), in_file=(LAST, FIRST, MRN, "1931-07-04", HOSPITAL))
    add("CSV", [csv_file(folder / "privacy_csv.csv", mv)], in_file=(LAST, FIRST, MRN, HOSPITAL, ACCESSION))
    add("CSV, one lead", [one_lead_csv(folder / "privacy_onelead.csv", mv)],
        in_file=(LAST, FIRST, MRN, TECHNICIAN, PHYSICIAN[1]))
    add("MATLAB", [mat_file(folder / "privacy_matlab.mat", mv)], in_file=(LAST, FIRST, MRN, HOSPITAL))

    # The same files damaged after their patient section: the errors must not quote it either.
    broken = folder / "broken"
    broken.mkdir(exist_ok=True)
    for case in list(cases):
        if case.label == "WFDB":  # the header intact, its signal file truncated
            hea = broken / "privacy_broken_wfdb.hea"
            hea.write_text(case.files[0].read_text().replace("privacy_wfdb", "privacy_broken_wfdb"))
            files = [hea, _cut(case.files[1], broken / "privacy_broken_wfdb.dat", 0.5)]
        elif case.label.startswith("CSV"):  # the comments without a data row
            text = case.files[0].read_text()
            target = broken / case.files[0].name.replace("privacy_", "privacy_broken_")
            target.write_text("\n".join(ln for ln in text.splitlines() if ln.startswith("#")) + "\n")
            files = [target]
        else:
            files = [_cut(case.files[0], broken / case.files[0].name.replace("privacy_", "privacy_broken_"))]
        add(f"{case.label}, damaged", files, readable=False, in_file=case.in_file[:1])
    return cases


# --- the project's sample files and the identifiers they carry -----------------------------------

_GENERIC = {"test", "unknown", "none", "null", "male", "female", "n/a", "dd-mmm-yyyy", "startdate"}


def _checkable(value: str) -> bool:
    value = value.strip()
    if len(value) < 4 or value.lower() in _GENERIC or value.strip("xX") == "":
        return False
    return not (value.isdigit() and len(value) < 5)


def _dates(year: int, month: int, day: int) -> list[str]:
    d = date(year, month, day)
    return [f"{d:%Y-%m-%d}", f"{d:%Y%m%d}", f"{d:%d.%m.%Y}", f"{d:%m/%d/%Y}", f"{d:%d/%m/%Y}",
            f"{d:%m-%d-%Y}", f"{d:%d-%m-%Y}"]


def _date_forms(text: str) -> list[str]:
    for pattern, order in ((r"(\d{4})-?(\d{2})-?(\d{2})", "ymd"), (r"(\d{2})[-/.](\d{2})[-/.](\d{4})", "mdy")):
        match = re.fullmatch(pattern, text.strip())
        if match:
            parts = dict(zip(order, map(int, match.groups())))
            with contextlib.suppress(ValueError):
                return _dates(parts["y"], parts["m"], parts["d"])
    return [text]


def xml_identifiers(raw: bytes) -> list[str]:
    root = ET.fromstring(raw)  # the project's own public sample files

    def local(tag) -> str:
        return str(tag).rsplit("}", 1)[-1]

    found: list[str] = []
    kind = local(root.tag)
    if kind == "restingecgdata":  # Philips
        wanted = {"patientid", "uniquepatientid", "MRN", "lastname", "firstname", "middlename",
                  "institutionname", "departmentname", "facilityname", "ordernumber", "roomid"}
        for el in root.iter():
            if local(el.tag) in wanted and el.text:
                found.append(el.text)
            if local(el.tag) == "dateofbirth" and el.text:
                found += _date_forms(el.text)
            if local(el.tag) == "operator" and el.get("id"):
                found.append(el.get("id"))
    elif kind == "RestingECG":  # GE MUSE
        for section in root.iter():
            if local(section.tag) == "PatientDemographics":
                for el in section.iter():
                    if el.text and el.text.strip() and local(el.tag) not in ("PatientAge", "AgeUnits", "Gender"):
                        found += _date_forms(el.text) if local(el.tag) == "DateofBirth" else [el.text]
            if local(section.tag) == "TestDemographics":
                found += [el.text for el in section.iter() if el.text and re.search(
                    r"Name$|MD|Tech|Room|Account|Order", local(el.tag))]
    elif kind == "AnnotatedECG":  # HL7 aECG: the subject, investigator, performer, site, sponsor
        for el in root.iter():
            if local(el.tag) == "name":
                found += ["".join(el.itertext())] + [t for t in el.itertext() if t.strip()]
            if local(el.tag) == "birthTime" and el.get("value"):
                found += _date_forms(el.get("value")[:8])
            if local(el.tag) in ("trialSubject", "studyEventPerformer", "trialSite", "trialInvestigator"):
                found += [i.get("extension") for i in el if local(i.tag) == "id" and i.get("extension")]
    return found


_DICOM_IDENTIFIERS = ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
                      "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "AccessionNumber",
                      "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                      "ReferringPhysicianName", "RequestingPhysician", "PerformingPhysicianName",
                      "NameOfPhysiciansReadingStudy", "OperatorsName", "AdmissionID", "IssuerOfPatientID",
                      "CurrentPatientLocation", "PatientInstitutionResidence", "StudyID")


def dicom_identifiers(path: Path) -> list[str]:
    import pydicom

    ds = pydicom.dcmread(path)
    found = []
    for keyword in _DICOM_IDENTIFIERS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, pydicom.multival.MultiValue) else [value]
        for v in values:
            found += [str(v)] + [part for part in str(v).split("^") if part]
    if ds.get("PatientBirthDate"):
        found += _date_forms(str(ds.PatientBirthDate))
    return found


def scp_identifiers(data: bytes) -> list[str]:
    found = []
    for tag, value in _scp_tags(dict(_scp_sections(data))[1]):
        if tag in (0, 1, 2, 3, 13, 16, 17, 18, 19, 20, 21, 22, 23, 30, 31, 35):
            found.append(value.split(b"\0")[0].decode("latin-1"))
        if tag == 5 and len(value) == 4:
            year, month, day = struct.unpack("<HBB", value)
            with contextlib.suppress(ValueError):
                found += _dates(year, month, day)
    return found


def edf_identifiers(data: bytes) -> list[str]:
    """The patient field's words, and the recording field's after its start date (EDF+: admin code,
    technician, equipment)."""
    patient = data[8:88].decode("latin-1").split()
    recording = data[88:168].decode("latin-1").split()
    if recording[:1] == ["Startdate"]:
        recording = recording[2:]
    words = patient + recording
    return words + [part for word in words for part in word.split("_") if "_" in word]


def wfdb_identifiers(header: Path) -> list[str]:
    """Header comment lines: age, sex, diagnoses, medication, free text; never to be shown."""
    lines = header.read_bytes().decode("latin-1").splitlines()
    return [ln.strip().lstrip("#").strip() for ln in lines if ln.strip().startswith("#")]


def make_sample_cases(samples: Path, folder: Path) -> tuple[list[Case], list[str]]:
    """One case per record of ../shared/ecg-samples, with the identifiers each file carries.

    A file whose own name holds one of its identifiers (a demo patient's name) is read from a copy
    under a neutral name, so that the name shown does not hide a leak. Identifiers that are part of
    some input file's name anyway (a case number) cannot be checked and are returned apart."""
    fs_needed = {"csv/contec_0000050.ECG.csv": 800.0, "csv/edb_e0103.csv": 250.0}
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    for directory in sorted((samples / "wfdb").iterdir()):
        headers = sorted(directory.glob("*.hea"))
        if headers:
            ids = [v for h in headers for v in wfdb_identifiers(h)]
            cases.append(Case(f"sample {directory.name}", sorted(p for p in directory.iterdir() if p.is_file()),
                              secrets=tuple(ids), exact=True, in_file=ids[:1]))
    for path in sorted(p for p in samples.rglob("*") if p.is_file()):
        rel = path.relative_to(samples).as_posix()
        if rel.startswith(("wfdb/", "licenses/")) or path.name in ("README.md", "MANIFEST.csv"):
            continue
        raw = path.read_bytes()
        suffix = path.suffix.lower()
        ids: list[str] = []
        if suffix == ".xml":
            ids = xml_identifiers(raw)
        elif suffix == ".dcm":
            ids = dicom_identifiers(path)
        elif suffix == ".scp":
            ids = scp_identifiers(raw)
        elif suffix == ".edf":
            ids = edf_identifiers(raw)
        elif rel.startswith("other/"):  # Contec ECG90A: case number and patient fields in the header
            ids = [field_.decode("latin-1") for field_ in (raw[:10].split(b"\0")[0], raw[32:40].split(b"\0")[0])]
        ids = [i.strip() for i in ids if i and i.strip()]
        if any(i and i in path.name for i in ids if _checkable(i)):
            copy = folder / f"sample_{len(cases)}{suffix}"
            shutil.copyfile(path, copy)
            path = copy
        cases.append(Case(f"sample {rel}", [path], secrets=tuple(ids), fs=fs_needed.get(rel), exact=True,
                          in_file=[i for i in ids if i.encode("latin-1", "ignore") in raw][:3]))
    names = [p.name for case in cases for p in case.files]
    unchecked = sorted({s for case in cases for s in case.secrets if _checkable(s) and any(s in n for n in names)})
    for case in cases:
        case.secrets = tuple(dict.fromkeys(s for s in case.secrets if _checkable(s) and s not in unchecked))
    return cases, unchecked


def assert_in_inputs(cases: list[Case]) -> None:
    """Every identifier looked for must first be found in its file: otherwise its absence proves nothing."""
    for case in cases:
        raw = b"".join(p.read_bytes() for p in case.files)
        for value in case.in_file:
            encodings = [value.encode("utf-8"), value.encode("utf-16-le"), value.encode("latin-1", "ignore")]
            assert any(e in raw for e in encodings), f"{value!r} is not in the {case.label} input"


# --- running the files through the library, the CLI and the app -----------------------------------

def _groups(cases: list[Case]) -> list[tuple[float | None, list[Case]]]:
    by_fs: dict[float | None, list[Case]] = {}
    for case in cases:
        by_fs.setdefault(case.fs, []).append(case)
    return list(by_fs.items())


def _batches(cases: list[Case]) -> list[tuple[float | None, list[Case]]]:
    """`_groups`, each cut into requests of at most BATCH_FILES files (a record's files together)."""
    out = []
    for fs, group in _groups(cases):
        batch: list[Case] = []
        for case in group:
            if batch and sum(len(c.files) for c in batch) + len(case.files) > BATCH_FILES:
                out.append((fs, batch))
                batch = []
            batch.append(case)
        out.append((fs, batch))
    return out


def _record_text(record) -> str:
    """Every field of a record as text; arrays by their shape and lead names only."""
    parts = []
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, np.ndarray):
            value = value.shape
        elif isinstance(value, dict):
            value = {k: getattr(v, "shape", v) for k, v in value.items()}
        parts.append(f"{f.name}={value!r}")
    return "\n".join(parts)


def run_library(cases: list[Case], model, outputs: Outputs, pdf_for: set[str]) -> int:
    """read_ecgs, prepare, predict, to_dict, the report as HTML and (for records in `pdf_for`) PDF."""
    records_seen = 0
    for fs, group in _groups(cases):
        files = [p for case in group for p in case.files]
        with captured(outputs, f"library read {fs}"):
            entries = ecgfm.read_ecgs(files, fs=fs, duration_s=10.0, errors="return")
        records = [e for e in entries if not isinstance(e, Exception)]
        for entry in entries:
            if isinstance(entry, Exception):
                outputs.add("library error", str(entry))
                outputs.add("library error, as a log would show it", "".join(traceback.format_exception(entry)))
                name = str(entry).split(": ", 1)[0]
                outputs.add("library failed report", reports.to_html(reports.failed(name, str(entry)), "r"))
        with captured(outputs, f"library predict {fs}"):
            predictions = ecgfm.predict(model, records) if records else []
            for record, prediction in zip(records, predictions):
                records_seen += 1
                prepared = ecgfm.prepare(record)
                outputs.add(f"library record {record.name}", _record_text(record))
                outputs.add(f"library summary {record.name}", json.dumps(record.summary()))
                outputs.add(f"library read_summary {record.name}",
                            json.dumps(reports.read_summary(record, prepared)))
                outputs.add(f"library prediction {record.name}", json.dumps(prediction.to_dict()))
                report = reports.build(record, prepared, prediction)
                outputs.add(f"library html {record.name}", reports.to_html(report, "r"))
                if record.name in pdf_for:
                    outputs.add_pdf(f"library pdf {record.name}", reports.to_pdf(report), record.name)
    return records_seen


def _cli(outputs: Outputs, argv: list[str]) -> int:
    from ecgfm.__main__ import main

    where = " ".join(a for a in argv if a in ("info", "predict") or a in ("--json", "--csv", "--report"))
    with captured(outputs, f"cli {where}"):
        return main(argv)


def run_cli(cases: list[Case], checkpoint: Path, folder: Path, outputs: Outputs, report_cases: list[Case]) -> None:
    model = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    for fs, group in _groups(cases):
        files = [str(p) for case in group for p in case.files]
        rate = ["--fs", f"{fs:g}"] if fs else []
        for argv in (["info", "--json"], ["info"], ["predict", *model, "--json"], ["predict", *model, "--csv"]):
            before = len(outputs.items)
            _cli(outputs, [*argv, *rate, *files])
            if "--json" in argv:  # one line per record: the readable ones were read
                stdout = next(text for where, text in outputs.items[before:] if where.endswith(": stdout"))
                lines = [json.loads(line) for line in stdout.splitlines()]
                assert sum("error" not in line for line in lines) == sum(c.readable for c in group), stdout[:3000]
    for fs, group in _groups(report_cases):
        out = folder / f"cli-reports-{fs}"
        files = [str(p) for case in group for p in case.files]
        _cli(outputs, ["predict", *model, "--report", str(out), *(["--fs", f"{fs:g}"] if fs else []), *files])
        names = {reports.file_stem(c.record_name): c.record_name for c in group if c.readable}
        for path in sorted(out.iterdir()):
            stem = path.name.rsplit("-", 1)[0]
            outputs.add_file("cli --report", path, names.get(stem))


# The app, as `python app.py` runs it, with the root logger at DEBUG and pydicom's debugging on:
# app.main's logging.basicConfig(INFO) then finds a handler and changes nothing.
LAUNCHER = ("import logging, runpy, sys\n"
            "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s: %(message)s')\n"
            "import pydicom.config; pydicom.config.debug(True, default_handler=False)\n"
            "sys.argv = ['app.py']\n"
            "runpy.run_path('app.py', run_name='__main__')\n")


class AppProcess:
    """app.py on a free port of 127.0.0.1 with short times, started at once and waited for when a
    test needs it (it starts while the in-process tests run): uploads in tmp/uploads, the process's
    temporary files in tmp/tmpdir, everything it prints in tmp/app.log."""

    def __init__(self, tmp: Path, checkpoint: Path) -> None:
        self.root, self.uploads, self.tmpdir, self.log = tmp, tmp / "uploads", tmp / "tmpdir", tmp / "app.log"
        for folder in (self.uploads, self.tmpdir, tmp / "hf-cache"):
            folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
               "GRADIO_TEMP_DIR": str(self.uploads), "TMPDIR": str(self.tmpdir), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf-cache"), "ECGFM_CACHE": str(tmp / "ecgfm-cache"),
               "ECGFM_CHECKPOINT": str(checkpoint), "ECGFM_UPLOAD_GRACE_S": f"{GRACE_S:g}",
               "ECGFM_PAGE_IDLE_S": f"{PAGE_IDLE_S:g}", "ECGFM_UNUSED_UPLOAD_S": f"{UNUSED_UPLOAD_S:g}",
               "ECGFM_ORPHAN_AGE_S": "1", "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log, "w")
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=REPO, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self._ready = False

    def ready(self) -> "AppProcess":
        while not self._ready:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                self._ready = get_json(f"{self.url}/health", timeout=2)["model_status"] != "loading"
            if time.monotonic() - self.started > APP_START_S:
                raise RuntimeError(f"app.py did not answer:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        assert get_json(f"{self.url}/health")["model_loaded"], self.log.read_text()[-3000:]
        return self

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def _fetch(app, item: dict) -> tuple[Path, bytes]:
    """A file the app returned: where the server wrote it, and its bytes as served."""
    import httpx

    server_path = Path(item["path"])
    url = item.get("url") or f"{app.url}/gradio_api/file={server_path}"
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, (url, response.status_code)
    return server_path, response.content


def _results_location(app, server_path: Path) -> None:
    """Results are written only into ecgfm-results-* folders of Gradio's upload folder."""
    folder = server_path.resolve().parent
    assert folder.parent == app.uploads.resolve() and folder.name.startswith("ecgfm-results-"), server_path


def run_app(cases: list[Case], app, outputs: Outputs, report_cases: list[Case], plot: bool = False) -> list[str]:
    """/read and /predict with every file, /report (and /plot) with `report_cases`; returns the
    names of the files uploaded."""
    from gradio_client import Client, handle_file

    uploaded = []
    with captured(outputs, "gradio client"):
        client = Client(app.url + "/", verbose=False, download_files=False, analytics_enabled=False)
    for fs, group in _batches(cases):
        files = [p for case in group for p in case.files]
        uploaded += [p.name for p in files]
        for api in ("/read", "/predict"):
            with captured(outputs, f"app {api} client"):
                try:
                    result = client.predict([handle_file(str(p)) for p in files], None if fs is None else f"{fs:g}",
                                            "0", [], api_name=api)
                except Exception as exc:  # noqa: BLE001 - the message is an output to check
                    outputs.add(f"app {api} error", str(exc))
                    assert not any(c.readable for c in group), f"{api} refused readable files: {exc}"
                    continue
                outputs.add(f"app {api} JSON", json.dumps(result))
                read = sum("error" not in record for record in result["records"])
                assert read == sum(c.readable for c in group), \
                    f"{api} read {read} of {[c.label for c in group]}: {json.dumps(result)[:3000]}"
    broken = [p for case in cases if not case.readable for p in case.files]
    if broken:  # every file failing: the call's error is one message naming each
        with captured(outputs, "app /read all failing"), pytest.raises(Exception) as failure:
            client.predict([handle_file(str(p)) for p in broken], None, "0", [], api_name="/read")
        outputs.add("app /read error, every file failing", str(failure.value))
    for fs, group in _groups([c for c in report_cases if c.readable]):
        names = {reports.file_stem(c.record_name): c.record_name for c in group}
        for start in range(0, len(group), 8):  # the app makes at most 8 reports per call
            files = [p for case in group[start:start + 8] for p in case.files]
            apis = ("/report", "/plot") if plot else ("/report",)
            for api in apis:
                with captured(outputs, f"app {api} client"):
                    result = client.predict([handle_file(str(p)) for p in files], None if fs is None else f"{fs:g}",
                                            "0", [], api_name=api)
                for item in result:
                    if api == "/plot":
                        outputs.add("app /plot caption", item.get("caption"))
                        item = item["image"]
                    server_path, data = _fetch(app, item)
                    _results_location(app, server_path)
                    outputs.add(f"app {api} file name", server_path.name)
                    stem = server_path.name.rsplit("-", 1)[0]
                    if api == "/report":
                        outputs.add_pdf(f"app {api} {server_path.name}", data, names[stem])
                    else:
                        outputs.add(f"app {api} {server_path.name}", data)
    return uploaded


def _files(root: Path) -> list[Path]:
    """The files under `root` now; folders the app deletes meanwhile are skipped, not an error."""
    return [Path(top) / name for top, _, names in os.walk(root) for name in names]


def wait_for_deletion(uploads: Path, names: list[str], within_s: float) -> float:
    """Seconds until none of `names` is left in the upload folder (results folders aside). An
    upload with the bytes of one of the app's examples is stored where Gradio keeps that example,
    which the app keeps on purpose."""
    start = time.monotonic()
    names = set(names)
    while True:
        left = [p for p in _files(uploads) if p.name in names
                and not p.parent.name.startswith("ecgfm-results-") and not _is_example(p)]
        elapsed = time.monotonic() - start
        if not left:
            return elapsed
        assert elapsed < within_s, f"uploads still there after {elapsed:.1f} s: {[p.name for p in left]}"
        time.sleep(0.1)


def _is_example(path: Path) -> bool:
    """Gradio's copy of one of the app's own example recordings (examples/), kept on purpose."""
    example = REPO / "examples" / path.name
    try:
        return example.is_file() and example.read_bytes() == path.read_bytes()
    except FileNotFoundError:  # deleted meanwhile
        return False


def check_app_files(app, outputs: Outputs, uploaded: list[str]) -> None:
    """The uploads are gone within the grace; what is left in the upload folder (results) is checked
    for identifiers; nothing derived is written outside it; the temporary read folders are gone; the
    log is an output like any other."""
    elapsed = wait_for_deletion(app.uploads, uploaded, GRACE_S + 5)
    assert elapsed <= GRACE_S + 5
    for path in _files(app.uploads):
        if path.is_file() and not path.name.startswith("tmp") and not _is_example(path):
            assert path.parent.name.startswith("ecgfm-results-"), f"{path} is neither an upload nor a result"
            outputs.add(f"app results folder: {path.name}", path.name)
            outputs.add(f"app results folder: {path.name} content", path.read_bytes())
    stray = [p for p in _files(app.root) if app.uploads not in p.parents
             and p.name.endswith(("-report.pdf", "-ecg.png", "-ecgfm.json", "-ecgfm.csv"))]
    assert not stray, f"results written outside the upload folder: {stray}"
    assert not list(app.tmpdir.glob("ecgfm-read-*")), "a temporary read folder was left behind"
    for path in _files(app.tmpdir):
        if path.is_file():
            outputs.add(f"app TMPDIR: {path.name}", path.name)
            outputs.add(f"app TMPDIR: {path.name} content", path.read_bytes())
    log = app.log.read_text(errors="replace")
    assert "DEBUG " in log, "the app's log is not at DEBUG: it would show less than it could"
    outputs.add("app log", log)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("weights") / "tiny_finetuned.pt")


@pytest.fixture(scope="module")
def model(checkpoint):
    return ecgfm.load_model(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list[Case]:
    pytest.importorskip("pydicom")
    pytest.importorskip("pyedflib")
    cases = make_synthetic(tmp_path_factory.mktemp("identified"))
    assert_in_inputs(cases)
    return cases


@pytest.fixture(scope="module", autouse=True)
def _app_process(tmp_path_factory, checkpoint):
    """The app starts with the module, so that it boots while the in-process tests run."""
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        yield None
        return
    process = AppProcess(tmp_path_factory.mktemp("app"), checkpoint)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def app(_app_process):
    if _app_process is None:
        pytest.skip("gradio and gradio_client are needed for the app's API")
    return _app_process.ready()


# --- the checks can fail -------------------------------------------------------------------------

def test_the_search_finds_identifiers_where_they_are(synthetic, model):
    """The machinery finds what is there: an identifier in a record's name reaches the PDF, the
    HTML and the JSON and is found in each; a DEBUG record of any logger, a warning, printed text
    and bytes written to file descriptor 2 (as C libraries do) are caught; pydicom's debugging
    logs a DICOM file's identifiers, so its silence while ecgfm reads one means something."""
    outputs = Outputs()
    dicom = next(c for c in synthetic if c.label == "DICOM")
    record = dataclasses.replace(ecgfm.read_ecg(dicom.files), name=f"{LAST}_{MRN}.dcm")
    prepared = ecgfm.prepare(record)
    prediction = ecgfm.predict(model, record)
    report = reports.build(record, prepared, prediction)
    pdf = reports.to_pdf(report)
    layers = pdf_layers(pdf)
    # The name is in the page text, kerned glyph by glyph: only the joined strings show it whole.
    assert f"ECG-FM report: {LAST}_{MRN}.dcm" in layers["shown text"]
    outputs.add_pdf("pdf", pdf, record.name)
    outputs.add("html", reports.to_html(report, "r"))
    outputs.add("json", json.dumps(prediction.to_dict()))
    with captured(outputs, "logs"):
        logging.getLogger("some.library").debug("read %s", FIRST)
        warnings.warn(f"odd value {BIRTH:%Y%m%d}")
        print(HOSPITAL)
        os.write(2, f"{TECHNICIAN}\n".encode())
    import pydicom

    with captured(outputs, "pydicom on its own"):  # its debugging logs every element's value ...
        pydicom.dcmread(dicom.files[0])
    quiet = Outputs()
    with captured(quiet, "ecgfm"):  # ... which ecgfm's DICOM reader keeps out of the log
        ecgfm.read_ecg(dicom.files)
    assert not quiet.leaks(SECRETS)
    found = outputs.leaks(SECRETS)
    assert any("in pydicom on its own: log records:" in leak for leak in found)
    for where in ("pdf [shown text]", "html", "json"):
        assert any(LAST in leak and f"in {where}:" in leak for leak in found), where
    for where in ("logs: log records", "logs: warnings", "logs: stdout", "logs: file descriptors 1 and 2"):
        assert any(f"in {where}:" in leak for leak in found), where
    assert Outputs.leaks(SimpleNamespace(items=[("x", "id 9999 here")]), ["9999"], exact=True)
    assert not Outputs.leaks(SimpleNamespace(items=[("x", "p = 0.9999")]), ["9999"], exact=True)


def test_scp_section1_rewrite_is_a_valid_file(synthetic):
    """The SCP-ECG made here carries the identifiers in section 1 and is read (CRCs right)."""
    case = next((c for c in synthetic if c.label == "SCP-ECG"), None)
    if case is None:
        pytest.skip("../shared/ecg-samples/scp/ecgtoolkit_Example.scp is absent: no SCP-ECG template")
    data = case.files[0].read_bytes()
    assert struct.unpack_from("<H", data)[0] == _crc_ccitt(data[2:])
    found = scp_identifiers(data)
    assert {LAST, FIRST, MRN, HOSPITAL, ACCESSION, "1931-07-04"} <= set(found)
    record = ecgfm.read_ecg(case.files)
    assert record.signal.shape[0] >= 8 and not any("checksum" in w for w in record.warnings)


# --- no identifier leaves the file ---------------------------------------------------------------
# A PDF takes a second or two to make: every family's report is made as a PDF by the library, and
# each other path (CLI, API, page) makes a few, each for other families. Their text is the same
# as the HTML and JSON every path gives for every file.
CLI_REPORTS = ("DICOM", "CSV, one lead", "DICOM, damaged")
API_REPORTS = ("GE MUSE XML", "EDF+")
PAGE_FILES = ("Philips XML", "WFDB", "HL7 aECG, damaged")


def _chosen(cases: list[Case], labels) -> list[Case]:
    return [c for c in cases if c.label in labels]


def test_library_and_cli_show_no_identifier(synthetic, model, checkpoint, tmp_path):
    outputs = Outputs()
    readable = [c for c in synthetic if c.readable]
    seen = run_library(synthetic, model, outputs, pdf_for={c.record_name for c in readable})
    assert seen == len(readable), "a file made here was not read: it would check nothing"
    run_cli(synthetic, checkpoint, tmp_path, outputs, report_cases=_chosen(synthetic, CLI_REPORTS))
    leaks = outputs.leaks(SECRETS)
    assert not leaks, "\n".join(leaks)


def test_app_api_shows_no_identifier_and_lets_uploads_go(synthetic, app):
    outputs = Outputs()
    uploaded = run_app(synthetic, app, outputs, report_cases=_chosen(synthetic, API_REPORTS), plot=True)
    check_app_files(app, outputs, uploaded)
    leaks = outputs.leaks(SECRETS)
    assert not leaks, "\n".join(leaks)


# Sample files whose report is also made as a PDF: one per vendor format with patient fields.
SAMPLE_PDFS = ("philips/sierra_1_04_3191723_ZZDEMOPTONLY_orig.xml", "hl7-aecg/hl7_example_aecg.xml",
               "dicom/pydicom_waveform_ecg.dcm", "scp/scptools_ECG_20070321_110542.SCP")
SAMPLE_API_REPORTS = ("scp/scptools_ECG_20170504_163507.SCP",)


def test_sample_files_show_none_of_their_identifiers(samples_dir, model, checkpoint, app, tmp_path):
    """The project's sample recordings, with the identifiers each one carries (patient fields of
    the vendor files, WFDB header comments); each sample's values are looked for everywhere."""
    cases, unchecked = make_sample_cases(samples_dir, tmp_path / "renamed")
    assert_in_inputs(cases)
    identified = [c for c in cases if c.secrets]
    assert sum(len(c.secrets) for c in cases) >= 60 and len(identified) >= 18, \
        [(c.label, c.secrets) for c in cases]
    outputs = Outputs()
    seen = run_library(cases, model, outputs, pdf_for={c.record_name for c in cases
                                                       if c.label.removeprefix("sample ") in SAMPLE_PDFS})
    assert seen == len(cases), "every sample must be read for its outputs to be checked"
    run_cli(cases, checkpoint, tmp_path, outputs, report_cases=[])
    uploaded = run_app(cases, app, outputs, report_cases=[c for c in cases
                                                          if c.label.removeprefix("sample ") in SAMPLE_API_REPORTS])
    check_app_files(app, outputs, uploaded)
    leaks = outputs.leaks([secret for case in cases for secret in case.secrets], exact=True)
    assert not leaks, "\n".join(leaks)
    assert set(unchecked) <= {"0000050", "0000053"}, unchecked  # the Contec case numbers, in the file names


# --- the page ------------------------------------------------------------------------------------

def test_the_page_shows_no_identifier_and_keeps_files_only_while_used(synthetic, checkpoint, tmp_path, monkeypatch):
    """The page's analysis (ui_analyse, in process): its HTML, message and downloads hold no
    identifier; the downloads are written in Gradio's upload folder; the uploads are kept while
    the page uses them and deleted PAGE_IDLE_S after their last use; Gradio's cache is emptied on
    the documented schedule (delete_cache, not waited for)."""
    pytest.importorskip("gradio")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    idle_s = 6.0  # longer than the analysis, which starts the idle time when it has read the files
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("ECGFM_CHECKPOINT", str(checkpoint))
    app_module = importlib.import_module("app")
    monkeypatch.setattr(app_module, "MODEL", app_module.ModelHolder())
    monkeypatch.setattr(app_module, "PAGE_IDLE_S", idle_s)
    uses = []
    keep = app_module._keep

    def recording_keep(paths, keep_s, *args, **kwargs):
        uses.append((time.monotonic(), keep_s))
        return keep(paths, keep_s, *args, **kwargs)

    monkeypatch.setattr(app_module, "_keep", recording_keep)
    chosen = _chosen(synthetic, PAGE_FILES)
    upload = app_module._upload_dir() / "upload-page"
    upload.mkdir(parents=True)
    paths = [shutil.copyfile(path, upload / path.name) for case in chosen for path in case.files]
    gone = []  # when the uploads were first all gone, watched from the start of the analysis

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not gone:
            if not any(p.exists() for p in paths):
                gone.append(time.monotonic())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outputs = Outputs()
    with captured(outputs, "page"):
        page, downloads, provenance, message = app_module.ui_analyse(
            [str(p) for p in paths], None, 0, [], request=SimpleNamespace(session_hash="privacy-page"))
    assert "Analysed 2 of 3 records" in message, message
    assert all(keep_s == idle_s for _, keep_s in uses[-2:]) and len(uses) >= 2
    outputs.add("page html", page)
    outputs.add("page message", message)
    outputs.add("page provenance", provenance)
    names = {reports.file_stem(c.record_name): c.record_name for c in chosen}
    for download in downloads["value"]:
        path = Path(download)
        _results_location(SimpleNamespace(uploads=app_module._upload_dir()), path)
        outputs.add_file("page download", path, names.get(path.name.rsplit("-", 1)[0]))
    assert sum(Path(d).suffix == ".pdf" for d in downloads["value"]) == 2
    leaks = outputs.leaks(SECRETS)
    assert not leaks, "\n".join(leaks)
    watcher.join(timeout=idle_s + 10)
    assert gone, "the page's uploads were not deleted"
    gone_after = gone[0] - uses[-1][0]  # the last use: when the analysis had read the files
    assert idle_s - 0.2 <= gone_after <= idle_s + 5, f"deleted {gone_after:.1f} s after the last use"
    assert not [p for p in upload.rglob("*") if p.is_file()]  # the folder may stay: Gradio may be storing into it
    assert app_module.build_ui().delete_cache == (300, 900)  # README: every 5 min, files older than 15 min
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    source = (REPO / "app.py").read_text(encoding="utf-8")
    for said, default in (("deleted about 10 s after they were read", '"ECGFM_UPLOAD_GRACE_S", "10"'),
                          ("deleted 10 minutes after their last use", '"ECGFM_PAGE_IDLE_S", "600"'),
                          ("emptied every 5 minutes of files older than 15 minutes", "delete_cache=(300, 900)")):
        assert said in readme and default in source, (said, default)

