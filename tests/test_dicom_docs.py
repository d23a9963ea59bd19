"""docs/dicom.md (the conformance statement) and the README's DICOM section stay true to the code: the settings they
name exist with the defaults they state, and the transfer syntaxes and SOP classes listed are the ones negotiated."""

from __future__ import annotations

import re
from pathlib import Path

from pynetdicom import AllStoragePresentationContexts

from medcore.imaging.dicom import decodable_transfer_syntaxes
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
STATEMENT = (ROOT / "docs" / "dicom.md").read_text()
README_SECTION = (ROOT / "README.md").read_text().split("## DICOM: point a PACS at the node", 1)[1].split("\n## ", 1)[0]


def test_every_setting_named_exists() -> None:
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\bSERVE_[A-Z_]+[A-Z]\b", STATEMENT + README_SECTION))
    assert named, "expected SERVE_* settings in docs/dicom.md"
    assert named <= fields, f"not settings: {sorted(named - fields)}"


def test_association_table_defaults_are_the_settings_defaults() -> None:
    rows = dict(re.findall(r"^\| `(SERVE_DICOM_[A-Z_]+)` \| ([^|]+) \|", STATEMENT, flags=re.MULTILINE))
    defaults = {f"SERVE_{name.upper()}": field.default for name, field in Settings.model_fields.items()}
    assert {"SERVE_DICOM_PORT", "SERVE_DICOM_AE_TITLE", "SERVE_DICOM_MAX_PDU"} <= set(rows)
    for setting, stated in rows.items():
        default = defaults[setting]
        if default is None or default == "":
            assert stated.startswith(("unset", "empty")), setting
        else:
            assert stated.strip().strip("`") == str(default).removesuffix(".0"), (setting, stated, default)


def test_transfer_syntax_table_is_what_the_scp_negotiates() -> None:
    table = STATEMENT.split("### Transfer syntaxes", 1)[1].split("###", 1)[0]
    listed: set[str] = set()
    for uids in re.findall(r"\| (1\.2\.840\.10008\.[0-9. /]+) \|", table):
        first, *others = [uid.strip() for uid in uids.split("/")]
        listed.add(first)
        listed.update(first.rsplit(".", 1)[0] + other if other.startswith(".") else other for other in others)
    assert listed == {str(uid) for uid in decodable_transfer_syntaxes()}


def test_storage_sop_class_count_is_pynetdicoms() -> None:
    count = len([c for c in AllStoragePresentationContexts if c.abstract_syntax is not None])
    assert f"lists ({count}, `AllStoragePresentationContexts`)" in STATEMENT
