"""The workspace store: SQLite through sqlite-utils, in WAL mode.

This module is the only place with SQL. Every process opens its own Store;
writers wait on a busy timeout (one writer at a time), readers are never
blocked by WAL. Events are committed one by one as they happen, so another
process can tail a live session and a killed run keeps what it wrote.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

SCHEMA_VERSION = 3
# Columns a table gained after stores were made without them, by the schema version that added
# them: (version, table, column, type, what fills the old rows or None: SQL, or a function of
# the Store). Opening an older store adds each one that is missing; the store then records
# SCHEMA_VERSION.
ADDED_COLUMNS = [
    # blocked scenarios: every rollout of an older store expected exit
    (2, "rollouts", "expected_terminal", str, "update rollouts set expected_terminal = 'exit'"),
    # the task up to wording (pipeline/author/dedup.py), computed from each stored body
    (3, "scenarios", "fingerprint", str, lambda store: store._fill_fingerprints()),
]
# The Review queue's order and every column it filters on (see idx_rollouts_queue).
QUEUE_COLUMNS = ("created_at", "id", "verdict", "archetype", "operator", "split", "batch_id",
                 "reasons")
LIVE = "running"


def now() -> float:
    return time.time()


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _loads(text: str | None, default: Any = None) -> Any:
    if text in (None, ""):
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def pid_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether a process of this host is alive; processes of other hosts count as alive."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class Store:
    """One connection per Store; use one Store per thread."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        # Switching a new database to WAL needs a moment alone with it, and SQLite answers
        # "locked" at once rather than waiting when another process opens it at the same time.
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        # NORMAL is durable against a killed process (the WAL survives); only a
        # power cut can lose the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
        self.db = sqlite_utils.Database(conn)
        # Re-entrant: reads take it too (a read on this shared connection while another thread
        # was inside an insert broke that insert's transaction), and writers read under it.
        self._lock = threading.RLock()
        self._migrate()

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute("BEGIN IMMEDIATE")
            t = self.db.table
            if not t("sessions").exists():
                t("sessions").create({
                    "id": str, "scenario_id": str, "operator": str, "backend": str, "image": str,
                    "started_at": float, "ended_at": float, "status": str, "end_reason": str,
                    "terminal": str, "detail": str, "turns": int, "max_turns": int,
                    "max_seconds": float, "pid": int, "host": str, "sandbox": str, "rollout_id": str,
                    "batch_id": str, "meta": str,
                }, pk="id")
                t("sessions").create_index(["status"])
                t("sessions").create_index(["started_at"])
            if not t("events").exists():
                t("events").create({
                    "id": int, "session_id": str, "seq": int, "ts": float, "turn": int,
                    "kind": str, "text": str, "raw": bytes,
                }, pk="id")
                t("events").create_index(["session_id", "seq"], unique=True)
            if not t("turns").exists():
                t("turns").create({
                    "session_id": str, "idx": int, "prompt": str, "command": str, "output": str,
                    "exit_status": int, "seconds": float, "timed_out": int, "truncated": int,
                    "ts": float,
                }, pk=("session_id", "idx"))
            if not t("scenarios").exists():
                t("scenarios").create({
                    "id": str, "archetype": str, "split": str, "provider": str,
                    "announcement": str, "admitted": int, "reasons": str, "source": str,
                    "file": str, "seed": int, "body": str, "created_at": float, "updated_at": float,
                    "fingerprint": str,
                }, pk="id")
                t("scenarios").create_index(["archetype"])
                t("scenarios").create_index(["split", "admitted"])
            if not t("admissions").exists():
                t("admissions").create({
                    "id": int, "scenario_id": str, "file": str, "source": str, "archetype": str,
                    "admitted": int, "reasons": str, "messages": str, "ts": float,
                    "raw": str, "batch_id": str,
                }, pk="id")
                t("admissions").create_index(["archetype"])
            if not t("rollouts").exists():
                t("rollouts").create({
                    "id": str, "session_id": str, "scenario_id": str, "archetype": str,
                    "split": str, "operator": str, "batch_id": str, "end_reason": str,
                    "terminal": str, "expected_terminal": str, "checker_status": int,
                    "checker_output": str, "verified": int, "verdict": str, "reasons": str, "turns": int,
                    "seconds": float, "messages": str, "created_at": float, "meta": str,
                }, pk="id")
                t("rollouts").create_index(["verdict"])
                t("rollouts").create_index(["archetype"])
                t("rollouts").create_index(["created_at"])
            if not t("decisions").exists():
                t("decisions").create({
                    "id": int, "rollout_id": str, "decision": str, "note": str, "ts": float,
                    "who": str,
                }, pk="id")
                t("decisions").create_index(["rollout_id"])
            if not t("decided").exists():
                # Each rollout's decision in force (undos applied), kept by decide() in the
                # same transaction as the history; filled from the history once, for stores
                # made before it existed.
                t("decided").create({"rollout_id": str, "decision": str}, pk="rollout_id")
                self.db.conn.executemany(
                    "insert into decided(rollout_id, decision) values (?, ?)",
                    _in_force(self.query("select rollout_id, decision from decisions "
                                         "order by id")).items())
            if not t("jobs").exists():
                t("jobs").create({
                    "id": str, "kind": str, "status": str, "pid": int, "host": str,
                    "args": str, "created_at": float, "started_at": float, "ended_at": float,
                    "result": str, "error": str, "log": str, "out": str,
                }, pk="id")
            if not t("metrics").exists():
                t("metrics").create({
                    "id": int, "job_id": str, "step": int, "ts": float, "values": str,
                }, pk="id")
                t("metrics").create_index(["job_id", "step"])
            if not t("reports").exists():
                t("reports").create({
                    "id": str, "job_id": str, "kind": str, "created_at": float,
                    "body": str, "markdown": str,
                }, pk="id")
            # The Review queue pages by (created_at, id) and filters by any of these columns;
            # with this covering index a page deep in 100,000 rollouts, or a filtered count,
            # reads the index alone and never the rows with their transcripts.
            self.db.conn.execute("create index if not exists idx_rollouts_queue on rollouts("
                                 + ", ".join(QUEUE_COLUMNS) + ")")
            self.db.conn.execute("drop index if exists idx_rollouts_created_id")
            self.db.conn.execute("create index if not exists idx_rollouts_operator "
                                 "on rollouts(operator)")
            self.db.conn.execute("create index if not exists idx_rollouts_session "
                                 "on rollouts(session_id)")
            if not t("stop_requests").exists():
                # One session of a batch asked to stop (the workbench's `i`): the process
                # running it sees the row between turns; the rest of the batch goes on.
                t("stop_requests").create({"session_id": str, "ts": float, "who": str},
                                          pk="session_id")
            if not t("meta").exists():
                t("meta").create({"key": str, "value": str}, pk="key")
            self._migrate_columns()
            self.db.conn.execute("create index if not exists idx_scenarios_fingerprint "
                                 "on scenarios(fingerprint)")

    def _migrate_columns(self) -> None:
        """Bring an older store's tables up to SCHEMA_VERSION; refuse a newer store's."""
        from pipeline.errors import SekbenchError
        t = self.db.table
        row = self.query("select value from meta where key = 'schema'")
        have = int(row[0]["value"]) if row else None
        if have is not None and have > SCHEMA_VERSION:
            raise SekbenchError(f"{self.path} has store schema {have}, newer than this "
                                f"sekbench's {SCHEMA_VERSION}; upgrade sekbench to open it")
        for _version, table, column, kind, fill in ADDED_COLUMNS:
            if t(table).exists() and column not in t(table).columns_dict:
                t(table).add_column(column, kind)
                if callable(fill):
                    fill(self)
                elif fill:
                    self.db.conn.execute(fill)
        if have != SCHEMA_VERSION:
            self.db.conn.execute("insert or replace into meta(key, value) values ('schema', ?)",
                                 [str(SCHEMA_VERSION)])

    def _fill_fingerprints(self) -> None:
        """Every stored scenario's fingerprint, from its body (stores made before schema 3)."""
        from pipeline.author.dedup import fingerprint
        rows = self.query("select id, body from scenarios where fingerprint is null")
        self.db.conn.executemany("update scenarios set fingerprint = ? where id = ?",
                                 [(fingerprint(_loads(r["body"], {}) or {}), r["id"]) for r in rows])

    # --------------------------------------------------------------- helpers
    def _write(self, fn, *args, **kwargs):
        with self._lock:
            return fn(*args, **kwargs)

    def query(self, sql: str, params: Iterable | dict = ()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.db.query(sql, params)]

    def close(self) -> None:
        self.db.conn.close()

    # -------------------------------------------------------------- sessions
    def session_start(self, **fields: Any) -> str:
        sid = fields.pop("id", None) or new_id()
        meta = fields.pop("meta", None)
        row = {"id": sid, "status": LIVE, "started_at": now(), "turns": 0, "pid": os.getpid(),
               "host": socket.gethostname(), "meta": _dumps(meta or {}), **fields}
        self._write(self.db["sessions"].insert, row)
        return sid

    def session_update(self, sid: str, **fields: Any) -> None:
        if "meta" in fields:
            fields["meta"] = _dumps(fields["meta"])
        self._write(self.db["sessions"].update, sid, fields)

    def session_end(self, sid: str, end_reason: str, terminal: str | None = None,
                    detail: str | None = None, turns: int | None = None) -> None:
        fields = {"status": "ended", "end_reason": end_reason, "terminal": terminal,
                  "detail": detail, "ended_at": now()}
        if turns is not None:
            fields["turns"] = turns
        self._write(self.db["sessions"].update, sid, fields)

    def session(self, sid: str) -> dict | None:
        rows = self.query("select * from sessions where id = ?", [sid])
        return rows[0] if rows else None

    def sessions(self, *, status: str | None = None, limit: int = 200) -> list[dict]:
        if status:
            return self.query("select * from sessions where status = ? order by started_at desc "
                              "limit ?", [status, limit])
        return self.query("select * from sessions order by started_at desc limit ?", [limit])

    def mark_interrupted(self) -> int:
        """Close sessions and jobs whose owning process is gone: `interrupted`, never left running."""
        changed = 0
        for row in self.query("select id, pid, host, turns from sessions where status = ?", [LIVE]):
            if not pid_alive(row["pid"], row["host"]):
                self.session_end(row["id"], "interrupted", detail="the process running it died")
                changed += 1
        for row in self.query("select id, pid, host from jobs where status in ('running', 'queued')"):
            if row["pid"] and not pid_alive(row["pid"], row["host"]):
                self.job_update(row["id"], status="failed", ended_at=now(),
                                error="the job's process died")
                changed += 1
        return changed

    def request_stop(self, sid: str, who: str = "") -> None:
        """Ask the process running session `sid` to end it (`interrupted`) after its turn."""
        self._write(self.db["stop_requests"].upsert,
                    {"session_id": sid, "ts": now(), "who": who}, pk="session_id")

    def stop_requested(self, sid: str) -> bool:
        return bool(self.query("select 1 from stop_requests where session_id = ?", [sid]))

    # ---------------------------------------------------------------- events
    def append_event(self, sid: str, seq: int, kind: str, text: str = "", *, turn: int | None = None,
                     raw: bytes | None = None) -> None:
        self._write(self.db["events"].insert, {"session_id": sid, "seq": seq, "ts": now(),
                                                "turn": turn, "kind": kind, "text": text, "raw": raw})

    def events(self, sid: str, after_seq: int = -1, limit: int = 10_000) -> list[dict]:
        return self.query("select seq, ts, turn, kind, text, raw from events where session_id = ? "
                          "and seq > ? order by seq limit ?", [sid, after_seq, limit])

    def record_turn(self, sid: str, idx: int, **fields: Any) -> None:
        row = {"session_id": sid, "idx": idx, "ts": now(), **fields}
        with self._lock:
            self.db["turns"].insert(row, replace=True)
            self.db["sessions"].update(sid, {"turns": idx + 1})

    def turns(self, sid: str) -> list[dict]:
        return self.query("select * from turns where session_id = ? order by idx", [sid])

    # ------------------------------------------------------------- scenarios
    def put_scenario(self, scenario: dict, *, admitted: bool, reasons: list[str], source: str,
                     file: str | None = None, seed: int | None = None) -> None:
        from pipeline.author.dedup import fingerprint
        row = {
            "id": scenario["id"], "archetype": scenario.get("archetype"),
            "split": scenario.get("split", "train"),
            "provider": (scenario.get("provider") or {}).get("name"),
            "announcement": (scenario.get("announcement") or {}).get("kind"),
            "admitted": int(bool(admitted)), "reasons": _dumps(reasons), "source": source,
            "file": file, "seed": seed, "body": _dumps(scenario), "updated_at": now(),
            "fingerprint": fingerprint(scenario),
        }
        with self._lock:
            existing = self.db["scenarios"].count_where("id = ?", [row["id"]])
            row["created_at"] = now() if not existing else None
            if existing:
                row.pop("created_at")
                self.db["scenarios"].update(row["id"], row)
            else:
                self.db["scenarios"].insert(row)

    def scenario(self, sid: str) -> dict | None:
        rows = self.query("select body from scenarios where id = ?", [sid])
        return _loads(rows[0]["body"]) if rows else None

    def scenarios(self, *, split: str | None = None, admitted: bool | None = True,
                  archetypes: Iterable[str] | None = None, limit: int | None = None) -> list[dict]:
        where, params = [], []
        if split:
            where.append("split = ?")
            params.append(split)
        if admitted is not None:
            where.append("admitted = ?")
            params.append(int(admitted))
        if archetypes:
            arch = list(archetypes)
            where.append(f"archetype in ({','.join('?' * len(arch))})")
            params.extend(arch)
        sql = "select body from scenarios"
        if where:
            sql += " where " + " and ".join(where)
        sql += " order by id"
        if limit:
            sql += f" limit {int(limit)}"
        return [_loads(r["body"]) for r in self.query(sql, params)]

    def same_task(self, fingerprint: str, *, other_than: str | None = None) -> list[dict]:
        """Admitted scenarios with this task fingerprint (pipeline/author/dedup.py), other than
        id `other_than` and stored before it where it is stored already, oldest first: what
        scenario `other_than` would duplicate (re-admitting the first of two never demotes it)."""
        return self.query("select id, split from scenarios where fingerprint = ? and id != ? "
                          "and admitted = 1 and coalesce(created_at, 0) < coalesce("
                          "(select created_at from scenarios where id = ?), 1e300) "
                          "order by created_at, id", [fingerprint, other_than or "", other_than or ""])

    def scenario_keys(self) -> dict[str, dict]:
        """Every stored scenario's split, admission and fingerprint, by id."""
        return {r["id"]: {"split": r["split"], "admitted": bool(r["admitted"]),
                          "fingerprint": r["fingerprint"]}
                for r in self.query("select id, split, admitted, fingerprint from scenarios")}

    def scenario_rows(self, limit: int = 5000) -> list[dict]:
        rows = self.query("select id, archetype, split, provider, announcement, admitted, reasons, "
                          "source, file, coalesce(json_extract(body, '$.terminal'), 'exit') terminal, "
                          "json_extract(body, '$.blocked_kind') blocked_kind, "
                          "json_extract(body, '$.cleared_kind') cleared_kind, "
                          "case json_type(body, '$.provider.retrieve') when 'array' then "
                          "json_array_length(body, '$.provider.retrieve') else 1 end steps "
                          "from scenarios order by id limit ?", [limit])
        for r in rows:
            r["reasons"] = _loads(r["reasons"], [])
        return rows

    def record_admission(self, *, scenario_id: str | None, archetype: str | None, admitted: bool,
                         reasons: list[str], messages: dict | None = None, source: str = "file",
                         file: str | None = None, raw: str | None = None,
                         batch_id: str | None = None) -> None:
        self._write(self.db["admissions"].insert, {
            "scenario_id": scenario_id, "archetype": archetype, "admitted": int(bool(admitted)),
            "reasons": _dumps(reasons), "messages": _dumps(messages or {}), "source": source,
            "file": file, "raw": raw, "ts": now(), "batch_id": batch_id})

    def admission_yield(self) -> dict[str, dict[str, int]]:
        """Admitted / attempted per archetype, over every recorded attempt of one. A file that
        could not be read names no archetype: it is counted nowhere here (a `?` row once)."""
        out: dict[str, dict[str, int]] = {}
        for r in self.query("select archetype a, sum(admitted) ok, count(*) n from admissions "
                            "where archetype is not null group by a order by a"):
            out[r["a"]] = {"admitted": r["ok"] or 0, "attempted": r["n"]}
        return out

    def scenario_mix(self) -> dict[str, dict]:
        """Per archetype, over admitted scenarios: how many are blocked (end in panic) and how
        many retrieve in several steps; and, over every rejected attempt, each reason's count."""
        out: dict[str, dict] = {}
        for r in self.query(
                "select coalesce(archetype, '?') a, "
                "sum(coalesce(json_extract(body, '$.terminal'), 'exit') = 'panic') blocked, "
                "sum(json_type(body, '$.provider.retrieve') = 'array') multi "
                "from scenarios where admitted = 1 group by a"):
            out[r["a"]] = {"blocked": r["blocked"] or 0, "multi_step": r["multi"] or 0, "rejected": {}}
        for r in self.query("select coalesce(archetype, '?') a, reasons from admissions "
                            "where admitted = 0"):
            row = out.setdefault(r["a"], {"blocked": 0, "multi_step": 0, "rejected": {}})
            for reason in _loads(r["reasons"], []):
                row["rejected"][reason] = row["rejected"].get(reason, 0) + 1
        return out

    def last_admission(self, scenario_id: str) -> dict | None:
        """The latest recorded admission attempt of one scenario, reasons and messages parsed."""
        rows = self.query("select * from admissions where scenario_id = ? order by id desc limit 1",
                          [scenario_id])
        for r in rows:
            r["reasons"] = _loads(r["reasons"], [])
            r["messages"] = _loads(r["messages"], {})
        return rows[0] if rows else None

    def admissions(self, limit: int = 500) -> list[dict]:
        rows = self.query("select * from admissions order by id desc limit ?", [limit])
        for r in rows:
            r["reasons"] = _loads(r["reasons"], [])
            r["messages"] = _loads(r["messages"], {})
        return rows

    # -------------------------------------------------------------- rollouts
    def put_rollout(self, row: dict) -> str:
        row = dict(row)
        row.setdefault("id", new_id())
        row.setdefault("created_at", now())
        for key in ("reasons", "messages", "meta"):
            if key in row and not isinstance(row[key], str):
                row[key] = _dumps(row[key])
        self._write(self.db["rollouts"].insert, row, replace=True)
        return row["id"]

    def rollout(self, rid: str) -> dict | None:
        rows = self.query("select * from rollouts where id = ?", [rid])
        return self._rollout_row(rows[0]) if rows else None

    @staticmethod
    def _rollout_row(r: dict) -> dict:
        r["reasons"] = _loads(r.get("reasons"), [])
        r["messages"] = _loads(r.get("messages"), [])
        r["meta"] = _loads(r.get("meta"), {})
        return r

    def _rollout_filter(self, verdict, reason, archetype, operator, split, batch_id,
                        search=None):
        where, params = [], []
        for col, val in (("verdict", verdict), ("archetype", archetype), ("operator", operator),
                         ("split", split), ("batch_id", batch_id)):
            if val:
                where.append(f"{col} = ?")
                params.append(val)
        if reason:
            where.append("reasons like ?")
            params.append(f'%"{reason}"%')
        if search:
            # Text search over the transcripts (case-insensitive for ASCII, as LIKE is).
            where.append("messages like ? escape '\\'")
            params.append("%" + re.sub(r"([%_\\])", r"\\\1", search) + "%")
        return (" where " + " and ".join(where)) if where else "", params

    def rollouts(self, *, verdict: str | None = None, reason: str | None = None,
                 archetype: str | None = None, operator: str | None = None,
                 split: str | None = None, batch_id: str | None = None, offset: int = 0,
                 limit: int = 100, with_messages: bool = False) -> list[dict]:
        cols = "*" if with_messages else ("id, session_id, scenario_id, archetype, split, operator, "
                                           "batch_id, end_reason, terminal, expected_terminal, checker_status, "
                                           "verified, verdict, reasons, turns, seconds, created_at")
        where, params = self._rollout_filter(verdict, reason, archetype, operator, split, batch_id)
        rows = self.query(f"select {cols} from rollouts{where} order by created_at, id "
                          f"limit ? offset ?", [*params, limit, offset])
        return [self._rollout_row(r) for r in rows]

    def count_rollouts(self, **filters: Any) -> int:
        where, params = self._rollout_filter(filters.get("verdict"), filters.get("reason"),
                                             filters.get("archetype"), filters.get("operator"),
                                             filters.get("split"), filters.get("batch_id"),
                                             filters.get("search"))
        # One equality on a column with its own index is fastest there; anything else (two
        # filters, a reason) counts over the covering queue index instead of the rows.
        single = sum(1 for v in filters.values() if v) == 1 and \
            any(filters.get(c) for c in ("verdict", "archetype", "operator"))
        source = "rollouts" if not where or single else "rollouts indexed by idx_rollouts_queue"
        return self.query(f"select count(*) n from {source}{where}", params)[0]["n"]

    # ------------------------------------------------------------- decisions
    def decide(self, rollout_id: str, decision: str, note: str = "", who: str = "") -> int:
        """Append a curator decision: accept, reject, or undo (which retracts the last one)."""
        if decision not in ("accept", "reject", "undo"):
            raise ValueError(f"unknown decision {decision!r}")
        conn = self.db.conn
        with self._lock, conn:
            conn.execute("BEGIN IMMEDIATE")
            pk = conn.execute("insert into decisions(rollout_id, decision, note, who, ts) "
                              "values (?, ?, ?, ?, ?)",
                              [rollout_id, decision, note, who, now()]).lastrowid
            history = self.query("select rollout_id, decision from decisions "
                                 "where rollout_id = ? order by id", [rollout_id])
            in_force = _in_force(history).get(rollout_id)
            if in_force is None:
                conn.execute("delete from decided where rollout_id = ?", [rollout_id])
            else:
                conn.execute("insert or replace into decided(rollout_id, decision) values (?, ?)",
                             [rollout_id, in_force])
        return pk

    def decisions(self, rollout_id: str) -> list[dict]:
        return self.query("select * from decisions where rollout_id = ? order by id", [rollout_id])

    def current_decisions(self) -> dict[str, str]:
        """rollout id -> 'accept' or 'reject', after applying undos in order."""
        return {r["rollout_id"]: r["decision"]
                for r in self.query("select rollout_id, decision from decided")}

    # ------------------------------------------------------------------ jobs
    def job_create(self, kind: str, args: dict, **fields: Any) -> str:
        jid = fields.pop("id", None) or f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{new_id()[:6]}"
        self._write(self.db["jobs"].insert, {"id": jid, "kind": kind, "status": "queued",
                                             "args": _dumps(args), "created_at": now(),
                                             "host": socket.gethostname(), **fields})
        return jid

    def job_update(self, jid: str, **fields: Any) -> None:
        if "result" in fields and not isinstance(fields["result"], str):
            fields["result"] = _dumps(fields["result"])
        self._write(self.db["jobs"].update, jid, fields)

    def job(self, jid: str) -> dict | None:
        rows = self.query("select * from jobs where id = ?", [jid])
        if not rows:
            return None
        r = rows[0]
        r["args"] = _loads(r["args"], {})
        r["result"] = _loads(r["result"], None)
        return r

    def jobs(self, kind: str | None = None, limit: int = 100) -> list[dict]:
        sql = "select * from jobs" + (" where kind = ?" if kind else "") + \
              " order by created_at desc limit ?"
        rows = self.query(sql, [kind, limit] if kind else [limit])
        for r in rows:
            r["args"] = _loads(r["args"], {})
            r["result"] = _loads(r["result"], None)
        return rows

    def add_metrics(self, job_id: str, step: int, values: dict) -> None:
        self._write(self.db["metrics"].insert, {"job_id": job_id, "step": step, "ts": now(),
                                                "values": _dumps(values)})

    def metrics(self, job_id: str, after_id: int = 0) -> list[dict]:
        rows = self.query('select id, step, ts, "values" from metrics where job_id = ? and id > ? '
                          "order by id", [job_id, after_id])
        for r in rows:
            r["values"] = _loads(r["values"], {})
        return rows

    # --------------------------------------------------------------- reports
    def put_report(self, kind: str, body: dict, markdown: str = "", job_id: str | None = None) -> str:
        rid = new_id()
        self._write(self.db["reports"].insert, {"id": rid, "job_id": job_id, "kind": kind,
                                                "created_at": now(), "body": _dumps(body),
                                                "markdown": markdown})
        return rid

    def reports(self, kind: str | None = None, limit: int = 50) -> list[dict]:
        sql = "select * from reports" + (" where kind = ?" if kind else "") + \
              " order by created_at desc limit ?"
        rows = self.query(sql, [kind, limit] if kind else [limit])
        for r in rows:
            r["body"] = _loads(r["body"], {})
        return rows

    def verdicts_decided(self) -> list[tuple[str, str]]:
        """(gate verdict, curator decision in force) for every decided, non-void rollout:
        what the gate-vs-curator agreement is computed from."""
        return [(r["verdict"], r["decision"]) for r in self.query(
            "select rollouts.verdict, decided.decision from decided cross join rollouts "
            "on rollouts.id = decided.rollout_id where rollouts.verdict != 'void'")]


