"""Command line: `ecgfm predict FILE...`, `ecgfm info FILE...` and `ecgfm batch INPUT... --out FILE`
(also `python -m ecgfm ...`).

Every record that can be read is answered; each one that cannot is one sentence on stderr
(`error: ...`, and in `--json` also a `{"file", "error"}` line in its place), and the exit status
is then 2. Every other expected failure (no weights, a bad option) prints one sentence and exits 2
before any result is printed. `info` reads files only: nothing on its path imports torch.
`batch` scores a whole dataset into one Parquet file, resumably (ecgfm/batch.py; with --ray, on a Ray
cluster: ecgfm/batch_ray.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys

from .errors import ECGFMError, ECGReadError, WeightsUnavailableError
from .labels import LABELS
from .version import __version__

DISCLAIMER = "Research use only: ECG-FM is not a medical device and its outputs are not diagnoses."
PRECISION_HELP = ("fp32 (default, the reference); bf16: faster on a CPU with bfloat16 instructions, "
                  "approximate; fp16: the same on CUDA")
# What each model the CLI loads is for, and the option (and environment variable, for the named
# checkpoint) that gives its file: the hub's own advice names the Python API's parameters.
ROLES = {"finetuned": ("the finetuned classifier for predict", "--checkpoint"),
         "pretrained": ("the pretrained encoder for --embedding", "--encoder")}
EXIT_SIGPIPE = 128 + getattr(signal, "SIGPIPE", 13)  # what a shell reports for `... | head -1`
# The readers name what the caller can give by read_ecgs' parameter, in brackets: here, the option.
OPTIONS = {"(fs)": "(--fs HZ)", "(leads)": "(--leads I,II,...)"}


def main(argv: list[str] | None = None) -> int:
    return _run(_parse(argv))


def _run(args: argparse.Namespace) -> int:
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, inside the handler below
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_SIGPIPE
    except ECGFMError as error:
        _error(error)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug, not the user's doing: still one sentence, never a traceback
        print(f"error: unexpected {type(error).__name__}; please report it with the command you ran.",
              file=sys.stderr)
        return 1


def cli() -> None:
    """The `ecgfm` console command."""
    from .runtime import return_freed_memory

    args = _parse(None)
    # `predict` runs its forwards and exits: its peak matters more than ~0.1 s per forward.
    return_freed_memory(one_shot=args.run is _predict)
    sys.exit(_run(args))


def _silence_stdout() -> None:
    """The reader has gone (`| head`): send what is still buffered nowhere, so that the
    interpreter's final flush does not print a BrokenPipeError traceback at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's captured stdout)
        pass


def _message(error: BaseException) -> str:
    """The error's sentence, with read_ecgs' parameters named as this command's options."""
    message = str(error)
    for parameter, option in OPTIONS.items():
        message = message.replace(parameter, option)
    return message


def _error(error: BaseException) -> None:
    print(f"error: {_message(error)}", file=sys.stderr)


