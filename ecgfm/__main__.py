"""Command line: `python -m ecgfm predict FILE...` and `python -m ecgfm info FILE...`.

Every expected failure prints one sentence and exits non-zero; nothing is printed for any record
until all of them have been read, so a bad file never leaves half an answer behind.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import ECGFMError
from .labels import LABELS
from .model import PRECISIONS

DISCLAIMER = "Research use only: ECG-FM is not a medical device and its outputs are not diagnoses."


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except ECGFMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug, not the user's doing: still one sentence, never a traceback
        print(f"error: unexpected {type(error).__name__}; please report it with the command you ran.",
              file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ecgfm", description=f"ECG-FM on ECG files. {DISCLAIMER}")
    commands = parser.add_subparsers(required=True, metavar="{predict,info}")

    def reading_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("files", nargs="+", metavar="FILE",
                         help="ECG files; a WFDB record's .hea and .dat together, several records at once")
        sub.add_argument("--fs", type=float, help="sampling rate in Hz, for files that do not store one")
        sub.add_argument("--json", action="store_true", help="one JSON object per record, one per line")

    predict = commands.add_parser("predict", help="ECG-FM's probabilities of 17 findings per record")
    reading_options(predict)
    predict.add_argument("--csv", action="store_true", help="CSV: a row per record, then one per 5 s segment")
    predict.add_argument("--checkpoint", default="finetuned",
                         help="'finetuned' (Hugging Face Hub cache, or ECGFM_CHECKPOINT) or a .pt path")
    predict.add_argument("--embedding", nargs="?", const="pretrained", metavar="CHECKPOINT",
                         help="add ECG-FM's embedding from the pretrained encoder ('pretrained' or a .pt path)")
    predict.add_argument("--start", type=float, default=0.0, help="window start in seconds (default 0)")
    predict.add_argument("--duration", type=float, default=10.0, help="window length in seconds (default 10)")
    predict.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    predict.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="fp32 (default, the reference); bf16: faster on a CPU with bfloat16 "
                              "instructions, approximate; fp16: the same on CUDA")
    predict.set_defaults(run=_predict)

    info = commands.add_parser("info", help="what was read: leads, sampling rate, duration, units, warnings")
    reading_options(info)
    info.set_defaults(run=_info)
    return parser


def _read(args: argparse.Namespace):
    from .io import read_ecgs
    return read_ecgs(args.files, fs=args.fs)


def _predict(args: argparse.Namespace) -> int:
    if args.json and args.csv:
        raise ECGFMError("choose one output format: --json or --csv.")
    records = _read(args)
    from . import load_model
    from .predict import predict, write_csv

    model = load_model(args.checkpoint, device=args.device, precision=args.precision)
    embedder = load_model(args.embedding, device=args.device, precision=args.precision) if args.embedding else None
    results = predict(model, records, embedder=embedder, start_s=args.start, duration_s=args.duration)
    if args.json:
        for result in results:
            print(json.dumps(result.to_dict()))
    elif args.csv:
        write_csv([result.to_dict() for result in results], sys.stdout)
    else:
        for result in results:
            _print_prediction(result)
        print(DISCLAIMER)
    return 0


def _print_prediction(result) -> None:
    span = f"{result.segments[0].start_s:.1f}–{result.segments[-1].end_s:.1f} s"
    print(f"{result.name}  ({len(result.segments)} segment(s), {span})")
    width = max(len(label.name) for label in LABELS)
    print(f"  {'finding':<{width}}  probability  prevalence")
    for label in sorted(LABELS, key=lambda lab: -result.probabilities[lab.name]):
        print(f"  {label.name:<{width}}  {result.probabilities[label.name]:11.3f}  {label.prevalence_pct:9.2f}%")
    for warning in result.warnings:
        print(f"  note: {warning}")
    provenance = result.provenance
    print(f"  model: {provenance.get('repo') or 'local file'} {provenance.get('file')} "
          f"sha256 {str(provenance.get('sha256'))[:12]}… on {provenance.get('device')}")
    print()


def _info(args: argparse.Namespace) -> int:
    for record in _read(args):
        if args.json:
            print(json.dumps(record.summary()))
        else:
            print(f"{record.name}: {record.format}, {len(record.leads)} leads ({', '.join(record.leads)}), "
                  f"{record.fs:g} Hz, {record.total_duration_s:.2f} s, stored in {record.units}")
            for warning in record.warnings:
                print(f"  note: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
