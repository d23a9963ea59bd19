"""Model factory, local weights, frozen backbone and head, optimisers, schedules, accumulation, precision choice.

CUDA paths cannot run here: the tests check what is chosen for CUDA (dtype, scaler, compile), not its kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainer.architectures import ARCHITECTURES, CONVNEXT_SIZES
from trainer.config import OptimConfig, TrainConfig, load_config
from trainer.engine import train_one_epoch
from trainer.models import ModelSpec, build_model, freeze_backbone, load_local_weights
from trainer.optim import build_optimizer, build_scheduler, lr_factor
from trainer.run import compile_wanted, optimizer_steps
from trainer.runtime import Precision, resolve_precision

TINY = {"arch": "convnext_atto", "num_outputs": 2, "stem_stride": 2}


def test_architectures_and_channels() -> None:
    assert {"convnext_atto", "convnext_nano", "convnext_tiny", "convnext_base", "convnext_large", "resnet50"} <= set(
        ARCHITECTURES
    )
    assert CONVNEXT_SIZES["convnext_large"] == ((192, 384, 768, 1536), (3, 3, 27, 3))  # torchvision's
    for channels in (1, 3, 5):
        model = build_model(ModelSpec(**TINY, in_channels=channels)).eval()
        assert model(torch.zeros(2, channels, 32, 32)).shape == (2, 2)
    resnet = build_model(ModelSpec("resnet50", 1, in_channels=1, stem_stride=2)).eval()
    assert resnet(torch.zeros(1, 1, 32, 32)).shape == (1, 1)


def test_mlp_head_and_frozen_backbone() -> None:
    model = build_model(ModelSpec(**TINY, head="mlp", head_hidden=16, head_dropout=0.3))
    head = model.classifier[2]
    assert [type(m) for m in head] == [nn.Linear, nn.Dropout, nn.ReLU, nn.Linear]  # the microscopy study's head
    assert head[0].in_features == 320 and head[3].out_features == 2 and head[1].p == 0.3
    frozen = freeze_backbone(model)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.startswith("classifier.2.") for name in trainable) and frozen > 0
    optimizer = build_optimizer(model, OptimConfig())
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)
    with pytest.raises(ValueError, match=r"Invalid head 'deep'\. Only linear, mlp"):
        ModelSpec(**TINY, head="deep")


def test_local_weights_average_an_rgb_stem_and_name_mismatches(tmp_path: Path) -> None:
    rgb = build_model(ModelSpec(**{**TINY, "num_outputs": 1000}, in_channels=3))
    path = tmp_path / "imagenet.pth"
    torch.save(rgb.state_dict(), path)
    grey = build_model(ModelSpec(**TINY, in_channels=1))
    skipped = load_local_weights(grey, path)
    assert skipped == ["classifier.2.weight", "classifier.2.bias"]  # the head differs (1000 vs 2 outputs)
    stem = rgb.state_dict()["features.0.0.weight"]
    torch.testing.assert_close(grey.state_dict()["features.0.0.weight"], stem.sum(dim=1, keepdim=True))
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(grey.features[0](x), rgb.features[0](x.repeat(1, 3, 1, 1)))  # same activations
    other = build_model(ModelSpec("convnext_femto", 2, stem_stride=2))
    with pytest.raises(ValueError, match=r"do not fit this model; shape mismatch \(file vs model\): features\.0\.0"):
        load_local_weights(other, path)
    with pytest.raises(FileNotFoundError, match=r"weights file .*missing\.pth does not exist"):
        load_local_weights(grey, tmp_path / "missing.pth")


def test_optimisers_skip_decay_on_norms_and_biases() -> None:
    model = build_model(ModelSpec(**TINY))
    for name, kind in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        optimizer = build_optimizer(model, OptimConfig(optimizer=name, weight_decay=0.05))
        assert isinstance(optimizer, kind)
        decayed, plain = optimizer.param_groups
        assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in plain["params"])
    with pytest.raises(ValueError, match=r"Invalid optim\.optimizer 'rmsprop'\. Only adamw, adam, sgd"):
        load_config(overrides={"optim.optimizer": "rmsprop"})
    with pytest.raises(ValueError, match=r"Invalid optim\.schedule 'linear'\. Only cosine, exponential, step"):
        load_config(overrides={"optim.schedule": "linear"})


def test_exponential_and_step_schedules() -> None:
    exponential = lr_factor(OptimConfig(schedule="exponential", gamma=0.5, warmup_epochs=0, min_lr=0), 4, 3)
    assert [exponential(s) for s in (0, 3, 4, 8, 11)] == [1.0, 1.0, 0.5, 0.25, 0.25]
    step = lr_factor(OptimConfig(schedule="step", gamma=0.1, step_epochs=2, warmup_epochs=1, min_lr=0), 2, 6)
    # warm-up over 2 steps, then epochs counted after it: 0, 0, 1, 1 -> x1; 2, 2, 3, 3 -> x0.1
    assert [step(s) for s in range(8)] == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1])
    floor = lr_factor(OptimConfig(lr=1e-3, schedule="exponential", gamma=0.01, warmup_epochs=0, min_lr=1e-5), 1, 5)
    assert floor(4) == pytest.approx(1e-2)  # never below min_lr / lr


def test_gradient_accumulation_steps_once_per_group() -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10, 1)).float())
    loader = DataLoader(data, batch_size=2)  # 5 batches
    config = TrainConfig()
    config.optim.accumulate = 2
    assert optimizer_steps(len(loader), config) == 3

    def run(accumulate: int, batch_size: int) -> torch.Tensor:
        torch.manual_seed(1)
        model = nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = build_scheduler(optimizer, OptimConfig(schedule="constant", warmup_epochs=0), 10, 1)
        batches = DataLoader(TensorDataset(data.tensors[0][:8], data.tensors[1][:8]), batch_size=batch_size)
        precision = Precision(torch.device("cpu"), None)
        train_one_epoch(model, nn.BCEWithLogitsLoss(), optimizer, scheduler, precision.grad_scaler(), batches,
                        precision, accumulate=accumulate, progress=False)  # fmt: skip
        assert scheduler.last_epoch == 8 // batch_size // accumulate
        return model.weight.detach().clone()

    # Two batches of 2 accumulated (each loss / 2) equal one batch of 4 (mean loss): the same SGD steps.
    torch.testing.assert_close(run(2, 2), run(1, 4))


def test_precision_choice_for_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    bf16 = resolve_precision(cuda, amp=True)
    assert bf16.dtype == torch.bfloat16 and not bf16.needs_scaler and bf16.channels_last
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    fp16 = resolve_precision(cuda, amp=True)
    assert fp16.dtype == torch.float16 and fp16.needs_scaler  # fp16 needs a GradScaler, bf16 does not
    assert resolve_precision(cuda, amp=False).dtype is None
    cpu = resolve_precision(torch.device("cpu"), amp=True)
    assert cpu.dtype is None and not cpu.channels_last and not cpu.grad_scaler().is_enabled()
    assert compile_wanted(True, fp16) and not compile_wanted(True, cpu) and not compile_wanted(False, fp16)
    assert cpu.describe() == "cpu fp32"
    assert bf16.describe() == "cuda bfloat16, channels-last"