def _lead_list(text: str) -> list[str]:
    leads = [name.strip() for name in text.split(",")]
    if not all(leads):
        raise argparse.ArgumentTypeError(f"give lead names separated by commas, such as I,II,V1 (not {text!r})")
    return leads


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The options, with files given after an option (`predict a.hea --json b.hea`) kept as files:
    argparse takes only the first run of positional arguments, and leaves the others unrecognised."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and (not hasattr(args, "files") or any(arg.startswith("-") for arg in rest)):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.files = [*args.files, *rest]
    return args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecgfm", description=f"ECG-FM on ECG files. {DISCLAIMER}")
    parser.add_argument("--version", action="version", version=f"ecgfm {__version__}")
    commands = parser.add_subparsers(required=True, metavar="{predict,info,batch,probe}")

    def reading_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("files", nargs="+", metavar="FILE",
                         help="ECG files; a WFDB record's .hea and .dat together, several records at once")
        sub.add_argument("--fs", type=float, help="sampling rate in Hz, for files that do not store one")
        sub.add_argument("--leads", type=_lead_list, metavar="I,II,...",
                         help="the names of the files' ECG channels, in order, comma-separated "
                              "(for files that do not name them, or name them wrongly)")
        sub.add_argument("--json", action="store_true", help="one JSON object per record, one per line")

    predict = commands.add_parser("predict", help="ECG-FM's probabilities of 17 findings per record")
    reading_options(predict)
    predict.add_argument("--csv", action="store_true", help="CSV: a row per record, then one per 5 s segment")
    predict.add_argument("--checkpoint", default="finetuned", metavar="PATH",
                         help="the finetuned classifier: 'finetuned' (Hugging Face Hub cache, or "
                              "ECGFM_CHECKPOINT) or a .pt path")
    predict.add_argument("--embedding", action="store_true",
                         help="add ECG-FM's 768-d embedding, from the pretrained encoder (see --encoder)")
    predict.add_argument("--encoder", default=None, metavar="PATH",
                         help="the pretrained encoder for --embedding: 'pretrained' (default; Hugging Face "
                              "Hub cache, or ECGFM_PRETRAINED_CHECKPOINT) or a .pt path")
    predict.add_argument("--report", metavar="DIR",
                         help="also write each record's one-page PDF report and its ECG (PNG) into DIR")
    predict.add_argument("--measure", action="store_true",
                         help="add automated, approximate measurements (rate, PR, QRS, QT/QTc, axes) to every output")
    predict.add_argument("--saliency", action="store_true",
                         help="add ECG-FM's saliency (where its attention concentrated) to --json and --report")
    predict.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    predict.add_argument("--duration", type=float, default=10.0, help="window length in seconds (default 10)")
    predict.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    # No argparse `choices`: the list lives beside torch (ecgfm.model), and load_model's own check
    # names the valid values in one sentence.
    predict.add_argument("--precision", default="fp32", metavar="{fp32,bf16,fp16}", help=PRECISION_HELP)
    predict.set_defaults(run=_predict)

    info = commands.add_parser("info", help="what was read: leads, sampling rate, duration, units, warnings")
    reading_options(info)
    info.set_defaults(run=_info)

    batch = commands.add_parser(
        "batch", help="score a whole dataset into one Parquet file, resumably",
        description="Score every record of the inputs into one Parquet file: a row per record (id, files, "
                    "window, status ok/limited/refused, reason, the 17 probabilities, input adequacy, "
                    "warnings, and with --embeddings the 768-d embedding); provenance in the file's "
                    "metadata. Killed at any moment, the same command continues where it stopped. "
                    f"{DISCLAIMER}")
    batch.add_argument("files", nargs="+", metavar="INPUT",
                       help="ECG files, folders (walked; each folder's files grouped into records), glob "
                            "patterns, or manifest CSVs with a path column (optional: fs, leads, id; other "
                            "columns are carried into the output)")
    batch.add_argument("--out", required=True, metavar="FILE.parquet", help="the Parquet file to write")
    batch.add_argument("--checkpoint", default="finetuned", metavar="PATH",
                       help="the finetuned classifier: 'finetuned' (Hugging Face Hub cache, or "
                            "ECGFM_CHECKPOINT) or a .pt path")
    batch.add_argument("--embeddings", "--embedding", dest="embedding", action="store_true",
                       help="add ECG-FM's 768-d embedding, from the pretrained encoder (see --encoder)")
    batch.add_argument("--encoder", default=None, metavar="PATH",
                       help="the pretrained encoder for --embeddings: 'pretrained' (default; Hugging Face "
                            "Hub cache, or ECGFM_PRETRAINED_CHECKPOINT) or a .pt path")
    batch.add_argument("--probe", metavar="DIR",
                       help="also apply your linear probe (a folder written by `ecgfm probe fit`): its "
                            "probabilities in probe:<label> columns; needs the encoder, so the embedding "
                            "column is written too")
    batch.add_argument("--workers", type=int, default=None, metavar="N",
                       help="reader processes (default: one per spare core, at most 8; 0 reads in this process)")
    batch.add_argument("--batch-size", type=int, default=16, metavar="N", help="records per forward (default 16)")
    batch.add_argument("--part-size", type=int, default=256, metavar="N",
                       help="records per committed part at most (default 256; a part is also committed "
                            "every 30 s)")
    batch.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    batch.add_argument("--duration", type=float, default=10.0, help="window length in seconds (default 10)")
    batch.add_argument("--fs", type=float, help="sampling rate in Hz, for files that do not store one")
    batch.add_argument("--leads", type=_lead_list, metavar="I,II,...",
                       help="the names of the files' ECG channels, in order, comma-separated")
    batch.add_argument("--device", help="cpu or cuda (default: cuda when available; with --ray, when the "
                                         "cluster has GPUs)")
    batch.add_argument("--precision", default="fp32", metavar="{fp32,bf16,fp16}", help=PRECISION_HELP)
    batch.add_argument("--quiet", action="store_true", help="no progress bar and no per-record error lines")
    batch.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run on a Ray cluster (pip install \"ecgfm[ray]\"): auto, ray://HOST:10001 or "
                            "HOST:6379; without ADDRESS, a cluster on this machine for this job only. Put it "
                            "after the inputs")
    batch.add_argument("--actors", type=int, metavar="N",
                       help="with --ray: model actors (default: one per GPU; without GPUs, one per largest node)")
    batch.add_argument("--actor-cpus", type=float, metavar="N",
                       help="with --ray: CPUs each actor reserves, and torch's threads on a CPU (default: 1 "
                            "with a GPU; without, the largest node's CPUs)")
    batch.set_defaults(run=_batch)

    probe = commands.add_parser("probe", help="linear probes on ECG-FM's embeddings, for your own labels")
    steps = probe.add_subparsers(required=True, metavar="{fit,predict}")
    fit = steps.add_parser(
        "fit", help="fit a probe (a logistic regression per label) on a batch's embeddings and your labels",
        description="Join `ecgfm batch --embeddings` output to a labels CSV (one 0/1 column per label), hold "
                    "out a part (no patient in both parts with --patient-column), fit one logistic "
                    "regression per label on the rest, and report AUROC and AUPRC on the held-out part with "
                    f"bootstrap 95 %% intervals. The probe is saved as safetensors plus a JSON card. {DISCLAIMER}")
    fit.add_argument("--embeddings", required=True, metavar="FILE.parquet", help="ecgfm batch --embeddings output")
    fit.add_argument("--labels", required=True, metavar="FILE.csv", help="an id column and one 0/1 column per label")
    fit.add_argument("--out", required=True, metavar="DIR", help="the folder to save the probe in")
    fit.add_argument("--id-column", default="id", help="the labels' column holding the batch's record id")
    fit.add_argument("--patient-column", help="a column naming each record's patient: no patient in two splits")
    fit.add_argument("--test-size", type=float, default=0.2, help="the held-out share (default 0.2)")
    fit.add_argument("--seed", type=int, default=0, help="the split and bootstrap seed (default 0)")
    fit.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    fit.add_argument("--json", action="store_true", help="print the probe's card as JSON")
    fit.set_defaults(run=_probe_fit)
    apply = steps.add_parser("predict", help="a saved probe's probabilities for every record of a batch's output")
    apply.add_argument("--probe", required=True, metavar="DIR", help="a folder written by `ecgfm probe fit`")
    apply.add_argument("--embeddings", required=True, metavar="FILE.parquet", help="ecgfm batch --embeddings output")
    apply.add_argument("--out", metavar="FILE.csv", help="write the CSV here instead of printing it")
    apply.add_argument("--id-column", default="id", help="the name of the id column in the output")
    apply.set_defaults(run=_probe_predict)
    return parser


