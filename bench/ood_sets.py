"""How often the model's out-of-distribution output flags each kind of image, in one table.

    .venv/bin/python bench/ood_sets.py models/pneumoniamnist-convnext_atto/1.0.0 [--variant fp32] [--json out.json]
        [--through-service]

Each image goes through medcore's decoder and preprocessing (what the service runs) and the model's own
ONNX file; `ood_score` is the graph's output and the flag is the record's rule (`OodSpec.flags`, as the
service applies it). Sets: the validation split the threshold was set on (the reference row: ~5% by
construction), the official test split in both presentations (28-px PneumoniaMNIST PNGs, Kermany 224-px
JPEGs; goal <= 5%), the adult COVID-19 collection (frontal adult chest X-rays, a population the model was
not trained on: reported, no goal), and images that are not chest radiographs, built by
`bench/non_chest_images.py` from what is installed on this machine (goal >= 95%). Beside the score, an
energy score (-log(1 + e^z) for a binary head, -logsumexp of the logits otherwise, recovered from the
probabilities) thresholded on the same validation images at the same kept fraction, as a reference method.
With `--through-service`, every encoded image is also posted to a real `python -m service` on this model file,
and the table adds the share the service flagged among the images it answered, and how many it refused
(undecodable, or outside the record's intended use).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.non_chest_images import build as build_non_chest  # noqa: E402
from export.inputs import split_inputs  # noqa: E402
from export.parity import CHUNK, open_session  # noqa: E402
from medcore.imaging import ImageError, load_model_input, stack_batch  # noqa: E402
from medcore.record import ONNX_INPUT_NAME, ONNX_OOD_OUTPUT_NAME, ONNX_OUTPUT_NAME, VARIANT_FILES, ModelRecord  # noqa: E402

DATA = REPO.parent / "shared" / "data"
MNIST = DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"
KERMANY_TEST = DATA / "kermany_chest_xray_224" / "test"
COVID = DATA / "covid_chestxray_ieee8023_subset" / "images"


def mnist_test() -> list[bytes]:
    with np.load(MNIST) as data:
        images = data["test_images"]
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def files(folder: Path, patterns: tuple[str, ...]) -> list[bytes]:
    return [p.read_bytes() for pattern in patterns for p in sorted(folder.glob(pattern)) if p.is_file()]


def run(session: object, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, L], ood_score [N]) in chunks."""
    probs, scores = [], []
    for i in range(0, len(batch), CHUNK):
        p, s = session.run([ONNX_OUTPUT_NAME, ONNX_OOD_OUTPUT_NAME], {ONNX_INPUT_NAME: batch[i : i + CHUNK]})  # type: ignore[attr-defined]
        probs.append(p)
        scores.append(s)
    return np.concatenate(probs).astype(np.float64), np.concatenate(scores).astype(np.float64)


