"""fp32 / fp16 / int8 side by side: img/s at batch 1 and 8, AUROC on val and test, parity against fp32.

    .venv/bin/python bench/export_variants.py [--models bundled tiny224] [--seconds 4]

`bundled`: the files in models/pneumoniamnist-convnext_atto/1.0.0 (made by `python -m export quantize|fp16`),
scored on the PneumoniaMNIST splits their record names. `tiny224`: a convnext_tiny at 224x224 with random
weights (built with the trainer's factory, exported by `export_onnx`, cached under runs/bench/), whose
variants are built here with the same builders as the CLI but without the gates (random weights have no
meaningful decisions): speed and parity only, on Kermany radiographs. All runs use the CPU provider, runs
of the files alternate so that load changes hit all of them, and the machine line says what was shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.contract import INPUT_NAME
from export.inputs import ParityInputs, load_inputs, split_inputs
from export.metadata import read_record
from export.parity import open_session
from export.variants import predict
from medcore.record import VARIANT_FILES

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0"
KERMANY = REPO.parent / "shared" / "data" / "kermany_chest_xray_subset" / "images"
CACHE = REPO / "runs" / "bench" / "variants"
BATCHES = (1, 8)


def throughput(sessions: dict[str, ort.InferenceSession], sample: np.ndarray, seconds: float) -> dict[str, dict]:
    """img/s per session and batch size, the sessions' runs interleaved."""
    result: dict[str, dict] = {name: {} for name in sessions}
    for batch_size in BATCHES:
        batch = np.resize(sample, (batch_size, *sample.shape[1:])).astype(np.float32)
        spent, done = dict.fromkeys(sessions, 0.0), dict.fromkeys(sessions, 0)
        for session in sessions.values():
            session.run(None, {INPUT_NAME: batch})
        while min(spent.values()) < seconds / len(BATCHES):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(None, {INPUT_NAME: batch})
                spent[name] += time.perf_counter() - started
                done[name] += batch_size
        for name in sessions:
            result[name][batch_size] = done[name] / spent[name]
    return result


def bundled(seconds: float) -> list[dict]:
    from trainer.metrics import binary_metrics

    files = {v: BUNDLED / f for v, f in VARIANT_FILES.items() if (BUNDLED / f).is_file()}
    record = read_record(files["fp32"])
    sessions = {v: open_session(p, threads=os.cpu_count()) for v, p in files.items()}
    splits = {s: split_inputs(record, s, None) for s in ("val", "test")}
    rows = []
    speed = throughput(sessions, splits["val"].batch[:8], seconds)
    reference = {s: predict(sessions["fp32"], i.batch) for s, i in splits.items()}
    for variant, session in sessions.items():
        variant_record = read_record(files[variant])
        row = {"model": "bundled 28x28", "variant": variant, "MB": files[variant].stat().st_size / 1e6}
        for split, inputs in splits.items():
            prob = predict(session, inputs.batch)
            assert inputs.labels is not None
            row[f"auroc_{split}"] = binary_metrics(inputs.labels[:, 0], prob[:, 0], 0.5)["auroc"]
            row[f"dp_{split}"] = float(np.max(np.abs(prob - reference[split])))
        row.update({f"img/s b{b}": v for b, v in speed[variant].items()})
        row["agreement"] = variant_record.parity.get("decision_agreement", 1.0)
        rows.append(row)
    return rows


def tiny224(seconds: float) -> list[dict]:
    from export import export_onnx
    from export.fp16 import convert_fp16
    from export.quantize import quantize_static_qdq
    from medcore.record import ModelRecord, Preprocessing, Provenance, Task
    from trainer.checkpoint import Checkpoint, save_checkpoint
    from trainer.models import ModelSpec, build_model

    CACHE.mkdir(parents=True, exist_ok=True)
    fp32 = CACHE / "tiny224.onnx"
    images = sorted(KERMANY.glob("*.jpeg"))[:40]
    if not fp32.is_file():
        spec = ModelSpec("convnext_tiny", 14, in_channels=1, stem_stride=4)
        labels = tuple(f"label{i}" for i in range(14))
        record = ModelRecord(
            name="bench-tiny224",
            version="0",
            task=Task.MULTILABEL,
            labels=labels,
            thresholds=dict.fromkeys(labels, 0.5),
            provenance=Provenance(architecture="convnext_tiny"),
            preprocessing=Preprocessing(height=224, width=224, channels=1, mean=(0.5,), std=(0.25,)),
        )
        checkpoint = Checkpoint(spec, record, build_model(spec).state_dict(), 0, {})
        save_checkpoint(checkpoint, CACHE / "tiny224.pt")
        export_onnx(CACHE / "tiny224.pt", fp32, parity_images=images[:4], force=True)
    record = read_record(fp32)
    inputs = ParityInputs(tuple(p.name for p in images), load_inputs(images, record.preprocessing), "kermany")
    models = {
        "fp32": fp32.read_bytes(),
        "fp16": convert_fp16(fp32, record)[0].SerializeToString(),
        "int8": quantize_static_qdq(fp32, inputs.batch[:32]).SerializeToString(),
    }
    sessions = {v: open_session(data, threads=os.cpu_count()) for v, data in models.items()}
    speed = throughput(sessions, inputs.batch[:8], seconds)
    reference = predict(sessions["fp32"], inputs.batch[32:])
    rows = []
    for variant, session in sessions.items():
        dp = float(np.max(np.abs(predict(session, inputs.batch[32:]) - reference)))
        row = {
            "model": "convnext_tiny 224 (random)",
            "variant": variant,
            "MB": len(models[variant]) / 1e6,
            "dp_test": dp,
            **{f"img/s b{b}": v for b, v in speed[variant].items()},
        }
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    columns = [
        "model",
        "variant",
        "MB",
        "img/s b1",
        "img/s b8",
        "auroc_val",
        "auroc_test",
        "dp_val",
        "dp_test",
        "agreement",
    ]
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("bundled", "tiny224"), default=["bundled", "tiny224"])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per file and batch size")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} (other work on the machine shares them), onnxruntime {ort.__version__} CPU"
    )
    rows: list[dict] = []
    for name in args.models:
        rows += bundled(args.seconds) if name == "bundled" else tiny224(args.seconds)
    print(table(rows))


if __name__ == "__main__":
    main()