def _read(args: argparse.Namespace, **window) -> list:
    """Every record in input order: an ECGRecord, or the ECGReadError that says why it could not be read.

    Each failure is printed on stderr at once; failures of the whole call (no file, a bad --fs,
    --leads or window) raise.
    """
    from . import io

    entries = io.read_ecgs(args.files, fs=args.fs, leads=args.leads, errors="return", **window)
    for entry in entries:
        if isinstance(entry, ECGReadError):
            _error(entry)
    return entries


def _failure_line(error: ECGReadError) -> str:
    """The `--json` line standing in for a record that could not be read."""
    message = _message(error)
    name = message.split(": ", 1)[0] if ": " in message else None
    return json.dumps({"file": name, "error": message})


def _exit_status(entries: list) -> int:
    return 2 if any(isinstance(entry, ECGReadError) for entry in entries) else 0


def _predict(args: argparse.Namespace) -> int:
    if args.json and args.csv:
        raise ECGFMError("choose one output format: --json or --csv.")
    if args.encoder is not None and not args.embedding:
        raise ECGFMError("--encoder names the encoder used by --embedding; add --embedding to get embeddings.")
    # The reader cuts the window, so a long recording is never read whole; the records it returns
    # know where they start (record.start_s), so segment times stay in recording time.
    entries = _read(args, start_s=args.start, duration_s=args.duration)
    records = [entry for entry in entries if not isinstance(entry, ECGReadError)]
    analysed = _analyse(args, records) if records else []
    if args.report:
        _write_reports(args.report, records, analysed)
    results = iter(analysed)
    if args.csv:
        from .predict import write_csv
        write_csv([result.to_dict() for result in results], sys.stdout)
        return _exit_status(entries)
    for entry in entries:
        if isinstance(entry, ECGReadError):
            if args.json:
                print(_failure_line(entry))
        elif args.json:
            print(json.dumps(next(results).to_dict()))
        else:
            _print_prediction(next(results))
    if not args.json and records:
        print(DISCLAIMER)
    return _exit_status(entries)


