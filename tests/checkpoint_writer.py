"""A process that writes last.pt (and every third version best.pt) in a loop through `save_checkpoint`.

`python tests/checkpoint_writer.py DIR [--once]`: version v fills every weight with the value v, so a
reader can tell a complete version from a mix. Prints `ready`, reads the first version from stdin, then
prints `last v` / `best v` after each save has returned (flushed), for tests/test_training_faults.py.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from medcore.record import ModelRecord, Preprocessing, Provenance, Task
from trainer.checkpoint import Checkpoint, save_checkpoint
from trainer.models import ModelSpec, build_model

SPEC = ModelSpec("convnext_atto", num_outputs=1, in_channels=1, stem_stride=2)
RECORD = ModelRecord(
    name="kill-loop", version="0.0.1", task=Task.BINARY, labels=("pneumonia",), thresholds={"pneumonia": 0.5},
    preprocessing=Preprocessing(height=28, width=28, channels=1, mean=(0.5,), std=(0.25,)),
    provenance=Provenance(architecture="convnext_atto", data={"kind": "medmnist"}),
)  # fmt: skip


def version(template: dict[str, torch.Tensor], value: int) -> Checkpoint:
    state = {name: torch.full_like(tensor, value) for name, tensor in template.items()}
    return Checkpoint(spec=SPEC, record=RECORD, model_state=state, epoch=value, config={"version": value},
                      training_state={"optimizer": {"state": {0: {"exp_avg": state[next(iter(state))]}}}})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    template = {k: v for k, v in build_model(SPEC).state_dict().items() if v.is_floating_point()}
    print("ready", flush=True)
    first = int(sys.stdin.readline())  # the test starts the next writer while it kills this one's predecessor
    for value in itertools.count(first):
        save_checkpoint(version(template, value), args.directory / "last.pt")
        print(f"last {value}", flush=True)
        if value % 3 == 0 or args.once:
            save_checkpoint(version(template, value), args.directory / "best.pt")
            print(f"best {value}", flush=True)
        if args.once:
            return


if __name__ == "__main__":
    sys.exit(main())
