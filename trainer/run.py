"""The live objects of one training run, and their round trip through a checkpoint (exact resume)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler

from medcore.record import ModelRecord, Preprocessing
from trainer.augment import ClassificationPresetTrain
from trainer.checkpoint import Checkpoint
from trainer.checks import choose_stem_stride
from trainer.config import TrainConfig
from trainer.data import LabeledData, ManifestDataset, make_dataset
from trainer.distributed import eval_shard, local_device, rank, world_size, wrap
from trainer.engine import Batches
from trainer.loss import build_criterion
from trainer.models import ModelSpec, build_model, freeze_backbone, load_local_weights
from trainer.optim import build_optimizer, build_scheduler
from trainer.provenance import build_record, git_commit
from trainer.resume import EpochSampler, SeededSamples
from trainer.runtime import Precision, capture_rng_state, resolve_device, resolve_precision, restore_rng_state

logger = logging.getLogger("trainer")


@dataclass
class Run:
    """The live objects of one run and the progress a checkpoint must carry."""

    config: TrainConfig
    data: LabeledData
    recipe: Preprocessing
    spec: ModelSpec
    precision: Precision
    model: nn.Module  # the bare network: what EMA averages and checkpoints hold
    train_model: nn.Module  # what the training loop calls: `model` in DistributedDataParallel under torchrun
    ema: AveragedModel | None
    criterion: nn.Module
    eval_criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_loader: Batches
    val_loader: Batches
    train_sampler: EpochSampler
    train_samples: SeededSamples
    code_commit: str | None
    start_epoch: int = 0
    start_batch: int = 0  # batches of `start_epoch` already trained (a run stopped mid-epoch)
    last_thresholds: dict[str, float] = field(default_factory=dict)  # of the last validation (for a stop's record)
    best_score: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model


def build_run(config: TrainConfig, data: LabeledData, recipe: Preprocessing, resume: Checkpoint | None) -> Run:
    """Model, EMA, loss, loaders, optimiser and schedule for `config`; continued from `resume` if given."""
    spec = ModelSpec(
        arch=config.model.arch,
        num_outputs=len(data.label_names),
        in_channels=recipe.channels,
        stem_stride=config.model.stem_stride or choose_stem_stride(recipe.height, recipe.width),
        drop_path=config.model.drop_path,
        head=config.model.head,
        head_hidden=config.model.head_hidden,
        head_dropout=config.model.head_dropout,
    )
    if resume is not None and resume.spec != spec:
        raise ValueError(f"checkpoint was trained as {resume.spec}; the config asks for {spec}")
    precision = resolve_precision(local_device(resolve_device(config.device)), config.amp)
    model = build_model(spec)
    if config.model.weights and resume is None:
        skipped = load_local_weights(model, config.model.weights)
        logger.info("loaded %s (%d tensors kept at random init)", config.model.weights, len(skipped))
    if config.model.freeze_backbone:
        logger.info("backbone frozen: %.2fM parameters train no more", freeze_backbone(model) / 1e6)
    model = precision.place(model)
    if compile_wanted(config.compile, precision):
        model.compile()  # in place: parameter names (state dicts, EMA, checkpoints) stay as they are
    ema = None
    if config.optim.ema_decay > 0:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema_decay), use_buffers=True)
    train_labels = data.split("train").labels
    criterion = build_criterion(data.task, train_labels, config.optim.label_smoothing).to(precision.device)
    augment = ClassificationPresetTrain(recipe, config.augment)
    # Order from (seed, epoch), augmentation from (seed, epoch, index): exact resume with workers, mid-epoch too.
    train_samples = SeededSamples(make_dataset(data.split("train"), recipe, config.data, augment), config.seed)
    sampler = EpochSampler(len(train_samples), config.seed, num_replicas=world_size(), rank=rank())
    train_loader = make_loader(train_samples, config, precision, sampler)
    optimizer = build_optimizer(model, config.optim)
    val_set = make_dataset(data.split("val"), recipe, config.data)
    run = Run(
        config=config,
        data=data,
        recipe=recipe,
        spec=spec,
        precision=precision,
        model=model,
        train_model=model,
        ema=ema,
        criterion=criterion,
        eval_criterion=build_criterion(data.task, train_labels).to(precision.device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.optim, optimizer_steps(len(train_loader), config), config.epochs),
        scaler=precision.grad_scaler(),
        train_loader=train_loader,
        val_loader=make_loader(val_set, config, precision, eval_shard(len(val_set))),
        train_sampler=sampler,
        train_samples=train_samples,
        code_commit=git_commit(),
    )
    if resume is not None:
        restore(run, resume)
    run.train_model = wrap(model, precision.device)  # after restore: every rank starts from the same weights
    return run


def optimizer_steps(batches: int, config: TrainConfig) -> int:
    """Optimiser steps per epoch: one per `optim.accumulate` batches, the last group possibly shorter."""
    return -(-batches // config.optim.accumulate)


def compile_wanted(requested: bool, precision: Precision) -> bool:
    """torch.compile only on CUDA; on the CPU a request is logged and ignored (compile time outweighs the gain)."""
    if requested and precision.device.type != "cuda":
        logger.warning("compile=true ignored on %s: torch.compile is used on CUDA only", precision.device)
    return requested and precision.device.type == "cuda"


def make_loader(
    dataset: ManifestDataset | SeededSamples,
    config: TrainConfig,
    precision: Precision,
    sampler: Sampler[int] | None = None,
) -> Batches:
    """Batches of `dataset`. Its own generator: starting an iterator never draws from the global RNG (which
    drop-path uses), so a run resumed mid-epoch draws exactly as the uninterrupted one. Training workers
    start afresh every epoch (they read the epoch of `SeededSamples`); evaluation workers persist."""
    workers = config.data.num_workers
    return DataLoader(
        cast(Dataset[tuple[torch.Tensor, torch.Tensor]], dataset),  # map-style: __len__ and __getitem__
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=config.data.pin_memory and precision.device.type == "cuda",
        persistent_workers=workers > 0 and not isinstance(dataset, SeededSamples),
        generator=torch.Generator().manual_seed(config.seed),
    )


def _record(run: Run, thresholds: dict[str, float], metrics: dict[str, Any]) -> ModelRecord:
    return build_record(
        config=run.config,
        spec=run.spec,
        task=run.data.task,
        labels=run.data.label_names,
        recipe=run.recipe,
        thresholds=thresholds,
        data_description=run.data.description,
        metrics=metrics,
        code_commit=run.code_commit,
    )


def to_checkpoint(
    run: Run, epoch: int, thresholds: dict[str, float], metrics: dict[str, Any], *, batches: int | None = None
) -> Checkpoint:
    """model_state holds the evaluated weights (EMA when enabled); the online weights go in training_state.

    `epoch` is the last finished epoch; `batches` the batches trained of the next one (a run stopped mid-epoch).
    """
    training_state = {
        "partial_batches": batches,
        "thresholds": thresholds,
        "data_splits": {name: split for name, split in run.data.description["splits"].items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "raw_model_state": run.model.state_dict() if run.ema is not None else None,
        "rng": capture_rng_state(),
        "best_score": run.best_score,
        "best_epoch": run.best_epoch,
        "history": list(run.history),
    }
    return Checkpoint(
        spec=run.spec,
        record=_record(run, thresholds, metrics),
        model_state=run.eval_model.state_dict(),
        epoch=epoch,
        config=run.config.to_dict(),
        training_state=training_state,
    )


def restore(run: Run, checkpoint: Checkpoint) -> None:
    """Put `run` back exactly where `to_checkpoint` left it: weights, optimiser, schedule, RNG, history."""
    state = checkpoint.training_state
    run.model.load_state_dict(state["raw_model_state"] or checkpoint.model_state)
    if run.ema is not None:
        if state["ema"] is None:
            raise ValueError("the checkpoint was trained without EMA; resume with optim.ema_decay=0")
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    run.best_score, run.best_epoch = state["best_score"], state["best_epoch"]
    run.history = list(state["history"])
    run.start_epoch = checkpoint.epoch + 1
    run.start_batch = int(state.get("partial_batches") or 0)
    run.last_thresholds = dict(state.get("thresholds") or checkpoint.record.thresholds)
