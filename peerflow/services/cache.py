"""A persistent cache of LLM responses, and replay of a recorded run with no server at all.

A synthetic-data run is re-run often: a prompt of one role changes, a run goes into a new
output, a demo or a test must give the same records offline. With a cache, a request that
was already answered is answered again from disk, so a re-run of a changed workflow pays only
for the requests that changed, and `replay` runs a workflow from the cache alone.

The key is the SHA-256 of the full request body as it is sent (model, messages, sampling,
tools, response_format or schema, seed, the service's `extra_body`: everything), in canonical
JSON (sorted keys), plus the cache's `namespace` if one is set. Nothing else: not the
endpoint, not the service's name, so a recording made against one server replays under any
service sending the same model name (which is why a server whose replies change under the
same name, e.g. a simulator given another script, needs another namespace or file). The value
is what a step records of a reply: content, tool calls, usage, model and finish reason.

The store is SQLite in WAL mode: readers never wait for the writer, several processes (runs
sharing a cache, Ray role actors) may write the same file, and a crash at any moment leaves
only whole entries (each batch of rows is one transaction). Lookups run inline (a primary-key
read takes about ten microseconds); stores are queued and written by one thread per process in
batches, so the event loop never waits for a commit. A store still queued when the process
dies is lost, which costs one request on the next run, never a wrong answer.

`CachedService` wraps a service built from the config (see `with_cache`): agents and the
service watch see the same protocol and attributes. In `replay` mode the wrapped service is
never started (no simulator or model server is launched, no endpoint needs to answer), its
health check passes, and a miss raises `CacheMiss`, which fails that step permanently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from peerflow.services.base import ChatResult, Service, ServiceError

__all__ = [
    "CacheMiss",
    "CacheSettings",
    "CachedService",
    "ResponseStore",
    "cache_errors",
    "cache_settings",
    "cache_summary",
    "replays",
    "request_key",
    "with_cache",
]

log = logging.getLogger(__name__)

MODES = ("read_write", "read_only", "replay", "off")
# Service kinds whose calls are chat completions (and so can be cached).
LLM_KINDS = ("openai", "sim", "local_model", "command")
# How long a connection waits for another process's write lock before giving up (ms).
BUSY_TIMEOUT_MS = 30_000
# Rows per write transaction, at most; a batch is whatever is queued when the writer wakes.
_BATCH = 512
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    service TEXT,
    request TEXT,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('schema', '1');
"""
# Reply fields kept in an entry (those `ChatResult` carries from the server).
_FIELDS = ("content", "tool_calls", "usage", "model", "finish_reason")
_STOP = object()


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CacheSettings:
    """One service's effective cache: where, how, and what is mixed into its keys."""

    path: Path
    mode: str
    extra: dict[str, Any] = field(default_factory=dict)


def cache_settings(config: Any, name: str, cfg: Any) -> CacheSettings | None:
    """The cache of service `name` (config section `cfg`) in run `config`, or None when off.

    A service's own `cache` keys win over the top-level `cache`; with a path and no mode the
    mode is `read_write`. Raises ValueError when a mode needs a path and none is given.
    """
    if getattr(cfg, "kind", None) not in LLM_KINDS:
        return None
    top = getattr(config, "cache", None)
    own = getattr(cfg, "cache", None)

    def pick(key: str) -> Any:
        value = getattr(own, key, None) if own is not None else None
        if value is None and top is not None:
            value = getattr(top, key, None)
        return value

    path, mode, namespace = pick("path"), pick("mode"), pick("namespace")
    if mode is None:
        mode = "read_write" if path else "off"
    if mode == "off":
        return None
    if not path:
        raise ValueError(f"cache mode {mode!r} needs a cache `path`")
    extra: dict[str, Any] = {}
    if namespace is not None:
        extra["namespace"] = namespace
    return CacheSettings(path=config.resolve(path), mode=mode, extra=extra)


def replays(config: Any, name: str, cfg: Any) -> bool:
    """Whether service `name` runs from its cache alone (its server must not be started)."""
    try:
        settings = cache_settings(config, name, cfg)
    except ValueError:
        return False
    return settings is not None and settings.mode == "replay"


def cache_errors(config: Any) -> list[tuple[tuple[str, ...], str]]:
    """Problems of the run's cache settings, as (key path, message) for `RunConfig.error`."""
    errors: list[tuple[tuple[str, ...], str]] = []
    for name, cfg in config.services.items():
        own = getattr(cfg, "cache", None)
        where: tuple[str, ...] = ("services", name, "cache") if own is not None else ("cache",)
        try:
            settings = cache_settings(config, name, cfg)
        except ValueError as exc:
            errors.append(((*where, "path"), f"service {name!r}: {exc}"))
            continue
        if settings is None or settings.mode not in ("replay", "read_only"):
            continue
        if not settings.path.is_file():
            errors.append(
                (
                    (*where, "path"),
                    f"service {name!r}: cache mode {settings.mode!r} reads {settings.path}, "
                    "which does not exist (record it first with mode read_write)",
                )
            )
    return errors


