"""The audit log: one JSON object per line, on every node, of what callers did here.

Who (account and its kind, or anonymous; the client's address), what (push,
delete, tag move, mount, a failed login, a change to accounts, grants or
public repositories), to which repository, digest and tag, when, and the
request id that ties the line to the node's other logs. Lines are written by
a logger of their own, never propagated to the node's log, to `DATA/audit.log`
rotated at `max_bytes` (a few old files kept), so the log is bounded in bytes.
Nothing secret is ever passed in: callers hand over names, never credentials.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node.access.callers import Caller


class AuditLog:
    def __init__(self, path: Path | None, node_id: str, *, max_bytes: int = 64 << 20,
                 backups: int = 4,
                 request_id: Callable[[], str | None] = lambda: None) -> None:
        self.node_id = node_id
        self.request_id = request_id  # the current request's id, for the line
        self.path = path
        self._log = logging.getLogger(f"flotilla.audit.{node_id}.{id(self)}")
        self._log.propagate = False
        self._log.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._log.addHandler(self._handler)

    def record(self, action: str, caller: Caller, **fields: Any) -> None:
        """One line: `action` by `caller`; `fields` name the repository, digest, tag and
        whatever else says what changed (never a credential)."""
        if self._handler is None:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        doc: dict[str, Any] = {
            "time": now, "node": self.node_id, "action": action,
            "actor": {"kind": caller.kind, "name": caller.name or None},
            "address": caller.address,
        }
        request_id = self.request_id()
        if request_id:
            doc["request_id"] = request_id
        doc.update({k: v for k, v in fields.items() if v is not None})
        self._log.info(json.dumps(doc, sort_keys=False, default=str))

    def close(self) -> None:
        if self._handler is not None:
            self._log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
