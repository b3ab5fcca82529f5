"""The undo step of `make demo`: which run to undo, and what the undo did. Run with bin/env.sh's environment:

source bin/env.sh && python bin/progression_undo_demo.py conf demo   # the progression_undo conf
source bin/env.sh && python bin/progression_undo_demo.py show demo   # the latest undo, in words
"""

from __future__ import annotations

import argparse
import json
import sys

from progression import ledger
from progression.customers import load_registry
from progression.ledger import Status
from progression_airflow import platform_engine, storage_root


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="bin/progression_undo_demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("conf", "show"))
    parser.add_argument("customer", help="customer slug from the registry, e.g. demo")
    args = parser.parse_args(argv)
    customer = load_registry().get(args.customer)
    with platform_engine(customer.platform_conn_id).connect() as conn:
        runs = ledger.list_runs(conn, customer=customer.slug)
    if args.command == "conf":
        # The latest run that wrote completions and stands (an earlier demo's undo aside): what the demo did last.
        undoable = [
            r
            for r in runs
            if r["dag_id"] != "progression_undo"
            and r["status"] == Status.SUCCEEDED
            and not r["dry_run"]
            and not r["undone_by"]
            and r["imported"] + r["updated"] > 0
        ]
        if not undoable:
            print(f"no run of {customer.slug} that wrote completions to undo", file=sys.stderr)
            return 1
        print(json.dumps({"customer": customer.slug, "run_id": undoable[-1]["run_id"], "dry_run": False}))
        return 0
    undos = [r for r in runs if r["dag_id"] == "progression_undo"]
    if not undos:
        print("no undo in the ledger yet")
        return 0
    undo = undos[-1]
    undone = next((r for r in runs if r["run_id"] == undo["subject"]), {})
    print(
        f"- undo {undo['run_id']}: {undo['status']}{' (dry run)' if undo['dry_run'] else ''}\n"
        f"    of run {undo['subject']} ({undone.get('dag_id')}: {undone.get('subject')})\n"
        f"    {undo['message']}"
    )
    if undo["report_path"]:
        print(f"    report: {storage_root(customer.storage) / undo['report_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
