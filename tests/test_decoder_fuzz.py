"""Hostile bytes at the decoder boundary: every fuzz case decodes or raises an ImageError with a known code."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fuzz_corpus import fuzz_cases, source_files

from medcore.imaging import STATUS_BY_CODE, ImageError, load_model_input
from medcore.record import Preprocessing

GRAY = Preprocessing(height=28, width=28, channels=1, mean=(0.5,), std=(0.25,))
RGB = Preprocessing(height=32, width=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
CASES = 300


def test_corpus_is_seeded_and_mutates_every_source(shared_data: Path) -> None:
    first, again = fuzz_cases(shared_data, seed=7, count=60), fuzz_cases(shared_data, seed=7, count=60)
    assert first == again
    assert first != fuzz_cases(shared_data, seed=8, count=60)
    originals = {data for _, data in source_files(shared_data)}
    assert not originals & {data for _, data in first}
    kinds = {name.split("-flip-")[0].split("-cut-")[0] for name, _ in first}
    assert kinds == {"png", "jpeg", "tiff", "dicom-explicit", "dicom-bare", "dicom-jpeg"}


def test_sources_decode(shared_data: Path) -> None:
    for _, data in source_files(shared_data):
        assert load_model_input(data, GRAY).shape == (1, 28, 28)


def test_every_fuzz_case_decodes_or_raises_a_known_image_error(shared_data: Path) -> None:
    outcomes: Counter[str] = Counter()
    for name, data in fuzz_cases(shared_data, seed=20261201, count=CASES):
        for recipe in (GRAY, RGB):
            try:
                tensor = load_model_input(data, recipe)
            except ImageError as exc:
                assert exc.code in STATUS_BY_CODE, (name, exc.code)
                assert exc.status == STATUS_BY_CODE[exc.code] and exc.status in {400, 413, 415, 422}, name
                outcomes[exc.code] += 1
            else:  # anything else propagates and fails the test with its traceback
                assert tensor.shape == (recipe.channels, recipe.height, recipe.width), name
                assert np.isfinite(tensor).all(), name
                outcomes["decoded"] += 1
    # The corpus exercises both sides of the boundary, and more than one failure path.
    assert outcomes["decoded"] > CASES // 10, outcomes
    assert outcomes["corrupt_image"] > CASES // 10, outcomes
    assert len(outcomes) >= 3, outcomes


@pytest.mark.parametrize("seed", [1, 2])
def test_error_messages_name_no_file_and_no_pixels(shared_data: Path, seed: int) -> None:
    for name, data in fuzz_cases(shared_data, seed=seed, count=60):
        try:
            load_model_input(data, GRAY)
        except ImageError as exc:
            message = str(exc)
            assert len(message) < 300, name
            assert ".dcm" not in message and ".png" not in message and ".jp" not in message, name
