"""The example ECGs in examples/: real recordings, listed in catalog.json, readable, and credited.

Everything here reads fixed committed files, so the results are the same on every machine. The
checks against ../shared/ecg-samples (byte-identical copies of permitted-licence files, with the
catalog's source and licence agreeing with the manifest) skip when that folder is absent.
"""
from __future__ import annotations

import csv
import hashlib
import json
import posixpath
import re
from pathlib import Path

import pytest

import ecgfm

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOT_EXAMPLES = {"README.md", "catalog.json"}
KEYS = {"title", "files", "shows", "dataset_label", "source", "licence"}
TWELVE = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Licences allowed for examples (never GPL): the manifest's licence column starts with one of these.
PERMITTED = re.compile(r"CC-BY-4\.0|ODC-BY-1\.0|MIT|Apache-2\.0|BSD-[23]-Clause|CC0-1\.0")

# What ecgfm reads from each example: leads stored in the file (before any derived ones), sampling
# rate (Hz), duration (s) and the tolerance on the duration. The Philips rhythm is 11 s including a
# 1 mV calibration pulse at its end, which the reader may cut (10.6 s remain).
EXPECTED = {
    "HR06000.hea": (TWELVE, 500.0, 10.0, 1e-6),
    "JS20003.hea": (TWELVE, 500.0, 10.0, 1e-6),
    "data_8_4.hea": (("I", "II"), 200.0, 8235 / 200, 1e-6),
    "philips_pagewriter.xml": (TWELVE, 500.0, 11.0, 0.5),
    "scp_ecg.scp": (TWELVE, 500.0, 10.0, 1e-6),
    "100.hea": (("II", "V5"), 360.0, 650000 / 360, 1e-6),
}

# SNOMED CT codes in the CinC 2021 headers, named as in the Challenge's own tables
# (physionetchallenges/evaluation-2021: dx_mapping_scored.csv and dx_mapping_unscored.csv).
SNOMED = {
    "164934002": "t wave abnormal",  # scored
    "426783006": "sinus rhythm",  # scored
    "284470004": "premature atrial contraction",  # scored
    "427084000": "sinus tachycardia",  # scored
    "55827005": "left ventricular high voltage",  # unscored
    "427172004": "premature ventricular contractions",  # scored
}


def load_catalog() -> list[dict]:
    return json.loads((EXAMPLES / "catalog.json").read_text(encoding="utf-8"))


CATALOG = load_catalog()
IDS = [entry["files"][0] for entry in CATALOG]


def example_files() -> set[str]:
    """Top-level files the app offers as examples (it skips hidden files and folders such as licenses/)."""
    return {p.name for p in EXAMPLES.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name not in NOT_EXAMPLES}


def header_comments(path: Path) -> list[str]:
    return [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]


# --- the catalog and the folder ------------------------------------------------------------------

