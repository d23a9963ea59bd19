"""Parity on the serving device: PyTorch (fp32, on --device) against the exported fp32 and fp16 ONNX files run
through the service's own model loader (onnxruntime on --provider, I/O binding, every batch shape warmed up).

    python bench/gpu_parity.py --checkpoint runs/x/best.pt --model-dir models/name/version --images DIR \\
        [--device cuda] [--provider cuda] [--count 64] [--json out.json]

Inputs are real image files through medcore (`load_model_input`, what the service computes). Tolerances on the
probabilities: fp32 `FP32_TOLERANCE` (TF32 convolutions on both sides of a GPU run), fp16 export's own
`DEFAULT_FP16_TOLERANCE`; decisions at the record's thresholds must agree on at least `DEFAULT_FP16_AGREEMENT`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export.fp16 import DEFAULT_FP16_AGREEMENT, DEFAULT_FP16_TOLERANCE  # noqa: E402
from export.head import ProbabilityModel  # noqa: E402
from medcore.decision import decide  # noqa: E402
from medcore.imaging import load_model_input  # noqa: E402
from medcore.record import VARIANT_FILES  # noqa: E402
from service.model import load_model  # noqa: E402
from trainer.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

FP32_TOLERANCE = 2e-3
BATCH = 16


def decisions(probabilities: np.ndarray, record: object) -> list[tuple[bool, ...]]:
    return [tuple(d.positive for d in row) for row in decide(probabilities, record)]  # type: ignore[arg-type]


def main(args: argparse.Namespace) -> None:
    checkpoint = load_checkpoint(args.checkpoint)
    recipe = checkpoint.record.preprocessing
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))[: args.count]
    if not files:
        raise SystemExit(f"no images under {args.images}")
    inputs = np.stack([load_model_input(path.read_bytes(), recipe) for path in files])
    device = torch.device(args.device)
    reference = ProbabilityModel(model_from_checkpoint(checkpoint), checkpoint.record.task).to(device).eval()
    with torch.inference_mode():
        expected = np.concatenate([
            reference(torch.from_numpy(inputs[i : i + BATCH]).to(device)).float().cpu().numpy()
            for i in range(0, len(inputs), BATCH)
        ])  # fmt: skip
    rows = []
    for variant, tolerance in (("fp32", FP32_TOLERANCE), ("fp16", DEFAULT_FP16_TOLERANCE)):
        loaded = load_model(args.model_dir / VARIANT_FILES[variant], provider=args.provider, io_binding=True,
                            max_batch_size=BATCH, expected_variant=variant)  # fmt: skip
        loaded.warm_up()
        answers = [loaded.predict(inputs[i : i + BATCH]) for i in range(0, len(inputs), BATCH)]
        got = np.concatenate([a[0] if isinstance(a, tuple) else a for a in answers])  # (p, ood_score) or p
        diff = float(np.abs(got - expected).max())
        agree = float(np.mean([a == b for a, b in zip(decisions(got, loaded.record), decisions(expected,
                      checkpoint.record), strict=True)]))  # fmt: skip
        ok = diff <= tolerance and agree >= DEFAULT_FP16_AGREEMENT
        print(f"{variant}: {len(files)} images, max |p_onnx - p_torch| {diff:.2e} (tolerance {tolerance:g}), "
              f"decisions agree {agree:.1%}, onnxruntime on {loaded.provider}, torch on {device}")  # fmt: skip
        rows.append({
            "section": "export", "what": f"{variant} ONNX on {loaded.provider.removesuffix('ExecutionProvider')} vs "
            f"PyTorch on {device.type}, {len(files)} real images", "value": f"max |dp| {diff:.1e}, decisions "
            f"agree {agree:.1%}", "reference": "PyTorch fp32, same inputs", "goal": f"|dp| <= {tolerance:g}",
            "ok": ok,
        })  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not all(row["ok"] for row in rows):
        raise SystemExit("parity failed")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True, help="the folder holding model.onnx, model.fp16.onnx")
    parser.add_argument("--images", type=Path, required=True, help="a folder of real images (searched recursively)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--provider", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--json", type=Path)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
