"""Where ECG-FM's weights come from: the Hugging Face Hub cache, or a file the user names."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.request
from pathlib import Path

from .errors import WeightsUnavailableError

REPO_ID = "wanglab/ecg-fm"
CHECKPOINT_FILES = {"finetuned": "mimic_iv_ecg_finetuned.pt",
                    "pretrained": "mimic_iv_ecg_physionet_pretrained.pt"}
# A local file for each named checkpoint, for machines without the Hub (or with their own copy).
CHECKPOINT_ENV = {"finetuned": "ECGFM_CHECKPOINT", "pretrained": "ECGFM_PRETRAINED_CHECKPOINT"}
HUB_PROBE_SECONDS = 5.0


def locate_checkpoint(checkpoint: str | os.PathLike = "finetuned") -> tuple[Path, dict]:
    """The checkpoint file for a name ("finetuned", "pretrained") or a path, and where it came from."""
    if str(checkpoint) in CHECKPOINT_FILES:
        name = str(checkpoint)
        override = os.environ.get(CHECKPOINT_ENV[name])
        return _local(Path(override)) if override else _from_hub(CHECKPOINT_FILES[name])
    return _local(Path(checkpoint))


def _local(path: Path) -> tuple[Path, dict]:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"{path.name}: the checkpoint file {path} does not exist; download ECG-FM's weights from "
            f"https://huggingface.co/{REPO_ID} and give the file's path (--checkpoint PATH, or "
            f"{CHECKPOINT_ENV['finetuned']}=PATH).")
    try:
        digest = file_sha256(path)
    except OSError as exc:  # gone or unreadable since: the same one sentence as any unusable file
        raise WeightsUnavailableError(f"{path.name}: the checkpoint file {path} could not be read "
                                      f"({exc.strerror or type(exc).__name__}).") from None
    return path, {"source": "local file", "repo": None, "revision": None, "file": path.name, "sha256": digest}


def _from_hub(filename: str) -> tuple[Path, dict]:
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    revision = os.environ.get("ECGFM_REVISION", "main")
    try:
        path = Path(hf_hub_download(REPO_ID, filename, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        help_text = (f"Download {filename} from https://huggingface.co/{REPO_ID} and pass its path "
                     f"(--checkpoint PATH, or the environment variable "
                     f"{CHECKPOINT_ENV[_name_of(filename)]}=PATH).")
        if constants.HF_HUB_OFFLINE:
            raise WeightsUnavailableError(f"{filename}: the ECG-FM weights are not in the local Hugging Face "
                                          f"cache and offline mode is on. {help_text}") from None
        problem = _hub_problem(constants.ENDPOINT, revision)
        if problem:
            raise WeightsUnavailableError(f"{filename}: the ECG-FM weights are not in the local Hugging Face "
                                          f"cache and the Hub cannot be reached ({problem}). {help_text}") from None
        try:
            path = Path(hf_hub_download(REPO_ID, filename, revision=revision))
        except Exception as exc:  # network, auth, disk: all end the same way for the user
            raise WeightsUnavailableError(f"{filename}: downloading the ECG-FM weights failed "
                                          f"({type(exc).__name__}). {help_text}") from None
    # The cache stores snapshots/<commit>/<file> -> blobs/<sha256>; huggingface_hub checked the hash
    # when it downloaded, so the blob's name is the file's sha256 without reading 1 GB again.
    blob = path.resolve()
    digest = blob.name if len(blob.name) == 64 and all(c in "0123456789abcdef" for c in blob.name) else None
    return blob, {"source": "Hugging Face Hub", "repo": REPO_ID, "revision": path.parent.name,
                  "file": filename, "sha256": digest or file_sha256(blob)}


def _name_of(filename: str) -> str:
    return next(name for name, file in CHECKPOINT_FILES.items() if file == filename)


def _hub_problem(endpoint: str, revision: str) -> str | None:
    """Why the Hub cannot be used right now, found within a few seconds; None if it answers.

    huggingface_hub alone retries for 23 s (no DNS) to 6 minutes (a server that never answers);
    a daemon thread bounds DNS resolution too, which socket timeouts do not.
    """
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            url = f"{endpoint}/api/models/{REPO_ID}/revision/{revision}"
            with urllib.request.urlopen(url, timeout=HUB_PROBE_SECONDS - 1) as response:
                response.read(1)
            outcome.append(None)
        except Exception as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_SECONDS)
    return outcome[0] if outcome else f"no answer within {HUB_PROBE_SECONDS:g} s"


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered by the file's identity (see `file_identity`) so a large file is hashed once."""
    return sha256_and_identity(path)[0]


def file_identity(path: Path) -> tuple[int, ...]:
    """What changes whenever the file does: its inode, size, modification and status-change times.

    The status-change time (ctime) cannot be set back by a program, so a file rewritten in place
    with its old size and modification time still looks changed; a file replaced by another has
    another inode.
    """
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def sha256_and_identity(path: Path) -> tuple[str, tuple[int, ...]]:
    """The file's sha256 and the identity it was computed for; hashed again whenever the identity changed."""
    path = Path(path)
    cache_file = cache_dir() / "sha256.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    for _ in range(3):
        identity = file_identity(path)
        key = f"{path}:" + ":".join(map(str, identity))
        if key in known:
            return known[key], identity
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        if file_identity(path) == identity:
            break
        # written to while being read (still being copied in?): this hash belongs to no version of it
    else:
        raise WeightsUnavailableError(f"{path.name}: the file kept changing while its sha256 was computed; "
                                      "wait until it is completely written.")
    # one entry per path: an older identity of this file will not come back
    known = {k: v for k, v in known.items() if not k.startswith(f"{path}:")}
    known[key] = digest.hexdigest()
    partial = cache_file.with_name(f"sha256.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(known))
        os.replace(partial, cache_file)  # another process reading it never sees half a file
    except OSError:  # a read-only or full disk only costs hashing again next time
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass
    return known[key], identity


def cache_dir() -> Path:
    return Path(os.environ.get("ECGFM_CACHE", Path.home() / ".cache" / "ecgfm"))
