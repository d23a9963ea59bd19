"""The CUDA training code paths, run on the CPU: autocast (bf16, and fp16 with a GradScaler), channels-last
tensors, torch.compile with an EMA. No GPU here: the same functions run with CPU autocast and the `eager`
compile backend; bench/gpu_proof.sh runs them on CUDA."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainer.checkpoint import model_from_checkpoint
from trainer.config import OptimConfig, load_config
from trainer.data import load_data, make_dataset
from trainer.engine import evaluate, train_one_epoch
from trainer.optim import build_scheduler
from trainer.recipe import resolve_recipe
from trainer.run import build_ema, build_run, compile_models, to_checkpoint
from trainer.runtime import Precision, resolve_precision

CPU = torch.device("cpu")


def tiny_net() -> nn.Module:
    """A small convolutional network (the functions under test take any module; ConvNeXt is slow on CPU fp16)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.GELU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 1),
    )  # fmt: skip


def batches(count: int = 8, size: int = 32) -> DataLoader[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(count, 1, size, size, generator=generator)
    targets = torch.randint(0, 2, (count, 1), generator=generator).float()
    return DataLoader(TensorDataset(images, targets), batch_size=4)


def one_epoch(model: nn.Module, precision: Precision, loader: DataLoader[tuple[torch.Tensor, ...]]) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = build_scheduler(optimizer, OptimConfig(schedule="constant", warmup_epochs=0), len(loader), 1)
    scaler = precision.grad_scaler()
    train_one_epoch(model, nn.BCEWithLogitsLoss(), optimizer, scheduler, scaler, loader, precision, progress=False)


def test_precision_choice() -> None:
    bf16 = resolve_precision(CPU, amp=True, amp_dtype="bf16", channels_last=True)
    assert (bf16.dtype, bf16.channels_last, bf16.needs_scaler) == (torch.bfloat16, True, False)
    assert bf16.describe() == "cpu bfloat16, channels-last"
    fp16 = resolve_precision(CPU, amp=True, amp_dtype="fp16")
    assert fp16.dtype == torch.float16 and fp16.needs_scaler and fp16.grad_scaler().is_enabled()
    assert not fp16.channels_last  # None: channels-last on CUDA only
    assert resolve_precision(CPU, amp=False, amp_dtype="bf16").dtype is None
    with pytest.raises(ValueError, match="Invalid amp_dtype 'int8'"):
        resolve_precision(CPU, amp=True, amp_dtype="int8")
    with pytest.raises(ValueError, match="Invalid amp_dtype 'fp8'"):
        load_config(overrides={"amp_dtype": "fp8"})


def test_bf16_autocast_and_channels_last_train_and_evaluate() -> None:
    precision = resolve_precision(CPU, amp=True, amp_dtype="bf16", channels_last=True)
    model = precision.place(tiny_net())
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.weight.is_contiguous(memory_format=torch.channels_last)
    seen: list[tuple[torch.dtype, bool]] = []

    def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    hook = stem.register_forward_hook(record)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one_epoch(model, precision, batches())
    assert seen and all(entry == (torch.bfloat16, True) for entry in seen)  # autocast and the layout reached the convs
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if v.is_floating_point())
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())  # master fp32
    predictions = evaluate(model, nn.BCEWithLogitsLoss(), batches(), precision, progress=False)
    hook.remove()
    assert predictions.prob.dtype == np.float32 and predictions.prob.shape == (8, 1)
    assert np.isfinite(predictions.prob).all() and np.isfinite(predictions.loss)


def test_fp16_grad_scaler_scales_and_skips_overflowing_steps() -> None:
    precision = resolve_precision(CPU, amp=True, amp_dtype="fp16")
    model = precision.place(tiny_net())
    scaler = precision.grad_scaler()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = build_scheduler(optimizer, OptimConfig(schedule="constant", warmup_epochs=0), 2, 1)
    loader = batches(count=16)  # 4 steps
    start = scaler.get_scale()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(model, nn.BCEWithLogitsLoss(), optimizer, scheduler, scaler, loader, precision, progress=False)
    # fp16 gradients at the initial scale (65536) may overflow once or twice: those steps are skipped and the
    # scale halved each time; the others are taken (growth only comes after 2000 clean steps).
    assert scaler.get_scale() in (start, start / 2, start / 4)
    assert any(not torch.equal(initial[k], v) for k, v in model.state_dict().items() if v.is_floating_point())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    scale = scaler.get_scale()
    loader = batches(count=4)  # one step

    class Overflow(nn.Module):
        def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(logits, targets) * float("inf")

    train_one_epoch(model, Overflow(), optimizer, scheduler, scaler, loader, precision, progress=False)
    assert scaler.get_scale() == scale * 0.5  # inf gradients: the step was skipped and the scale halved
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_ema_built_before_compile_evaluates_its_own_weights() -> None:
    model = tiny_net()
    ema = build_ema(model, 0.5)
    assert ema is not None and build_ema(model, 0.0) is None
    compile_models(model, ema, backend="eager")  # the code path of `compile: true`, with a CPU-cheap backend
    images = next(iter(batches()))[0]
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)  # the live weights move on; the EMA copy has not been updated
    plain = tiny_net().eval()
    plain.load_state_dict(ema.module.state_dict())
    model.eval(), ema.eval()
    with torch.no_grad():
        torch.testing.assert_close(ema(images), plain(images))
        assert not torch.allclose(ema(images), model(images))


@pytest.mark.slow
def test_compiled_run_evaluates_the_weights_it_saves(tmp_path: Path) -> None:
    """A run with an EMA and a compiled network: what validation scores is what the checkpoint holds."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    npz = tmp_path / "pneumoniamnist_synthetic.npz"
    np.savez(npz, **arrays)
    config = load_config(overrides={
        "data.kind": "medmnist", "data.path": str(npz), "model.arch": "convnext_atto", "model.stem_stride": 2,
        "batch_size": 8, "progress": False, "output_dir": str(tmp_path / "out"), "device": "cpu",
        "optim.ema_decay": 0.5, "preprocessing.height": 16, "preprocessing.width": 16,
    })  # fmt: skip
    data = load_data(config.data)
    recipe = resolve_recipe(config.preprocessing, data, partial(make_dataset, config=config.data))
    run = build_run(config, data, recipe, None)
    assert run.ema is not None
    compile_models(run.model, run.ema, backend="eager")
    train_one_epoch(run.train_model, run.criterion, run.optimizer, run.scheduler, run.scaler, run.train_loader,
                    run.precision, ema=run.ema, progress=False)  # fmt: skip
    scored = evaluate(run.eval_model, run.eval_criterion, run.val_loader, run.precision, progress=False)
    saved = run.precision.place(model_from_checkpoint(to_checkpoint(run, 0, {"pneumonia": 0.5}, {})))
    reloaded = evaluate(saved, run.eval_criterion, run.val_loader, run.precision, progress=False)
    np.testing.assert_array_equal(scored.prob, reloaded.prob)
    online = evaluate(run.model, run.eval_criterion, run.val_loader, run.precision, progress=False)
    assert not np.array_equal(online.prob, scored.prob)  # the EMA differs from the online weights after 2 steps
