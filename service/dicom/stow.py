"""STOW-RS bodies and answers (PS3.18 10.5): `multipart/related; type="application/dicom"` both ways.

`parse_related` splits a request body into its parts (raising `MultipartError` naming the part that is not
an `application/dicom` DICOM instance, or a bad boundary); `encode_related` builds one for the delivery
worker; `store_response` is the PS3.18 answer: Referenced SOP Sequence (0008,1199) and Failed SOP Sequence
(0008,1198) with Failure Reason (0008,1197), as `application/dicom+json`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.message import Message
from typing import Any

from medcore.imaging.dicom import looks_like_dicom

DICOM = "application/dicom"
# PS3.18 Table 10.5.3-2 / PS3.7 C-STORE failure codes used as Failure Reason.
OUT_OF_RESOURCES, DATA_SET_MISMATCH, CANNOT_UNDERSTAND, TRANSFER_SYNTAX = 0xA700, 0xA900, 0xC000, 0xC122


class MultipartError(ValueError):
    """The body is not a well-formed multipart/related of DICOM parts; `status` is 400 or 415."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_multipart") -> None:
        super().__init__(message)
        self.status, self.code = status, code


def media_params(content_type: str) -> tuple[str, dict[str, str]]:
    """`multipart/related; type="application/dicom"; boundary=x` -> ("multipart/related", {type, boundary})."""
    message = Message()
    message["content-type"] = content_type
    params = {key.lower(): str(value) for key, value in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


def parse_related(content_type: str, body: bytes) -> list[bytes]:
    """The parts' bodies, each checked to be an `application/dicom` DICOM instance."""
    media, params = media_params(content_type)
    if media != "multipart/related" or params.get("type", DICOM).lower() != DICOM:
        raise MultipartError(
            f"Content-Type {media!r} (type {params.get('type')!r}) is not accepted; STOW-RS takes "
            'multipart/related; type="application/dicom"',
            415,
            "unsupported_media_type",
        )
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise MultipartError("the multipart/related Content-Type has no valid boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise MultipartError("the body does not contain its boundary: no part found")
    parts, position, index = [], start, 0
    while True:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            break  # the close delimiter
        index += 1
        end = body.find(b"\r\n" + delimiter, position)
        if end < 0:
            raise MultipartError(f"part {index} is not followed by a boundary (the body is cut short)")
        parts.append(_part(body[position:end], index))
        position = end + 2
    if not parts:
        raise MultipartError("the multipart body holds no part")
    return parts


def _part(raw: bytes, index: int) -> bytes:
    line_end = raw.find(b"\r\n")
    if line_end < 0 or raw[:line_end].strip(b" \t"):  # only transport padding may follow a boundary
        raise MultipartError(f"part {index}: its boundary line does not end with CRLF")
    raw = raw[line_end + 2 :]
    if raw.startswith(b"\r\n"):
        head, data = b"", raw[2:]
    else:
        head_end = raw.find(b"\r\n\r\n")
        if head_end < 0:
            raise MultipartError(f"part {index} has no header block")
        head, data = raw[:head_end], raw[head_end + 4 :]
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    media = headers.get("content-type", DICOM).split(";", 1)[0].strip().lower()
    if media != DICOM:
        raise MultipartError(
            f"part {index} has Content-Type {media[:60]!r}; this endpoint stores application/dicom parts only",
            415,
            "unsupported_media_type",
        )
    if not looks_like_dicom(data):
        raise MultipartError(f"part {index} is not a DICOM instance (no DICM prefix)", 400, "not_dicom")
    return data


def encode_related(instances: list[bytes]) -> tuple[str, bytes]:
    """(Content-Type, body) of a STOW-RS request holding `instances` (Part-10 bytes)."""
    boundary = "medimaging-" + secrets.token_hex(16)
    chunks = []
    for data in instances:
        chunks += [f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return f'multipart/related; type="{DICOM}"; boundary={boundary}', b"".join(chunks)


@dataclass(frozen=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    failure_reason: int | None = None  # None: stored (referenced)


def store_response(instances: list[StoredInstance]) -> dict[str, Any]:
    """The PS3.18 store response as DICOM JSON."""
    referenced = [_reference(i) for i in instances if i.failure_reason is None]
    failed = [
        {**_reference(i), "00081197": {"vr": "US", "Value": [i.failure_reason]}}
        for i in instances
        if i.failure_reason is not None
    ]
    response: dict[str, Any] = {}
    if failed:
        response["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        response["00081199"] = {"vr": "SQ", "Value": referenced}
    return response


def _reference(instance: StoredInstance) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if instance.sop_class_uid:
        item["00081150"] = {"vr": "UI", "Value": [instance.sop_class_uid]}
    if instance.sop_instance_uid:
        item["00081155"] = {"vr": "UI", "Value": [instance.sop_instance_uid]}
    return item


def failed_uids(response: Any) -> dict[str, int]:
    """{SOP Instance UID: Failure Reason} from a PS3.18 store response (DICOM JSON); {} when unreadable."""
    if not isinstance(response, dict):
        return {}
    found = {}
    for item in (response.get("00081198") or {}).get("Value", []) or []:
        try:
            found[str(item["00081155"]["Value"][0])] = int(item["00081197"]["Value"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return found
