"""python -m export inspect FILE: the embedded record, the export settings and the graph's edges."""

from __future__ import annotations

import json
from pathlib import Path

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
    if record.parity:
        lines.append(f"  parity vs fp32: {json.dumps(record.parity, sort_keys=True)}")
    lines.append(f"  export: {export_info}")
    lines.append("record:")
    lines.append(json.dumps(record.to_dict(), indent=2))
    return "\n".join(lines)
