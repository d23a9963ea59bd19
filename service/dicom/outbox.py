"""The durable outbox: every result waits on disk until the destination has it, through restarts and outages.

Layout under `SERVE_DICOM_OUTBOX` (created mode 0700; its files hold patient data, as results must):

    inbox/<source SOP Instance UID>.dcm        a C-STORE instance accepted and not yet run through the model
    instances/<source SOP Instance UID>.json   what was done with a received instance: inferred (and its results'
                                               UIDs), skipped or failed (and why); the idempotency record
    pending/<result UID>.dcm (and .json)       a result waiting to be sent (and its delivery state, once it failed)
    dead/<result UID>.dcm and .json            a result given up on (a dead letter), kept for an operator

One process at a time holds the folder (an exclusive `flock` on `.lock`, released by the kernel however the
process ends): a second service on the same folder refuses to start instead of sending results twice.
Writes are fsynced (records atomically: `medcore.atomic`, temporary file, fsync, rename, directory fsync). An
accepted C-STORE instance is in `inbox/` before its success status goes out. Its results are committed in this
order: each result's `.dcm` (fsynced), the `pending/` folder fsynced, and last the instance record, the commit
point; then the inbox copy goes. On start, pending files without an instance record (a crash before the commit
point) are deleted and the inbox instance runs again (giving the same result UIDs); an inbox copy whose record
exists is deleted. A sent result loses its `.dcm` (then its state); a state file alone is dropped. So a crash
loses nothing; the one send that may repeat is the one in flight when the process died, and since result UIDs
are derived from the source, the destination stores it once.

Retries: after the n-th failed attempt the next waits `min(cap, base * 2**(n-1))` seconds (1, 2, 4, ... 30 s by
default). A result still unsent `dead_letter_after_s` after it was queued (24 h by default), or refused by the
destination for a reason a retry cannot change (`permanent=True`), moves to `dead/`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from medcore.atomic import atomic_write

logger = logging.getLogger(__name__)

RECENT_SKIPPED = 100  # skipped (and failed) instances listed on /v1/dicom/outbox (all are kept on disk)
LISTED = 1000  # pending results and dead letters listed there, oldest first (the counts cover all)


class OutboxInUseError(RuntimeError):
    """Another process holds the outbox folder."""


@dataclass(frozen=True)
class OutboxItem:
    """One result waiting to be sent."""

    uid: str  # the result's SOP Instance UID
    sop_class_uid: str
    source_uid: str
    kind: str  # "sr" or "sc"
    queued_at: float  # wall-clock seconds (time.time), so ages survive restarts
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""  # a stable code ("association_rejected", "status_0xa700", ...), never a header value


@dataclass(frozen=True)
class Result:
    """A result object to commit: its UIDs, kind and encoded Part-10 bytes."""

    uid: str
    sop_class_uid: str
    kind: str
    data: bytes


@dataclass(frozen=True)
class InstanceRecord:
    """What happened to one received instance."""

    state: str  # "inferred", "skipped" or "failed"
    at: float
    results: tuple[str, ...] = ()
    reason: str = ""
    detail: str = ""
    classes: tuple[str, ...] = ()  # each result's SOP Class UID, in the order of `results`
    kinds: tuple[str, ...] = ()  # each result's kind ("sr", "sc")


@dataclass
class Backoff:
    base_s: float = 1.0
    cap_s: float = 30.0

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after `attempts` failed ones."""
        return float(min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1)))


