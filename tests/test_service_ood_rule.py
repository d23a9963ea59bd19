"""The out-of-distribution rule a result is built from: the record's threshold, plain words, and JSON-safe scores."""

from __future__ import annotations

import json

from test_record import OOD, record_dict

from medcore.record import ModelRecord
from service.ood import MAX_FLOAT32, OUT_OF_DISTRIBUTION_WARNING, assess


def test_the_record_threshold_decides_and_a_flag_carries_the_warning() -> None:
    record = ModelRecord.from_dict(record_dict(ood=OOD))
    inside, outside = assess(record, 21.5), assess(record, 30.0)
    assert (inside.score, inside.flagged, inside.warning) == (21.5, False, None)
    assert (outside.flagged, outside.warning) == (True, OUT_OF_DISTRIBUTION_WARNING)


def test_a_non_finite_score_is_flagged_and_stays_valid_json() -> None:
    record = ModelRecord.from_dict(record_dict(ood=OOD))
    for score in (float("nan"), float("inf")):
        result = assess(record, score)
        assert result.flagged is True and result.score == MAX_FLOAT32
        json.loads(json.dumps({"ood_score": result.score}, allow_nan=False))


def test_a_model_without_the_check_gives_nulls() -> None:
    record = ModelRecord.from_dict(record_dict())
    result = assess(record, None)
    assert (result.score, result.flagged, result.warning, result.checked) == (None, None, None, False)
    assert assess(record, 3.0).score is None  # a stray score without a spec is not read
