"""A report opens in an office suite other than the readers the project uses: LibreOffice Calc, headless, converts
each sheet to CSV. The sheets' rows are written by the report module itself (sheet XML in a zip), so this is where a
malformed part or a wrong escape would show as a suite refusing the file or changing its text."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess

import pandas as pd
import pytest

from progression.report import write_import_report

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")

AWKWARD = [" leading space", "_x0041_ looks like an escape", "=1+1", "line\nbreak", "<tag> & more", "ünïcödé ✓"]


@pytest.fixture(scope="module")
def soffice():
    if not SOFFICE:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("LibreOffice is required under CI=true (.ci/run installs libreoffice-calc-nogui)")
        pytest.skip("LibreOffice is not installed")
    return SOFFICE


def _sheets_as_csv(soffice: str, workbook: bytes, folder, sheets: int) -> dict[str, list[list[str]]]:
    """Each sheet's cells as LibreOffice shows them, by sheet name."""
    (folder / "report.xlsx").write_bytes(workbook)
    profile = f"-env:UserInstallation=file://{folder / 'profile'}"  # its own profile: runs in parallel never share one
    for number in range(1, sheets + 1):
        # UTF-8, comma-separated, every text quoted as shown; the last token picks the sheet.
        options = f"csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,{number}"
        done = subprocess.run(
            [
                soffice,
                profile,
                "--headless",
                "--convert-to",
                options,
                "--outdir",
                str(folder / "out"),
                str(folder / "report.xlsx"),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
    return {
        path.stem.removeprefix("report-"): list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
        for path in (folder / "out").iterdir()
    }


def test_libreoffice_reads_every_sheet_of_an_import_report_as_written(soffice, tmp_path):
    rows = pd.DataFrame({"E-mail": AWKWARD, "Note": ["a", None, "", "b", "c", "d"]}, dtype="string")
    rows["row"] = range(2, 2 + len(AWKWARD))
    outcomes = pd.DataFrame(
        {
            "row": rows["row"],
            "outcome": ["imported", "rejected", "kept", "imported", "rejected", "updated"],
            "reason": pd.array([None, "invalid e-mail", "already completed", None, "invalid e-mail", None], "string"),
        }
    )
    target = io.BytesIO()
    write_import_report(
        target,
        summary=[("File", "inbox/x.xlsx"), ("Rows read", 6)],
        rows=rows,
        columns=["E-mail", "Note"],
        outcomes=outcomes,
    )
    sheets = _sheets_as_csv(soffice, target.getvalue(), tmp_path, sheets=3)
    summary_sheet, rows_sheet, rejected_sheet = sheets["Summary"], sheets["Rows"], sheets["Rejected"]
    assert summary_sheet[:2] == [["File", "inbox/x.xlsx"], ["Rows read", "6"]]
    assert rows_sheet[0] == ["Row", "E-mail", "Note", "Outcome", "Reason"]
    assert [line[1] for line in rows_sheet[1:]] == AWKWARD
    assert [line[0] for line in rows_sheet[1:]] == [str(n) for n in range(2, 8)]
    assert rejected_sheet == [
        ["E-mail", "Note", "Reason"],
        [AWKWARD[1], "", "invalid e-mail"],
        [AWKWARD[4], "c", "invalid e-mail"],
    ]
