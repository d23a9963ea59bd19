"""Score one model on the official 624-image pneumonia test split in both presentations, through the service.

    .venv/bin/python bench/score_presentations.py models/pneumoniamnist-convnext_atto/1.0.0 [--variant fp32]
    .venv/bin/python bench/score_presentations.py models/pneumoniamnist-convnext_atto/1.0.0 --compare int8

`--compare fp16|int8` scores fp32 and that variant through the service, one after the other on the same
images, and prints per presentation the share of decisions that agree and the AUROC change, against the
variant gate (agreement >= 99 %, |delta AUROC| <= 0.005); it exits 1 when the variant fails on either.

Starts a real service process (`python -m service`, SERVE_MODEL_PATH set to the model's ONNX file, a free
loopback port) and POSTs (a) every PneumoniaMNIST test image (the MedMNIST v2 split, 28 x 28) encoded as a
PNG and (b) every Kermany 224-px test JPEG unchanged. The same 624 patients, two pipelines. Prints AUROC
and accuracy at the model's own threshold (the service's `positive` decision) with percentile-bootstrap
95 % CIs from `trainer.intervals`, and the machine. For the final test report only: choose recipes on val.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from export.layout import variant_path  # noqa: E402
from medcore.record import Task  # noqa: E402
from trainer.intervals import task_intervals  # noqa: E402

DATA = REPO.parent / "shared" / "data"
MNIST = DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"
KERMANY_TEST = DATA / "kermany_chest_xray_224" / "test"
FILES_PER_REQUEST = 16  # the service's default max_files
# The variant gate on the test presentations (the issue's): the same as export's gate on validation.
MIN_AGREEMENT = 0.99
MAX_DELTA_AUROC = 0.005
Sample = tuple[str, bytes, int]  # upload name, file bytes, label (1 = pneumonia)


def mnist_test() -> list[Sample]:
    """The PneumoniaMNIST test images, each encoded as a 28 x 28 grayscale PNG."""
    with np.load(MNIST) as data:
        images, labels = data["test_images"], data["test_labels"][:, 0]
    samples = []
    for image, label in zip(images, labels, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        samples.append(("image.png", buffer.getvalue(), int(label)))
    return samples


def kermany_test() -> list[Sample]:
    """The Kermany 224-px test JPEGs as they are on disk (NORMAL = 0, PNEUMONIA = 1)."""
    samples = []
    for label, folder in enumerate(("NORMAL", "PNEUMONIA")):
        for path in sorted((KERMANY_TEST / folder).glob("*.jpeg")):
            samples.append(("image.jpg", path.read_bytes(), label))
    return samples


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(onnx: Path, variant: str) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m service` on a free loopback port serving `variant`'s file beside the fp32 `onnx` (the service
    serves SERVE_MODEL_PATH as it is), waited on until /health/ready answers 200."""
    port = free_port()
    path = variant_path(onnx, variant)  # type: ignore[arg-type]  # argparse's choices are the variants
    if not path.is_file():
        raise SystemExit(f"error: no {variant} file at {path}")
    env = {**os.environ, "SERVE_MODEL_PATH": str(path), "SERVE_HOST": "127.0.0.1", "SERVE_PORT": str(port),
           "SERVE_LOG_LEVEL": "warning"}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with status {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/health/ready", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise TimeoutError("the service was not ready after 300 s")


def chunks(samples: list[Sample], size: int) -> Iterator[list[Sample]]:
    for start in range(0, len(samples), size):
        yield samples[start : start + size]


def post_all(client: httpx.Client, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, str]:
    """Probabilities and the service's decisions for every sample, in order; and the model that answered."""
    probs, decisions, model = [], [], ""
    for batch in chunks(samples, FILES_PER_REQUEST):
        files = [("file", (name, data, "application/octet-stream")) for name, data, _ in batch]
        response = client.post("/predict", files=files)
        if response.status_code != 200:
            raise RuntimeError(f"/predict answered {response.status_code}: {response.text[:200]}")
        body = response.json()
        model = f"{body['model']['name']}/{body['model']['version']} ({body['model']['variant']})"
        for result in body["results"]:
            if "predictions" not in result:
                raise RuntimeError(f"image {result['index']} failed: {result['error']}")
            (prediction,) = result["predictions"]
            probs.append(prediction["probability"])
            decisions.append(prediction["positive"])
    return np.asarray(probs), np.asarray(decisions, dtype=bool), model


def score(labels: np.ndarray, probs: np.ndarray, decisions: np.ndarray, threshold: float) -> dict[str, object]:
    """AUROC and accuracy (at the service's decisions) with 95 % bootstrap CIs over images."""
    accuracy = float(accuracy_score(labels, decisions))
    if not np.array_equal(decisions, probs >= threshold):
        raise RuntimeError("the service's decisions disagree with probability >= its threshold")
    ci = task_intervals(Task.BINARY, labels[:, None], probs[:, None], {"p": threshold}, ["p"], resamples=2000)
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        "auroc": float(roc_auc_score(labels, probs)),
        "auroc_ci": ci["intervals"]["auroc"],
        "accuracy": accuracy,
        "accuracy_ci": ci["intervals"]["accuracy"],
        "sensitivity": float(decisions[labels == 1].mean()),
        "specificity": float((~decisions[labels == 0]).mean()),
    }


def model_file(target: Path) -> Path:
    onnx = target / "model.onnx" if target.is_dir() else target
    if not onnx.is_file():
        raise SystemExit(f"error: no ONNX model at {onnx} (give a model version folder or an .onnx file)")
    return onnx


