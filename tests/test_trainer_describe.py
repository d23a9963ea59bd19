"""`python -m trainer describe`: the same data flags as training, a JSON report, no image decoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import build_mimic, build_nih, covid_images, kermany_images

from trainer.cli import main
from trainer.data.nih import NIH_LABELS


@pytest.fixture
def images(shared_data: Path) -> list:
    return kermany_images(shared_data) + covid_images(shared_data)


def _describe(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict]:
    code = main(["describe", *flags])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


def test_describe_nih_counts_per_split_and_label(
    tmp_path: Path, images: list, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_nih(tmp_path / "nih", images)
    code, report = _describe(capsys, "--data-kind", "nih", "--data-path", str(root), "--val-fraction", "0.2")
    assert code == 0
    assert report["task"] == "multilabel" and report["labels"] == list(NIH_LABELS)
    splits = report["splits"]
    assert sum(s["samples"] for s in splits.values()) == len(images)
    assert splits["test"]["samples"] == len((root / "test_list.txt").read_text().split())
    for split in splits.values():
        counts = split["labels"]["Pneumonia"]
        assert counts["positive"] + counts["negative"] + counts["unknown"] == split["samples"]
        assert split["patients"] <= split["samples"]
    total_pneumonia = sum(s["labels"]["Pneumonia"]["positive"] for s in splits.values())
    assert total_pneumonia == sum(im.pneumonia for im in images)
    assert report["leakage"]["patients_in_several_splits"] == 0
    assert report["problems"]["skipped"] == 0 and report["training_would_stop"] is False


def test_describe_reports_missing_files_without_decoding(
    tmp_path: Path, images: list, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_nih(tmp_path / "nih", images)
    gone = sorted(root.glob("images_001/images/*.png"))[:2]
    for path in gone:
        path.unlink()
    junk = sorted(root.glob("images_002/images/*.png"))[0]
    junk.unlink()
    junk.write_text("not an image: describe only checks that files exist")
    code, report = _describe(capsys, "--data-kind", "nih", "--data-path", str(root))
    assert code == 1 and report["training_would_stop"] is True
    missing = report["problems"]["reasons"]["name files that do not exist"]
    assert missing["count"] == 2 and {Path(p).name for p in missing["first"]} == {p.name for p in gone}
    assert sum(s["samples"] for s in report["splits"].values()) == len(images) - 2  # the junk file counts: not decoded
    code, report = _describe(capsys, "--data-kind", "nih", "--data-path", str(root), "--skip-bad")
    assert code == 0 and report["training_would_stop"] is False


def test_describe_mimic_counts_follow_the_uncertainty_policy(
    tmp_path: Path, images: list, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_mimic(tmp_path / "mimic", images, uncertain_first=True)  # one Pneumonia cell is -1 (set by the test)
    flags = ["--data-kind", "mimic", "--data-path", str(root), "--blank", "zeros"]
    counts = {}
    for policy in ("ignore", "ones"):
        code, report = _describe(capsys, *flags, "--uncertainty", f"zeros,Pneumonia={policy}")
        assert code == 0
        counts[policy] = [sum(s["labels"]["Pneumonia"][k] for s in report["splits"].values())
                          for k in ("positive", "negative", "unknown")]  # fmt: skip
    positives = sum(im.pneumonia for im in images)
    assert counts["ignore"] == [positives - 1, len(images) - positives, 1]
    assert counts["ones"] == [positives, len(images) - positives, 0]
    assert report["uncertainty"]["Pneumonia"] == "ones" and report["uncertainty"]["Edema"] == "zeros"


def test_describe_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "--data-kind", "nih", "--data-path", str(tmp_path / "nowhere")]) == 2
    assert "NIH folder" in capsys.readouterr().err
    assert main(["describe", "--data-kind", "dicomdir", "--data-path", str(tmp_path)]) == 2
    assert "Invalid data kind 'dicomdir'" in capsys.readouterr().err