@dataclass
class Outbox:
    """The folder and an index of it in memory. Thread-safe: the node commits, the delivery worker sends."""

    root: Path
    backoff: Backoff = field(default_factory=Backoff)
    dead_letter_after_s: float = 86400.0
    _pending: dict[str, OutboxItem] = field(default_factory=dict, init=False)
    _dead: dict[str, OutboxItem] = field(default_factory=dict, init=False)
    _instances: dict[str, str] = field(default_factory=dict, init=False)  # source UID -> state
    _skipped: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT_SKIPPED), init=False)
    _failed: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT_SKIPPED), init=False)
    _inbox: set[str] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    sent: int = field(default=0, init=False)  # results sent since start
    _lock_file: IO[str] | None = field(default=None, init=False)

    def open(self) -> None:
        """Lock the folder for this process, create it (mode 0700), drop what a crash left uncommitted, load it."""
        for folder in (self.root, *(self.root / name for name in ("inbox", "instances", "pending", "dead"))):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._take_lock()
        for name in ("inbox", "instances", "pending", "dead"):  # a writer killed mid-write left these; none runs now
            for stale in self._dir(name).glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        expected = self._load_records()
        for name, index in (("pending", self._pending), ("dead", self._dead)):
            self._load_results(name, index, expected)
        for path in self._dir("inbox").glob("*.dcm"):
            if path.stem in self._instances:  # processed; the crash came before its inbox copy went
                path.unlink(missing_ok=True)
            else:
                self._inbox.add(path.stem)
        if self._pending or self._dead or self._inbox:
            logger.info(
                "outbox opened: %d instances still to run, %d results pending, %d dead letters",
                len(self._inbox), len(self._pending), len(self._dead),
            )  # fmt: skip

    def _take_lock(self) -> None:
        self._lock_file = open(self.root / ".lock", "a")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise OutboxInUseError(
                f"the DICOM outbox {self.root} is in use by another process; give each service its own "
                "SERVE_DICOM_OUTBOX (two senders on one outbox would send results twice)"
            ) from None

    def _load_records(self) -> dict[str, OutboxItem]:
        """Index the instance records; returns each committed result's initial state, by result UID."""
        expected: dict[str, OutboxItem] = {}
        for path in sorted(self._dir("instances").glob("*.json"), key=lambda p: p.stat().st_mtime):
            record = _read_record(path)
            if record is None:
                continue
            self._instances[path.stem] = record.state
            if record.state in ("skipped", "failed"):
                (self._skipped if record.state == "skipped" else self._failed).append((path.stem, record.reason))
            for uid, sop_class, kind in zip(record.results, record.classes, record.kinds, strict=False):
                expected[uid] = OutboxItem(uid, sop_class, path.stem, kind, record.at, next_attempt_at=record.at)
        return expected

    def _load_results(self, name: str, index: dict[str, OutboxItem], expected: dict[str, OutboxItem]) -> None:
        for path in self._dir(name).glob("*.dcm"):
            if path.stem not in expected:  # never committed: the instance runs again when it comes back
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
                continue
            index[path.stem] = _read_item(path.with_suffix(".json")) or expected[path.stem]
        for path in self._dir(name).glob("*.json"):
            if path.stem not in index:  # its result was sent (the .dcm went first) or never committed
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the folder's lock (the kernel does too, however the process ends)."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _dir(self, name: str) -> Path:
        return self.root / name

    def seen(self, source_uid: str) -> InstanceRecord | None:
        """The record of an instance already received (a "queued" one while it waits in the inbox), else None."""
        with self._lock:
            if source_uid in self._inbox:
                return InstanceRecord("queued", time.time())
            if source_uid not in self._instances:
                return None
        return _read_record(self._dir("instances") / f"{source_uid}.json")

    def known(self, source_uid: str) -> bool:
        with self._lock:
            return source_uid in self._inbox or source_uid in self._instances

    def hold(self, source_uid: str, data: bytes) -> None:
        """Keep an accepted instance durably until it has run (the C-STORE success goes out after this)."""
        _write_bytes(self._dir("inbox") / f"{source_uid}.dcm", data)
        with self._lock:
            self._inbox.add(source_uid)

    def inbox_uids(self) -> list[str]:
        with self._lock:
            return sorted(self._inbox)

    def read_inbox(self, source_uid: str) -> bytes | None:
        try:
            return (self._dir("inbox") / f"{source_uid}.dcm").read_bytes()
        except FileNotFoundError:
            return None

    def release(self, source_uid: str) -> None:
        """The inbox instance has its record (inferred, skipped or failed): its copy goes."""
        (self._dir("inbox") / f"{source_uid}.dcm").unlink(missing_ok=True)
        with self._lock:
            self._inbox.discard(source_uid)

    def fail(self, source_uid: str, reason: str, detail: str) -> InstanceRecord:
        """Record an accepted instance that could not be run (damaged pixels): no result, not run again."""
        record = InstanceRecord("failed", time.time(), reason=reason, detail=detail)
        _write_json(self._dir("instances") / f"{source_uid}.json", asdict(record))
        with self._lock:
            self._instances[source_uid] = record.state
            self._failed.append((source_uid, reason))
        return record

    def commit(self, source_uid: str, results: list[Result]) -> InstanceRecord:
        """Queue an inferred instance's results durably; the instance record is written last (the commit)."""
        now = time.time()
        items = []
        for result in results:
            item = OutboxItem(result.uid, result.sop_class_uid, source_uid, result.kind, now, next_attempt_at=now)
            _write_plain(self._dir("pending") / f"{result.uid}.dcm", result.data)  # uncommitted until the record
            items.append(item)
        fsync_directory(self._dir("pending"))
        record = InstanceRecord(
            "inferred",
            now,
            tuple(r.uid for r in results),
            classes=tuple(r.sop_class_uid for r in results),
            kinds=tuple(r.kind for r in results),
        )
        _write_json(self._dir("instances") / f"{source_uid}.json", asdict(record))
        with self._lock:
            self._instances[source_uid] = record.state
            for item in items:
                self._pending[item.uid] = item
        return record

    def skip(self, source_uid: str, reason: str, detail: str) -> InstanceRecord:
        record = InstanceRecord("skipped", time.time(), reason=reason, detail=detail)
        _write_json(self._dir("instances") / f"{source_uid}.json", asdict(record))
        with self._lock:
            self._instances[source_uid] = record.state
            self._skipped.append((source_uid, reason))
        return record

    def due(self, now: float, limit: int) -> list[OutboxItem]:
        """Pending results whose next attempt is due, oldest first."""
        with self._lock:
            ready = [item for item in self._pending.values() if item.next_attempt_at <= now]
        return sorted(ready, key=lambda item: (item.queued_at, item.uid))[:limit]

    def next_due_in(self, now: float) -> float | None:
        with self._lock:
            if not self._pending:
                return None
            return max(0.0, min(item.next_attempt_at for item in self._pending.values()) - now)

    def path(self, item: OutboxItem) -> Path:
        return self._dir("pending") / f"{item.uid}.dcm"

    def mark_sent(self, item: OutboxItem) -> None:
        pending = self.path(item)
        pending.unlink(missing_ok=True)  # first: a state file without its .dcm is a sent one
        pending.with_suffix(".json").unlink(missing_ok=True)
        with self._lock:
            self._pending.pop(item.uid, None)
            self.sent += 1

    def mark_failed(self, item: OutboxItem, error: str, *, permanent: bool = False) -> bool:
        """Count a failed attempt; True when the result became a dead letter."""
        now = time.time()
        attempts = item.attempts + 1
        failed = replace(item, attempts=attempts, next_attempt_at=now + self.backoff.delay(attempts), last_error=error)
        if permanent or now - item.queued_at >= self.dead_letter_after_s:
            self._bury(failed)
            return True
        _write_json(self.path(item).with_suffix(".json"), asdict(failed))
        with self._lock:
            if item.uid in self._pending:
                self._pending[item.uid] = failed
        return False

    def _bury(self, item: OutboxItem) -> None:
        pending, dead = self.path(item), self._dir("dead") / f"{item.uid}.dcm"
        _write_json(dead.with_suffix(".json"), asdict(item))  # before the move: a crash between keeps it pending
        os.replace(pending, dead)
        pending.with_suffix(".json").unlink(missing_ok=True)
        with self._lock:
            self._pending.pop(item.uid, None)
            self._dead[item.uid] = item
        logger.warning(
            "a result became a dead letter after %d attempts (last error %s)", item.attempts, item.last_error
        )

    @property
    def depth(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def inbox_depth(self) -> int:
        with self._lock:
            return len(self._inbox)

    @property
    def dead_count(self) -> int:
        with self._lock:
            return len(self._dead)

    def oldest_age_s(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        with self._lock:
            if not self._pending:
                return 0.0
            return max(0.0, now - min(item.queued_at for item in self._pending.values()))

    def summary(self) -> dict[str, Any]:
        """Counts and UIDs only (never a header value): what `/v1/dicom/outbox` answers."""
        now = time.time()
        with self._lock:
            pending = sorted(self._pending.values(), key=lambda item: item.queued_at)
            dead = sorted(self._dead.values(), key=lambda item: item.queued_at)
            instances = dict(self._instances)
            skipped = list(self._skipped)
            failed = list(self._failed)
            inbox = len(self._inbox)
        return {
            "counts": {
                "pending": len(pending),
                "dead": len(dead),
                "sent_since_start": self.sent,
                "instances_inferred": sum(1 for state in instances.values() if state == "inferred"),
                "instances_skipped": sum(1 for state in instances.values() if state == "skipped"),
                "instances_failed": sum(1 for state in instances.values() if state == "failed"),
                "inbox": inbox,
            },
            "oldest_pending_age_s": round(max((now - pending[0].queued_at) if pending else 0.0, 0.0), 3),
            "pending": [_listed(item, now) for item in pending[:LISTED]],
            "dead": [_listed(item, now) for item in dead[:LISTED]],
            "recently_skipped": [{"sop_instance_uid": uid, "reason": reason} for uid, reason in reversed(skipped)],
            "recently_failed": [{"sop_instance_uid": uid, "reason": reason} for uid, reason in reversed(failed)],
        }


def _listed(item: OutboxItem, now: float) -> dict[str, Any]:
    return {
        "sop_instance_uid": item.uid,
        "source_sop_instance_uid": item.source_uid,
        "kind": item.kind,
        "attempts": item.attempts,
        "age_s": round(now - item.queued_at, 3),
        "last_error": item.last_error,
    }


def _write_plain(path: Path, data: bytes) -> None:
    """Write and fsync in place (for files a later record commits), owner-only."""
    with open(path, "wb", opener=lambda name, flags: os.open(name, flags, 0o600)) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (new files, renames) survive a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))
    os.chmod(path, 0o600)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    _write_bytes(path, json.dumps(value, sort_keys=True).encode())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_item(path: Path) -> OutboxItem | None:
    value = _read_json(path)
    try:
        return OutboxItem(**value) if value is not None else None
    except TypeError:
        return None


def _read_record(path: Path) -> InstanceRecord | None:
    value = _read_json(path)
    if value is None:
        return None
    try:
        lists = {key: tuple(value.get(key, ())) for key in ("results", "classes", "kinds")}
        return InstanceRecord(**{**value, **lists})
    except TypeError:
        return None
