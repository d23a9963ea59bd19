"""Orchestrate one training run: epochs with validation, best and last checkpoints, the final report."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from medcore.atomic import atomic_write
from medcore.record import Task
from trainer.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from trainer.checks import MIN_SIDE_AFTER_STEM, check_input_size, check_labels, check_leakage, choose_stem_stride
from trainer.config import TrainConfig, save_config
from trainer.data import LabeledData, load_data, make_dataset
from trainer.data.describe import without_identifiers
from trainer.distributed import all_reduce_sum, any_rank, barrier, eval_shard, gather_rows, is_main, process_group
from trainer.engine import Batches, EpochStats, Predictions, evaluate, train_one_epoch
from trainer.metrics import headline_accuracy, primary_score, task_metrics
from trainer.recipe import resolve_recipe
from trainer.report import ReportSettings, write_history, write_report
from trainer.resume import StopSignals, config_changes, data_changes
from trainer.run import Run, build_run, make_loader, to_checkpoint
from trainer.runtime import resolve_device, seed_everything
from trainer.stopped import Stopped
from trainer.temperature import temperature_scale
from trainer.tensorboard_log import log_epoch
from trainer.thresholds import choose_thresholds

logger = logging.getLogger("trainer")

BEST, LAST = "best.pt", "last.pt"


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, keep the best checkpoint by validation score, evaluate it on the test split.

    The score is AUROC (binary), macro AUROC (multi-label) or balanced accuracy (multi-class).

    Writes config.yaml, best.pt, last.pt, metrics.json, roc.png and confusion_matrix.png to
    `config.output_dir` and returns the metrics. Under torchrun, every rank trains its share and
    evaluates its shard; rank 0 alone writes, and returns the metrics (the other ranks return {}).
    """
    with process_group(resolve_device(config.device)):
        return _train(config if is_main() else replace(config, progress=False))


def _train(config: TrainConfig) -> dict[str, Any]:
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    resume = _resume_checkpoint(config, output_dir)
    seed_everything(config.seed)
    data = load_data(config.data)
    data = _keep_data_report(data, output_dir)
    check_leakage(data, config.data.allow_leakage)
    check_labels(data)
    if resume is not None:
        config = _with_stem_stride(config, resume.spec.stem_stride)  # an unset stride is the one it resolved to
        _refuse_changes(resume, config, data)
    factory = partial(make_dataset, config=config.data)
    recipe = resume.record.preprocessing if resume else resolve_recipe(config.preprocessing, data, factory)
    if config.model.stem_stride is None:
        stride = choose_stem_stride(recipe.height, recipe.width)
        logger.info("model.stem_stride not set: %d for %dx%d inputs (the largest that leaves >= %d px after the stem)",
                    stride, recipe.height, recipe.width, MIN_SIDE_AFTER_STEM)  # fmt: skip
        config = _with_stem_stride(config, stride)
    assert config.model.stem_stride is not None
    check_input_size(config.model.arch, config.model.stem_stride, recipe.height, recipe.width)
    run = build_run(config, data, recipe, resume)
    if is_main():
        save_config(config, output_dir / "config.yaml")
    _log_start(run)
    with StopSignals() as stop:
        for epoch in range(run.start_epoch, config.epochs):
            _run_epoch(run, epoch, stop)
    barrier()  # best.pt is written
    metrics = _finish(run, time.perf_counter() - start)
    barrier()  # the report is written
    return metrics


def _with_stem_stride(config: TrainConfig, stride: int) -> TrainConfig:
    """`config` with model.stem_stride set to `stride` when it was left unset (the saved config holds the choice)."""
    if config.model.stem_stride is not None:
        return config
    return replace(config, model=replace(config.model, stem_stride=stride))


def _refuse_changes(resume: Checkpoint, config: TrainConfig, data: LabeledData) -> None:
    """A resumed run must compute what the interrupted one would have: same data, model, optimiser, schedule."""
    changes = config_changes(resume.config, config.to_dict())
    changes += data_changes(resume.training_state.get("data_splits") or {}, data.description["splits"])
    if changes:
        raise ValueError(f"cannot resume: the settings differ from the checkpoint's ({'; '.join(changes)})")
    if resume.config.get("epochs") != config.epochs:
        logger.warning("epochs %s -> %d: the schedule is stretched from here on", resume.config.get("epochs"),
                       config.epochs)  # fmt: skip


def _keep_data_report(data: LabeledData, output_dir: Path) -> LabeledData:
    """Write the full data report (label counts, skipped samples, leakage check) beside the outputs;
    the record keeps it without file names."""
    text = json.dumps(data.description, indent=2, default=str) + "\n"
    if is_main():
        atomic_write(output_dir / "data_report.json", lambda handle: handle.write(text.encode()))
    return replace(data, description=without_identifiers(data.description))


