"""The import report of a 1M-row file, written by each candidate workbook writer: seconds and peak memory.

    .venv/bin/python bench/report_writers.py [--rows 1000000] [--writers project,openpyxl,xlsxwriter,rustpy]

The frames have the shape the report stage gets from a 1M-row activity file (three text columns as read, the row
number; 1% rejected, 1% duplicates, 1% kept, the rest imported without a reason), made once and stored as Parquet
as the stages before the report store them. Each writer runs in a fresh process that reads the Parquet back, so
its peak RSS is its own; the frames are in that figure (the `frames only` line is the floor). Every candidate
writes the same sheets (Summary, Rows, Rejected) with every text cell as text, into a BytesIO as the report stage
does; `project` is progression.report.write_import_report, the one the pipeline calls.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]

COLUMNS = ["User email", "Content uuid", "Completion date"]
WRITERS = ("project", "openpyxl", "xlsxwriter", "rustpy")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def frames(rows: int):
    """`rows` input rows as text plus their outcomes, as the report stage has them."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(13)
    users, days = rng.integers(0, 50_000, rows), rng.integers(0, 700, rows)
    dates = (pd.Timestamp("2025-06-30") - pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame(
        {
            COLUMNS[0]: pd.Series(users).astype(str).radd("user").add("@example.com").astype("string"),
            COLUMNS[1]: pd.Series(rng.integers(0, 2_000, rows))
            .map("{:08d}-0000-4000-8000-000000000000".format)
            .astype("string"),
            COLUMNS[2]: pd.Series(dates, dtype="string").mask(rng.random(rows) < 0.05),
            "row": np.arange(2, rows + 2, dtype="int64"),
        }
    )
    draw = rng.random(rows)
    outcome = np.select([draw < 0.01, draw < 0.02, draw < 0.03], ["rejected", "imported", "kept"], "imported")
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")
    reason[draw < 0.01] = "unknown user: user" + frame[COLUMNS[0]][draw < 0.01]
    duplicate = (draw >= 0.01) & (draw < 0.02)
    reason[duplicate] = (
        "same user and content as row "
        + (frame["row"][duplicate] - 1).astype(str)
        + "; counted once with the earliest date"
    )
    reason[(draw >= 0.02) & (draw < 0.03)] = "already completed; kept (on_existing: keep_earliest)"
    outcomes = pd.DataFrame({"row": frame["row"], "outcome": outcome, "reason": reason})
    summary = [
        ("File", "inbox/activities/bench.xlsx"),
        ("Rows read", rows),
        ("Rows rejected", int((draw < 0.01).sum())),
    ]
    return summary, frame, outcomes


def _sheets(summary, rows, outcomes):
    """The three sheets as (name, headers, list of row lists): what the candidates are given to write."""
    rejected = outcomes["outcome"].eq("rejected").to_numpy()
    body = rows[COLUMNS].to_numpy(dtype=object, na_value=None)
    every = [
        [n, *values, o, r]
        for n, values, o, r in zip(
            rows["row"].tolist(),
            body.tolist(),
            outcomes["outcome"].tolist(),
            outcomes["reason"].to_numpy(dtype=object, na_value=None).tolist(),
        )
    ]
    return [
        ("Summary", ["Label", "Value"], [list(pair) for pair in summary]),
        ("Rows", ["Row", *COLUMNS, "Outcome", "Reason"], every),
        ("Rejected", COLUMNS, body[rejected].tolist()),
    ]


def write_openpyxl(target, summary, rows, outcomes) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)
    for name, headers, values in _sheets(summary, rows, outcomes):
        ws = wb.create_sheet(name)
        ws.append(headers)
        for row in values:
            # a text cell that looks like a formula must be typed as text; the rest go in as they are
            ws.append([_text_cell(ws, v, WriteOnlyCell) if isinstance(v, str) and v[:1] in "=+-@" else v for v in row])
    wb.save(target)


def _text_cell(ws, value, cell_type):
    cell = cell_type(ws, value=value)
    cell.data_type = "s"
    return cell


def write_xlsxwriter(target, summary, rows, outcomes) -> None:
    import xlsxwriter

    wb = xlsxwriter.Workbook(
        target,
        {"constant_memory": True, "strings_to_formulas": False, "strings_to_numbers": False, "strings_to_urls": False},
    )
    for name, headers, values in _sheets(summary, rows, outcomes):
        ws = wb.add_worksheet(name)
        ws.write_row(0, 0, headers)
        for index, row in enumerate(values, 1):
            ws.write_row(index, 0, row)
    wb.close()


def write_rustpy(target, summary, rows, outcomes) -> None:
    """Whole columns through Arrow: no Python object per cell."""
    import pyarrow as pa
    import rustpy_xlsxwriter

    rejected = outcomes["outcome"].eq("rejected").to_numpy()
    every = pa.table(
        [
            pa.array(rows["row"]),
            *(pa.array(rows[c]) for c in COLUMNS),
            pa.array(outcomes["outcome"]),
            pa.array(outcomes["reason"]),
        ],
        names=["Row", *COLUMNS, "Outcome", "Reason"],
    )
    rustpy_xlsxwriter.write_worksheets(
        [
            ("Summary", [{"Label": label, "Value": value} for label, value in summary]),
            ("Rows", every),
            ("Rejected", every.select(list(range(1, 1 + len(COLUMNS)))).filter(pa.array(rejected))),
        ],
        target,
        bold_headers=True,
        freeze_panes={"Rows": {"row": 1, "col": 0}, "Rejected": {"row": 1, "col": 0}},
    )


def write_project(target, summary, rows, outcomes) -> None:
    from progression.report import write_import_report

    write_import_report(target, summary=summary, rows=rows, columns=COLUMNS, outcomes=outcomes)


def child(writer: str, folder: Path) -> dict:
    import pandas as pd

    summary = [tuple(pair) for pair in json.loads((folder / "summary.json").read_text())]
    frame, outcomes = pd.read_parquet(folder / "rows.parquet"), pd.read_parquet(folder / "outcomes.parquet")
    floor = peak_mb()
    if writer == "frames":
        return {"peak_mb": floor}
    write = globals()[f"write_{writer}"]
    started = time.perf_counter()
    buffer = io.BytesIO()  # as the report stage does, before it stores the bytes
    write(buffer, summary, frame, outcomes)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": peak_mb(), "frames_mb": floor, "file_mb": len(buffer.getvalue()) / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writers", default=",".join(WRITERS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    print(f"import report of {args.rows:,} rows: Summary, Rows ({len(COLUMNS) + 3} columns), Rejected\n")
    print("| writer | seconds | peak MB | file MB |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        summary, frame, outcomes = frames(args.rows)
        (Path(folder) / "summary.json").write_text(json.dumps(summary))
        frame.to_parquet(Path(folder) / "rows.parquet")
        outcomes.to_parquet(Path(folder) / "outcomes.parquet")
        del frame, outcomes
        for writer in ["frames", *args.writers.split(",")]:
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            done = subprocess.run(
                [sys.executable, __file__, "--child", writer, folder], capture_output=True, text=True, env=env
            )
            if done.returncode != 0:
                raise SystemExit(f"{writer} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if writer == "frames":
                print(f"| frames only (no writer) | | {result['peak_mb']:.0f} | |")
            else:
                print(
                    f"| {writer} | {result['seconds']:.1f} | {result['peak_mb']:.0f} | {result['file_mb']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
