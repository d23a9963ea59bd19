"""Who may call the DICOM node and where its results go: AE titles, the caller allow-list, the destination.

Pure parsing (no networking), so the settings can check these values before anything starts.
- An AE title is 1-16 characters of printable ASCII without a backslash, not all spaces (PS3.5 6.2, AE VR).
- `SERVE_DICOM_ALLOWED_CALLERS`: comma-separated `AET@host` entries; `host` is an IP address or a name
  (resolved at start), `*` for any host (`AET@*`). Empty: every caller is accepted (a warning at start).
- `SERVE_DICOM_DESTINATION`: `dicom://AET@host:port` (C-STORE) or an `http(s)://` DICOMweb base URL
  (STOW-RS to `<base>/studies`; credentials in the URL are sent as HTTP Basic and never logged).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY_HOST = "*"


def check_ae_title(value: str, what: str) -> str:
    """`value` stripped, when it is a valid AE title; else `ValueError` naming `what`."""
    title = value.strip()
    if not title or len(title) > 16 or "\\" in title or not all(32 <= ord(c) < 127 for c in title):
        raise ValueError(f"{what} {value!r} is not an AE title (1-16 printable ASCII characters, no backslash)")
    return title


@dataclass(frozen=True)
class Caller:
    """One allowed calling AE: its title and the host it must call from (`*`: any)."""

    ae_title: str
    host: str

    def matches(self, ae_title: str, addresses: frozenset[str]) -> bool:
        return ae_title.strip() == self.ae_title and (self.host == ANY_HOST or bool(addresses & self.addresses()))

    def addresses(self) -> frozenset[str]:
        """The host's IP addresses (a literal address is itself; a name is resolved now)."""
        try:
            infos = socket.getaddrinfo(self.host, None)
        except OSError:
            return frozenset({self.host})
        return frozenset({self.host, *(str(info[4][0]) for info in infos)})


def parse_callers(text: str) -> tuple[Caller, ...]:
    """`AET@host,AET@host,...` -> callers; `ValueError` naming the entry that is not of that form."""
    callers = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        title, at, host = entry.rpartition("@")
        if not at or not title or not host.strip():
            raise ValueError(f"SERVE_DICOM_ALLOWED_CALLERS entry {entry!r} is not of the form AET@host (or AET@*)")
        callers.append(Caller(check_ae_title(title, "calling AE title"), host.strip()))
    return tuple(callers)


@dataclass(frozen=True)
class Destination:
    """Where results go: a DIMSE peer (`ae_title`, `host`, `port`) or a DICOMweb base URL (`url`)."""

    scheme: str  # "dicom", "http" or "https"
    host: str
    port: int
    ae_title: str = ""
    url: str = ""

    @property
    def is_dimse(self) -> bool:
        return self.scheme == "dicom"

    def describe(self) -> str:
        """For logs: the peer without credentials or path details."""
        if self.is_dimse:
            return f"C-STORE to {self.ae_title}@{self.host}:{self.port}"
        return f"STOW-RS to {self.scheme}://{self.host}:{self.port}"


def parse_destination(text: str) -> Destination:
    """`dicom://AET@host:port` or `http(s)://host[:port]/base`; `ValueError` saying which form is expected."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme == "dicom":
        if not parts.username or not parts.hostname or parts.port is None:
            raise ValueError(f"SERVE_DICOM_DESTINATION {text!r} must be dicom://AET@host:port")
        return Destination("dicom", parts.hostname, parts.port, check_ae_title(parts.username, "destination AE title"))
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"SERVE_DICOM_DESTINATION {text!r} has no host; use http(s)://host[:port]/dicom-web")
        port = parts.port or (443 if scheme == "https" else 80)
        return Destination(scheme, parts.hostname, port, url=text.strip().rstrip("/"))
    raise ValueError(
        f"SERVE_DICOM_DESTINATION must start with dicom:// (C-STORE) or http(s):// (STOW-RS), got scheme {scheme!r}"
    )
