"""The out-of-distribution score, in the graph: a Mahalanobis distance of the pooled features to the training set.

Method. The feature is the pooled vector the classifier's head reads, taken where the head starts: for
ConvNeXt the global-average-pooled map before the head's LayerNorm (the norm would divide away the
feature's scale, and how strongly an image excites the network is much of what separates a chest film
from a photograph), for ResNet the pooled vector entering `fc`. Export runs the training split (read
through the trainer's data layer and medcore's preprocessing, as training saw it) through the graph,
fits the mean and a Ledoit-Wolf-shrunk covariance (one covariance for all classes: the binary and few-label
tasks here gave no class-conditional gain worth a second set of statistics, and shrinkage keeps the inverse
stable when the feature size approaches the sample count), and appends nodes that compute
`ood_score = || (f - mean) @ W ||_2` with `W = cov^-1/2`, i.e. the Mahalanobis distance. The threshold is the
`kept_fraction` quantile of the validation split's scores, so about that share of in-distribution images
passes. An energy score (-logsumexp of the logits) was measured beside it on the bundled 28-px model with
`bench/ood_sets.py`, thresholded on the same validation images: a binary head has one logit, so energy is
only a function of the confidence, and it flagged none of the 106 non-chest images (photographs, documents,
screenshots, CT/MR/US DICOMs), which the model answers confidently; this distance flagged all 106.

The nodes come after the features, so the network's own outputs are untouched, they are named `ood/...`
so the fp16 and int8 converters can leave them in float32, and the same code adds the score to an already
exported file (graph surgery), since the feature tensor is found from the graph itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.contract import OUTPUT_NAME
from export.errors import ExportError
from export.parity import CHUNK, open_session
from medcore.record import ONNX_BATCH_AXIS, ONNX_INPUT_NAME, ONNX_OOD_OUTPUT_NAME, ModelRecord, OodSpec

OOD_PREFIX = "ood/"
FEATURES_OUTPUT = "ood/features"
DEFAULT_KEPT_FRACTION = 0.95
# Training images the statistics are fitted on (a fixed random subset when the split is larger).
DEFAULT_FIT_SAMPLES = 5000
FIT_SEED = 0
# Ops between the pooled features and the head's linear layer that only reshape them (or normalise, see above).
_RESHAPING = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")
_ACTIVATIONS = ("Sigmoid", "Softmax")


@dataclass(frozen=True)
class MahalanobisFit:
    """The training features' mean [C] and whitening matrix W [C, C] (W @ W.T is the shrunk precision)."""

    mean: np.ndarray
    whitening: np.ndarray
    shrinkage: float
    samples: int

    def score(self, features: np.ndarray) -> np.ndarray:
        """The reference computation of the graph's `ood_score`: || (f - mean) @ W ||_2 per row, in float64."""
        centred = features.reshape(len(features), -1).astype(np.float64) - self.mean
        return np.sqrt(np.sum((centred @ self.whitening) ** 2, axis=1))


def feature_tensor(model: onnx.ModelProto) -> str:
    """The name of the pooled-feature tensor the head reads (see the module docstring), found from the graph.

    From the activation that makes `probabilities`, back through the linear layer (Gemm or MatMul+Add),
    then through reshaping ops and at most one LayerNormalization.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get(OUTPUT_NAME)
    if node is None or node.op_type not in _ACTIVATIONS:
        raise ExportError(f"the graph's {OUTPUT_NAME!r} is not made by a Sigmoid or Softmax; cannot find the head")
    node = producers.get(node.input[0])
    if node is not None and node.op_type == "Add":  # MatMul + bias
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type == "MatMul"), None)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise ExportError("the head's linear layer (Gemm or MatMul) was not found before the activation")
    tensor = node.input[0]
    while tensor in producers and producers[tensor].op_type in (*_RESHAPING, "LayerNormalization"):
        previous = producers[tensor]
        tensor = previous.input[0]
        if previous.op_type == "LayerNormalization":
            break
    return tensor


def features_model(model: onnx.ModelProto, tensor: str) -> bytes:
    """A copy of the graph that also outputs `tensor` (flattened to [N, C]) as FEATURES_OUTPUT."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.node.append(helper.make_node("Flatten", [tensor], [FEATURES_OUTPUT], axis=1, name="ood/features"))
    copy.graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, None))
    return copy.SerializeToString()