# --------------------------------------------------------------------------- keys


def request_key(body: dict[str, Any], extra: dict[str, Any] | None = None) -> bytes:
    """SHA-256 of the canonical JSON (sorted keys) of the request body as sent (and `extra`)."""
    if extra:
        body = {**body, "~cache": extra}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


def describe_request(body: dict[str, Any], key: bytes) -> str:
    """A short, human account of a request: its key, model, message count, seed, last turn."""
    messages = body.get("messages")
    parts = [f"key {key.hex()[:16]}", f"model {body.get('model')!r}"]
    if isinstance(messages, list):
        parts.append(f"{len(messages)} message(s)")
    if body.get("seed") is not None:
        parts.append(f"seed {body['seed']}")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        last = messages[-1]
        text = last.get("content")
        if not isinstance(text, str):
            text = orjson.dumps(text).decode() if text is not None else ""
        text = " ".join(text.split())
        if len(text) > 80:
            text = text[:77] + "..."
        parts.append(f"last {last.get('role', '?')} message {text!r}")
    digest = hashlib.blake2b(
        orjson.dumps(messages, option=orjson.OPT_SORT_KEYS), digest_size=6
    ).hexdigest()
    parts.append(f"messages digest {digest}")
    return ", ".join(parts)


class CacheMiss(ServiceError):
    """Replay found no recorded response for a request: that step fails, permanently.

    It is not a service failure: the service watch passes it through without counting it
    towards fail-fast or an outage.
    """

    def __init__(self, message: str):
        super().__init__(message, attempts=0, retryable=False)


