"""What a result says about the out-of-distribution check: the graph's score, the record's rule, plain words.

One place for the wording and the rule, so the REST answer, the page and a DICOM SR say the same thing.
The score comes from the model's `ood_score` output and the flag from `OodSpec.flags` (the record's
threshold, set on validation at export); a model exported without that output has no check, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medcore.record import ModelRecord

OUT_OF_DISTRIBUTION_WARNING = (
    "This image looks unlike the images the model was trained on; its result is not reliable. "
    "Check that it is the kind of image the model is for (see its model card)."
)
NO_CHECK_NOTE = "no out-of-distribution check for this model"
MAX_FLOAT32 = 3.4028234663852886e38


@dataclass(frozen=True)
class OodAssessment:
    score: float | None  # None: the model has no out-of-distribution output
    flagged: bool | None
    warning: str | None  # the plain-words warning for a flagged image

    @property
    def checked(self) -> bool:
        return self.score is not None


def assess(record: ModelRecord, score: float | None) -> OodAssessment:
    """The assessment of one image's score under its model's record."""
    if record.ood is None or score is None:
        return OodAssessment(None, None, None)
    flagged = record.ood.flags(score)
    # A non-finite score (features that overflowed) is flagged; JSON has no NaN or Infinity, so it is sent as the
    # largest float32 instead, which stays above any threshold.
    shown = score if math.isfinite(score) else MAX_FLOAT32
    return OodAssessment(shown, flagged, OUT_OF_DISTRIBUTION_WARNING if flagged else None)
