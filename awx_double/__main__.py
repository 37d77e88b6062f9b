"""`python -m awx_double`: serve the AWX double over HTTP."""

from __future__ import annotations

import argparse
import os
from typing import Any

import uvicorn

from awx_double.app import create_app
from awx_double.state import Scenario
from core.settings import FIXTURES_DIR


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m awx_double", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8052)
    parser.add_argument("--inventory", default=str(FIXTURES_DIR / "demo-inventory.yml"),
                        help="Ansible YAML inventory")
    parser.add_argument("--patch-groups", default=str(FIXTURES_DIR / "patch-groups.yml"))
    parser.add_argument("--token", default=os.environ.get("AWX_DOUBLE_TOKEN"),
                        help="the Bearer token clients must send (default: $AWX_DOUBLE_TOKEN, which keeps it off "
                             "the command line that ps shows)")
    parser.add_argument("--speed", type=float, default=1.0, help="1.0: a job lasts ~30 s; 20: ~1.5 s")
    parser.add_argument("--base-path", default="/api/v2/", help="/api/v2/ (AWX) or /api/controller/v2/ (AAP)")
    parser.add_argument("--log-level", default="warning")

    knobs = parser.add_argument_group("scenario (also settable at run time: POST /_double/scenario)")
    knobs.add_argument("--unreachable-hosts", type=_names, default=[], metavar="H1,H2")
    knobs.add_argument("--failed-hosts", type=_names, default=[], metavar="H1,H2",
                       help="hosts whose update task fails in the Patching play")
    knobs.add_argument("--server-errors", type=int, default=0, help="the next N API requests answer 5xx")
    knobs.add_argument("--server-error-status", type=int, default=503)
    knobs.add_argument("--rate-limit-count", type=int, default=0, help="the next N API requests answer 429")
    knobs.add_argument("--rate-limit-retry-after", type=float, default=1.0)
    knobs.add_argument("--slow-events", action="store_true", help="events trail the job status far behind")
    knobs.add_argument("--event-delay-seconds", type=float, default=0.0)
    knobs.add_argument("--duplicate-pages", action="store_true", help="event pages repeat some rows")
    knobs.add_argument("--template-asks-limit", action=argparse.BooleanOptionalAction, default=True)
    knobs.add_argument("--template-asks-variables", action=argparse.BooleanOptionalAction, default=True)
    knobs.add_argument("--template-asks-job-type", action=argparse.BooleanOptionalAction, default=True)
    knobs.add_argument("--read-only-token", default=None, help="a token that may read but not launch or cancel")
    knobs.add_argument("--launch-hang-seconds", type=float, default=0.0)
    knobs.add_argument("--job-seconds", type=float, default=None,
                       help="run length in job seconds (default ~28): the same events spread over a longer run")
    knobs.add_argument("--disabled-hosts", type=_names, default=[], metavar="H1,H2",
                       help="hosts whose AWX `enabled` is false")
    knobs.add_argument("--removed-hosts", type=_names, default=[], metavar="H1,H2",
                       help="hosts of the inventory file that AWX no longer has")
    knobs.add_argument("--sliced-templates", type=_names, default=[], metavar="T1,T2",
                       help="job templates with job_slice_count 2 (a launch would start a workflow job)")
    knobs.add_argument("--recorded-events", default="",
                       choices=["", "auto", "success", "item_failed", "unreachable", "stopped"],
                       help="replay job events recorded from real runs (awx_double/streams/); auto: picked from "
                       "--failed-hosts/--unreachable-hosts")
    knobs.add_argument("--event-processing-stuck", action="store_true",
                       help="event_processing_finished stays false for good")
    knobs.add_argument("--cancel-finished-status", type=int, default=403, choices=[403, 405],
                       help="the answer to a cancel of a finished job (403: any token but a superuser's)")
    knobs.add_argument("--upgrading-requests", type=int, default=0,
                       help="the next N API requests answer 302 (an upgrade running its migrations)")
    return parser


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    fields: dict[str, Any] = {
        name: getattr(args, name) for name in Scenario.model_fields if hasattr(args, name)
    }
    fields["rate_limit"] = {"count": args.rate_limit_count, "retry_after": args.rate_limit_retry_after}
    return Scenario.model_validate(fields)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("set AWX_DOUBLE_TOKEN (or --token)")
    app = create_app(args.inventory, args.patch_groups, args.token, args.speed, args.base_path,
                     scenario=scenario_from_args(args))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
