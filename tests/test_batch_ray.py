"""`ecgfm batch --ray`: the same rows and numbers as the single-machine path, on a local Ray cluster.

The cluster is started in this process, with 2 CPUs, on the loopback address only (checked: every
socket its processes listen on is bound to 127.0.0.1), and shut down at the end. The records are
those of tests/test_batch.py (complete, limited, unusable and unreadable ones, a manifest with
carried columns) and 20 more; the models are its tiny random checkpoints.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import ecgfm
from ecgfm.__main__ import main
from ecgfm.batch import parts_folder, read_metadata, run_batch
from ecgfm.errors import ECGFMError
from tests.fairseq_layout import write_checkpoint
from tests.test_batch import EXPECTED, _probe, _rows, _same_numbers, make_dataset

REPO = Path(__file__).resolve().parents[1]
LABEL_NAMES = [label.name for label in ecgfm.LABELS]
HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed (pip install "ecgfm[ray]", or '
                                                   "requirements-dev.txt)")


def _listening(pids: set[int]) -> list[str]:
    """The local addresses of the TCP sockets in LISTEN state that these processes hold."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # gone, or not ours to read
            continue
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    addresses.append(fields[1])
    return addresses


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


LOOPBACK = ("0100007F:", "0000000000000000FFFF00000100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::ffff:127.0.0.1, ::1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local cluster of 2 CPUs on the loopback address. Its workers have an empty Hugging Face cache
    and no Hub: a named checkpoint is never downloaded by a test."""
    if not HAS_RAY:
        pytest.skip('Ray is not installed (pip install "ecgfm[ray]", or requirements-dev.txt)')
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported
    import ray

    hub = {"HF_HOME": str(tmp_path_factory.mktemp("hf-home")), "HF_HUB_OFFLINE": "1"}
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": hub})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """tests/test_batch.py's records (a folder of WFDB records and a manifest of CSV files) and 20
    more complete WFDB records, 32 inputs in all."""
    made = make_dataset(tmp_path_factory.mktemp("ray"), more_complete=20)
    root, records, manifest, model, embedder = (made[k] for k in ("root", "wfdb", "manifest", "model", "embedder"))
    checkpoint, encoder = made["checkpoint"], made["encoder"]
    probe = _probe(root / "my-probe", embedder.provenance["sha256"], seed=5)
    single = root / "single.parquet"
    run_batch([records, manifest], single, model, embedder=embedder, probe=probe, workers=0, batch_size=4)
    return {"root": root, "wfdb": records, "manifest": manifest, "checkpoint": checkpoint, "encoder": encoder,
            "probe": probe, "inputs": [str(records), str(manifest)], "single": single, "model": model}


@pytest.fixture(scope="module")
def on_ray(cluster, data):
    from ecgfm.batch_ray import run_batch_ray

    out = data["root"] / "ray" / "results.parquet"
    errors: list[str] = []
    summary = run_batch_ray(data["inputs"], out, data["checkpoint"], encoder=data["encoder"], probe=data["probe"],
                            batch_size=4, part_size=8, on_error=errors.append)
    return {"out": out, "summary": summary, "rows": _rows(out), "errors": errors}


@needs_ray
def test_the_local_cluster_listens_on_loopback_only(cluster):
    assert cluster.util.get_node_ip_address() == "127.0.0.1"
    addresses = _listening(_descendants(os.getpid()) | {os.getpid()})
    assert addresses, "no listening socket was found for the Ray processes"
    assert all(address.startswith(LOOPBACK) for address in addresses), addresses


@needs_ray
def test_ray_gives_the_rows_and_numbers_of_the_single_machine_path(data, on_ray):
    single, rows = _rows(data["single"]), on_ray["rows"]
    assert len(rows) == 32 and set(rows) == set(single)
    assert {key: (rows[key]["status"], rows[key]["adequacy"]) for key in EXPECTED} == EXPECTED
    _same_numbers(rows, single)  # status, adequacy, reason, the 17 probabilities, the embedding
    checked = 0
    for key, row in rows.items():
        want = single[key]
        for column in ("record", "files", "segments", "window_start_s", "window_end_s", "warnings", "age", "label"):
            assert row[column] == want[column], (key, column)
        for column in ("probe:mine", "probe:Sinus rhythm"):
            assert (row[column] is None) == (want[column] is None)
            if row[column] is not None:
                assert row[column] == pytest.approx(want[column], abs=1e-6)
        if want["embedding"] is not None:
            np.testing.assert_allclose(row["embedding"], want["embedding"], atol=1e-6)
            checked += 1
    assert checked == 29
    assert rows["wfdb/garbage.bin"]["reason"].startswith("garbage.bin: ") and rows["E"]["reason"].startswith("missing.csv: ")
    assert sorted(on_ray["errors"]) == sorted([rows["wfdb/garbage.bin"]["reason"], rows["E"]["reason"]])
    summary = on_ray["summary"]
    assert (summary.records, summary.new, summary.scored, summary.refused, summary.unreadable) == (32, 32, 29, 3, 2)
    assert not parts_folder(on_ray["out"]).exists()


@needs_ray
def test_ray_writes_the_schema_and_metadata_of_the_single_machine_path(data, on_ray):
    assert pq.read_schema(on_ray["out"]).remove_metadata() == pq.read_schema(data["single"]).remove_metadata()
    ours, theirs = read_metadata(on_ray["out"]), read_metadata(data["single"])
    times = ("started", "completed")
    assert {k: v for k, v in ours.items() if k not in times} == {k: v for k, v in theirs.items() if k not in times}
    assert ours["devices"] == ["cpu"] and ours["probe"]["name"] == "my-probe"


@needs_ray
def test_ray_continues_an_output_and_refuses_other_settings(cluster, data, on_ray, tmp_path):
    from ecgfm.batch_ray import run_batch_ray

    out = tmp_path / "resumed.parquet"
    first = run_batch([data["manifest"], data["wfdb"] / "more"], out, data["model"], workers=0)
    assert first.records == 25
    with pytest.raises(ECGFMError, match="other settings"):  # an embedding column this output has not
        run_batch_ray(data["inputs"], out, data["checkpoint"], encoder=data["encoder"])
    summary = run_batch_ray(data["inputs"], out, data["checkpoint"], batch_size=8)
    assert (summary.skipped, summary.new, summary.records) == (25, 7, 32)
    _same_numbers(_rows(out), {key: {**row, "embedding": None} for key, row in on_ray["rows"].items()})


@needs_ray
def test_a_node_without_the_weights_is_one_sentence(cluster, data, tmp_path, monkeypatch):
    """The named checkpoint is found here (ECGFM_CHECKPOINT, set after the cluster started), but not
    on the node, whose environment does not have it, whose Hub cache is empty and Hub offline."""
    from ecgfm.batch_ray import run_batch_ray

    monkeypatch.setenv("ECGFM_CHECKPOINT", str(data["checkpoint"]))
    out = tmp_path / "nowhere.parquet"
    with pytest.raises(ECGFMError) as failed:
        run_batch_ray([data["manifest"]], out, "finetuned")
    assert str(failed.value).startswith("mimic_iv_ecg_finetuned.pt: ") and "\n" not in str(failed.value)
    assert not out.exists() and not parts_folder(out).exists()


@needs_ray
def test_cli_batch_on_ray(cluster, data, on_ray, tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    code = main(["batch", *data["inputs"], "--out", str(out), "--checkpoint", str(data["checkpoint"]),
                 "--probe", str(data["probe"]), "--encoder", str(data["encoder"]), "--ray", "--batch-size", "8"])
    captured = capsys.readouterr()
    assert code == 2 and "32 records in" in captured.out and "error: missing.csv: " in captured.err
    _same_numbers(_rows(out), on_ray["rows"])
    code = main(["batch", "--ray", str(data["manifest"]), str(data["wfdb"]), "--out", str(tmp_path / "x.parquet"),
                 "--checkpoint", str(data["checkpoint"])])
    assert code == 2 and "put --ray after the inputs" in capsys.readouterr().err
    code = main(["batch", str(data["manifest"]), "--out", str(tmp_path / "x.parquet"), "--checkpoint",
                 str(data["checkpoint"]), "--ray", "--workers", "2"])
    assert code == 2 and "--workers" in capsys.readouterr().err
    for option, refusal in ((["--actor-cpus", "3"], "the largest node of the Ray cluster has 2"),
                            (["--actors", "3"], "3 actors of 2 CPUs need 6 CPUs, but the Ray cluster has 2")):
        code = main(["batch", str(data["manifest"]), "--out", str(tmp_path / "x.parquet"), "--checkpoint",
                     str(data["checkpoint"]), "--ray", *option])
        assert code == 2 and refusal in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists() and not parts_folder(tmp_path / "x.parquet").exists()


def test_without_ray_the_cli_says_how_to_install_it(tmp_path):
    """Ray hidden from the interpreter (as when it is not installed): one sentence, before any work."""
    checkpoint = write_checkpoint(tmp_path / "tiny.pt", seed=7)
    (tmp_path / "records").mkdir()
    out = tmp_path / "out.parquet"
    code = ("import sys\n"
            "class NoRay:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'ray' or name.startswith('ray.'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
            "sys.meta_path.insert(0, NoRay())\n"
            "from ecgfm.__main__ import main\n"
            f"sys.exit(main(['batch', {str(tmp_path / 'records')!r}, '--out', {str(out)!r}, '--checkpoint', "
            f"{str(checkpoint)!r}, '--ray']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == 'error: --ray needs Ray, which is not installed: pip install "ecgfm[ray]".\n'
    assert not out.exists() and not parts_folder(out).exists()
