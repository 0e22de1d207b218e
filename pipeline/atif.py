"""Kept trajectories in ATIF, the Agent Trajectory Interchange Format Harbor's viewer and trace
tools read (Harbor's RFC 0001; this writes ATIF-v1.4).

A sekbench session has no instruction: what the model gets is the screen. So the first step
is a `user` step holding the login (banner, breadcrumb, first prompt); every command typed is
one `agent` step whose message is the raw line the model produced, with one `shell` tool call
carrying it and an observation holding what the shell printed next (output and prompt). The
outcome (end reason, verified, gate verdict, reasons, curator decision) and the scenario go in
the root `extra`. Files are laid out as Harbor lays out a trial, `DIR/ROLLOUT/agent/trajectory.json`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pipeline.chat_roles import join_text
from pipeline.errors import SekbenchError
from pipeline.provenance import sekbench_version

SCHEMA_VERSION = "ATIF-v1.4"
TOOL = "shell"
_AGENT_ONLY = ("model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics")
_SOURCES = ("system", "user", "agent")


def trajectory(line: dict) -> dict:
    """One export line (pipeline/record.py `line`) as an ATIF trajectory."""
    steps: list[dict] = []
    pending: list[str] = []      # user text not yet attached to a step
    operator = line.get("operator") or ""
    model = operator if operator.split(":", 1)[0] in ("hf", "http") else None

    def flush_into(step: dict | None) -> None:
        if not pending:
            return
        text = ""
        for part in pending:
            text = join_text(text, part)
        pending.clear()
        if step is None:
            steps.append({"step_id": len(steps) + 1, "source": "user", "message": text,
                          "extra": {"sekbench": "what the login showed"}})
        else:
            step["observation"] = {"results": [{"source_call_id": step["tool_calls"][0]["tool_call_id"],
                                                "content": text}]}

    last_agent: dict | None = None
    for m in line.get("messages") or []:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant":
            flush_into(last_agent)
            k = len(steps) + 1
            last_agent = {"step_id": k, "source": "agent", "message": content,
                          "tool_calls": [{"tool_call_id": f"call_{k}", "function_name": TOOL,
                                          "arguments": {"command": content}}]}
            if model:
                last_agent["model_name"] = model
            steps.append(last_agent)
        elif role == "system":
            flush_into(last_agent)
            steps.append({"step_id": len(steps) + 1, "source": "system", "message": content})
        else:
            pending.append(content)
    flush_into(last_agent)
    agent = {"name": "sekbench", "version": sekbench_version(), "extra": {"operator": operator}}
    if model:
        agent["model_name"] = model
    return {
        "schema_version": SCHEMA_VERSION,
        "session_id": str(line.get("rollout_id") or ""),
        "agent": agent,
        "steps": steps,
        "notes": ("sekbench session: no instruction is given; user steps and observations are what "
                  "the shell showed, each agent step is one line typed into it (tool 'shell')."),
        "final_metrics": {"total_steps": len(steps)},
        "extra": {"scenario_id": line.get("scenario_id"), "archetype": line.get("archetype"),
                  "split": line.get("split"), "form": line.get("form"),
                  "outcome": line.get("outcome") or {}},
    }


def problems(t: dict) -> list[str]:
    """What makes `t` not ATIF, by the RFC's rules (required fields and types, step ids 1..n,
    agent-only fields on agent steps only, observations citing the step's own tool calls)."""
    out: list[str] = []
    if not isinstance(t, dict):
        return ["the root is not an object"]
    if not (isinstance(t.get("schema_version"), str) and re.match(r"^ATIF-v1\.\d+$", t["schema_version"])):
        out.append("schema_version: not ATIF-v1.N")
    if not isinstance(t.get("session_id"), str) or not t["session_id"]:
        out.append("session_id: a non-empty string is required")
    a = t.get("agent")
    if not isinstance(a, dict) or not all(isinstance(a.get(k), str) for k in ("name", "version")):
        out.append("agent: name and version (strings) are required")
    steps = t.get("steps")
    if not isinstance(steps, list):
        return out + ["steps: an array is required"]
    for i, s in enumerate(steps, 1):
        where = f"steps[{i - 1}]"
        if not isinstance(s, dict):
            out.append(f"{where}: not an object")
            continue
        if s.get("step_id") != i:
            out.append(f"{where}.step_id: {s.get('step_id')!r}, expected {i} (sequential from 1)")
        if s.get("source") not in _SOURCES:
            out.append(f"{where}.source: one of {', '.join(_SOURCES)}")
        if not isinstance(s.get("message"), str):
            out.append(f"{where}.message: a string is required (it may be empty)")
        if s.get("source") != "agent":
            for k in _AGENT_ONLY:
                if k in s:
                    out.append(f"{where}.{k}: only agent steps carry it")
        ids = set()
        for c in s.get("tool_calls") or []:
            if not (isinstance(c, dict) and isinstance(c.get("tool_call_id"), str)
                    and isinstance(c.get("function_name"), str) and isinstance(c.get("arguments"), dict)):
                out.append(f"{where}.tool_calls: tool_call_id, function_name (strings) and arguments (object)")
                continue
            ids.add(c["tool_call_id"])
        obs = s.get("observation")
        if obs is not None:
            if not isinstance(obs, dict) or not isinstance(obs.get("results"), list):
                out.append(f"{where}.observation: results (an array) is required")
            else:
                for r in obs["results"]:
                    src = r.get("source_call_id") if isinstance(r, dict) else None
                    if src is not None and src not in ids:
                        out.append(f"{where}.observation: source_call_id {src!r} is no tool call of this step")
                    if isinstance(r, dict) and "content" in r and not isinstance(r["content"], str):
                        out.append(f"{where}.observation: content must be a string")
    fm = t.get("final_metrics")
    if fm is not None and not isinstance(fm, dict):
        out.append("final_metrics: an object")
    for k in ("extra",):
        if k in t and not isinstance(t[k], dict):
            out.append(f"{k}: an object")
    return out


def write_atif(jsonl: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Every line of an export as `out_dir/ROLLOUT/agent/trajectory.json`."""
    out = Path(out_dir)
    n = 0
    with open(jsonl, encoding="utf-8") as f:
        for raw in f:
            if not raw.strip():
                continue
            t = trajectory(json.loads(raw))
            bad = problems(t)
            if bad:
                raise SekbenchError(f"rollout {t['session_id']}: not ATIF: {bad[0]}")
            d = out / re.sub(r"[^A-Za-z0-9_.-]", "_", t["session_id"] or f"line-{n}") / "agent"
            d.mkdir(parents=True, exist_ok=True)
            (d / "trajectory.json").write_text(json.dumps(t, indent=2, ensure_ascii=False))
            n += 1
    return {"path": str(out.resolve()), "trajectories": n, "schema_version": SCHEMA_VERSION}
