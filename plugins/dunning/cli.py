"""``python -m dunning``: the command line shared by operators, the demo and the benchmark."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import date
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from dunning.generate import generate

    result = generate(
        Path(args.out), debtors=args.debtors, as_of=args.as_of, seed=args.seed, sql_url=args.sql_url
    )
    print(json.dumps(result, indent=2, default=str))
    return 0


def _services(args: argparse.Namespace) -> int:
    from dunning import services

    if args.action == "start":
        return services.cli_start(Path(args.state_dir), args.which)
    return services.cli_stop(Path(args.state_dir))


def _bench(args: argparse.Namespace) -> int:
    from dunning import bench

    sizes = [int(x) for x in args.sizes.split(",") if x]
    stages = tuple(x for x in args.stages.split(",") if x) or bench.STAGES
    unknown = sorted(set(stages) - set(bench.STAGES))
    if unknown:
        print(f"bench: unknown stage(s) {', '.join(unknown)}; known: {', '.join(bench.STAGES)}")
        return 2
    keep = Path(args.keep) if args.keep else None
    return bench.main(sizes, Path(args.json) if args.json else None, keep, stages)


def _compliance(args: argparse.Namespace) -> int:
    """C2: one JSON object per input line on stdout; the policy is the config's when one is named
    (``--config``, or ``DUNNING_CONFIG`` if that file exists), else the built-in defaults."""
    import os

    from dunning.compliance import what_if
    from dunning.config import Policy, load_config
    from dunning.errors import ConfigError

    env = os.environ.get("DUNNING_CONFIG")
    named = args.config or (env if env and Path(env).is_file() else None)
    if env and not named:
        print(f"compliance check: {env} not found, using the default policy", file=sys.stderr)
    try:
        policy = load_config(named).compliance if named else Policy()
    except ConfigError as exc:
        print(f"compliance check: {exc}", file=sys.stderr)
        return 2
    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"compliance check: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    with stream:
        for result in what_if(stream, policy, explain=args.explain):
            print(json.dumps(result, ensure_ascii=False))
    return 0


def _review(args: argparse.Namespace) -> int:
    """Sends a crash left without an outcome: list them, or resolve one after checking."""
    from dunning import ledger, waves
    from dunning.config import ledger_url

    if args.resolve and not args.outcome:
        print("review: --resolve needs --outcome delivered|not-delivered", file=sys.stderr)
        return 2
    ledger.migrate(ledger_url())
    with ledger.ledger(ledger_url()) as engine:
        if args.resolve:
            ok = waves.resolve_unknown(
                engine,
                args.resolve,
                delivered=args.outcome == "delivered",
                note=args.note,
                by=args.by or getpass.getuser(),
            )
            print(f"{args.resolve}: {'resolved' if ok else 'no unknown send with that key'}")
            return 0 if ok else 1
        rows = waves.unknown_messages(engine, args.as_of)
    for row in rows.to_dict("records"):
        print(json.dumps(row, default=str))
    print(f"{len(rows)} send(s) with an unknown outcome", file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from dunning import demo

    return demo.main(debtors=args.debtors, as_of=args.as_of, seed=args.seed)


def _ui(args: argparse.Namespace) -> int:
    from dunning import demo

    return demo.ui(debtors=args.debtors, as_of=args.as_of, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dunning", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic AR portfolio and its config.yaml")
    gen.add_argument("--out", required=True, help="folder to write the portfolio into")
    gen.add_argument("--debtors", type=int, required=True)
    gen.add_argument("--as-of", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--sql-url", default=None, help="write the SQL AR tables here (default: SQLite in --out)"
    )
    gen.set_defaults(func=_generate)

    svc = sub.add_parser("services", help="start/stop the local S3, SMTP and PostgreSQL servers")
    svc.add_argument("action", choices=["start", "stop"])
    svc.add_argument("--state-dir", default="var/services")
    svc.add_argument("--which", default="s3,smtp", help="comma list of s3, smtp, sms, postgres")
    svc.set_defaults(func=_services)
    comp = sub.add_parser("compliance", help="compliance tools (the what-if check)")
    comp_sub = comp.add_subparsers(dest="action", required=True)
    check = comp_sub.add_parser(
        "check", help="may we contact them? JSON Lines in (one proposed contact per line), out"
    )
    check.add_argument("file", help="JSON Lines file of proposed contacts, or - for stdin")
    check.add_argument("--config", default=None, help="take the policy numbers from this config")
    check.add_argument(
        "--explain", action="store_true", help="add next_allowed_at and the rule-set version"
    )
    check.set_defaults(func=_compliance)

    review = sub.add_parser(
        "review", help="sends a crash left with an unknown outcome: list, or resolve one"
    )
    review.add_argument("--as-of", type=date.fromisoformat, default=None)
    review.add_argument("--resolve", metavar="CONTACT_KEY", default=None)
    review.add_argument(
        "--outcome",
        choices=["delivered", "not-delivered"],
        help="with --resolve: what the provider says (not-delivered: the next wave sends it)",
    )
    review.add_argument("--note", default="", help="with --resolve: what was checked, and how")
    review.add_argument("--by", default=None, help="with --resolve: who (default: this user)")
    review.set_defaults(func=_review)

    demo = sub.add_parser("demo", help="run dunning_daily end to end with local S3 and SMTP")
    demo.add_argument("--debtors", type=int, default=2000)
    demo.add_argument("--as-of", type=date.fromisoformat, default=None, help="default: today")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=_demo)

    ui = sub.add_parser("ui", help="airflow standalone on 127.0.0.1 with the demo set-up")
    ui.add_argument("--debtors", type=int, default=2000)
    ui.add_argument("--as-of", type=date.fromisoformat, default=None, help="default: today")
    ui.add_argument("--seed", type=int, default=7)
    ui.set_defaults(func=_ui)

    bench = sub.add_parser("bench", help="time each pipeline stage on generated portfolios")
    bench.add_argument("--sizes", default="10000,100000,1000000", help="open invoices per run")
    bench.add_argument("--json", default=None, help="also write one JSON record per size/stage")
    bench.add_argument(
        "--keep", default=None, help="keep work directories in KEEP/<size> and reuse them"
    )
    bench.add_argument(
        "--stages", default="", help="comma-separated stages to run, in order (default: all)"
    )
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
