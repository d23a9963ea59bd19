"""No machine paths in anything the service serves about a model: every card, every record, every listing.

A real service over the repository's model directory (every bundled model and version); each model's card
(`GET .../card`, the MODEL_CARD.md beside it), its record (`GET /model`, `/v1/models...`) and its OIP metadata
are read, and none may name a file-system location of the machine that built it: no absolute path, no home
directory, no Windows drive, not this checkout's own location.
"""

from __future__ import annotations

import re
from pathlib import Path

from service_support import running_server

from service.config import MODEL_DIR, Settings

REPO = Path(__file__).resolve().parents[1]
# An absolute POSIX path of two or more parts (/work/shared/..., /home/x/...), not one of the service's own
# routes; a home directory (~/ or ~user/); a Windows drive path.
ROUTES = ("/v1/", "/v2/", "/predict", "/model", "/metrics", "/health", "/ui/")
ABSOLUTE = re.compile(r"(?<![\w.:/~-])/[\w.-]+(?:/[\w.-]+)+")
HOME = re.compile(r"(?<![\w])~[\w.-]*/|\b[A-Za-z]:[\\/][\w]")


def machine_paths(text: str) -> list[str]:
    found = [m for m in ABSOLUTE.findall(text) if not m.startswith(ROUTES)]
    found += HOME.findall(text)
    for own in {str(REPO), str(REPO.parent), str(Path.home())}:
        if own in text and not any(own in match for match in found):
            found.append(own)
    return found


def test_the_detector_finds_the_paths_it_is_for() -> None:
    assert machine_paths("Kind `medmnist`, path `/work/shared/data/x.npz`.") == ["/work/shared/data/x.npz"]
    assert machine_paths("cache in ~/.cache/medimaging") == ["~/"]
    assert machine_paths(r"C:\Users\me\run") == ["C:\\U"]
    clean = "POST /predict, GET /v1/models/x/versions/1/card; dataset `a.npz`; [[TN, FP], [FN, TP]]; 1-5 years"
    assert machine_paths(clean) == []


def test_no_served_card_or_record_names_a_machine_path() -> None:
    settings = Settings(model_dir=MODEL_DIR, model_path=None, decode_threads=1, intra_op_threads=1)
    with running_server(settings) as server, server.client() as client:
        listing = client.get("/v1/models")
        assert listing.status_code == 200
        models = listing.json()["models"]
        assert models, "the model directory serves no model"
        served = {"/model": client.get("/model"), "/v1/models": listing}
        for model in models:
            base = f"/v1/models/{model['name']}/versions/{model['version']}"
            for path in (base, f"{base}/card", f"/v2/models/{model['name']}/versions/{model['version']}"):
                served[path] = client.get(path)
    cards = [path for path in served if path.endswith("/card")]
    assert len(cards) == len(models)
    for path, response in served.items():
        assert response.status_code == 200, (path, response.text)
        assert machine_paths(response.text) == [], path