def energy(probs: np.ndarray, softmax: bool) -> np.ndarray:
    """Energy -logsumexp(logits) from the probabilities (logits up to a constant for softmax)."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if softmax:
        logits = np.log(p)
        return -np.log(np.sum(np.exp(logits), axis=1))
    z = np.log(p / (1 - p))[:, 0]
    return -np.logaddexp(0.0, z)


def decode(images: list[bytes], record: ModelRecord) -> tuple[np.ndarray, int]:
    """The model inputs of the images that decode; and how many did not (counted, never named)."""
    inputs, failed = [], 0
    for data in images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs.append(load_model_input(data, record.preprocessing))
        except ImageError:
            failed += 1
    return stack_batch(inputs), failed


def through_service(
    path: Path, variant: str, image_sets: list[list[bytes] | None]
) -> list[tuple[list[bool], int] | None]:
    """Per set: the service's `out_of_distribution` of each answered image, and how many it refused (4xx)."""
    import httpx

    from bench.score_presentations import FILES_PER_REQUEST, start_service

    process, url = start_service(path, variant)
    outcomes: list[tuple[list[bool], int] | None] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for images in image_sets:
                if images is None:
                    outcomes.append(None)
                    continue
                answered: list[bool] = []
                refused = 0
                for start in range(0, len(images), FILES_PER_REQUEST):
                    chunk = images[start : start + FILES_PER_REQUEST]
                    parts = [("file", ("image", data, "application/octet-stream")) for data in chunk]
                    response = client.post("/predict", files=parts)
                    if response.status_code != 200:  # one image that failed alone is the request's answer
                        refused += len(chunk)
                        continue
                    for result in response.json()["results"]:
                        if "error" in result:
                            refused += 1
                        else:
                            answered.append(bool(result["out_of_distribution"]))
                outcomes.append((answered, refused))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a model version folder or an .onnx file")
    parser.add_argument("--variant", choices=sorted(VARIANT_FILES), default="fp32")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument(
        "--through-service",
        action="store_true",
        help="also post every image to a real `python -m service` and read its out_of_distribution field",
    )
    args = parser.parse_args(argv)
    path = args.model / VARIANT_FILES[args.variant] if args.model.is_dir() else args.model
    session = open_session(path)
    from export.metadata import session_record

    record = session_record(session, path)
    if record.ood is None:
        raise SystemExit(f"error: {path} has no {ONNX_OOD_OUTPUT_NAME!r} output (add one: python -m export ood)")
    softmax = record.task.value == "multiclass"
    val = split_inputs(record, "val", None)
    val_probs, _ = run(session, val.batch)
    energy_threshold = float(np.quantile(energy(val_probs, softmax), record.ood.kept_fraction, method="higher"))
    with tempfile.TemporaryDirectory(prefix="non-chest-") as tmp:
        built = build_non_chest(Path(tmp))
        by_kind: dict[str, list[bytes]] = {}
        for name, kind, _ in built:
            by_kind.setdefault(kind, []).append((Path(tmp) / name).read_bytes())
    non_chest = [data for images in by_kind.values() for data in images]
    encoded = [
        ("test 28-px PNG (PneumoniaMNIST)", "<= 5%", mnist_test()),
        ("test 224-px JPEG (Kermany)", "<= 5%", files(KERMANY_TEST, ("*/*.jpeg",))),
        ("adult COVID-19 X-rays (ieee8023)", "report", files(COVID, ("*",))),
        ("not chest radiographs (own set)", ">= 95%", non_chest),
        *((f"  of which {kind}", ">= 95%", images) for kind, images in sorted(by_kind.items())),
    ]
    sets: list[tuple[str, str, np.ndarray, int, list[bytes] | None]] = [
        ("val (threshold split)", "~5%", val.batch, 0, None),
        *((name, goal, *decode(images, record), images) for name, goal, images in encoded),
    ]
    fp32 = args.model / VARIANT_FILES["fp32"] if args.model.is_dir() else path  # the service finds the variant
    served = through_service(fp32, args.variant, [s[4] for s in sets]) if args.through_service else None
    print(f"{record.name} {record.version} ({args.variant}) on {platform.node()}: ood_score threshold "
          f"{record.ood.threshold:.4g} (keeps {record.ood.kept_fraction:.0%} of {record.ood.threshold_split}); "
          f"energy threshold {energy_threshold:.4g} set on the same val images")  # fmt: skip
    header = f"{'set':<34} {'n':>5} {'undecodable':>11} {'flagged':>8} {'goal':>7} {'median score':>12} {'energy':>7}"
    if served is not None:
        header += f" {'service: flagged':>16} {'refused':>7}"
    print(header)
    rows = []
    for index, (name, goal, batch, failed, _) in enumerate(sets):
        probs, scores = run(session, batch)
        flagged = float(np.mean([record.ood.flags(float(s)) for s in scores]))
        energy_flagged = float(np.mean(energy(probs, softmax) > energy_threshold))
        median = float(np.median(scores))
        line = (
            f"{name:<34} {len(batch):>5} {failed:>11} {flagged:>8.1%} {goal:>7} {median:>12.2f} {energy_flagged:>7.1%}"
        )
        row = {"set": name, "n": len(batch), "undecodable": failed, "flagged": flagged, "goal": goal,
               "median_score": median, "energy_flagged": energy_flagged}  # fmt: skip
        if served is not None:
            outcome = served[index]
            if outcome is None:
                line += f" {'-':>16} {'-':>7}"
            else:
                answered, refused = outcome
                share = float(np.mean(answered)) if answered else float("nan")
                line += f" {share:>16.1%} {refused:>7}"
                row.update(service_flagged=share, service_refused=refused)
        print(line)
        rows.append(row)
    if args.json:
        table = {"model": f"{record.name}/{record.version}", "variant": args.variant, "rows": rows}
        args.json.write_text(json.dumps({**table, "threshold": record.ood.threshold}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