def _write_reports(folder: str, records: list, results: list) -> None:
    """Each record's PDF report and ECG, named after the record, as the app's downloads are."""
    from pathlib import Path

    from . import report as reports
    from .preprocess import prepare

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for record, result in zip(records, results):
        report = reports.build(record, prepare(record), result)
        stem = reports.file_stem(record.name)
        (out / f"{stem}-report.pdf").write_bytes(reports.to_pdf(report))
        (out / f"{stem}-ecg.png").write_bytes(reports.ecg_png(report, dpi=150))


def _analyse(args: argparse.Namespace, records: list) -> list:
    from .predict import predict

    model, embedder = _models(args)
    # start 0: each record already is the window, placed in the recording by its start_s.
    return predict(model, records, embedder=embedder, saliency=args.saliency, measure=args.measure, start_s=0.0,
                   duration_s=args.duration)


def _models(args: argparse.Namespace) -> tuple:
    """The classifier of --checkpoint and, with --embedding(s), the encoder of --encoder."""
    model = _load(args, args.checkpoint, "finetuned")
    if model.head is None:
        raise ECGFMError(f"--checkpoint {args.checkpoint} is a pretrained encoder, which gives no findings; "
                         "give the finetuned classifier (--checkpoint finetuned, or its .pt file).")
    embedder = None
    if args.embedding:
        embedder = _load(args, args.encoder or "pretrained", "pretrained")
        if embedder.head is not None:
            raise ECGFMError(f"--encoder {args.encoder or 'pretrained'} is the finetuned classifier; "
                             "ECG-FM's embeddings come from the pretrained encoder (--encoder pretrained, "
                             "or its .pt file).")
    return model, embedder


def _probe_fit(args: argparse.Namespace) -> int:
    from .probe import fit_from_files, format_report

    probe, _ = fit_from_files(args.embeddings, args.labels, id_column=args.id_column,
                              patient_column=args.patient_column, out=args.out, seed=args.seed,
                              test_size=args.test_size, bootstrap=args.bootstrap)
    print(json.dumps(probe.card) if args.json else f"{format_report(probe.card)}\nSaved in {args.out}. {DISCLAIMER}")
    return 0


def _probe_predict(args: argparse.Namespace) -> int:
    from .probe import predict_from_file

    frame = predict_from_file(args.probe, args.embeddings, id_column=args.id_column)
    if args.out:
        frame.to_csv(args.out, index=False)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def _batch(args: argparse.Namespace) -> int:
    """The whole dataset into --out; reading failures become refused rows (the first few also on
    stderr), and the exit status is 2 when some record could not be read, as for predict."""
    from .batch import run_batch

    if args.encoder is not None and not (args.embedding or args.probe):
        raise ECGFMError("--encoder names the encoder used by --embeddings; add --embeddings to get embeddings.")
    args.embedding = args.embedding or args.probe is not None  # a probe reads the embeddings
    progress = not args.quiet and sys.stderr.isatty()

    def on_error(message: str) -> None:
        if args.quiet:
            return
        if progress:
            from tqdm import tqdm
            tqdm.write(f"error: {message}", file=sys.stderr)
        else:
            print(f"error: {message}", file=sys.stderr)

    options = dict(probe=args.probe, start_s=args.start, duration_s=args.duration, fs=args.fs, leads=args.leads,
                   batch_size=args.batch_size, part_size=args.part_size, progress=progress, on_error=on_error,
                   explain=_message)
    try:
        if args.ray is not None:
            summary = _batch_on_ray(args, options)
        else:
            if args.actors is not None or args.actor_cpus is not None:
                raise ECGFMError("--actors and --actor-cpus size the model actors of --ray; add --ray.")
            model, embedder = _models(args)
            summary = run_batch(args.files, args.out, model, embedder=embedder, workers=args.workers, **options)
    except KeyboardInterrupt:
        print(f"ecgfm batch: interrupted; what was scored is kept in {args.out}.parts, and the same command "
              "continues from there.", file=sys.stderr)
        raise
    if summary.error_count > len(summary.errors) and not args.quiet:
        print(f"error: ... and {summary.error_count - len(summary.errors)} more records could not be read "
              f"(see the reason column of {args.out}).", file=sys.stderr)
    for line in summary.lines():
        print(line)
    print(DISCLAIMER)
    return 2 if summary.unreadable else 0