def _resume_checkpoint(config: TrainConfig, output_dir: Path) -> Checkpoint | None:
    if config.resume is None:
        outputs = [name for name in (LAST, BEST, "metrics.json") if (output_dir / name).exists()]
        if outputs:
            raise FileExistsError(
                f"{output_dir} already holds a run ({', '.join(outputs)}): pass --resume to continue it, or choose"
                f" another --output-dir"
            )
        return None
    path = output_dir / LAST if config.resume == "last" else Path(config.resume)
    checkpoint = load_checkpoint(path)
    logger.info("resuming from %s (finished epoch %d of %d)", path, checkpoint.epoch + 1, config.epochs)
    return checkpoint


def _run_epoch(run: Run, epoch: int, stop: StopSignals) -> None:
    config = run.config
    # The order and the augmentation depend on (seed, epoch) only; a run stopped mid-epoch skips what it trained.
    done = run.start_batch if epoch == run.start_epoch else 0
    run.train_sampler.set_epoch(epoch, start=done * config.batch_size)
    run.train_samples.epoch = epoch
    stats = train_one_epoch(
        run.train_model,
        run.criterion,
        run.optimizer,
        run.scheduler,
        run.scaler,
        run.train_loader,
        run.precision,
        ema=run.ema,
        clip_grad_norm=config.optim.clip_grad_norm,
        accumulate=config.optim.accumulate,
        description=f"epoch {epoch + 1}/{config.epochs}",
        progress=config.progress,
        stop=lambda: any_rank(stop()),  # all ranks stop after the same batch
    )
    images = all_reduce_sum(float(stats.images))  # the epoch's loss and speed over all ranks
    stats = replace(stats, loss=all_reduce_sum(stats.loss * stats.images) / max(1.0, images), images=int(images))
    if stats.stopped_after is not None:
        batches = done + stats.stopped_after
        if is_main():
            last = to_checkpoint(run, epoch - 1, run.last_thresholds, {"epoch": epoch - 1}, batches=batches)
            save_checkpoint(last, run.output_dir / LAST)
        barrier()
        raise Stopped(
            f"stopped by {stop.received or 'another rank'} in epoch {epoch + 1}/{config.epochs} after {batches}"
            f" batches; {run.output_dir / LAST} holds the run: continue it with --resume"
        )
    task, labels = run.data.task, run.data.label_names
    val = _evaluate(run, run.eval_model, run.val_loader)
    rule = config.threshold
    thresholds = choose_thresholds(task is Task.MULTICLASS, val.labels, val.prob, labels, rule.policy, rule.value,
                                   beta=rule.beta, target=rule.target_sensitivity)  # fmt: skip
    val_metrics = task_metrics(task, val.labels, val.prob, thresholds, labels, beta=rule.beta)
    score = primary_score(task, val_metrics)
    improved = run.best_epoch is None or (score is not None and (run.best_score is None or score > run.best_score))
    if improved:
        run.best_score, run.best_epoch = score, epoch
    run.history.append(_history_row(epoch, stats, val.loss, val_metrics))
    _log_epoch(run, epoch, stats, val.loss, val_metrics, improved)
    run.last_thresholds = thresholds
    if not is_main():
        return
    write_history(run.output_dir, run.history)
    if config.report.tensorboard:
        log_epoch(run.output_dir, run.history[-1])
    checkpoint = to_checkpoint(run, epoch, thresholds, {"epoch": epoch, "val": val_metrics})
    if improved:  # best.pt: the weights and the record only (export and evaluation need no more)
        save_checkpoint(replace(checkpoint, training_state={}), run.output_dir / BEST)
    save_checkpoint(checkpoint, run.output_dir / LAST)


def _evaluate(run: Run, model: nn.Module, loader: Batches) -> Predictions:
    """`evaluate` on this rank's shard of the split, gathered: the whole split, in order, on every rank."""
    part = evaluate(model, run.eval_criterion, loader, run.precision, progress=run.config.progress,
                    softmax=run.data.task is Task.MULTICLASS)  # fmt: skip
    count = all_reduce_sum(float(len(part.prob)))
    loss = all_reduce_sum(part.loss * len(part.prob)) / max(1.0, count)
    return Predictions(gather_rows(part.prob), gather_rows(part.labels), loss)


