"""The bundled default model: full-resolution X-rays posted to the service score like their MedMNIST twins.

MedMNIST made its 28x28 images from these very JPEGs (centre square crop, resize). The record's recipe must
give a full-size upload the treatment the model learned on, so the service's score for each original agrees
with the model's score for its 28x28 twin in the npz (labels.csv maps each file to its twin).
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from data_location import needs_full_data
from service_support import post_image, running_server

from medcore.imaging import preprocess_image, stack_batch
from medcore.record import ONNX_METADATA_KEY, ModelRecord
from service.config import BUNDLED_MODEL, Settings

# The model card claims 99.5 % agreement (214 of 215) and logit r = 0.998. The bounds allow one more image
# to flip near the threshold (213 of 215 = 0.9907) and r to fall to 0.99, for other CPUs' float rounding.
MIN_DECISION_AGREEMENT = 0.99
MIN_LOGIT_CORRELATION = 0.99


def twin_probabilities(data: Path, rows: list[dict[str, str]]) -> np.ndarray:
    session = ort.InferenceSession(str(BUNDLED_MODEL), providers=["CPUExecutionProvider"])
    record = ModelRecord.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    npz = np.load(data / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz")
    twins = [npz[f"{row['pmnist_rec_split']}_images"][int(row["pmnist_rec_index"])] for row in rows]
    batch = stack_batch([preprocess_image(twin, record.preprocessing) for twin in twins])
    (probabilities,) = session.run(["probabilities"], {"input": batch})
    return np.asarray(probabilities)[:, 0]


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@needs_full_data
def test_full_resolution_uploads_agree_with_their_medmnist_twins(shared_data: Path) -> None:
    if not BUNDLED_MODEL.is_file():
        pytest.fail(f"the bundled model {BUNDLED_MODEL} is missing")
    kermany = shared_data / "kermany_chest_xray_subset"
    with (kermany / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = twin_probabilities(shared_data, rows)

    with running_server(Settings(model_path=BUNDLED_MODEL)) as server, server.client() as client:
        threshold = client.get("/model").json()["thresholds"]["pneumonia"]

        def score(row: dict[str, str]) -> float:
            response = post_image(client, (kermany / row["filename"]).read_bytes(), filename="chest.jpeg")
            assert response.status_code == 200, response.text
            return float(response.json()["results"][0]["predictions"][0]["probability"])

        with ThreadPoolExecutor(8) as pool:
            served = np.array(list(pool.map(score, rows)))

    agreement = float(np.mean((served >= threshold) == (expected >= threshold)))
    correlation = float(np.corrcoef(logit(served), logit(expected))[0, 1])
    print(
        f"\n{len(rows)} Kermany originals vs MedMNIST twins: decisions agree {agreement:.3f}, "
        f"logit r {correlation:.3f}, mean |dp| {np.abs(served - expected).mean():.4f}"
    )
    assert agreement >= MIN_DECISION_AGREEMENT
    assert correlation >= MIN_LOGIT_CORRELATION
