"""The bundled model's fp16 and int8 variants: what their records claim, checked against the files themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from export_support import REPO

from export import read_record
from export.contract import check_session_contract
from export.inputs import split_inputs
from export.parity import heatmap_consistency
from export.variants import decision_agreement
from medcore.record import VARIANT_FILES

BUNDLED = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0"


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# How far activation(mean heatmap) may sit from the variant's own probabilities: int8 quantises the map
# path and the head separately, so its maps explain its outputs only approximately.
@pytest.mark.parametrize(("variant", "map_bound"), [("fp16", 1e-3), ("int8", 0.1)])
def test_bundled_variant_keeps_the_contract_and_its_claims(variant: str, map_bound: float) -> None:
    fp32_path, path = BUNDLED / VARIANT_FILES["fp32"], BUNDLED / VARIANT_FILES[variant]
    fp32, record = read_record(fp32_path), read_record(path)
    assert (fp32.variant, record.variant) == ("fp32", variant)
    same = {"variant": "fp32", "parity": {}, "thresholds": fp32.thresholds, "ood": fp32.ood}
    assert record.model_copy(update=same) == fp32
    parity = record.parity
    assert parity["reference"] == "fp32" and parity["gate"]["split"] == "val" and parity["gate"]["n"] == 524
    assert parity["decision_agreement"] >= parity["gate"]["min_agreement"] == 0.99
    if variant == "int8":
        assert "static QDQ" in parity["method"] and parity["calibration"]["split"] == "train"
        assert abs(parity["auroc"]["val"]["pneumonia"]["delta"]) <= parity["gate"]["max_delta_auroc"] == 0.005
    session = _session(path)
    check_session_contract(session, record)
    assert path.stat().st_size < 0.6 * fp32_path.stat().st_size

    inputs = split_inputs(record, "val", 64)
    probabilities, heatmaps, scores = session.run(None, {"input": inputs.batch})
    reference = _session(fp32_path).run(None, {"input": inputs.batch})[0]
    assert probabilities.dtype == heatmaps.dtype == np.float32
    assert float(np.max(np.abs(probabilities - reference))) <= parity["max_abs_diff"] + 1e-6
    agreement = decision_agreement(record.task, reference, fp32.thresholds, probabilities, record.thresholds)
    assert agreement >= 0.95  # 64 of the 524 gated images
    assert heatmap_consistency(probabilities, heatmaps, softmax=False) <= map_bound
    # The out-of-distribution output survives, in float32, with the threshold re-set on the variant's own val scores.
    assert fp32.ood is not None and record.ood is not None
    assert record.ood.model_copy(update={"threshold": fp32.ood.threshold}) == fp32.ood
    assert scores.dtype == np.float32 and np.all(np.isfinite(scores))
    fp32_scores = _session(fp32_path).run(["ood_score"], {"input": inputs.batch})[0]
    assert np.corrcoef(scores, fp32_scores)[0, 1] > 0.9


def test_both_variants_are_kept_only_within_99_percent_agreement_and_0005_auroc() -> None:
    import inspect

    from export.fp16 import make_fp16
    from export.quantize import quantize_int8
    from export.variants import Gate, GateError, _check_gate

    for make in (make_fp16, quantize_int8):
        parameters = inspect.signature(make).parameters
        assert (parameters["min_agreement"].default, parameters["max_delta_auroc"].default) == (0.99, 0.005)
    gate = Gate(tolerance=1.0, min_agreement=0.99, max_delta_auroc=0.005)

    def figures(agreement: float, delta: float) -> dict:
        return {"decision_agreement": agreement, "auroc": {"val": {"pneumonia": {"variant": 0.9 + delta, "fp32": 0.9,
                                                                                "delta": delta}}}}  # fmt: skip

    _check_gate(figures(0.99, -0.005), gate, "fp16")
    with pytest.raises(GateError, match=r"agree with fp32 on 98\.90%"):
        _check_gate(figures(0.989, 0.0), gate, "fp16")
    with pytest.raises(GateError, match=r"exceeds the gate 0\.005"):
        _check_gate(figures(1.0, 0.0051), gate, "int8")