def test_catalog_lists_every_file_once_and_every_listed_file_exists():
    assert isinstance(CATALOG, list) and len(CATALOG) >= 5
    listed = [name for entry in CATALOG for name in entry["files"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == example_files()
    for name in listed:
        assert (EXAMPLES / name).is_file(), name


def test_catalog_entries_are_complete():
    titles = [entry["title"] for entry in CATALOG]
    assert len(set(titles)) == len(titles)
    for entry in CATALOG:
        assert set(entry) == KEYS, entry.get("title")
        assert isinstance(entry["files"], list) and entry["files"]
        for key in ("title", "shows", "source", "licence"):
            assert isinstance(entry[key], str) and entry[key].strip(), (entry["title"], key)
        assert entry["dataset_label"] is None or entry["dataset_label"].strip()
        assert PERMITTED.fullmatch(entry["licence"]), entry["licence"]
    assert set(IDS) == set(EXPECTED)


def test_each_example_is_one_stem_and_stems_differ():
    # The app groups an example's files by stem (e.g. .hea + .dat), so the catalog must agree.
    stems = []
    for entry in CATALOG:
        entry_stems = {Path(name).stem for name in entry["files"]}
        assert len(entry_stems) == 1, entry["files"]
        stems += entry_stems
    assert len(stems) == len(set(stems))


def test_examples_are_small():
    total = sum((EXAMPLES / name).stat().st_size for name in example_files())
    assert total < 5 * 1024 * 1024


def test_catalog_holds_no_patient_details():
    # Diagnosis labels only: no age, sex or medication from the headers (MIT-BIH 100's comments
    # are age/sex/... and medications; CinC's are Age/Sex/Rx/Hx/Sx besides Dx).
    text = json.dumps(CATALOG).lower()
    assert not re.search(r"\b(age|sex|male|female|years? old|rx|hx)\b", text)
    for hea in EXAMPLES.glob("*.hea"):
        for comment in header_comments(hea):
            if comment.lower().startswith(("age", "sex", "rx", "hx", "sx")) or hea.stem == "100":
                value = comment.split(":", 1)[-1].strip().lower()
                if value and value != "unknown":
                    assert not re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text), (hea.name, comment)


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", CATALOG, ids=IDS)
def test_example_reads_as_one_record(entry):
    records = ecgfm.read_ecgs([EXAMPLES / name for name in entry["files"]])
    assert len(records) == 1
    record = records[0]
    leads, fs, duration, tolerance = EXPECTED[entry["files"][0]]
    stored = tuple(lead for lead in record.leads
                   if lead not in record.derived_leads and lead not in record.zero_leads)
    assert stored == leads
    assert record.fs == pytest.approx(fs, rel=1e-9)
    assert record.duration_s == pytest.approx(duration, abs=tolerance)
    assert record.signal.shape[1] == pytest.approx(duration * fs, abs=tolerance * fs + 1)
    # Real ECGs in millivolts: finite, every lead moving, nothing absurd.
    ranges = record.signal.max(axis=1) - record.signal.min(axis=1)
    assert (ranges > 0.3).all() and (ranges < 12).all(), ranges


# --- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", CATALOG, ids=IDS)
def test_dataset_label_comes_from_the_file(entry):
    label = entry["dataset_label"]
    headers = [EXAMPLES / name for name in entry["files"] if name.endswith(".hea")]
    comments = header_comments(headers[0]) if headers else []
    dx = [c.split(":", 1)[1].strip() for c in comments if c.startswith("Dx:")]
    if dx:  # CinC 2021: SNOMED CT codes, named from the Challenge's tables, in the header's order
        codes = dx[0].split(",")
        names = "; ".join(SNOMED[code][0].upper() + SNOMED[code][1:] for code in codes)
        assert label == f"{names} (SNOMED CT {', '.join(codes)})"
    elif entry["files"][0] == "data_8_4.hea":  # CPSC 2021: the rhythm in the header comment
        assert comments[0] == "persistent atrial fibrillation"
        assert label == "Persistent atrial fibrillation"
    elif entry["files"][0] == "100.hea":  # MIT-BIH: a summary of the reference annotations
        import wfdb

        ann = wfdb.rdann(str(EXAMPLES / "100"), "atr")
        rhythms = [(int(s), a.strip("\x00")) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note)
                   if sym == "+"]
        beats = {sym: ann.symbol.count(sym) for sym in set(ann.symbol) - {"+"}}
        assert rhythms == [(18, "(N")]  # '(N': normal sinus rhythm, for the whole record
        assert beats == {"N": 2239, "A": 33, "V": 1}
        assert label == (f"Normal sinus rhythm; {beats['N']} normal beats, {beats['A']} atrial premature "
                         f"contractions, {beats['V']} premature ventricular contraction "
                         "(reference annotations in 100.atr)")
    else:  # vendor files: no dataset gives them a label
        assert label is None


# --- credits -----------------------------------------------------------------------------------

def test_readme_credits_every_file():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for entry in CATALOG:
        for name in entry["files"]:
            assert f"`{name}`" in readme, name
        assert entry["licence"] in readme
        if entry["dataset_label"]:
            assert entry["dataset_label"] in readme, entry["title"]
    for licence_file in (EXAMPLES / "licenses").iterdir():
        assert f"licenses/{licence_file.name}" in readme, licence_file.name
    assert "not a medical device" in readme and "Research use only" in readme


# --- against ../shared/ecg-samples ---------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest(samples_dir) -> dict[str, dict]:
    """MANIFEST.csv rows by the SHA-256 of the file they describe."""
    rows = {}
    with open(samples_dir / "MANIFEST.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            digest = hashlib.sha256((samples_dir / row["path"]).read_bytes()).hexdigest()
            rows.setdefault(digest, row)
    return rows


@pytest.mark.parametrize("entry", CATALOG, ids=IDS)
def test_example_is_a_permitted_manifest_file_and_credited_as_such(entry, manifest):
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for name in entry["files"]:
        row = manifest.get(hashlib.sha256((EXAMPLES / name).read_bytes()).hexdigest())
        assert row is not None, f"{name} is not byte-identical to any file in MANIFEST.csv"
        licence = row["license"]
        assert "GPL" not in licence, (name, licence)
        first = re.match(r"[^\s;(,]+", licence).group(0)
        assert PERMITTED.fullmatch(first), (name, licence)
        assert entry["licence"] == first, (name, licence)
        source = entry["source"]
        assert row["source_repo"] in source and row["source_commit"][:7] in source, (name, source)
        path = row["source_path"]
        assert path in source or posixpath.dirname(path) + "/" in source, (name, path, source)
        assert row["source_repo"] in readme and row["source_commit"][:7] in readme, name
