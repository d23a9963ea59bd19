"""python -m export inspect FILE: the embedded record, the export settings and the graph's edges."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export.metadata import EXPORT_METADATA_KEY, session_record
from export.parity import open_session


def describe_file(path: Path) -> str:
    """Human-readable summary: name, variant, inputs/outputs with shapes, thresholds, parity, then the record."""
    session = open_session(path)
    record = session_record(session, path)
    export_info = session.get_modelmeta().custom_metadata_map.get(EXPORT_METADATA_KEY, "{}")
    lines = [
        f"{path}: {record.name} {record.version}, {record.task.value}, variant {record.variant}",
        *(f"  input  {arg.name}: {arg.type} {arg.shape}" for arg in session.get_inputs()),
        *(f"  output {arg.name}: {arg.type} {arg.shape}" for arg in session.get_outputs()),
        f"  labels {list(record.labels)}, thresholds {dict(record.thresholds)}",
    ]
    best = best_epoch_line(record.provenance.metrics, record.provenance.config)
    if best:
        lines.append(f"  {best}")
    if record.parity:
        lines.append(f"  parity vs fp32: {json.dumps(record.parity, sort_keys=True)}")
    lines.append(f"  export: {export_info}")
    lines.append("record:")
    lines.append(json.dumps(record.to_dict(), indent=2))
    return "\n".join(lines)


def best_epoch_line(metrics: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The kept epoch counted from 1, as report.md and the training log count it (the record stores it from 0)."""
    epoch = metrics.get("epoch")
    if not isinstance(epoch, int) or epoch < 0:
        return None
    of = f" of {config['epochs']}" if isinstance(config.get("epochs"), int) else ""
    return f"best epoch {epoch + 1}{of} (counted from 1, as in report.md; the record's metrics.epoch counts from 0)"
