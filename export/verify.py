"""The checks every written ONNX file passes before it replaces anything: checker, contract, record, parity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import onnx

from export.contract import check_contract
from export.errors import ExportError
from export.inputs import ParityInputs
from export.metadata import read_record
from export.parity import HEATMAP_TOLERANCE, OOD_TOLERANCE, ParityReport, Reference, check_parity
from medcore.record import ModelRecord, Task


def verify_file(
    path: Path,
    record: ModelRecord,
    reference: Reference,
    inputs: ParityInputs,
    *,
    tolerance: float,
    against: str = "PyTorch",
    heatmap_tolerance: float | None = HEATMAP_TOLERANCE,
    ood_tolerance: float | None = OOD_TOLERANCE,
) -> ParityReport:
    """All checks of a written ONNX file: full checker, contract, embedded record, parity with `reference`."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the graph: {exc}") from exc
    check_contract(onnx.load(str(path), load_external_data=False), record)
    if read_record(path) != record:
        raise ExportError("the record read back from the ONNX metadata differs from the one written")
    return check_parity(
        reference,
        path,
        inputs.batch,
        tolerance=tolerance,
        names=inputs.names,
        against=against,
        softmax=record.task is Task.MULTICLASS,
        heatmap_tolerance=heatmap_tolerance,
        ood_tolerance=ood_tolerance,
    )


def check_destination(path: Path, *, force: bool) -> None:
    """Refuse to replace an existing file unless `force`, and refuse a directory always."""
    if path.is_dir():
        raise IsADirectoryError(f"output path {path} is a directory; give a file name such as model.onnx")
    if path.exists() and git_tracks(path):
        raise FileExistsError(
            f"{path} is a model the repository ships (git tracks it); --force will not replace it: export under "
            "your own --name or --version (models/<name>/<version>/)"
        )
    if path.exists() and not force:
        raise FileExistsError(f"{path} already exists; export under another --version, or pass --force to replace it")


def git_tracks(path: Path) -> bool:
    """Whether `path` is a file committed to the git repository it lies in (False without git or a repository)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "--error-unmatch", "--", path.name],
            cwd=path.resolve().parent,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0
