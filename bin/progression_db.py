"""Command line for the project's tables in a platform database (run through bin/progression-db)."""

from __future__ import annotations

import argparse
import json
import sys

import demo_platform as demo
from progression import health, ledger
from progression.customers import load_registry
from progression.ledger import Status
from progression.platform import create_platform_tables
from progression.runs import IMPORT_DAG, figure_lines
from progression.templates import write_templates
from progression_airflow import platform_engine, storage_root, target_for


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bin/progression-db", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="create or upgrade the project's ledger and journal tables")
    upgrade.add_argument("conn_id", help="Airflow connection id of the platform database")
    upgrade.add_argument(
        "--with-platform-tables",
        action="store_true",
        help="also create the platform's own tables (demos and tests only)",
    )
    runs = commands.add_parser("runs", help="print the run ledger, newest last, one JSON object a line")
    runs.add_argument("conn_id")
    runs.add_argument("--customer")
    runs.add_argument("--airflow-run-id")
    summary = commands.add_parser("summary", help="what one Airflow run did, file by file (default: the latest)")
    summary.add_argument("customer", help="customer slug from the registry")
    summary.add_argument("--airflow-run-id")
    check = commands.add_parser(
        "health",
        help="each customer of that database: last success, late, waiting files, "
        "failing streak, unusual files; one JSON object a line, worst first",
    )
    check.add_argument("conn_id", help="Airflow connection id of the platform database")
    seed = commands.add_parser("seed-demo", help="create the demo platform and drop sample files in its inbox")
    seed.add_argument("customer", help="customer slug from the registry, e.g. demo")
    templates = commands.add_parser(
        "templates", help="write the customer's template workbooks, one per content type, to templates/ in its storage"
    )
    templates.add_argument("customer", help="customer slug from the registry")
    transfer = commands.add_parser(
        "demo-transfer",
        help="print the run conf of the demo's transfer (a journey with "
        "completions to another journey) for progression_transfer",
    )
    transfer.add_argument("customer", help="customer slug from the registry, e.g. demo")
    transfer.add_argument("--real", action="store_true", help="a real run instead of a dry run")
    args = parser.parse_args(argv)

    if args.command == "upgrade":
        engine = platform_engine(args.conn_id)
        if args.with_platform_tables:
            create_platform_tables(engine)
        version = ledger.upgrade(engine)
        print(
            f"{args.conn_id}: progression tables at version {version}"
            + (" (platform tables present)" if args.with_platform_tables else "")
        )
    elif args.command == "runs":
        with platform_engine(args.conn_id).connect() as conn:
            for run in ledger.list_runs(conn, customer=args.customer, airflow_run_id=args.airflow_run_id):
                print(json.dumps(run, default=str))
    elif args.command == "health":
        now, registry = ledger.utcnow(), load_registry()
        customers = [c for c in registry.customers.values() if c.platform_conn_id == args.conn_id]
        if not customers:
            print(f"no customer in {registry.path} has platform_conn_id {args.conn_id}", file=sys.stderr)
            return 1
        for found in health.worst_first([health.customer_health(target_for(c), now) for c in customers]):
            print(json.dumps(found.as_dict()))
    elif args.command == "seed-demo":
        customer = load_registry().get(args.customer)
        engine = platform_engine(customer.platform_conn_id)
        created = demo.seed_platform(engine, customer.platform, name="Demo Academy")
        dropped = demo.drop_sample_files(engine, customer.platform, storage_root(customer.storage))
        print(
            ("seeded" if created else "found") + f" platform {customer.platform!r}; "
            f"dropped {len(dropped)} sample file(s): {', '.join(dropped)}"
        )
    elif args.command == "demo-transfer":
        customer = load_registry().get(args.customer)
        old, new = demo.transfer_pair(platform_engine(customer.platform_conn_id), customer.platform)
        print(json.dumps({"customer": customer.slug, "old_uuid": old, "new_uuid": new, "dry_run": not args.real}))
    elif args.command == "templates":
        customer = load_registry().get(args.customer)
        for rel in write_templates(target_for(customer)):
            print(f"{customer.slug}: wrote {rel}")
    elif args.command == "summary":
        customer = load_registry().get(args.customer)
        with platform_engine(customer.platform_conn_id).connect() as conn:
            latest = ledger.latest_runs(conn, customer.slug, args.airflow_run_id)
        print(describe_runs(latest, storage_root(customer.storage)))
    return 0


def describe_runs(runs: list[dict], root) -> str:
    """What one Airflow run did, run by run, each kind in its own words (runs.figure_lines, as the history page)."""
    if not runs:
        return "no runs in the ledger yet"
    files = runs[0]["dag_id"] == IMPORT_DAG
    lines = [
        f"Airflow run {runs[0]['airflow_run_id']}: "
        + (f"{len(runs)} file(s)" if files else runs[0]["dag_id"].removeprefix("progression_"))
    ]
    for run in runs:
        lines.append(
            f"- {run['subject']}: {run['status']}{' (dry run)' if run['dry_run'] else ''}  [run {run['run_id']}]"
        )
        if run["message"]:
            lines.append(f"    {run['message']}")
        if run["status"] != Status.SKIPPED:
            lines.append("    " + ", ".join(f"{label} {n}" for label, n in figure_lines(run)))
        for reason, count in sorted(run["rejected_by_reason"].items()):
            lines.append(f"    rejected, {reason}: {count}")
        if run["report_path"]:
            lines.append(f"    report: {root / run['report_path']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
