"""`ecgfm batch --ray`: the job of `ecgfm batch`, scored by a Ray Data pipeline on a Ray cluster.

    this process: enumerate the inputs' units, skip those already done (batch.Job, as without
        Ray), hand the rest to Ray Data (their list stays here, a few hundred bytes a unit)
        -> read each unit with the window cut (`read_unit`), prepare each record's window
           (`prepare_window`): in one-CPU tasks beside the actors when the cluster has GPUs;
           without GPUs, in the actors' stage (Ray fuses the two, the actors holding the cores)
        -> a fixed pool of actors, each loading the models once (one GPU each when the cluster
           has GPUs): `score` (ecgfm.predict) and `unit_rows`, `batch_size` units at a time
        -> back in this process: rows into committed parts, then the merge (batch.Job)

The output is the file of `ecgfm batch`, written by this process: the same rows, schema, metadata
and resuming (a run killed at any moment continues with the same command, with or without Ray;
the two can even take turns on one output). Rows arrive in the order the actors finish them, not in
input order.

Where things must be on a real cluster: ecgfm, at this version, on every node; the input files at
the same path on every node (shared storage), as this process names them; the weights on every
node where an actor runs (each actor loads `checkpoint` and `encoder` there: the node's Hugging
Face cache for the named checkpoints, or a path on shared storage), checked against the sha256
this process found. The probe travels with the job.

Not done here: a reader process killed by a crash in a file's decoder is retried by Ray, not
isolated as `ecgfm batch` isolates it on one machine.

Ray is an optional extra (`pip install "ecgfm[ray]"`); this module imports it only when a job runs,
and no other module of the package imports it.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .batch import (DEFAULT_BATCH, DEFAULT_PART, Job, Summary, Unit, _model_failure, check_models,
                    check_settings, read_unit, score, unit_rows)
from .errors import ECGFMError
from .io.record import ECGRecord

INSTALL = 'pip install "ecgfm[ray]"'


def _import_ray(address: str | None):
    if address is None:
        # The cluster this job starts listens on the loopback address only; Ray reads this when it
        # is imported, and otherwise binds the node to the machine's outward address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data
    except ImportError:
        raise ECGFMError(f"--ray needs Ray, which is not installed: {INSTALL}.") from None
    return ray


# --- the stages (run in Ray's workers) ----------------------------------------------------------

def read_and_prepare(batch: dict, duration_s: float | None) -> dict:
    """A CPU task: each unit read (`read_unit`, never raising) and each record's window prepared,
    or the sentence saying why it could not be, as `score` takes it."""
    from .predict import prepare_window

    out = []
    for blob in batch["unit"]:
        unit, task = pickle.loads(blob)
        entries = [unit.error] if unit.error else read_unit(task)
        windows = []
        for entry in entries:
            if isinstance(entry, ECGRecord):
                try:
                    windows.append(prepare_window(entry, 0.0, duration_s))
                except Exception as error:  # noqa: BLE001 - as `score` refuses a record the model fails on
                    windows.append(_model_failure(entry, error))
        out.append(pickle.dumps((unit, entries, windows), protocol=pickle.HIGHEST_PROTOCOL))
    return {"read": np.array(out, dtype=object)}


class Scorer:
    """An actor of the pool: the models loaded once, on its node, then batches of read units scored.

    The weights must be those this job's output names: a node whose file (or Hub cache) holds
    other weights under the same name is refused, never mixed into the output.
    """

    def __init__(self, checkpoint: str, encoder: str | None, probe, *, device: str, precision: str,
                 sha256: dict, threads: int | None):
        import torch

        from . import load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(checkpoint, device=device, precision=precision)
        self.embedder = load_model(encoder, device=device, precision=precision) if encoder else None
        for role, model in (("classifier", self.model), ("encoder", self.embedder)):
            found = model.provenance.get("sha256") if model is not None else None
            if found != sha256[role]:
                import socket

                raise ECGFMError(f"on the node {socket.gethostname()}, the {role} {model.provenance.get('file')} "
                                 f"has sha256 {str(found)[:12]}…, not the {str(sha256[role])[:12]}… of the job; "
                                 "give every node the same weights (a path on shared storage).")
        self.probe = probe

    def __call__(self, batch: dict) -> dict:
        read = [pickle.loads(blob) for blob in batch["read"]]
        records, windows = [], []
        for _, entries, prepared in read:
            records += [entry for entry in entries if isinstance(entry, ECGRecord)]
            windows += prepared
        # The windows were cut and prepared by the reading tasks, so no window arguments here.
        predictions = score(self.model, records, embedder=self.embedder, probe=self.probe, prepared=windows)
        rows = [pickle.dumps(unit_rows(unit, entries, predictions), protocol=pickle.HIGHEST_PROTOCOL)
                for unit, entries, _ in read]
        return {"rows": np.array(rows, dtype=object)}


# --- the pipeline (built and driven from this process) ------------------------------------------

class _ScoreOnRay:
    """The units to score -> the Ray Data pipeline -> (1, a unit's rows) as each unit comes back."""

    def __init__(self, ray, job: Job, *, checkpoint: str, encoder: str | None, probe, sha256: dict,
                 device: str, precision: str, actors: int, actor_cpus: float, gpus_per_actor: float,
                 batch_size: int):
        self.ray, self.job = ray, job
        self.batch_size, self.actors, self.actor_cpus, self.gpus_per_actor = batch_size, actors, actor_cpus, gpus_per_actor
        self.scorer_options = dict(checkpoint=checkpoint, encoder=encoder, probe=probe, device=device,
                                   precision=precision, sha256=sha256,
                                   threads=max(1, math.floor(actor_cpus)) if device == "cpu" else None)

    def __call__(self, units: Iterator[Unit]) -> Iterator[tuple[int, list[dict]]]:
        ray = self.ray
        items = [{"unit": pickle.dumps((unit, self.job.task(unit)), protocol=pickle.HIGHEST_PROTOCOL)}
                 for unit in units]
        if not items:
            return
        blocks = math.ceil(len(items) / self.batch_size)  # a read task's units: one actor batch
        # With GPUs, reading runs in one-CPU tasks beside the actors. Without, the actors hold the
        # cores: reading asks for the same resources, and Ray runs it in the actors' stage.
        reading_cpus = 1 if self.gpus_per_actor else self.actor_cpus
        dataset = (ray.data.from_items(items, override_num_blocks=blocks)
                   .map_batches(read_and_prepare, batch_size=None, fn_kwargs={"duration_s": self.job.duration_s},
                                num_cpus=reading_cpus, udf_modifying_row_count=False)
                   .map_batches(Scorer, batch_size=self.batch_size,
                                compute=ray.data.ActorPoolStrategy(size=self.actors),
                                fn_constructor_kwargs=self.scorer_options, num_cpus=self.actor_cpus,
                                num_gpus=self.gpus_per_actor or None, udf_modifying_row_count=False))
        try:
            with _ray_data_quiet():
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    for blob in batch["rows"]:
                        yield 1, pickle.loads(blob)
        except ray.exceptions.RayError as error:
            raise _sentence(error) from None


@contextmanager
def _ray_data_quiet():
    """Ray Data's console messages (execution plans, timings) held back during the job, whose own bar
    and summary say it; its log files in the Ray session folder keep them."""
    console = [handler for handler in logging.getLogger("ray.data").handlers
               if isinstance(handler, logging.StreamHandler)]
    levels = [handler.level for handler in console]
    for handler in console:  # a failure is raised as one sentence: its traceback stays in the files
        handler.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for handler, level in zip(console, levels):
            handler.setLevel(level)


def _sentence(error: BaseException) -> ECGFMError:
    """Ray's error as one sentence: the package's own sentence when one is inside it (as the error
    itself, or in the traceback text of an actor that failed to start), else Ray's last line."""
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ECGFMError):
            return ECGFMError(str(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__
    ours = re.findall(r"^ecgfm\.errors\.\w+: (.+)$", str(error), flags=re.M)
    if ours:
        return ECGFMError(ours[-1])
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return ECGFMError(f"the Ray job failed ({type(error).__name__}: {lines[-1][:300] if lines else 'no message'}).")


def _spec(checkpoint: str | os.PathLike) -> str:
    """A checkpoint as every node can name it: a named one as it is (each node's own Hub cache, or
    its ECGFM_CHECKPOINT), a file as its absolute path (shared storage)."""
    from .hub import CHECKPOINT_FILES

    if str(checkpoint) in CHECKPOINT_FILES:
        return str(checkpoint)
    return str(Path(checkpoint).expanduser().resolve())


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (None: start one on this machine, reachable from it only);
    True when this call started the connection, which the job then closes. Already connected
    (ray.init called by the caller): that cluster is used."""
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is None:
        ray.init(_node_ip_address="127.0.0.1", **quiet)
    else:
        try:
            ray.init(address=address, **{k: v for k, v in quiet.items() if k != "include_dashboard"})
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ECGFMError(f"no Ray cluster could be joined at {address} ({str(error).splitlines()[0][:200]}).") from None
    return True


def _check_room(actors: int, actor_cpus: float, on_gpu: bool, *, gpus: float, cpus: float, largest: float) -> None:
    """Refuse a pool the cluster cannot hold now (Ray would wait for it without end)."""
    if actor_cpus > largest:
        raise ECGFMError(f"an actor cannot have {actor_cpus:g} CPUs: the largest node of the Ray cluster has "
                         f"{largest:g}; give fewer with --actor-cpus.")
    if on_gpu and actors > gpus:
        raise ECGFMError(f"{actors} actors need a GPU each, but the Ray cluster has {gpus:g}; give fewer with --actors.")
    reading = 1 if on_gpu else 0  # without GPUs, reading runs in the actors' stage
    if actors * actor_cpus + reading > cpus:
        raise ECGFMError(f"{actors} actors of {actor_cpus:g} CPUs{' and the reading tasks' if reading else ''} need "
                         f"{actors * actor_cpus + reading:g} CPUs, but the Ray cluster has {cpus:g}; give fewer with "
                         "--actors or --actor-cpus.")


def run_batch_ray(inputs: Sequence[str | os.PathLike], out: str | os.PathLike,
                  checkpoint: str | os.PathLike = "finetuned", *, encoder: str | os.PathLike | None = None,
                  probe=None, address: str | None = None, actors: int | None = None,
                  actor_cpus: float | None = None, device: str | None = None, precision: str = "fp32",
                  start_s: float = 0.0, duration_s: float | None = 10.0, fs: float | None = None,
                  leads: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH, part_size: int = DEFAULT_PART,
                  progress: bool = False, on_error: Callable[[str], None] | None = None,
                  explain: Callable[[str], str] | None = None) -> Summary:
    """`run_batch` on a Ray cluster: the same output file, rows, metadata and resuming.

    `checkpoint` (the finetuned classifier) and `encoder` (the pretrained encoder, for the
    embedding column; None: none) are named as for `load_model`: each actor loads them on its node,
    and this process loads them too, on its CPU, to check them and name them in the output. `probe`:
    as for `run_batch`. `address`: the cluster ("auto", "ray://host:10001", ...); None starts one
    on this machine, on the loopback address, for this job only. When ray.init was already called,
    that cluster is used.

    The model runs in `actors` actors, each reserving `actor_cpus` CPUs and, when the cluster has
    GPUs and `device` is not "cpu", one GPU. With GPUs: by default an actor per GPU with 1 CPU,
    and reading and preparing in one-CPU tasks beside them. Without: by default an actor per
    largest node's worth of CPUs, torch on `actor_cpus` threads, and reading and preparing in the
    actors' stage (Ray fuses the two, as they would compete for the same cores). `batch_size`
    units per forward. The other parameters are `run_batch`'s.
    """
    ray = _import_ray(address)
    from . import load_model
    from .predict import describe

    leads = check_settings(start_s=start_s, duration_s=duration_s, fs=fs, leads=leads, batch_size=batch_size,
                           part_size=part_size)
    if device not in (None, "cpu", "cuda"):
        raise ECGFMError(f"on Ray the device is 'cpu' or 'cuda' (a GPU for each actor), not {device!r}.")
    for name, value in (("actors", actors), ("CPUs per actor", actor_cpus)):
        if value is not None and not value > 0:
            raise ECGFMError(f"the number of {name} must be more than 0.")
    checkpoint, encoder = _spec(checkpoint), encoder and _spec(encoder)
    # Loaded here only to check the weights and name them in the output; the actors load their own.
    model = load_model(checkpoint, device="cpu")
    embedder = load_model(encoder, device="cpu") if encoder else None
    probe, probe_facts = check_models(model, embedder, probe)
    described = describe(model, embedder)
    embedding_dim = embedder.dims.embed_dim if embedder is not None else None
    sha256 = {"classifier": model.provenance["sha256"],
              "encoder": embedder.provenance["sha256"] if embedder is not None else None}
    del model, embedder

    started = _connect(ray, address)
    try:
        resources = ray.cluster_resources()
        gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 0)
        if device == "cuda" and not gpus:
            raise ECGFMError("the device cuda was asked for, but the Ray cluster has no GPU; leave --device "
                             "out to use its CPUs.")
        on_gpu = bool(gpus) and device != "cpu"
        largest = max([node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")] or [cpus])
        if actor_cpus is None:
            actor_cpus = 1 if on_gpu else largest
        if actors is None:
            actors = int(gpus) if on_gpu else max(1, int(cpus // actor_cpus))
        _check_room(int(actors), float(actor_cpus), on_gpu, gpus=gpus, cpus=cpus, largest=largest)
        provenance = {**described, "device": "cuda" if on_gpu else "cpu", "precision": precision}
        if embedding_dim is not None:
            provenance["embedder"] = {**provenance["embedder"], "precision": precision}
        job = Job(inputs, out, provenance, embedding_dim=embedding_dim,
                  probe=probe_facts, start_s=start_s, duration_s=duration_s, fs=fs, leads=leads,
                  part_size=int(part_size), progress=progress, on_error=on_error, explain=explain)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the job's own bar says it
        scoring = _ScoreOnRay(ray, job, checkpoint=checkpoint, encoder=encoder, probe=probe, sha256=sha256,
                              device="cuda" if on_gpu else "cpu", precision=precision, actors=int(actors),
                              actor_cpus=float(actor_cpus), gpus_per_actor=1 if on_gpu else 0,
                              batch_size=int(batch_size))
        return job.run(scoring)
    finally:
        if started:
            ray.shutdown()