# --------------------------------------------------------------------------- the store


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with a busy timeout."""
    if readonly:
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("SELECT 1 FROM responses LIMIT 1").fetchall()
        except sqlite3.OperationalError:
            # A read-only folder cannot hold the WAL's shared-memory file: nobody writes
            # there, so the file can be read as immutable.
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro&immutable=1",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
    else:
        conn = sqlite3.connect(
            str(path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode (a property of the file: set once, every later connection
    uses it). Two processes creating the file at once meet SQLite's "database is locked",
    which the busy timeout does not cover for a journal-mode change: retry until it holds."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class ResponseStore:
    """The SQLite file of cached responses, for one process.

    `get` reads inline on the caller's thread (the event loop's); `put` queues the row for
    the writer thread, which commits whatever is queued in one transaction. A queued row is
    already visible to `get` in this process.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._reader: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[bytes, bytes] = {}
        self._writer: threading.Thread | None = None
        self.written = 0
        self.write_errors = 0
        self.last_write_error: str | None = None

    def open(self) -> None:
        """Create the file and its tables if needed (in one transaction), and connect."""
        if not self.readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect(self.path, readonly=False)
            try:
                _ensure_wal(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                        conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            finally:
                conn.close()
        self._reader = _connect(self.path, readonly=self.readonly)
        if not self.readonly:
            self._reader.execute("PRAGMA synchronous = NORMAL")

    def get(self, key: bytes) -> dict[str, Any] | None:
        """The cached reply for `key`, or None."""
        raw = self._pending.get(key)
        if raw is None:
            reader = self._reader
            assert reader is not None, "ResponseStore.get before open"
            row = reader.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            raw = row[0]
        return orjson.loads(raw)

    def put(self, key: bytes, value: dict[str, Any], *, service: str, request: str) -> None:
        """Queue a reply for storing; the writer thread commits it soon after."""
        if self.readonly:
            raise RuntimeError("ResponseStore.put on a read-only store")
        raw = orjson.dumps(value)
        self._pending[key] = raw
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name=f"peerflow-cache-{self.path.name}", daemon=True
            )
            self._writer.start()
        self._queue.put((key, raw, service, request, time.time()))

    def close(self) -> None:
        """Write everything queued, stop the writer, close the connections (blocking)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(_STOP)
            writer.join()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    # The writer thread ------------------------------------------------------------

    def _write_loop(self) -> None:
        conn = _connect(self.path, readonly=False)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            stop = False
            while not stop:
                rows = [self._queue.get()]
                while len(rows) < _BATCH:
                    try:
                        rows.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if _STOP in rows:
                    stop = True
                    rows = [r for r in rows if r is not _STOP]
                    while True:  # whatever was queued before the stop, too
                        try:
                            item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is not _STOP:
                            rows.append(item)
                if rows:
                    self._write(conn, rows)
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        """Commit `rows` in one transaction; a row either is in the file whole or not at all."""
        for attempt in range(3):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT OR IGNORE INTO responses (key, value, service, request, created)"
                        " VALUES (?, ?, ?, ?, ?)",
                        rows,
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self.last_write_error = f"{type(exc).__name__}: {exc}"
                if attempt < 2:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                # A cache that cannot be written costs requests on a later run, never this
                # run's records: say so and go on.
                self.write_errors += len(rows)
                log.warning(
                    "response cache %s: %d entries not stored: %s",
                    self.path,
                    len(rows),
                    self.last_write_error,
                )
            else:
                self.written += len(rows)
            break
        pending = self._pending
        for row in rows:
            pending.pop(row[0], None)


# --------------------------------------------------------------------------- the service


class CachedService:
    """A chat service seen through a response cache; same protocol, same attributes."""

    def __init__(self, inner: Service, settings: CacheSettings):
        self.name = inner.name
        self.inner = inner
        self.settings = settings
        self.mode = settings.mode
        self.store = ResponseStore(settings.path, readonly=settings.mode != "read_write")
        self._extra = settings.extra or None
        self._started = False
        self.hits = 0
        self.misses = 0

    def __getattr__(self, attr: str) -> Any:
        # Only reached for attributes not defined here: model, extra_body, endpoints, ...
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"CachedService({self.inner!r}, mode={self.mode!r}, path={str(self.store.path)!r})"

    async def start(self) -> None:
        """Open the cache; start the service itself unless this is a replay."""
        if not self.store.is_open:
            await asyncio.to_thread(self.store.open)
        if self.mode != "replay" and not self._started:
            try:
                await self.inner.start()
            except BaseException:
                # The runtime stops only what started: the cache must not stay open.
                await asyncio.to_thread(self.store.close)
                raise
            self._started = True

    async def health(self) -> bool:
        if self.mode == "replay":
            return True  # no server is needed, and none was started
        return await self.inner.health()

    async def stop(self) -> None:
        try:
            if self._started:
                self._started = False
                await self.inner.stop()
        finally:
            await asyncio.to_thread(self.store.close)

    async def call(self, request: dict[str, Any], *, key: str | None = None) -> ChatResult:
        """The cached reply to `request` if there is one; else the service's (then stored)."""
        inner: Any = self.inner
        body = {**inner.extra_body, **request, "model": inner.model}
        digest = request_key(body, self._extra)
        found = self.store.get(digest)
        if found is not None:
            self.hits += 1
            return ChatResult(
                content=found.get("content"),
                tool_calls=found.get("tool_calls"),
                usage=found.get("usage"),
                model=found.get("model"),
                finish_reason=found.get("finish_reason"),
                attempts=0,
                cached=True,
            )
        self.misses += 1
        if self.mode == "replay":
            where = f" for task {key!r}" if key is not None else ""
            raise CacheMiss(
                f"replay: service {self.name!r} has no cached response for this request{where} "
                f"({describe_request(body, digest)}) in {self.store.path}; record it with "
                "cache mode read_write, or check what changed (prompt, sampling, seed, model)"
            )
        result = await inner.call(request, key=key)
        if self.mode == "read_write" and isinstance(result, ChatResult):
            value = {f: getattr(result, f) for f in _FIELDS if getattr(result, f) is not None}
            self.store.put(digest, value, service=self.name, request=describe_request(body, digest))
        return result

    def cache_stats(self) -> dict[str, Any]:
        """Hits and misses of this process, for the run summary (`summary["cache"]`)."""
        return {
            "mode": self.mode,
            "path": str(self.store.path),
            "hits": self.hits,
            "misses": self.misses,
            "stored": self.store.written,
            "store_errors": self.store.write_errors,
        }

    def stats(self) -> dict[str, Any]:
        inner_stats = getattr(self.inner, "stats", None)
        out = dict(inner_stats()) if callable(inner_stats) else {"name": self.name}
        out["cache"] = self.cache_stats()
        return out


def with_cache(service: Service, name: str, cfg: Any, config: Any) -> Service:
    """`service` behind its cache when the run configures one for it, else `service`."""
    settings = cache_settings(config, name, cfg)
    if settings is None:
        return service
    return CachedService(service, settings)  # type: ignore[return-value]


def cache_summary(service_watch: dict[str, Any]) -> dict[str, Any]:
    """Per service, the cache counters found in the watch's report (they are moved out)."""
    out = {}
    for name, report in service_watch.items():
        if isinstance(report, dict) and "cache" in report:
            out[name] = report.pop("cache")
    return out
