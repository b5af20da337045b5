"""`ecgfm batch` on one machine against `ecgfm batch --ray` on a local cluster of the same cores.

    python benchmarks/ray_bench.py                # 240 records, full-size weights: ~6 minutes on 2 cores
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
SAMPLES = REPO.parent / "shared" / "ecg-samples"


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


def cores() -> int:
    from ecgfm.model import allowed_cpus

    return allowed_cpus()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=240, help="manifest rows (default 240)")
    parser.add_argument("--batch-size", type=int, default=16, help="records (Ray: units) per forward (default 16)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny weights instead of the full-size ones")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "ray.json")
    args = parser.parse_args()
    if not SAMPLES.is_dir():
        sys.exit(f"{SAMPLES} is absent: the benchmark reads its real ECG files.")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the cluster on the loopback address only

    import ecgfm
    import pyarrow.parquet as pq
    import ray

    from ecgfm.batch import default_workers, run_batch
    from ecgfm.batch_ray import run_batch_ray

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
        results = {"machine": {"cores": cores(), "cpu": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "ray": ray.__version__},
                   "weights": "tiny (tests/fairseq_layout.py)" if args.tiny else "full-size random, release layout",
                   "records": args.records, "sample_files": len(samples), "batch_size": args.batch_size,
                   "load_before": load_average()}

        model = ecgfm.load_model(checkpoint, device="cpu")
        began = time.monotonic()
        single = run_batch([manifest], folder / "single.parquet", model, batch_size=args.batch_size)
        results["single"] = {"seconds": round(time.monotonic() - began, 2), "workers": default_workers(),
                             "records": single.records, "scored": single.scored}
        results["single"]["records_per_s"] = round(single.records / results["single"]["seconds"], 3)
        results["load_between"] = load_average()
        print(f"one machine: {results['single']}", flush=True)
        del model

        began = time.monotonic()
        ray.init(num_cpus=cores(), include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
        cluster_start = round(time.monotonic() - began, 2)
        try:
            began = time.monotonic()
            on_ray = run_batch_ray([manifest], folder / "ray.parquet", str(checkpoint), batch_size=args.batch_size)
            seconds = round(time.monotonic() - began, 2)
        finally:
            ray.shutdown()
        results["ray"] = {"seconds": seconds, "cluster_start_s": cluster_start, "cluster_cpus": cores(),
                          "records": on_ray.records, "scored": on_ray.scored,
                          "records_per_s": round(on_ray.records / seconds, 3)}
        results["load_after"] = load_average()
        print(f"Ray: {results['ray']}", flush=True)

        a = {row["id"]: row for row in pq.read_table(folder / "single.parquet").to_pylist()}
        b = {row["id"]: row for row in pq.read_table(folder / "ray.parquet").to_pylist()}
        assert set(a) == set(b), "the two outputs hold different records"
        names = [label.name for label in ecgfm.LABELS]
        results["max_probability_difference"] = max(
            (abs(a[k][n] - b[k][n]) for k in a for n in names if a[k][n] is not None), default=0.0)
        results["overhead"] = round(results["ray"]["seconds"] / results["single"]["seconds"] - 1, 4)
    print(f"Ray path overhead against one machine on the same {cores()} cores: {results['overhead']:+.1%} "
          f"(goal: at most +15 %); {results['single']['records_per_s']} vs {results['ray']['records_per_s']} "
          f"records/s; largest probability difference {results['max_probability_difference']:.2g}; "
          f"load average {results['load_before']} -> {results['load_after']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
