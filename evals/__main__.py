"""`python -m evals --dataset FILE [--provider rules|llm] [--json-out FILE] [--min-accuracy X] [--report FILE.html]`

Exit codes: 0 it ran (whatever the score), 1 accuracy below --min-accuracy, 2 usage error or unusable dataset.
The last line printed is always `accuracy: 0.873 (55/63) provider=rules` when the run happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPORTS_DIR = Path(__file__).resolve().parent / "reports"


def _accuracy_bound(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evals", description="Score the intent parser on a JSONL dataset.")
    parser.add_argument("--dataset", required=True, type=Path, help="JSONL file, one case a line")
    parser.add_argument("--provider", choices=("rules", "llm"), default="rules")
    parser.add_argument("--json-out", type=Path, help="write per-case results and the summary as JSON")
    parser.add_argument("--min-accuracy", type=_accuracy_bound, help="exit 1 when accuracy is below this (0..1)")
    parser.add_argument("--report", type=Path,
                        help="HTML report path (default: next to --json-out, else evals/reports/<dataset>.html)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 with a usage message on bad arguments

    from core.inventory import get_catalog
    from evals.dataset import DatasetError, load_cases
    from evals.report import console_lines, last_line, to_html, to_json
    from evals.runner import ProviderUnavailable, run

    try:
        cases = load_cases(args.dataset)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run(cases, args.provider, get_catalog())
    except ProviderUnavailable as exc:
        print(f"error: --provider {args.provider}: {exc}", file=sys.stderr)
        return 2

    report_path = args.report or (args.json_out.with_suffix(".html") if args.json_out else
                                  REPORTS_DIR / f"{args.dataset.stem}.html")
    try:
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(to_json(result, args.dataset), indent=2, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(to_html(result, args.dataset), encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2

    for line in console_lines(result):
        print(line)
    if args.json_out:
        print(f"json: {args.json_out}")
    print(f"report: {report_path}")
    print(last_line(result))
    if args.min_accuracy is not None and result.accuracy < args.min_accuracy:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