def _in_force(history: Iterable[dict]) -> dict[str, str]:
    """rollout id -> its decision in force, from decisions in the order they were made (an
    undo retracts the one before it)."""
    stacks: dict[str, list[str]] = {}
    for r in history:
        stack = stacks.setdefault(r["rollout_id"], [])
        if r["decision"] == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(r["decision"])
    return {rid: stack[-1] for rid, stack in stacks.items() if stack}


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)



# ---- workbench queries
class WorkbenchStore(Store):
    """The Store plus the read-mostly queries the workbench (sekbench/app.py) needs.

    A subclass, so the methods above stay exactly as they were; the workbench opens
    this one, everyone else keeps using Store."""

    def rollout_facets(self) -> dict[str, list[str]]:
        """Distinct archetypes and operators among rollouts, for the Review filters."""
        arch = [r["a"] for r in self.query("select distinct archetype a from rollouts "
                                           "where archetype is not null order by a")]
        ops = [r["o"] for r in self.query("select distinct operator o from rollouts "
                                          "where operator is not null order by o")]
        return {"archetypes": arch, "operators": ops}

    def _remembered(self, key: tuple, compute) -> Any:
        """compute(), remembered until anything is committed, here or by another process."""
        stamp = (self.data_version(), self.db.conn.total_changes)
        cache = self.__dict__.setdefault("_remembered_results", {})
        if key in cache and cache[key][0] == stamp:
            return cache[key][1]
        value = compute()
        cache[key] = (stamp, value)
        return value

    def queue_count(self, **filters: Any) -> int:
        """count_rollouts, remembered until something is committed: paging through a filtered
        queue counts it once."""
        key = ("count", *sorted((k, v) for k, v in filters.items() if v))
        return self._remembered(key, lambda: self.count_rollouts(**filters))

    def queue_decided(self, **filters: Any) -> int:
        """How many rollouts matching the Review filters have a decision in force (queue
        progress); remembered like queue_count."""
        where, params = self._rollout_filter(filters.get("verdict"), filters.get("reason"),
                                             filters.get("archetype"), filters.get("operator"),
                                             filters.get("split"), filters.get("batch_id"),
                                             filters.get("search"))
        key = ("decided", *sorted((k, v) for k, v in filters.items() if v))
        if not where:   # each decided rollout looked up once (16 ms for 50,000)
            sql = ("select count(*) n from decided cross join rollouts "
                   "on rollouts.id = decided.rollout_id")
        else:           # the covering index scanned once, the decided ones probed (54 ms)
            sql = (f"select count(*) n from rollouts indexed by idx_rollouts_queue{where} "
                   "and id in (select rollout_id from decided)")
        return self._remembered(key, lambda: self.query(sql, params)[0]["n"])

    def notes_for(self, ids: Iterable[str]) -> dict[str, str]:
        """The newest curator note on each of these rollouts (those with one)."""
        return {r["rollout_id"]: r["note"] for r in self.query(
            "select rollout_id, note from decisions where rollout_id in "
            "(select value from json_each(?)) and note != '' order by id", [_dumps(list(ids))])}

    def decisions_for(self, ids: Iterable[str]) -> dict[str, str]:
        """The decisions in force for these rollouts (a page of the queue)."""
        return {r["rollout_id"]: r["decision"] for r in self.query(
            "select rollout_id, decision from decided where rollout_id in "
            "(select value from json_each(?))", [_dumps(list(ids))])}

    def last_metrics(self, job_ids: Iterable[str]) -> dict[str, dict]:
        """job id -> the values of its newest metrics row (progress of running jobs)."""
        ids = list(job_ids)
        if not ids:
            return {}
        rows = self.query('select job_id, "values" from metrics where id in (select max(id) '
                          "from metrics where job_id in (select value from json_each(?)) "
                          "group by job_id)", [_dumps(ids)])
        return {r["job_id"]: _loads(r["values"], {}) for r in rows}

    def data_version(self) -> int:
        """Changes whenever another connection commits; lets a poller skip unchanged reads."""
        return self.query("pragma data_version")[0]["data_version"]

    def last_seq(self, sid: str) -> int:
        """The highest event seq of a session (-1 when none)."""
        rows = self.query("select max(seq) m from events where session_id = ?", [sid])
        return rows[0]["m"] if rows and rows[0]["m"] is not None else -1

    def counterpart_session(self, sid: str) -> dict | None:
        """For an eval session, the other side's session of the same scenario and seed
        (base for tuned, tuned for base); None for any other session."""
        me = self.session(sid)
        batch = (me or {}).get("batch_id") or ""
        if not batch.startswith("eval-"):
            return None
        for report in self.query("select body from reports where kind = 'eval' and body like ? "
                                 "order by created_at desc limit 5", [f'%"{batch}"%']):
            batches = (_loads(report["body"], {}) or {}).get("batches") or {}
            other = next((b for side, b in batches.items() if b != batch), None)
            if other is None or batch not in batches.values():
                continue
            seed = (_loads(me.get("meta"), {}) or {}).get("seed")
            rows = self.query("select * from sessions where batch_id = ? and scenario_id is ? "
                              "and json_extract(meta, '$.seed') is ? order by started_at limit 1",
                              [other, me.get("scenario_id"), seed])
            if rows:
                return rows[0]
        return None

    def session_checker(self, sid: str) -> dict | None:
        """The checker's judgement of a session, from its rollout (None where none was kept)."""
        rows = self.query("select checker_status, checker_output, verified, verdict from rollouts "
                          "where session_id = ? order by created_at desc limit 1", [sid])
        return rows[0] if rows else None

    def rollout_page(self, *, offset: int = 0, limit: int = 100, **filters: Any) -> list[dict]:
        """The same rows and order as rollouts(), but the offset is skipped in an index
        (rowids first, then only `limit` rows are read)."""
        where, params = self._rollout_filter(filters.get("verdict"), filters.get("reason"),
                                             filters.get("archetype"), filters.get("operator"),
                                             filters.get("split"), filters.get("batch_id"),
                                             filters.get("search"))
        cols = ("id, session_id, scenario_id, archetype, split, operator, batch_id, end_reason, "
                "terminal, checker_status, verified, verdict, reasons, turns, seconds, created_at")
        rows = self.query(f"select {cols} from rollouts where rowid in (select rowid from rollouts "
                          f"indexed by idx_rollouts_queue{where} order by created_at, id "
                          f"limit ? offset ?) "
                          f"order by created_at, id", [*params, limit, offset])
        return [self._rollout_row(r) for r in rows]
