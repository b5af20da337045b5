"""`ecgfm batch` on this machine, in one run: `python benchmarks/batch_bench.py`.

Throughput in records/s against the forward limit (what the batched fp32 forward alone reaches on
the same segments, in the same chunks, with the same torch threads), the peak memory while
streaming, and what a SIGKILL in the middle of a run costs: the time from the restart to the first
newly scored record and to the end, the work scored but not yet committed when it died, and whether
any row was lost or written twice. Not part of the test suite.

The dataset is a manifest CSV of >= 500 rows that cycles through the real 12-lead records of
../shared/ecg-samples (WFDB and MATLAB; 500 and 400 Hz), each row its own id, written to a
temporary folder; the checkpoint is bench.py's full-size random one (~/.cache/ecgfm/bench). The
batch runs as a user runs it (`python -m ecgfm batch MANIFEST --out FILE --checkpoint PT`), with
its stderr on a pseudo-terminal so that its progress bar can be followed, and its memory (the
main process and its reader processes) sampled from /proc every 0.2 s.

On a shared machine the load changes from minute to minute, so the forward limit is measured
inside the batch run: every `--probe-every` seconds the batch's processes are stopped (SIGSTOP),
one of the manifest's batches is forwarded alone in this process (same torch threads, same
allocator settings as the CLI) and timed, and the batch is continued (SIGCONT). Each such timing is
paired with the batch's own rate in the running time around it, and the ratio reported is the
median of the pairs' ratios; the batch's running time leaves the stopped intervals out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pty
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench import CACHE, full_checkpoint  # noqa: E402

SHARED = Path(os.environ.get("ECGFM_SHARED", REPO.parent / "shared")) / "ecg-samples"
TARGET_RATIO = 0.85  # records/s of `ecgfm batch` ÷ records/s of the forward alone
SAMPLE_S = 0.2


# --- the dataset ----------------------------------------------------------------------------------

def real_records() -> list[Path]:
    """The real 12-lead records of ../shared/ecg-samples that batch datasets are made of: WFDB
    (PhysioNet/CinC 2021, header + .mat signal) and MATLAB (CPSC 2018, CODE-15%)."""
    records = sorted(SHARED.glob("wfdb/cinc2021_*/*.hea")) + sorted(SHARED.glob("mat/*.mat"))
    if not records:
        sys.exit(f"no real records found under {SHARED} (set ECGFM_SHARED to the shared folder)")
    return records


def write_manifest(folder: Path, count: int) -> tuple[Path, list[Path]]:
    """A manifest of `count` rows cycling through the real records, ids r0000, r0001, ..."""
    records = real_records()
    rows = [(f"r{i:04d}", records[i % len(records)]) for i in range(count)]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path"])
        writer.writerows((rid, str(path)) for rid, path in rows)
    return manifest, [path for _, path in rows]


# --- the forward limit ----------------------------------------------------------------------------

def batch_segments(paths: list[Path], batch_size: int, batches: int) -> list:
    """The segments of each of the manifest's first `batches` batches of records, prepared as
    `ecgfm.predict` prepares them (window 0-10 s)."""
    import numpy as np

    from ecgfm.io import read_ecgs
    from ecgfm.predict import prepare_window

    prepared = {}
    for path in dict.fromkeys(paths[:batch_size * batches]):
        prepared[path] = prepare_window(read_ecgs([str(path)])[0], 0.0, 10.0).segments
    return [np.concatenate([prepared[p] for p in paths[first:first + batch_size]])
            for first in range(0, batch_size * batches, batch_size)]


def forward_seconds(model, segments) -> float:
    """One batch's segments through the fp32 forward alone, in predict's chunks; nothing else timed."""
    import torch

    from ecgfm.predict import MAX_BATCH_SEGMENTS

    chunks = [torch.from_numpy(segments[i:i + MAX_BATCH_SEGMENTS]) for i in range(0, len(segments), MAX_BATCH_SEGMENTS)]
    with torch.inference_mode():
        started = time.perf_counter()
        for chunk in chunks:
            model(chunk)
        return time.perf_counter() - started


# --- running `ecgfm batch` ------------------------------------------------------------------------

def _tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(child) for child in handle.read().split()]
        except OSError:
            pass
    return found


def _status_mb(pid: int, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_PROGRESS = re.compile(r"(\d+)(?:/\d+)?(?:rec)? ?\[")


def run_cli(argv: list[str], env: dict, kill_when=None, probe=None, probe_every_s: float = 40.0) -> dict:
    """Run the batch command with stderr on a pseudo-terminal; follow its progress bar and memory.

    `kill_when(records done)` returning True SIGKILLs the whole process group (the readers too).
    `probe()`, every `probe_every_s` once scoring has begun, runs while the group is stopped; its
    results and the stopped intervals are returned, and progress times are given in running time.
    """
    master, slave = pty.openpty()
    log = tempfile.TemporaryFile()
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=log, stderr=slave, stdin=subprocess.DEVNULL, env=env, cwd=REPO,
                               start_new_session=True)
    os.close(slave)
    progress: list[tuple[float, int]] = []  # (running s since start, records done)
    probes, stopped_s = [], 0.0
    main_peak = readers_peak = total_peak = 0.0
    killed_at = None
    last_probe = None
    text = ""
    while process.poll() is None:
        ready, _, _ = select.select([master], [], [], SAMPLE_S)
        now = time.perf_counter() - started - stopped_s
        if ready:
            try:
                chunk = os.read(master, 65536).decode(errors="replace")
            except OSError:
                chunk = ""
            text += chunk
            for match in _PROGRESS.finditer(chunk):
                done = int(match.group(1))
                if done > (progress[-1][1] if progress else 0):
                    progress.append((now, done))
        pids = _tree(process.pid)
        sizes = {pid: _status_mb(pid, "VmRSS") for pid in pids}
        main_peak = max(main_peak, _status_mb(process.pid, "VmHWM"))
        readers_peak = max([readers_peak] + [size for pid, size in sizes.items() if pid != process.pid])
        total_peak = max(total_peak, sum(sizes.values()))
        if kill_when is not None and killed_at is None and progress and kill_when(progress[-1][1]):
            killed_at = (now, progress[-1][1])
            os.killpg(process.pid, signal.SIGKILL)
        if probe is not None and progress and (last_probe is None or now - last_probe >= probe_every_s):
            os.killpg(process.pid, signal.SIGSTOP)
            paused = time.perf_counter()
            try:
                probes.append({**probe(), "at_s": now})
            finally:
                os.killpg(process.pid, signal.SIGCONT)
                stopped_s += time.perf_counter() - paused
            last_probe = time.perf_counter() - started - stopped_s
    process.wait()
    ended = time.perf_counter() - started - stopped_s
    try:  # whatever is left in the terminal after the exit
        while select.select([master], [], [], 0)[0]:
            chunk = os.read(master, 65536).decode(errors="replace")
            if not chunk:
                break
            text += chunk
    except OSError:
        pass
    os.close(master)
    log.seek(0)
    stdout = log.read().decode(errors="replace")
    if killed_at is None and process.returncode != 0:
        raise RuntimeError(f"ecgfm batch failed ({process.returncode}): {stdout[-600:]} {text[-600:]}")
    return {"running_s": ended, "stopped_s": stopped_s, "returncode": process.returncode, "progress": progress,
            "killed_at": killed_at, "probes": probes,
            "peak_rss_mb": {"main": main_peak, "readers": readers_peak, "total": total_peak},
            "summary": [line for line in stdout.splitlines() if line.strip()][:8]}


def committed_rows(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in sorted(out.with_name(out.name + ".parts")
                                                                           .glob("part-*.parquet")))


def check_output(out: Path, ids: list[str], reference: Path | None = None) -> dict:
    """Every id once, none lost, none twice; with a reference output, the largest difference in
    any probability between the two for the same id."""
    import numpy as np
    import pyarrow.parquet as pq

    from ecgfm.labels import LABELS

    table = pq.read_table(out)
    seen = table.column("id").to_pylist()
    result = {"rows": len(seen), "unique": len(set(seen)), "missing": len(set(ids) - set(seen)),
              "duplicated": len(seen) - len(set(seen)),
              "statuses": {s: table.column("status").to_pylist().count(s)
                           for s in set(table.column("status").to_pylist())}}
    if reference is not None:
        names = [label.name for label in LABELS]
        other = pq.read_table(reference)

        def by_id(t):
            values = np.array([t.column(n).to_numpy(zero_copy_only=False) for n in names], dtype=np.float64).T
            return dict(zip(t.column("id").to_pylist(), values))

        ours, theirs = by_id(table), by_id(other)
        common = sorted(set(ours) & set(theirs))
        result["max_prob_diff_vs_uninterrupted"] = float(max(np.nanmax(np.abs(ours[i] - theirs[i])) for i in common))
    return result


def _rate(progress: list[tuple[float, int]]) -> dict:
    """Streaming rate: records/s between the first progress update (the first batch scored) and the
    last, in running time."""
    if len(progress) < 2:
        return {"records_per_s": None}
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    return {"first_records_s": t0, "records_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else None,
            "records_timed": n1 - n0}


def _paired_ratios(progress: list[tuple[float, int]], probes: list[dict], half_window_s: float) -> list[dict]:
    """Each timing of the forward alone beside the batch's own rate around it (records scored within
    `half_window_s` of running time either side, read off the progress bar): the load that slows
    one slows the other, as in bench.py's paired efficiency."""
    times, counts = [t for t, _ in progress], [n for _, n in progress]

    def scored(t: float) -> float:  # records done at running time t, linear between two updates
        for (t0, n0), (t1, n1) in zip(progress, progress[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / (t1 - t0)
        return counts[0] if t < times[0] else counts[-1]

    pairs = []
    for probe in probes:
        low, high = max(probe["at_s"] - half_window_s, times[0]), min(probe["at_s"] + half_window_s, times[-1])
        if high - low < half_window_s:  # too close to either end to say what the batch did around it
            continue
        rate = (scored(high) - scored(low)) / (high - low)
        pairs.append({"at_s": probe["at_s"], "batch_records_per_s": rate, "forward_records_per_s":
                      probe["records_per_s"], "ratio": rate / probe["records_per_s"]})
    return pairs


# --- report ---------------------------------------------------------------------------------------

def report(results: dict) -> str:
    run, limit, paired = results["run"], results["forward_limit"], results["ratio_paired"]
    mark = "not measured" if paired is None else "ok" if paired >= TARGET_RATIO else "MISSED"
    lines = [f"ecgfm batch — {results['records']} records ({results['distinct']} real 12-lead records repeated), "
             f"{results['segments_per_record']:.2f} segments per record, workers {results['workers']}, batch size "
             f"{results['batch_size']}, torch threads {limit['threads']}; load average {results['load_before']} → "
             f"{results['load_after']}",
             f"forward limit (one batch's fp32 forward alone, timed {limit['samples']} times while the batch was "
             f"stopped): {limit['records_per_s']:.3f} records/s (median; {limit['min']:.3f}–{limit['max']:.3f})",
             f"ecgfm batch: streaming {run['rate']['records_per_s']:.3f} records/s (first records after "
             f"{run['rate']['first_records_s']:.1f} s); {run['records_per_s_overall']:.3f} records/s over the whole "
             f"command ({run['running_s']:.1f} s running, start-up and merge included)",
             f"  ratio to the forward limit, paired (the batch's rate within {results['half_window_s']:g} s of "
             f"each timing of the forward alone; median of {len(results['pairs'])}): "
             f"{'-' if paired is None else format(paired, '.3f')} [target ≥ {TARGET_RATIO}: {mark}]; "
             f"pairs {', '.join(format(p['ratio'], '.2f') for p in results['pairs'])}",
             f"  unpaired: streaming rate ÷ median forward rate {results['ratio_streaming']:.3f}, "
             f"whole command {results['ratio_overall']:.3f}",
             f"  peak RSS while streaming: main process {run['peak_rss_mb']['main']:.0f} MB, each reader ≤ "
             f"{run['peak_rss_mb']['readers']:.0f} MB, all together {run['peak_rss_mb']['total']:.0f} MB",
             f"  output: {results['check']}"]
    resume = results.get("resume")
    if resume:
        lines += [f"SIGKILL after {resume['killed_at_records']} records scored ({resume['killed_at_s']:.1f} s), "
                  f"{resume['committed_at_kill']} committed (work lost: {resume['lost_records']} records)",
                  f"  restart: first new records after {resume['first_new_records_s']:.1f} s (a fresh start: "
                  f"{resume['cold_first_records_s']:.1f} s), finished after {resume['finish_s']:.1f} s "
                  f"({resume['records_after_restart']} records scored after the restart)",
                  f"  output: {resume['check']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=510, help="manifest rows (>= 500 for the issue's figure)")
    parser.add_argument("--workers", type=int, default=None, help="reader processes (default: batch's own)")
    parser.add_argument("--batch-size", type=int, default=16, help="records per forward (default: batch's own)")
    parser.add_argument("--probe-every", type=float, default=30.0,
                        help="seconds of batch running time between two timings of the forward alone")
    parser.add_argument("--kill-at", type=float, default=0.45,
                        help="SIGKILL the resumption run once this share of the records is scored (0: no kill run)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "batch.json")
    args = parser.parse_args()

    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    checkpoint = full_checkpoint()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ECGFM_CACHE": str(CACHE / "ecgfm-cache"), "HF_HUB_OFFLINE": "1"}
    os.environ.update({k: env[k] for k in ("ECGFM_CACHE", "HF_HUB_OFFLINE")})
    from ecgfm.runtime import return_freed_memory

    return_freed_memory()  # as `ecgfm batch` does, before torch first multiplies
    import torch

    import ecgfm

    model = ecgfm.load_model(str(checkpoint), device="cpu")  # also writes the weights cache the CLI reads
    folder = Path(tempfile.mkdtemp(prefix="ecgfm-batch-bench-"))
    manifest, paths = write_manifest(folder, args.records)
    ids = [f"r{i:04d}" for i in range(args.records)]
    command = [sys.executable, "-m", "ecgfm", "batch", str(manifest), "--checkpoint", str(checkpoint),
               "--batch-size", str(args.batch_size)]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    batches = batch_segments(paths, args.batch_size, batches=3)
    forward_seconds(model, batches[0])  # warm-up at full size: oneDNN primitives, the weights' pages, the heap
    turn = iter(range(10**6))

    def probe() -> dict:
        segments = batches[next(turn) % len(batches)]
        seconds = min(forward_seconds(model, segments) for _ in range(2))  # a limit: the faster of two
        return {"segments": len(segments), "seconds": seconds, "records_per_s": args.batch_size / seconds}

    print(f"{args.records} records through ecgfm batch, the forward alone timed every {args.probe_every:g} s …",
          flush=True)
    out = folder / "scores.parquet"
    run = run_cli(command + ["--out", str(out)], env, probe=probe, probe_every_s=args.probe_every)
    run["rate"] = _rate(run["progress"])
    run["records_per_s_overall"] = args.records / run["running_s"]
    rates = [p["records_per_s"] for p in run["probes"]]
    limit = {"records_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "samples": len(rates),
             "threads": torch.get_num_threads()}
    pairs = _paired_ratios(run["progress"], run["probes"], args.probe_every / 2)
    results = {"records": args.records, "distinct": len(set(paths)), "workers": args.workers or "default",
               "batch_size": args.batch_size,
               "segments_per_record": sum(len(b) for b in batches) / (args.batch_size * len(batches)),
               "load_before": load_before, "forward_limit": limit, "run": run, "pairs": pairs,
               "half_window_s": args.probe_every / 2,
               "ratio_paired": statistics.median(p["ratio"] for p in pairs) if pairs else None,
               "ratio_streaming": run["rate"]["records_per_s"] / limit["records_per_s"],
               "ratio_overall": run["records_per_s_overall"] / limit["records_per_s"],
               "check": check_output(out, ids)}
    del model

    if args.kill_at > 0:
        print("SIGKILL in the middle of a run, then the same command again …", flush=True)
        resumed = folder / "resumed.parquet"
        first = run_cli(command + ["--out", str(resumed)], env,
                        kill_when=lambda done: done >= args.kill_at * args.records)
        committed = committed_rows(resumed)
        second = run_cli(command + ["--out", str(resumed)], env)
        new = second["progress"]
        results["resume"] = {
            "killed_at_s": first["killed_at"][0], "killed_at_records": first["killed_at"][1],
            "committed_at_kill": committed, "lost_records": first["killed_at"][1] - committed,
            "first_new_records_s": new[0][0] if new else None, "finish_s": second["running_s"],
            "records_after_restart": new[-1][1] if new else 0,
            "cold_first_records_s": run["rate"]["first_records_s"],
            "peak_rss_mb": second["peak_rss_mb"], "check": check_output(resumed, ids, reference=out)}
    results["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print()
    print(report(results))
    print(f"\nJSON in {args.json}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
