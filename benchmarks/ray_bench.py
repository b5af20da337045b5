"""`ecgfm batch` on one machine against `ecgfm batch --ray` on a local cluster of the same cores.

    python benchmarks/ray_bench.py                # 240 records, full-size weights, 2 rounds: ~20 minutes on 2 cores
    python benchmarks/ray_bench.py --tiny         # the tests' 2-layer weights: reading and Ray's own costs

The records: the real ECG files of ../shared/ecg-samples that ECG-FM scores (read, and not unusable
input), repeated in a manifest to `--records` rows (each row its own id, so each is read and scored).
The weights: bench.py's full-size random checkpoint in the release layout (90.4M parameters), or
with `--tiny` the tests' tiny one. Both paths score the same manifest with the same batch size and
the classifier only. One machine: `run_batch` with its default reader processes, the model loaded
before the clock starts. Ray: a local cluster with as many CPUs as this process may use, started
before the clock (its start is reported apart); the clock covers `run_batch_ray` from call to
return: the driver's check load of the weights, the actor's start and model load, reading, scoring,
and the output written, as for one machine. Overhead = Ray's time / one machine's time - 1 (goal:
at most 15 %). The rows of the two outputs are compared (largest probability difference).

Not part of the test suite. Figures go to benchmarks/results/ray.json (`--json`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLES = Path(os.environ.get("ECGFM_SHARED", REPO.parent / "shared")) / "ecg-samples"  # as batch_bench.py


def scored_samples() -> list[Path]:
    """The sample files that read without help and are not unusable input, in MANIFEST.csv order."""
    import ecgfm
    from ecgfm.errors import ECGReadError
    from ecgfm.predict import prepare_window

    with open(SAMPLES / "MANIFEST.csv", newline="") as handle:
        paths = [SAMPLES / row["path"] for row in csv.DictReader(handle)]
    kept = []
    for path in paths:
        if path.suffix.lower() == ".dat":  # a WFDB record is given by its header
            continue
        try:
            entries = ecgfm.read_ecgs([path], errors="return")
        except ECGReadError:
            continue
        if len(entries) == 1 and not isinstance(entries[0], ECGReadError):
            if prepare_window(entries[0]).adequacy.level != "unusable":
                kept.append(path)
    return kept


def write_manifest(folder: Path, samples: list[Path], count: int) -> Path:
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path"])
        for i in range(count):
            sample = samples[i % len(samples)]
            writer.writerow([f"{i:04d}-{sample.name}", str(sample)])
    return manifest


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cores() -> int:
    from ecgfm.model import allowed_cpus

    return allowed_cpus()


def one_round(folder: Path, manifest: Path, checkpoint: Path, batch_size: int, number: int) -> dict:
    """One machine, then Ray on a fresh local cluster: times, rates, and the two outputs compared."""
    import ecgfm
    import pyarrow.parquet as pq
    import ray

    from ecgfm.batch import default_workers, run_batch
    from ecgfm.batch_ray import run_batch_ray

    single_out, ray_out = folder / f"single-{number}.parquet", folder / f"ray-{number}.parquet"
    out: dict = {"load_before": load_average()}
    model = ecgfm.load_model(checkpoint, device="cpu")
    began = time.monotonic()
    single = run_batch([manifest], single_out, model, batch_size=batch_size)
    seconds = round(time.monotonic() - began, 2)
    out["single"] = {"seconds": seconds, "workers": default_workers(), "records": single.records,
                     "scored": single.scored, "records_per_s": round(single.records / seconds, 3)}
    del model
    print(f"round {number + 1}, one machine: {out['single']}", flush=True)

    began = time.monotonic()
    ray.init(num_cpus=cores(), include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    cluster_start = round(time.monotonic() - began, 2)
    try:
        began = time.monotonic()
        on_ray = run_batch_ray([manifest], ray_out, str(checkpoint), batch_size=batch_size)
        seconds = round(time.monotonic() - began, 2)
    finally:
        ray.shutdown()
    out["ray"] = {"seconds": seconds, "cluster_start_s": cluster_start, "cluster_cpus": cores(),
                  "records": on_ray.records, "scored": on_ray.scored, "records_per_s": round(on_ray.records / seconds, 3)}
    print(f"round {number + 1}, Ray: {out['ray']}", flush=True)

    a = {row["id"]: row for row in pq.read_table(single_out).to_pylist()}
    b = {row["id"]: row for row in pq.read_table(ray_out).to_pylist()}
    assert set(a) == set(b), "the two outputs hold different records"
    names = [label.name for label in ecgfm.LABELS]
    out["max_probability_difference"] = max((abs(a[k][n] - b[k][n]) for k in a for n in names if a[k][n] is not None),
                                            default=0.0)
    out["overhead"] = round(out["ray"]["seconds"] / out["single"]["seconds"] - 1, 4)
    out["load_after"] = load_average()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=240, help="manifest rows (default 240)")
    parser.add_argument("--batch-size", type=int, default=16, help="records (Ray: units) per forward (default 16)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both paths, alternated (default 2)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny weights instead of the full-size ones")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "ray.json")
    args = parser.parse_args()
    if not SAMPLES.is_dir():
        sys.exit(f"{SAMPLES} is absent: the benchmark reads its real ECG files.")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the cluster on the loopback address only

    import ray

    samples = scored_samples()
    print(f"{len(samples)} sample files are scored; {args.records} manifest rows", flush=True)
    with tempfile.TemporaryDirectory(prefix="ecgfm-ray-bench-") as temporary:
        folder = Path(temporary)
        manifest = write_manifest(folder, samples, args.records)
        if args.tiny:
            from tests.fairseq_layout import write_checkpoint
            checkpoint = write_checkpoint(folder / "tiny.pt", seed=7)
        else:
            from benchmarks.bench import full_checkpoint
            checkpoint = full_checkpoint()
        results = {"machine": {"cores": cores(), "cpu": cpu_name(),
                               "python": platform.python_version(), "ray": ray.__version__},
                   "weights": "tiny (tests/fairseq_layout.py)" if args.tiny else "full-size random, release layout",
                   "records": args.records, "sample_files": len(samples), "batch_size": args.batch_size,
                   "load_before": load_average()}

        results["rounds"] = []
        for round_ in range(args.rounds):  # alternated, so that a change of load falls on both paths
            results["rounds"].append(one_round(folder, manifest, checkpoint, args.batch_size, round_))
        ratios = sorted(r["overhead"] for r in results["rounds"])
        results["overhead"] = ratios[len(ratios) // 2]  # the median round (the upper one of two)
        results["load_after"] = load_average()
    last = results["rounds"][-1]
    rounds = ", ".join(f"{r['overhead']:+.1%}" for r in results["rounds"])
    print(f"Ray path overhead against one machine on the same {cores()} cores: {results['overhead']:+.1%} "
          f"(goal: at most +15 %; rounds: {rounds}); "
          f"last round {last['single']['records_per_s']} vs {last['ray']['records_per_s']} records/s; "
          f"load average {results['load_before']} -> {results['load_after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