def _history_row(epoch: int, stats: EpochStats, val_loss: float, val: dict[str, Any]) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "val_loss": val_loss,
        "val_auroc": val.get("auroc", val.get("macro_auroc")),
        "val_accuracy": headline_accuracy(val),
        "val_balanced_accuracy": val.get("balanced_accuracy"),
        "threshold": val.get("threshold"),
        "lr": stats.lr,
        "images_per_second": stats.images_per_second,
        "seconds": stats.seconds,
    }


def _finish(run: Run, seconds: float) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and test, write the report, store the metrics in best.pt."""
    best_path = run.output_dir / BEST
    best = load_checkpoint(best_path)
    model = run.precision.place(model_from_checkpoint(best))
    task, labels, thresholds = run.data.task, best.record.labels, dict(best.record.thresholds)
    test_set = make_dataset(run.data.split("test"), run.recipe, run.config.data)
    test_loader = make_loader(test_set, run.config, run.precision, eval_shard(len(test_set)))
    predictions = {}
    for name, loader in (("val", run.val_loader), ("test", test_loader)):
        result = _evaluate(run, model, loader)
        predictions[name] = (result.labels, result.prob)
    if not is_main():
        return {}
    calibration: dict[str, Any] = {}
    if run.config.report.temperature_scaling:
        best, predictions, thresholds, calibration = temperature_scale(best, predictions, task, run.config)
    extra = {
        "task": run.data.task.value,
        "threshold_policy": run.config.threshold.policy,
        "best_epoch": best.epoch + 1,  # 1-based, as logged ("epoch 3/10 *best") and in the history
        "epochs": run.config.epochs,
        "wall_seconds": round(seconds, 1),
        "device": run.precision.describe(),
        "history": run.history,
        "calibration": calibration,
    }
    settings = ReportSettings.from_config(run.config)
    metrics = write_report(run.output_dir, predictions, task, labels, thresholds, extra, settings)
    final = {"epoch": best.epoch, "val": metrics["val"], "test": metrics["test"], "calibration": _ece(metrics)}
    provenance = best.record.provenance.model_copy(update={"metrics": final})
    save_checkpoint(replace(best, record=best.record.model_copy(update={"provenance": provenance})), best_path)
    test = metrics["test"]
    if task is Task.BINARY:
        logger.info(
            "test  auroc %.4f  accuracy %.4f  sensitivity %.4f  specificity %.4f  (threshold %.3f, best epoch %d)",
            _number(test["auroc"]), _number(test["accuracy"]), _number(test["sensitivity"]),
            _number(test["specificity"]), thresholds[labels[0]], best.epoch + 1,
        )  # fmt: skip
    else:
        name = "balanced_accuracy" if task is Task.MULTICLASS else "macro_auroc"
        score, accuracy = _number(primary_score(task, test)), _number(headline_accuracy(test))
        logger.info("test  %s %.4f  accuracy %.4f  (best epoch %d)", name, score, accuracy, best.epoch + 1)
    return metrics


def _ece(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the record keeps of calibration: ECE per split after (and, with temperature scaling, before) it."""
    calibration = metrics.get("calibration", {})
    return {
        "temperature": calibration.get("temperature"),
        "bins": next((calibration[s]["bins"] for s in ("val", "test") if s in calibration), None),
        "ece": {s: calibration[s]["ece"] for s in ("val", "test") if s in calibration},
        "ece_before_temperature": dict(calibration.get("before_temperature", {})),
    }


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _log_start(run: Run) -> None:
    splits = run.data.description["splits"]
    positives = "positive" if run.data.task is Task.BINARY else "per label"
    counts = ", ".join(f"{name} {s['n']} ({_short(s['positives'])} {positives})" for name, s in splits.items())
    parameters = sum(p.numel() for p in run.model.parameters())
    logger.info("data: %s %s", run.data.description["kind"], counts)
    logger.info("recipe: %s", run.recipe.model_dump_json())
    logger.info("model: %s, %.2fM parameters, on %s", run.spec, parameters / 1e6, run.precision.describe())


def _short(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else "/".join(map(str, values))


def _log_epoch(run: Run, epoch: int, stats: EpochStats, val_loss: float, val: dict[str, Any], improved: bool) -> None:
    score = {Task.BINARY: "val_auroc", Task.MULTILABEL: "val_macro_auroc", Task.MULTICLASS: "val_bal_acc"}
    logger.info(
        "epoch %d/%d  loss %.4f  val_loss %.4f  %s %.4f  val_acc %.4f  lr %.2e  %.0f img/s  %.1fs%s",
        epoch + 1,
        run.config.epochs,
        stats.loss,
        val_loss,
        score[run.data.task],
        _number(primary_score(run.data.task, val)),
        headline_accuracy(val) or 0.0,
        stats.lr,
        stats.images_per_second,
        stats.seconds,
        "  *best" if improved else "",
    )
