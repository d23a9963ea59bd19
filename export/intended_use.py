"""What a model is for, set at export: `--intended-use FILE` and per-field flags, and rewriting an exported file.

`export onnx` writes the result into the record it embeds (the variants made later copy it). `python -m export
intended-use MODEL.onnx` states it for a model already exported: it replaces only the record's `intended_use`
in the fp32 file and in every variant beside it, keeps the graph byte for byte (checked), and appends the edit
to the file's export metadata (`record_edits`: what changed, when, by which command), so the record says it
was edited after export rather than pretending to have been exported so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.atomic import write_checked
from export.errors import ExportError
from export.layout import CARD_FILE, variant_path
from export.metadata import EXPORT_METADATA_KEY, read_record
from medcore.record import ONNX_METADATA_KEY, IntendedUse, ModelRecord, Variant
from trainer.config import IntendedUseConfig, load_intended_use

_FLAGS = (
    ("modalities", "DICOM Modality codes allowed, e.g. CR,DX ('any': not restricted)"),
    ("body_parts", "DICOM BodyPartExamined codes allowed, e.g. CHEST ('any': not restricted)"),
    ("view_positions", "DICOM ViewPosition codes allowed, e.g. PA,AP ('any': not restricted)"),
)
_NOT_RESTRICTED = "any"


def add_intended_use_arguments(parser: argparse.ArgumentParser) -> None:
    """`--intended-use FILE` (YAML/JSON: the trainer's `intended_use` section), then flags that override it."""
    group = parser.add_argument_group("intended use (written into the record; default: the checkpoint's)")
    group.add_argument(
        "--intended-use",
        type=Path,
        metavar="FILE",
        help="YAML/JSON file with description, out_of_scope, modalities, body_parts, view_positions "
        "(e.g. configs/intended_use_chest_pa_ap.yaml; a training config's intended_use section works too)",
    )
    for name, text in _FLAGS:
        group.add_argument(f"--{name.replace('_', '-')}", metavar="CODES", help=text)
    group.add_argument("--description", help="one paragraph: what the model is for")
    group.add_argument(
        "--out-of-scope", action="append", metavar="TEXT", help="an input or use the model is not for (repeatable)"
    )


def intended_use_from_args(args: argparse.Namespace, current: IntendedUse) -> IntendedUse | None:
    """The intended use the flags ask for, on top of `current` (None when no flag was given)."""
    fields: dict[str, Any] = {}
    if args.intended_use is not None:
        fields = {**IntendedUse().model_dump(), **load_intended_use(args.intended_use)}
    for name, _ in _FLAGS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = None if value.strip().lower() == _NOT_RESTRICTED else value
    if args.description is not None:
        fields["description"] = args.description
    if args.out_of_scope:
        fields["out_of_scope"] = args.out_of_scope
    if not fields:
        return None
    merged = {**current.model_dump(), **fields}
    return IntendedUseConfig(**{k: v for k, v in merged.items() if k in IntendedUse.model_fields}).to_record()


@dataclass(frozen=True)
class Rewritten:
    path: Path
    variant: Variant
    before: IntendedUse
    after: IntendedUse


def rewrite_intended_use(
    model: Path, use: IntendedUse, *, command: str = "python -m export intended-use"
) -> list[Rewritten]:
    """Set `use` in the record of the fp32 file `model` and of each variant file beside it (graph unchanged)."""
    import onnx

    if not model.is_file():
        raise FileNotFoundError(f"model {model} does not exist")
    names: tuple[Variant, ...] = ("fp32", "fp16", "int8")
    paths = [(v, p) for v in names if (p := variant_path(model, v)).is_file()]
    done = []
    for variant, path in paths:
        proto = onnx.load(str(path))
        graph = proto.graph.SerializeToString()
        record = read_record(path)
        updated = ModelRecord.from_dict({**record.to_dict(), "intended_use": use.model_dump(mode="json")})
        props = {prop.key: prop.value for prop in proto.metadata_props}
        props[ONNX_METADATA_KEY] = updated.to_json()
        props[EXPORT_METADATA_KEY] = json.dumps(_with_edit(props.get(EXPORT_METADATA_KEY), record, use, command))
        del proto.metadata_props[:]
        onnx.helper.set_model_props(proto, props)

        def check(temp: Path, expected: ModelRecord = updated, graph_bytes: bytes = graph) -> None:
            written = onnx.load(str(temp))
            if written.graph.SerializeToString() != graph_bytes:
                raise ExportError(f"rewriting the record of {temp} changed its graph")
            if read_record(temp) != expected:
                raise ExportError(f"the record read back from {temp} differs from the one written")

        write_checked(path, proto.SerializeToString(), check)
        done.append(Rewritten(path, variant, record.intended_use, use))
    return done


def _with_edit(export_info: str | None, record: ModelRecord, use: IntendedUse, command: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(export_info) if export_info else {}
    edit = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "by": command,
        "field": "intended_use",
        "before": record.intended_use.model_dump(mode="json"),
    }
    info["record_edits"] = [*info.get("record_edits", []), edit]
    return info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the fp32 ONNX file (model.onnx); variants beside it follow")
    add_intended_use_arguments(parser)


def run_intended_use(args: argparse.Namespace) -> int:
    current = read_record(args.model).intended_use
    use = intended_use_from_args(args, current)
    if use is None:
        raise ValueError("nothing to set: give --intended-use FILE or a field flag (see --help)")
    for item in rewrite_intended_use(args.model, use):
        print(f"{item.path} ({item.variant}): intended_use {_summary(item.before)} -> {_summary(item.after)}")
    print(f"now regenerate the card: python -m export card {args.model} --force  ({CARD_FILE})")
    return 0


def _summary(use: IntendedUse) -> str:
    parts = [f"{name}={','.join(codes) if codes else _NOT_RESTRICTED}" for name, codes in _restrictions(use)]
    return " ".join(parts)


def _restrictions(use: IntendedUse) -> list[tuple[str, tuple[str, ...] | None]]:
    return [(name, getattr(use, name)) for name, _ in _FLAGS]
