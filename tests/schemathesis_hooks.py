"""Schemathesis hooks for tests/test_service_schema_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

STOW-RS bodies are `multipart/related; type="application/dicom"`, which schemathesis cannot serialize on its own:
the generated value becomes the one part of such a body, with its boundary in the Content-Type header.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from service.dicom.stow import encode_related


@schemathesis.serializer('multipart/related; type="application/dicom"', "multipart/related")
def stow_body(ctx: Any, value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    content_type, body = encode_related([data])
    ctx.case.headers = {**(ctx.case.headers or {}), "Content-Type": content_type}
    return body
