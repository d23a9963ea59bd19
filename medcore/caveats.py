"""What a model's own record says against relying on it: trained on a subset, or no better than chance on validation.

One rule, read from the record the trainer wrote (its resolved config and its validation metrics), used by the
model card and by the service (its model list and web page), so a quick `--limit` run is never served or
documented as if it were a finished model.
"""

from __future__ import annotations

import math

from medcore.record import ModelRecord, Task

# The validation figure each task is selected on, and its chance level.
SELECTION_METRIC = {Task.BINARY: "auroc", Task.MULTILABEL: "macro_auroc", Task.MULTICLASS: "balanced_accuracy"}


def chance_level(record: ModelRecord) -> float:
    """What a model that guesses scores on its selection metric: AUROC 0.5, balanced accuracy 1 / classes."""
    return 1.0 / len(record.labels) if record.task is Task.MULTICLASS else 0.5


def training_caveats(record: ModelRecord) -> tuple[str, ...]:
    """Sentences for the card and the page; empty for a model trained on its whole data with a real score."""
    caveats = []
    limit = _training_limit(record)
    if limit is not None:
        caveats.append(
            f"Trained on a subset: at most {limit} samples per split (data.limit / --limit), a quick run, "
            "not a model to rely on."
        )
    validation = record.provenance.metrics.get("val")
    metric = SELECTION_METRIC[record.task]
    score = validation.get(metric) if isinstance(validation, dict) else None
    chance = chance_level(record)
    if isinstance(score, int | float) and not math.isnan(score) and score <= chance:
        caveats.append(
            f"No better than chance on its validation split: {metric} {score:.3f}, chance is {chance:.3f}; "
            "its outputs carry no information."
        )
    return tuple(caveats)


def _training_limit(record: ModelRecord) -> int | None:
    for where in (record.provenance.config.get("data"), record.provenance.data):
        limit = where.get("limit") if isinstance(where, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit
    return None
