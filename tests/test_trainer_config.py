"""Training config: defaults < file < flags, strict keys and types, errors naming the value and the allowed set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from trainer.cli import get_args_parser, main, overrides_from_args
from trainer.config import TrainConfig, build_config, load_config, save_config
from trainer.models import ARCHITECTURES


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_file_sets_defaults_and_flags_override(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "run.yaml",
        {"epochs": 5, "optim": {"lr": 0.01, "weight_decay": 0.1}, "model": {"arch": "convnext_femto"}},
    )
    args = get_args_parser().parse_args(
        ["train", "--config", str(path), "--epochs", "7", "--lr", "0.002", "--set", "optim.ema_decay=0.99"]
    )
    config = load_config(args.config, overrides_from_args(args))
    assert config.epochs == 7  # flag beats file
    assert config.optim.lr == 0.002
    assert config.optim.weight_decay == 0.1  # file beats default
    assert config.optim.ema_decay == 0.99  # --set reaches any key
    assert config.model.arch == "convnext_femto"
    assert config.batch_size == TrainConfig().batch_size  # untouched default


def test_json_config_and_resume_flag(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": {"kind": "kermany", "path": "/data/chest_xray"}, "seed": 3}))
    args = get_args_parser().parse_args(["train", "--config", str(path), "--resume", "--limit", "64"])
    config = load_config(args.config, overrides_from_args(args))
    assert (config.data.kind, config.data.path, config.data.limit, config.seed) == (
        "kermany",
        "/data/chest_xray",
        64,
        3,
    )
    assert config.resume == "last"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(None, {"preprocessing.mean": [0.5], "preprocessing.std": [0.2], "augment.rotation": 5})
    save_config(config, tmp_path / "config.yaml")
    again = build_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config
    assert again.preprocessing.mean == (0.5,)


def test_bad_architecture_names_value_and_allowed_set() -> None:
    with pytest.raises(ValueError, match="Invalid architecture 'resnet18'") as info:
        load_config(None, {"model.arch": "resnet18"})
    assert all(arch in str(info.value) for arch in ARCHITECTURES)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data.kind": "dicomdir"}, "Invalid data kind 'dicomdir'. Only medmnist, kermany, nih, mimic, chexpert, csv"),
        (
            {"threshold.policy": "max"},
            "Invalid threshold policy 'max'. Only youden, balanced, fbeta, f1, sensitivity, fixed",
        ),
        ({"device": "tpu"}, "Invalid device 'tpu'. Only auto, cpu, cuda, cuda:<index> are supported."),
        ({"model.stem_stride": 3}, "Invalid model.stem_stride 3. Only 1, 2, 4 are supported."),
        ({"optim.label_smoothing": 0.9}, r"optim.label_smoothing must lie in \[0.0, 0.5\], got 0.9"),
        ({"epochs": 0}, r"epochs must lie in \[1, inf\], got 0"),
        ({"epochs": "ten"}, "config key 'epochs' must be of type int, got 'ten'"),
        ({"optim.lrr": 0.1}, "Unknown config key 'optim.lrr'. Allowed keys: lr, weight_decay"),
        ({"preprocessing.mean": [0.5]}, "preprocessing.mean and preprocessing.std must be given together"),
    ],
)
def test_invalid_values_are_named(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--arch", "vit_b_16", "--output-dir", str(tmp_path)]) == 2
    assert "Invalid architecture 'vit_b_16'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_bundled_config_is_valid() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "pneumoniamnist.yaml")
    assert config.data.kind == "medmnist"
    assert (config.preprocessing.height, config.preprocessing.width, config.preprocessing.crop) == (
        28,
        28,
        "center_square",
    )
    # The example config trains under its own name: its export lands beside the bundled model, never on it.
    bundled = Path(__file__).resolve().parents[1] / "models"
    assert not (bundled / config.name / config.version).exists(), f"{config.name} {config.version} is shipped"


def test_config_data_and_help_never_import_torch() -> None:
    """Config parsing, the data layer and `--help` stay torch-free (export and describe rely on it; --help is fast)."""
    import subprocess
    import sys

    code = (
        "import sys, trainer.config, trainer.data, trainer.data.describe, trainer.cli, trainer.recipe\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for argv in (["--help"], ["train", "--help"], ["describe", "--help"]):
        code = (
            "import sys, runpy\n"
            f"sys.argv = ['trainer', *{argv!r}]\n"
            "try:\n    runpy.run_module('trainer', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert "usage:" in result.stdout


def test_help_texts_are_whole_sentences() -> None:
    import subprocess
    import sys

    for argv in (["--help"], ["train", "--help"], ["describe", "--help"], ["compare", "--help"], ["slurm", "--help"]):
        shown = subprocess.run(
            [sys.executable, "-m", "trainer", *argv], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        paragraphs = shown.split("\n\n")
        description = " ".join(paragraphs[1].split()) if not paragraphs[1].startswith(("positional", "options")) else ""
        if description:
            assert description[-1] in ".)", (
                f"trainer {' '.join(argv)}: the description ends mid-sentence: {description!r}"
            )
