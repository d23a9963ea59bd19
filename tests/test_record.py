"""The model record: a typed, versioned schema that fails loudly and names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medcore.record import RECORD_SCHEMA_VERSION, ModelRecord, RecordError, Task


def record_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "name": "pneumonia",
        "version": "1.0.0",
        "task": "binary",
        "labels": ["pneumonia"],
        "thresholds": {"pneumonia": 0.4},
        "preprocessing": {
            "height": 28,
            "width": 28,
            "channels": 1,
            "crop": "center_square",
            "interpolation": "bilinear",
            "mean": [0.5],
            "std": [0.25],
        },
        "provenance": {"architecture": "convnext_atto", "metrics": {"auroc": 0.97}},
    }
    data.update(overrides)
    return data


def test_round_trip_through_json() -> None:
    record = ModelRecord.from_dict(record_dict())
    again = ModelRecord.from_json(record.to_json())
    assert again == record
    assert again.task is Task.BINARY
    assert again.labels == ("pneumonia",)
    assert json.loads(record.to_json())["preprocessing"]["mean"] == [0.5]


@pytest.mark.parametrize("text", [None, "", "   "])
def test_missing_record_fails(text: str | None) -> None:
    with pytest.raises(RecordError, match="missing"):
        ModelRecord.from_json(text)


def test_unknown_version_names_the_field() -> None:
    with pytest.raises(RecordError, match=r"schema_version.*99"):
        ModelRecord.from_dict(record_dict(schema_version=99))
    data = record_dict()
    del data["schema_version"]
    with pytest.raises(RecordError, match="'schema_version' is missing"):
        ModelRecord.from_dict(data)


def test_malformed_fields_are_named() -> None:
    data = record_dict()
    data["preprocessing"]["height"] = -3
    with pytest.raises(RecordError, match=r"preprocessing\.height"):
        ModelRecord.from_dict(data)
    data = record_dict()
    del data["labels"]
    with pytest.raises(RecordError, match="'labels'"):
        ModelRecord.from_dict(data)
    with pytest.raises(RecordError, match="not valid JSON"):
        ModelRecord.from_json("{not json")
    with pytest.raises(RecordError, match="JSON object"):
        ModelRecord.from_dict(["a list"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"thresholds": {"other": 0.5}}, "thresholds must name exactly"),
        ({"thresholds": {"pneumonia": 1.5}}, r"\[0, 1\]"),
        ({"labels": ["a", "b"], "thresholds": {"a": 0.5, "b": 0.5}}, "exactly one"),
        ({"task": "multiclass"}, "at least two"),
        ({"task": "regression"}, "task"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_inconsistent_records_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        ModelRecord.from_dict(record_dict(**overrides))


def test_normalisation_must_match_channels() -> None:
    data = record_dict()
    data["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    with pytest.raises(RecordError, match="mean has 3 values, channels is 1"):
        ModelRecord.from_dict(data)


OOD = {
    "output": "ood_score",
    "method": "mahalanobis",
    "threshold": 21.5,
    "fitted_on": "train",
    "threshold_split": "val",
    "kept_fraction": 0.95,
    "fit": {"samples": 4708, "features": 320},
}


def test_the_ood_spec_round_trips_and_flags_above_its_threshold() -> None:
    record = ModelRecord.from_dict(record_dict(ood=OOD))
    assert ModelRecord.from_json(record.to_json()) == record
    assert record.ood is not None and record.ood.threshold == 21.5
    assert record.ood.flags(21.6) and not record.ood.flags(21.5) and record.ood.flags(float("nan"))


def test_a_record_without_the_ood_spec_stays_valid_and_writes_no_ood_key() -> None:
    record = ModelRecord.from_dict(record_dict())
    assert record.ood is None
    assert "ood" not in record.to_dict() and "ood" not in json.loads(record.to_json())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"threshold": -1.0}, "ood.threshold"),
        ({"kept_fraction": 1.5}, "ood.kept_fraction"),
        ({"method": "energy"}, "ood.method"),
        ({"fitted_on": ""}, "ood.fitted_on"),
        ({"extra": 1}, "ood.extra"),
    ],
)
def test_a_malformed_ood_spec_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError, match=f"field '{field}'"):
        ModelRecord.from_dict(record_dict(ood={**OOD, **change}))