def _batch_on_ray(args: argparse.Namespace, options: dict):
    """`batch --ray`: each actor loads the weights on its node, from the same names."""
    from pathlib import Path

    from .batch_ray import run_batch_ray

    if args.workers is not None:
        raise ECGFMError("--workers sizes the reader processes of one machine; with --ray, reading runs as Ray "
                         "tasks (leave --workers out).")
    if args.ray and Path(args.ray).exists():
        raise ECGFMError(f"--ray takes the cluster's address (auto, ray://HOST:10001, HOST:6379), not {args.ray}; "
                         "put --ray after the inputs.")
    return run_batch_ray(args.files, args.out, args.checkpoint,
                         encoder=(args.encoder or "pretrained") if args.embedding else None,
                         address=args.ray or None, actors=args.actors, actor_cpus=args.actor_cpus,
                         device=args.device, precision=args.precision, **options)


def _load(args: argparse.Namespace, checkpoint: str, role: str):
    """load_model, with missing weights explained in terms of this command's options."""
    from . import load_model
    from .hub import CHECKPOINT_ENV, CHECKPOINT_FILES, REPO_ID

    try:
        return load_model(checkpoint, device=args.device, precision=args.precision)
    except WeightsUnavailableError as error:
        what, option = ROLES[role]
        # The hub's reason, without its advice (which names --checkpoint whatever the model is for).
        reason = re.split(r"[.;] [Dd]ownload\b", str(error), maxsplit=1)[0].rstrip(". ")
        env = f" (or {CHECKPOINT_ENV[role]}=PATH)" if str(checkpoint) == role else ""
        raise WeightsUnavailableError(
            f"{reason}, so {what} was not found; download {CHECKPOINT_FILES[role]} from "
            f"https://huggingface.co/{REPO_ID} and give its file with {option} PATH{env}.") from None


def _print_prediction(result) -> None:
    adequacy = result.adequacy
    if result.probabilities is None:  # unusable input: the model was not run on it
        print(result.name)
        print(f"  not analysed: {'; '.join(adequacy.reasons) or 'the input cannot be read by the model'}")
        for warning in result.warnings:
            print(f"  note: {warning}")
        print()
        return
    span = f"{result.segments[0].start_s:.1f}–{result.segments[-1].end_s:.1f} s"
    print(f"{result.name}  ({len(result.segments)} segment(s), {span})")
    if adequacy.level == "complete":
        print("  input: complete 12-lead")
    else:
        print(f"  input: {adequacy.level} — {'; '.join(adequacy.reasons)}")
    width = max(len(label.name) for label in LABELS)
    print(f"  {'finding':<{width}}  probability  prevalence")
    for label in sorted(LABELS, key=lambda lab: -result.probabilities[lab.name]):
        print(f"  {label.name:<{width}}  {result.probabilities[label.name]:11.3f}  {label.prevalence_pct:9.2f}%")
    for sentence in result.quality.sentences() if result.quality is not None else ():
        print(f"  signal quality: {sentence}")
    if result.measurements is not None:
        made = [f"{label} {value}" for label, value, _ in result.measurements.rows() if value != "—"]
        print(f"  measurements ({result.measurements.to_dict()['note']}): {'; '.join(made) or 'none could be made'}")
    if result.device_report is not None and result.device_report.measurements:
        print(f"  stored in the file by the recording device ({result.device_report.source}): "
              + "; ".join(f"{key} {value:g}" for key, value in result.device_report.measurements.items()))
    if result.embedding is not None:
        print(f"  embedding: {len(result.embedding)} values (--json gives them)")
    for warning in result.warnings:
        print(f"  note: {warning}")
    provenance = result.provenance
    print(f"  model: {provenance.get('repo') or 'local file'} {provenance.get('file')} "
          f"sha256 {str(provenance.get('sha256'))[:12]}… on {provenance.get('device')}")
    print()


def _info(args: argparse.Namespace) -> int:
    entries = _read(args)
    for entry in entries:
        if isinstance(entry, ECGReadError):
            if args.json:
                print(_failure_line(entry))
        elif args.json:
            print(json.dumps(entry.summary()))
        else:
            record = entry
            leads = f"{len(record.leads)} leads ({', '.join(record.leads)})" if record.leads else "no standard lead"
            extra = f", other leads kept aside: {', '.join(record.extra_leads)}" if record.extra_leads else ""
            print(f"{record.name}: {record.format}, {leads}{extra}, {record.fs:g} Hz, "
                  f"{record.total_duration_s:.2f} s, stored in {record.units}")
            for warning in record.warnings:
                print(f"  note: {warning}")
    return _exit_status(entries)


if __name__ == "__main__":
    cli()
