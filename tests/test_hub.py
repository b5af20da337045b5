"""Where weights come from: local files, the Hub cache, and a Hub that cannot be reached."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ecgfm.errors import WeightsUnavailableError
from ecgfm.hub import CHECKPOINT_FILES, REPO_ID, locate_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ECGFM_CACHE", str(tmp_path / "ecgfm-cache"))
    monkeypatch.delenv("ECGFM_CHECKPOINT", raising=False)


def test_local_file_provenance_has_its_sha256(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not really weights, only hashed here")
    found, provenance = locate_checkpoint(path)
    assert found == path.resolve()
    assert provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["file"] == "weights.pt" and provenance["repo"] is None


def test_environment_variable_names_the_finetuned_file(tmp_path, monkeypatch):
    path = tmp_path / "mine.pt"
    path.write_bytes(b"x")
    monkeypatch.setenv("ECGFM_CHECKPOINT", str(path))
    assert locate_checkpoint("finetuned")[0] == path.resolve()


def test_missing_local_file(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist; download .* ECGFM_CHECKPOINT=PATH"):
        locate_checkpoint(tmp_path / "absent.pt")


def test_hub_cache_is_used_with_revision_and_blob_hash(tmp_path, monkeypatch):
    from huggingface_hub import constants
    content = b"weights from the hub cache"
    digest = hashlib.sha256(content).hexdigest()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "blobs" / digest).write_bytes(content)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / CHECKPOINT_FILES["finetuned"]).symlink_to(Path("../../blobs") / digest)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    path, provenance = locate_checkpoint("finetuned")
    assert path.read_bytes() == content
    assert provenance == {"source": "Hugging Face Hub", "repo": REPO_ID, "revision": commit,
                          "file": "mimic_iv_ecg_finetuned.pt", "sha256": digest}


def _silent_server():
    """Accepts connections and never answers: huggingface_hub alone would wait minutes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass
    threading.Thread(target=accept, daemon=True).start()
    return server, stop, held


def _locate_in_fresh_process(tmp_path, endpoint, offline=False):
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp_path / "empty-cache"),
           "ECGFM_CACHE": str(tmp_path / "c")}
    env.pop("ECGFM_CHECKPOINT", None)
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    # Only the lookup is timed, in the child: starting Python and importing torch are not the Hub's.
    code = ("import time\n"
            "from ecgfm.hub import locate_checkpoint\n"
            "from ecgfm.errors import WeightsUnavailableError\n"
            "began = time.monotonic()\n"
            "try:\n    locate_checkpoint('finetuned')\n"
            "except WeightsUnavailableError as e:\n    print(e)\n"
            "print(time.monotonic() - began)\n")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    message, elapsed = done.stdout.strip().rsplit("\n", 1)
    return message, float(elapsed)


@pytest.mark.parametrize("kind", ["silent", "refused", "offline"])
def test_unreachable_hub_fails_within_seconds_with_instructions(tmp_path, kind):
    server, stop, held = _silent_server()
    port = server.getsockname()[1]
    try:
        if kind == "refused":
            server.close()
        message, elapsed = _locate_in_fresh_process(tmp_path, f"http://127.0.0.1:{port}", offline=kind == "offline")
    finally:
        stop.set()
        server.close()
        for connection in held:
            connection.close()
    assert elapsed < 15  # huggingface_hub alone: 23 s to 6 minutes
    assert message.startswith("mimic_iv_ecg_finetuned.pt: the ECG-FM weights are not in the local")
    assert "ECGFM_CHECKPOINT=PATH" in message and "--checkpoint PATH" in message
