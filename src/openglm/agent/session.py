"""Conversations persisted in SQLite, so an agent session can be resumed later (stdlib ``sqlite3``)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from openglm.chat import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, role TEXT NOT NULL, metadata TEXT NOT NULL, content TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (session_id, seq)
);
"""


@dataclass
class SessionInfo:
    id: str
    title: str
    created: float
    updated: float
    messages: int


class SessionStore:
    """Sessions and their messages in one SQLite file; every message is committed as it is appended."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.executescript(SCHEMA)

    def create(self, title: str = "", session_id: str | None = None) -> str:
        sid = session_id or uuid.uuid4().hex[:12]
        now = time.time()
        with self._db:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (sid, title[:200], now, now))
        return sid

    def exists(self, session_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None

    def load(self, session_id: str) -> list[Message]:
        if not self.exists(session_id):
            raise KeyError(f"no session {session_id!r} in {self.path}")
        rows = self._db.execute("SELECT role, metadata, content FROM messages WHERE session_id = ? ORDER BY seq",
                                (session_id,))
        return [Message(role, content, metadata) for role, metadata, content in rows]

    def append(self, session_id: str, message: Message) -> None:
        now = time.time()
        with self._db:
            (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE session_id = ?",
                                      (session_id,)).fetchone()
            self._db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                             (session_id, seq, message.role, message.metadata, message.content, now))
            self._db.execute("UPDATE sessions SET updated = ?, title = CASE WHEN title = '' AND ? = 'user' "
                             "THEN substr(?, 1, 200) ELSE title END WHERE id = ?",
                             (now, message.role, message.content, session_id))

    def sessions(self) -> list[SessionInfo]:
        rows = self._db.execute(
            "SELECT s.id, s.title, s.created, s.updated, COUNT(m.seq) FROM sessions s "
            "LEFT JOIN messages m ON m.session_id = s.id GROUP BY s.id ORDER BY s.updated DESC")
        return [SessionInfo(*row) for row in rows]

    def delete(self, session_id: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def close(self) -> None:
        self._db.close()
