"""The one table of bench/gpu_proof.sh: every step's JSON rows (in the order given), then a verdict line.

    python bench/gpu_table.py OUT/steps.json ... [--title "..."] [--markdown]
    python bench/gpu_table.py --training-rows RUN_DIR OUT.json     # rows of a trainer run (its metrics.json)
    python bench/gpu_table.py --pytest-rows LOG OUT.json           # the closing line of a pytest log

A row: {"section", "what", "value", "reference", "goal", "ok"} (ok: true, false or null when no goal applies).
A step that failed or was skipped leaves {"section", "what", "value": "FAILED ..."/"skipped ...", "ok": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("section", "what", "value", "reference", "goal", "verdict")


def verdict(row: dict[str, Any]) -> str:
    ok = row.get("ok")
    return "-" if ok is None else ("met" if ok else "NOT MET")


def cells(row: dict[str, Any]) -> list[str]:
    return [str(row.get(name, "") or "") for name in COLUMNS[:-1]] + [verdict(row)]


def render(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    table = [list(COLUMNS), *(cells(row) for row in rows)]
    if markdown:
        lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in table[1:]]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
                     for line in table)  # fmt: skip


def training_rows(run_dir: Path) -> list[dict[str, Any]]:
    """What a short training run shows: its speed per epoch and its val/test AUROC (test read once, here)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics.get("history") or []
    speeds = ", ".join(f"{row['images_per_second']:.0f}" for row in history)
    rows = [{"section": "training", "what": f"python -m trainer train, {metrics.get('device')}, {len(history)} epochs",
             "value": f"{speeds} img/s per epoch, {metrics.get('wall_seconds')} s in all", "reference": "",
             "goal": "", "ok": None}]  # fmt: skip
    for split in ("val", "test"):
        figures = metrics.get(split) or {}
        auroc, n = figures.get("auroc", figures.get("macro_auroc")), figures.get("n")
        value = "n/a" if auroc is None else f"AUROC {auroc:.3f} (n={n})"
        rows.append({"section": "training", "what": f"{split} split, best epoch {metrics.get('best_epoch')}",
                     "value": value, "reference": "", "goal": "", "ok": None})  # fmt: skip
    return rows


def pytest_rows(log: Path) -> list[dict[str, Any]]:
    """The closing summary line of a pytest run (passed / failed / skipped)."""
    lines = [line.strip("= ") for line in log.read_text(errors="replace").splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line
                    or "skipped" in line)), "no summary line")  # fmt: skip
    failed = "failed" in summary or "error" in summary or summary == "no summary line"
    return [{"section": "tests", "what": "GPU tests (decode equality, I/O binding on CUDA)", "value": summary,
             "reference": "", "goal": "all pass", "ok": not failed}]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", type=Path, nargs="*")
    parser.add_argument("--title", default="")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--training-rows", nargs=2, type=Path, metavar=("RUN_DIR", "OUT"))
    parser.add_argument("--pytest-rows", nargs=2, type=Path, metavar=("LOG", "OUT"))
    args = parser.parse_args(argv)
    if args.training_rows:
        args.training_rows[1].write_text(json.dumps(training_rows(args.training_rows[0]), indent=1))
        return 0
    if args.pytest_rows:
        args.pytest_rows[1].write_text(json.dumps(pytest_rows(args.pytest_rows[0]), indent=1))
        return 0
    rows: list[dict[str, Any]] = []
    for path in args.steps:
        if not path.is_file():
            rows.append({"section": path.stem, "what": "(step wrote no result)", "value": "FAILED", "ok": False})
            continue
        rows += json.loads(path.read_text())
    if args.title:
        print(args.title + ("\n" if args.markdown else ""))
    print(render(rows, markdown=args.markdown))
    failed = [row for row in rows if row.get("ok") is False]
    print(f"\n{len(rows)} rows; goals met {sum(r.get('ok') is True for r in rows)}, not met {len(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
