"""`python -m evals --dataset FILE [--provider rules|llm] [--json-out FILE] [--min-accuracy X] [--max-wrong-target N]
[--report FILE.html] [--inventory F] [--patch-groups F] [--policy F]`

Exit codes: 0 it ran (whatever the score), 1 accuracy below --min-accuracy or more wrong-target cases than
--max-wrong-target, 2 usage error, unusable dataset or a fleet file that does not load.
The last two lines printed are always `wrong-target: N` and `accuracy: 0.873 (55/63) provider=rules` when the run
happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPORTS_DIR = Path(__file__).resolve().parent / "reports"


class FleetError(RuntimeError):
    """A fleet file does not load; the message is one line naming the file."""


def _accuracy_bound(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return number


def _count_bound(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evals", description="Score the intent parser on a JSONL dataset.")
    parser.add_argument("--dataset", required=True, type=Path, help="JSONL file, one case a line")
    parser.add_argument("--provider", choices=("rules", "llm"), default="rules")
    parser.add_argument("--json-out", type=Path, help="write per-case results and the summary as JSON")
    parser.add_argument("--min-accuracy", type=_accuracy_bound, help="exit 1 when accuracy is below this (0..1)")
    parser.add_argument("--max-wrong-target", type=_count_bound, metavar="N",
                        help="exit 1 when more than N cases propose a run on a host they do not expect (CI: 0)")
    parser.add_argument("--report", type=Path,
                        help="HTML report path (default: next to --json-out, else evals/reports/<dataset>.html)")
    fleet = parser.add_argument_group("fleet", "the fleet the cases run against; each file not given comes from "
                                               "the settings (INVENTORY_FILE, PATCH_GROUPS_FILE, POLICY_FILE)")
    fleet.add_argument("--inventory", type=Path, metavar="FILE", help="Ansible YAML inventory")
    fleet.add_argument("--patch-groups", type=Path, metavar="FILE", help="patch-groups YAML file")
    fleet.add_argument("--policy", type=Path, metavar="FILE", help="policy YAML file")
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def load_fleet(args: argparse.Namespace):
    """The catalog from --inventory/--patch-groups/--policy, each missing one from the settings.
    -> (catalog, {"inventory": path, "patch_groups": path, "policy": path or None}). Raises FleetError."""
    from core.inventory import get_catalog, load_catalog
    from core.settings import get_settings

    try:
        settings = get_settings()
    except Exception as exc:  # invalid environment: pydantic's message, on one line
        raise FleetError(f"the settings do not load: {_one_line(exc)}") from None
    sources = {
        "inventory": (args.inventory, "--inventory") if args.inventory else (settings.inventory_file, "INVENTORY_FILE"),
        "patch_groups": ((args.patch_groups, "--patch-groups") if args.patch_groups
                         else (settings.patch_groups_file, "PATCH_GROUPS_FILE")),
        "policy": ((args.policy, "--policy") if args.policy
                   else (settings.policy_file or None, "POLICY_FILE")),
    }
    files = {key: (Path(path) if path else None) for key, (path, _) in sources.items()}
    given = args.inventory or args.patch_groups or args.policy
    try:
        catalog = (load_catalog(files["inventory"], files["patch_groups"], files["policy"]) if given
                   else get_catalog())
    except (Exception, SystemExit) as exc:
        try:
            problem = _fleet_problem(exc, {key: (files[key], label) for key, (_, label) in sources.items()})
        except Exception:
            problem = _one_line(f"{type(exc).__name__}: {exc}")
        raise FleetError(problem) from None
    return catalog, {key: (str(path) if path else None) for key, path in files.items()}


def _fleet_problem(exc: BaseException, files: dict[str, tuple[Path | None, str]]) -> str:
    """One line saying which fleet file is unusable and why (the loader's own exceptions name no file)."""
    import yaml

    from core.policy import PolicyError

    parsed: dict[str, object] = {}
    for key, (path, label) in files.items():
        if path is None:
            continue
        try:
            parsed[key] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"{label} {path}: no such file"
        except (OSError, UnicodeDecodeError) as read_error:
            return f"{label} {path}: cannot read: {_one_line(getattr(read_error, 'strerror', None) or read_error)}"
        except yaml.YAMLError as yaml_error:
            mark = getattr(yaml_error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(yaml_error, "problem", None) or yaml_error
            return f"{label} {path}: not valid YAML ({where}{_one_line(problem)})"
        if parsed[key] is not None and not isinstance(parsed[key], dict):
            return f"{label} {path}: expected a YAML mapping at the top, found {type(parsed[key]).__name__}"
    if isinstance(exc, PolicyError):
        return _one_line(exc)
    if isinstance(exc, SystemExit):
        return _one_line(exc.code if isinstance(exc.code, str) else f"the fleet does not load (exit {exc.code})")
    inventory_problem = _inventory_problem(parsed.get("inventory"))
    if inventory_problem:
        inventory_path, inventory_label = files["inventory"]
        return f"{inventory_label} {inventory_path}: {inventory_problem}"
    groups_path, groups_label = files["patch_groups"]
    groups = parsed.get("patch_groups")
    for name, body in (groups if isinstance(groups, dict) else {}).items():
        if not isinstance(body, dict) or "job_template" not in body:
            return f"{groups_label} {groups_path}: patch group {name!r} needs a mapping with a job_template"
    inventory_path, inventory_label = files["inventory"]
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return (f"{inventory_label} {inventory_path} or {groups_label} {groups_path}: not a usable inventory or "
            f"patch-groups file ({_one_line(reason)})")


def _inventory_problem(data: object) -> str | None:
    """Where an Ansible YAML inventory breaks its shape: group -> {hosts: {name: vars}, children: {group: ...}}."""
    for group, body in (data or {}).items() if isinstance(data, dict) else ():
        if body is None:
            continue
        if not isinstance(body, dict):
            return f"group {group!r} must be a mapping, found {type(body).__name__}"
        for key in ("hosts", "children", "vars"):
            if body.get(key) is not None and not isinstance(body[key], dict):
                return f"group {group!r}: {key!r} must be a mapping, found {type(body[key]).__name__}"
        for host, host_vars in (body.get("hosts") or {}).items():
            if host_vars is not None and not isinstance(host_vars, dict):
                return f"host {host!r}: its variables must be a mapping, found {type(host_vars).__name__}"
        problem = _inventory_problem(body.get("children"))
        if problem:
            return problem
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 with a usage message on bad arguments

    from evals.dataset import DatasetError, load_cases
    from evals.report import console_lines, tail_lines, to_html, to_json
    from evals.runner import ProviderUnavailable, run

    try:
        cases = load_cases(args.dataset)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        catalog, fleet = load_fleet(args)
    except FleetError as exc:
        print(f"error: the fleet does not load: {exc}", file=sys.stderr)
        return 2
    try:
        result = run(cases, args.provider, catalog)
    except ProviderUnavailable as exc:
        print(f"error: --provider {args.provider}: {exc}", file=sys.stderr)
        return 2

    report_path = args.report or (args.json_out.with_suffix(".html") if args.json_out else
                                  REPORTS_DIR / f"{args.dataset.stem}.html")
    try:
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(to_json(result, args.dataset, fleet), indent=2, ensure_ascii=False)
                                     + "\n", encoding="utf-8")
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(to_html(result, args.dataset, fleet), encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2

    for line in console_lines(result):
        print(line)
    if args.json_out:
        print(f"json: {args.json_out}")
    print(f"report: {report_path}")
    for line in tail_lines(result):  # ends with wrong-target: N, then accuracy: ... as the last line
        print(line)
    if args.min_accuracy is not None and result.accuracy < args.min_accuracy:
        return 1
    if args.max_wrong_target is not None and len(result.wrong_target) > args.max_wrong_target:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
