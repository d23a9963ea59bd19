"""The README's steps as written: the quick start's request gets an answer shaped like the README's, its commands exist.

The answer is compared by shape (keys and JSON types, recursively), not by numbers: the default model and its
scores change, the README's example must still show what a client gets.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from service_support import running_server

from service.config import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def section(title: str) -> str:
    """The text of the README section with this heading, up to the next heading of any level."""
    start = README.index(f"\n{title}\n")
    following = re.search(r"\n#{1,6} ", README[start + len(title) + 2 :])
    return README[start : start + len(title) + 2 + (following.start() if following else len(README))]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def shape(value: Any) -> Any:
    """The JSON type tree of a value: dicts keep their keys, lists their items, scalars become type names."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def test_quick_start_request_answers_like_the_readme_shows() -> None:
    quick_start = section("## Quick start")
    (command,) = [line for block in blocks(quick_start, "bash") for line in block.splitlines() if "curl" in line]
    words = shlex.split(command)
    (form,) = [words[i + 1] for i, word in enumerate(words) if word == "-F"]
    field, _, path = form.partition("=@")
    url_path = "/" + next(word for word in words if word.startswith("http://")).split("/", 3)[3]
    image = REPO / path
    assert image.is_file(), f"the quick start posts {path}, which the repository does not have"
    (shown,) = blocks(quick_start, "json")
    with running_server(Settings()) as server, server.client() as client:  # `make serve`'s defaults
        answer = client.post(url_path, files={field: (image.name, image.read_bytes(), "image/jpeg")})
    assert answer.status_code == 200, answer.text
    assert shape(answer.json()) == shape(json.loads(shown))


def test_the_sample_is_a_licensed_paediatric_image() -> None:
    source = (REPO / "scripts" / "sample" / "SOURCE.md").read_text()
    assert "paediatric-chest-xray.jpeg" in source and "CC BY 4.0" in source
    assert (REPO / "scripts" / "sample" / "paediatric-chest-xray.jpeg").stat().st_size < 50_000  # kept small


def test_the_training_environment_has_its_own_make_target() -> None:
    assert "make train-env" in section("## Train")
    dry_run = subprocess.run(["make", "-n", "-B", "train-env"], cwd=REPO, capture_output=True, text=True, check=False)
    assert dry_run.returncode == 0, dry_run.stderr
    assert "pip install" in dry_run.stdout and ".[serve,train,dev]" in dry_run.stdout
    assert "pytest" not in dry_run.stdout  # sets up, runs nothing


def test_the_quick_start_says_how_to_change_the_port() -> None:
    assert "SERVE_PORT=8080 make serve" in section("## Quick start")


def test_the_open_inference_example_runs_and_leaves_no_file_behind(tmp_path: Path) -> None:
    oip = section("### Open Inference Protocol v2 (KServe, Triton clients)")
    (script,) = [block for block in blocks(oip, "bash") if "/infer" in block]
    assert ">" not in script.replace("->", ""), "the example writes a file into the working directory"
    with running_server(Settings()) as server:
        command = script.replace("localhost:8000", server.url.removeprefix("http://"))
        before = sorted(REPO.iterdir())
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [1, 1]
    assert set(outputs) == {"probabilities", "ood_score", "out_of_distribution"}  # the bundled model has the check
    assert sorted(REPO.iterdir()) == before
