"""A quick run is never passed off as a finished model: its record's caveats reach the card, the API and the page.

A model trained with `--limit`, or scoring at or below chance on validation, gets caveats from its own record
(medcore.caveats); the model card and `GET /v1/models` carry them, and the web page shows them in the model panel.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from service_support import TINY_RECORD, build_tiny_model, running_server

from export.card import render_card
from medcore.caveats import chance_level, training_caveats
from medcore.record import ModelRecord
from service.config import BUNDLED_MODEL, Settings

REPO = Path(__file__).resolve().parents[1]


def quick_run(limit: int | None = 150, val: dict[str, Any] | None = None, **changes: Any) -> ModelRecord:
    """TINY_RECORD as `trainer train --limit 150 --epochs 1` records it: the resolved config and val metrics."""
    record = copy.deepcopy({**TINY_RECORD, **changes})
    record["provenance"] = {
        "architecture": "tiny-test",
        "config": {"data": {"kind": "medmnist", "limit": limit}, "epochs": 1},
        "data": {"limit": limit},
        "metrics": {"epoch": 0, "val": val if val is not None else {"auroc": 0.41, "balanced_accuracy": 0.46}},
    }
    return ModelRecord.model_validate(record)


def test_a_limited_run_below_chance_gets_both_caveats() -> None:
    caveats = training_caveats(quick_run())
    assert len(caveats) == 2
    assert "at most 150 samples per split" in caveats[0] and "--limit" in caveats[0]
    assert "auroc 0.410, chance is 0.500" in caveats[1]


@pytest.mark.parametrize(
    ("limit", "val", "expected"),
    [
        (None, {"auroc": 0.97}, 0),
        (150, {"auroc": 0.97}, 1),
        (None, {"auroc": 0.5}, 1),  # at chance: no information either
        (None, {"auroc": float("nan")}, 0),  # not measured (one class in val): nothing to say from it
        (None, {}, 0),
    ],
)
def test_each_caveat_has_its_own_condition(limit: int | None, val: dict[str, Any], expected: int) -> None:
    assert len(training_caveats(quick_run(limit, val))) == expected


def test_chance_is_per_task() -> None:
    multiclass = quick_run(
        None,
        {"balanced_accuracy": 0.30},
        task="multiclass",
        labels=["normal", "bacteria", "virus"],
        thresholds={"normal": 0.5, "bacteria": 0.5, "virus": 0.5},
    )
    assert chance_level(multiclass) == pytest.approx(1 / 3)
    assert "balanced_accuracy 0.300, chance is 0.333" in training_caveats(multiclass)[0]


def test_the_bundled_model_has_none() -> None:
    from export import read_record

    assert training_caveats(read_record(BUNDLED_MODEL)) == ()


def test_the_card_and_the_model_list_carry_them(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model.onnx", quick_run().to_json())
    card = render_card(model, None)
    cautions = [line for line in card.splitlines() if line.startswith("> **Caution.**")]
    assert len(cautions) == 2 and "150 samples" in cautions[0] and "chance" in cautions[1]
    assert card.index("Caution") < card.index("## Intended use")  # at the top, under the device notice
    with running_server(Settings(model_path=model)) as server, server.client() as client:
        (entry,) = client.get("/v1/models").json()["models"]
    assert entry["caveats"] == list(training_caveats(quick_run()))


def test_a_finished_model_lists_no_caveats() -> None:
    with running_server(Settings(model_path=BUNDLED_MODEL)) as server, server.client() as client:
        (entry,) = client.get("/v1/models").json()["models"]
    assert entry["caveats"] == []
    assert "Caution" not in (BUNDLED_MODEL.parent / "MODEL_CARD.md").read_text()


def test_the_page_shows_the_models_caveats() -> None:
    # The page's model panel has the caveat box, and its script fills it from each model's `caveats` (the browser
    # test drives it: tests/test_ui_browser.py::test_a_quick_run_is_flagged_on_the_page).
    html = (REPO / "service" / "ui" / "static" / "index.html").read_text()
    script = (REPO / "service" / "ui" / "static" / "app.js").read_text()
    assert 'id="model-caveats"' in html and 'id="model-caveats-list"' in html
    assert "model.caveats" in script and '$("model-caveats").hidden = caveats.length === 0' in script