def run_features(model: bytes | ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """FEATURES_OUTPUT [N, C] of a `features_model` (bytes or a session) for a float32 NCHW batch, in chunks."""
    session = open_session(model) if isinstance(model, bytes) else model
    parts = [
        session.run([FEATURES_OUTPUT], {ONNX_INPUT_NAME: batch[i : i + CHUNK]})[0] for i in range(0, len(batch), CHUNK)
    ]
    return np.concatenate(parts).astype(np.float64)


def fit_mahalanobis(features: np.ndarray) -> MahalanobisFit:
    """Mean and Ledoit-Wolf-shrunk covariance of `features` [N, C] -> the whitening W = cov^-1/2."""
    n, c = features.shape
    if n < 2:
        raise ExportError(f"fitting the out-of-distribution score needs at least 2 training images, got {n}")
    mean = features.mean(axis=0)
    centred = features - mean
    cov = centred.T @ centred / n
    shrinkage = _ledoit_wolf_shrinkage(centred, cov)
    target = np.trace(cov) / c
    shrunk = (1 - shrinkage) * cov + shrinkage * target * np.eye(c)
    values, vectors = np.linalg.eigh(shrunk)
    floor = max(float(values.max()) * 1e-12, 1e-12)
    whitening = vectors @ np.diag(1.0 / np.sqrt(np.maximum(values, floor))) @ vectors.T
    return MahalanobisFit(mean=mean, whitening=whitening, shrinkage=float(shrinkage), samples=n)


def _ledoit_wolf_shrinkage(centred: np.ndarray, cov: np.ndarray) -> float:
    """Ledoit & Wolf (2004)'s optimal weight of the scaled identity in the shrunk covariance."""
    n, c = centred.shape
    mu = np.trace(cov) / c
    delta = np.sum((cov - mu * np.eye(c)) ** 2) / c
    squares = centred**2
    beta = np.sum(squares.T @ squares / n - cov**2) / (c * n)
    return float(min(max(beta, 0.0), delta) / delta) if delta > 0 else 1.0


def append_score(model: onnx.ModelProto, tensor: str, fit: MahalanobisFit) -> None:
    """Append the nodes computing ONNX_OOD_OUTPUT_NAME [batch] from `tensor` to `model`, in place."""
    if any(out.name == ONNX_OOD_OUTPUT_NAME for out in model.graph.output):
        raise ExportError(f"the graph already has an {ONNX_OOD_OUTPUT_NAME!r} output")
    constants: dict[str, np.ndarray] = {
        "ood/mean": fit.mean.astype(np.float32)[None, :],
        "ood/whitening": fit.whitening.astype(np.float32),
        "ood/axes": np.array([1], dtype=np.int64),
    }
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    model.graph.node.extend(
        [
            helper.make_node("Flatten", [tensor], ["ood/flat"], axis=1, name="ood/flatten"),
            helper.make_node("Sub", ["ood/flat", "ood/mean"], ["ood/centred"], name="ood/centre"),
            helper.make_node("MatMul", ["ood/centred", "ood/whitening"], ["ood/whitened"], name="ood/whiten"),
            helper.make_node("Mul", ["ood/whitened", "ood/whitened"], ["ood/squares"], name="ood/square"),
            helper.make_node("ReduceSum", ["ood/squares", "ood/axes"], ["ood/sum"], keepdims=0, name="ood/sum"),
            helper.make_node("Sqrt", ["ood/sum"], [ONNX_OOD_OUTPUT_NAME], name="ood/distance"),
        ]
    )
    model.graph.output.append(helper.make_tensor_value_info(ONNX_OOD_OUTPUT_NAME, TensorProto.FLOAT, [ONNX_BATCH_AXIS]))


def ood_node_names(model: onnx.ModelProto) -> list[str]:
    """The nodes `append_score` added (kept in float32 by the fp16 and int8 converters)."""
    return [node.name for node in model.graph.node if node.name.startswith(OOD_PREFIX)]


def run_scores(model: bytes | ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """ONNX_OOD_OUTPUT_NAME [N] of a graph (bytes or a session) for a float32 NCHW batch, in chunks, as float64."""
    session = open_session(model) if isinstance(model, bytes) else model
    parts = [
        session.run([ONNX_OOD_OUTPUT_NAME], {ONNX_INPUT_NAME: batch[i : i + CHUNK]})[0]
        for i in range(0, len(batch), CHUNK)
    ]
    return np.concatenate(parts).astype(np.float64)


def threshold_for(scores: np.ndarray, kept_fraction: float) -> float:
    """The smallest score at or below which `kept_fraction` of `scores` lie (flagged: score > threshold)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        raise ExportError("no finite out-of-distribution score on the threshold split")
    return float(np.quantile(finite, kept_fraction, method="higher"))


def add_ood_score(
    model: onnx.ModelProto,
    record: ModelRecord,
    *,
    kept_fraction: float = DEFAULT_KEPT_FRACTION,
    fit_samples: int = DEFAULT_FIT_SAMPLES,
) -> tuple[ModelRecord, MahalanobisFit]:
    """Fit the score on the record's training split, append it to `model` (in place), set its threshold on val.

    Returns the record with its `ood` spec (to embed in the graph) and the fit (for reference checks).
    """
    from export.inputs import split_inputs

    if not 0 < kept_fraction < 1:
        raise ValueError(f"kept_fraction must lie in (0, 1), got {kept_fraction}")
    if fit_samples < 2:
        raise ValueError(f"fit_samples must be >= 2, got {fit_samples}")
    tensor = feature_tensor(model)
    probe = features_model(model, tensor)
    train = split_inputs(record, "train", fit_samples, seed=FIT_SEED)
    fit = fit_mahalanobis(run_features(probe, train.batch))
    append_score(model, tensor, fit)
    val = split_inputs(record, "val", None)
    scores = run_scores(model.SerializeToString(), val.batch)
    spec = OodSpec(
        threshold=threshold_for(scores, kept_fraction),
        fitted_on="train",
        threshold_split="val",
        kept_fraction=kept_fraction,
        fit={
            "samples": fit.samples,
            "of": train.source,
            "seed": FIT_SEED,
            "features": int(fit.mean.size),
            "feature_tensor": "pooled features entering the head (before its LayerNorm, if any)",
            "covariance": f"shared, Ledoit-Wolf shrinkage {fit.shrinkage:.4f}",
            "threshold_images": len(scores),
        },
    )
    return record.model_copy(update={"ood": spec}), fit
