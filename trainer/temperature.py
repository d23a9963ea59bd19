"""Temperature scaling folded into the network: logits / T by scaling its last linear layer.

The temperature is fitted on validation (trainer.calibration.fit_temperature). Dividing the last
layer's weight and bias by T divides every logit by T, so the exported ONNX model, the service and
every later evaluation see calibrated probabilities with no extra operator. Ranking and arg-max are
unchanged; thresholds are re-chosen on the scaled validation probabilities (the same decisions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from medcore.record import Task
from trainer.calibration import apply_temperature, calibration_summary, fit_temperature
from trainer.checkpoint import Checkpoint, model_from_checkpoint
from trainer.config import TrainConfig
from trainer.thresholds import choose_thresholds


def last_linear(model: nn.Module) -> nn.Linear:
    """The network's output layer: the last nn.Linear in module order (ConvNeXt classifier[-1], ResNet fc)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer to fold a temperature into")
    return linears[-1]


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Scale the output layer in place so that the model's logits are divided by `temperature`."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    layer = last_linear(model)
    layer.weight.div_(temperature)
    if layer.bias is not None:
        layer.bias.div_(temperature)


def temperature_scale(
    checkpoint: Checkpoint,
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
    task: Task,
    config: TrainConfig,
) -> tuple[Checkpoint, dict[str, tuple[np.ndarray, np.ndarray]], dict[str, float], dict[str, Any]]:
    """Fit T on val, fold it into `checkpoint`'s weights, rescale the predictions, re-choose thresholds.

    Returns the new checkpoint (its record carries the new thresholds), the scaled predictions,
    the thresholds and the calibration facts for metrics.json (temperature, ECE before scaling).
    """
    multiclass = task is Task.MULTICLASS
    y_val, p_val = predictions["val"]
    temperature = fit_temperature(y_val, p_val, multiclass)
    scaled = {name: (y, apply_temperature(p, temperature, multiclass)) for name, (y, p) in predictions.items()}
    labels = checkpoint.record.labels
    rule = config.threshold
    thresholds = choose_thresholds(multiclass, scaled["val"][0], scaled["val"][1], labels, rule.policy, rule.value,
                                   beta=rule.beta, target=rule.target_sensitivity)  # fmt: skip
    model = model_from_checkpoint(checkpoint)
    fold_temperature(model, temperature)
    record = checkpoint.record.model_copy(update={"thresholds": thresholds})
    updated = replace(checkpoint, model_state=model.state_dict(), record=record)
    bins = config.report.calibration_bins
    before = {name: calibration_summary(y, p, multiclass, bins)["ece"] for name, (y, p) in predictions.items()}
    return updated, scaled, thresholds, {"temperature": temperature, "before_temperature": before}