def thinned(samples: list[Sample], limit: int | None) -> list[Sample]:
    """At most `limit` samples, evenly spaced, so both classes stay (for a quick check of the script)."""
    if limit is None or limit >= len(samples):
        return samples
    step = len(samples) / limit
    return [samples[int(i * step)] for i in range(limit)]


Scored = dict[str, dict[str, object]]


def score_through_service(
    onnx: Path, variant: str, presentations: dict[str, list[Sample]]
) -> tuple[str, float, Scored]:
    """One service process on `variant`; every presentation posted to it. Rows keep the raw probabilities."""
    process, url = start_service(onnx, variant)
    rows: Scored = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            record = client.get("/v1/models").json()["models"][0]["record"]
            (threshold,) = (float(value) for value in record["thresholds"].values())
            for name, samples in presentations.items():
                labels = np.asarray([label for _, _, label in samples])
                started = time.perf_counter()
                probs, decisions, model = post_all(client, samples)
                row = score(labels, probs, decisions, threshold)
                rows[name] = {**row, "seconds": time.perf_counter() - started, "probs": probs, "decisions": decisions}
    finally:
        process.terminate()
        process.wait(30)
    return model, threshold, rows


def print_scores(model: str, threshold: float, rows: Scored) -> None:
    print(f"model {model}, threshold {threshold:.4f}; {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; 95% CI: percentile bootstrap over images, 2000 resamples")  # fmt: skip
    header = ("presentation", "n", "AUROC", "95% CI", "ACC", "95% CI", "sens", "spec")
    print("{:<26} {:>4} {:>7} {:>15} {:>7} {:>15} {:>6} {:>6}".format(*header))
    for name, row in rows.items():
        auroc_ci, acc_ci = row["auroc_ci"], row["accuracy_ci"]
        assert isinstance(auroc_ci, list) and isinstance(acc_ci, list)
        print(f"{name:<26} {row['n']:>4} {row['auroc']:>7.4f} [{auroc_ci[0]:.3f}, {auroc_ci[1]:.3f}] "
              f"{row['accuracy']:>7.4f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}] {row['sensitivity']:>6.3f} "
              f"{row['specificity']:>6.3f}")  # fmt: skip


def compare_variant(reference: Scored, other: Scored) -> dict[str, dict[str, object]]:
    """Per presentation: decision agreement, AUROC change and max |dp| of the variant against fp32, and the gate."""
    result = {}
    for name, fp32 in reference.items():
        variant = other[name]
        decisions = (np.asarray(fp32["decisions"]), np.asarray(variant["decisions"]))
        probs = (np.asarray(fp32["probs"]), np.asarray(variant["probs"]))
        agreement = float(np.mean(decisions[0] == decisions[1]))
        delta = float(variant["auroc"]) - float(fp32["auroc"])  # type: ignore[arg-type]
        passed = agreement >= MIN_AGREEMENT and abs(delta) <= MAX_DELTA_AUROC
        result[name] = {"n": len(decisions[0]), "agreement": agreement, "delta_auroc": delta,
                        "max_abs_dp": float(np.max(np.abs(probs[1] - probs[0]))), "passed": passed}  # fmt: skip
    return result


def public(rows: Scored) -> Scored:
    return {name: {k: v for k, v in row.items() if k not in ("probs", "decisions")} for name, row in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a model version folder (with model.onnx) or an ONNX file")
    parser.add_argument("--variant", default="fp32", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--compare", choices=("fp16", "int8"), help="score fp32 and this variant; print the gate")
    parser.add_argument("--limit", type=int, help="at most this many images per presentation (a quick check only)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    presentations = {"PneumoniaMNIST 28x28 PNG": mnist_test(), "Kermany 224 JPEG": kermany_test()}
    presentations = {name: thinned(samples, args.limit) for name, samples in presentations.items()}
    onnx = model_file(args.model)
    variant = "fp32" if args.compare else args.variant
    model, threshold, rows = score_through_service(onnx, variant, presentations)
    print_scores(model, threshold, rows)
    output: dict[str, object] = {"model": model, "threshold": threshold, "presentations": public(rows)}
    failed = False
    if args.compare:
        other_model, other_threshold, other_rows = score_through_service(onnx, args.compare, presentations)
        print_scores(other_model, other_threshold, other_rows)
        gate = compare_variant(rows, other_rows)
        print(f"\n{args.compare} vs fp32 through the service (gate: agreement >= {MIN_AGREEMENT:.0%}, "
              f"|delta AUROC| <= {MAX_DELTA_AUROC})")  # fmt: skip
        print("{:<26} {:>4} {:>10} {:>12} {:>11} {:>6}".format("presentation", "n", "agreement", "delta AUROC",
                                                             "max |dp|", "gate"))  # fmt: skip
        for name, row in gate.items():
            print(f"{name:<26} {row['n']:>4} {row['agreement']:>10.4f} {row['delta_auroc']:>+12.4f} "
                  f"{row['max_abs_dp']:>11.4f} {'pass' if row['passed'] else 'FAIL':>6}")  # fmt: skip
        failed = not all(row["passed"] for row in gate.values())
        output[args.compare] = {"model": other_model, "threshold": other_threshold,
                                "presentations": public(other_rows), "vs_fp32": gate}  # fmt: skip
        print(f"{args.compare}: {'FAILS the gate: do not keep it' if failed else 'passes the gate on both'}")
    if args.json:
        args.json.write_text(json.dumps(output, indent=2))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
