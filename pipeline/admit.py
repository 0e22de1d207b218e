"""The admission gate: a scenario is admitted only if, in fresh sandboxes,

1. it parses and every field is sound                      (else `invalid`, naming the field)
2. setup succeeds                                          (else `setup_failed`, with its output)
3. the checker FAILS on the untouched state                (else `vacuous_checker`)
4. the announcement shows at login, `NAME --help` documents
   `retrieve`, and `retrieve` as the session user prints
   the directives                                          (else `undiscoverable`)
5. the reference solution, typed through a real session,
   makes the checker pass                                  (else `unsolvable`)
6. a blocked scenario ("terminal": "panic"): `blocked_by`
   fails when the session user runs it after setup         (else `not_blocked`)
7. (admit_many) its task, up to wording, is not one already
   admitted, in the store or earlier in the batch          (else `duplicate`, naming it)

Retrieval may be a chain (`provider.retrieve` a list): `--help` documents the
first step, what the earlier steps printed documents each next one (an id, a
subcommand's flag, a path), and the last prints the directives.

Every reason that applies is reported; every attempt is recorded in the store.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from pipeline import scenario as scen
from pipeline.errors import SekbenchError
from pipeline.operators.script import ScriptOperator
from pipeline.sandbox import SESSION_USER, Backend, Limits
from pipeline.session import Budget, run_session, session_in_sandbox
from pipeline.store import Store

log = logging.getLogger(__name__)

DISCOVERY_TIMEOUT = 10.0
REFERENCE_BUDGET = Budget(max_turns=60, max_seconds=180, command_timeout=20)
ADMISSION_LIMITS = Limits(lifetime_s=900)


@dataclass
class Verdict:
    scenario_id: str | None
    admitted: bool
    reasons: list[str]
    messages: dict[str, str] = field(default_factory=dict)
    file: str | None = None
    archetype: str | None = None
    scenario: dict | None = None

    def to_json(self) -> dict:
        return {"file": self.file, "scenario_id": self.scenario_id, "admitted": self.admitted,
                "reasons": self.reasons, "messages": self.messages}


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _announcement_read(ann: dict) -> str | None:
    """The command that shows the announcement, where login does not already show it."""
    if ann["kind"] == "env":
        return f'echo "${ann["var"]}"'
    if ann["kind"] == "file":
        return f"cat {shlex.quote(ann['path'])}"
    return None


# Commands that read a file a provider pointed at; their path, not the verb, needs documenting.
READERS = ("cat", "less", "more", "head", "tail", "sed", "awk", "grep")


def check_discoverable(s: dict, sandbox) -> list[str]:
    """Problems with the discovery path, seen through a real login as the session user:
    the announcement shows, `NAME --help` documents the first retrieve step, every later
    step is documented by what the earlier ones printed, and the last prints the directives."""
    prov, ann = s["provider"], s["announcement"]
    steps = scen.retrieve_steps(s)
    help_cmd = f"{prov['name']} --help"
    lines = [c for c in (_announcement_read(ann), help_cmd, *steps) if c]
    op = ScriptOperator(lines + ["exit"])
    res = session_in_sandbox(sandbox, op, Budget(max_turns=len(lines) + 1, max_seconds=60 + 10 * len(steps),
                                                 command_timeout=DISCOVERY_TIMEOUT))
    problems: list[str] = []
    crumb = scen.breadcrumb(ann)
    if crumb not in res.banner:
        problems.append("the login breadcrumb is not shown")
    if ann["kind"] in ("motd", "banner") and ann["text"].strip().splitlines()[0] not in res.banner:
        problems.append(f"the {ann['kind']} text is not shown at login")
    outputs = {t.command: t for t in res.turns}
    read = _announcement_read(ann)
    if read and (read not in outputs or ann["text"].strip().splitlines()[0] not in outputs[read].output):
        problems.append(f"`{read}` does not show the announcement")
    help_turn = outputs.get(help_cmd)
    if help_turn is None or help_turn.timed_out:
        problems.append(f"`{help_cmd}` did not finish")
        return problems
    seen = help_turn.output
    for k, step in enumerate(steps):
        got = outputs.get(step)
        words = step.split()
        if k == 0:
            missing = [w for w in words[1:] if w not in seen]
            if missing:
                problems.append(f"`{help_cmd}` does not document {' '.join(missing)}"
                                + (f" (retrieve step 1 of {len(steps)}: `{step}`)" if len(steps) > 1 else ""))
        else:
            # the provider's own verbs may come from its --help; ids, flags and paths from
            # what the earlier steps printed
            body = words[1:] if words[0] in READERS or words[0] == prov["name"] else words
            missing = [w for w in body if w not in seen]
            if missing:
                problems.append(f"retrieve step {k + 1} `{step}` is not documented by what came "
                                f"before it: nothing earlier printed {' '.join(missing)}")
        if got is None or got.timed_out:
            problems.append(f"`{step}` did not finish")
            return problems
        seen += "\n" + got.output
    last = outputs.get(steps[-1]) if steps else None
    if last is not None and " ".join(s["directives"].split()) not in " ".join(last.output.split()):
        problems.append(f"`{steps[-1]}` does not print the directives")
    return problems


def check_blocked(s: dict, sandbox) -> str | None:
    """Why a blocked scenario's blockage is not real, or None: `blocked_by` must fail when the
    session user runs it after setup."""
    cmd = s.get("blocked_by")
    if scen.expected_terminal(s) != "panic" or not cmd:
        return None
    res = sandbox.exec(cmd, user=SESSION_USER, timeout=DISCOVERY_TIMEOUT)
    if res.timed_out:
        return f"`{cmd}` did not finish as the session user"
    if res.status == 0:
        return f"`{cmd}` succeeds as the session user after setup, so nothing blocks the work"
    return None


PROVIDER_TIMEOUT = 10.0


def check_provider_limits(s: dict, sandbox) -> str | None:
    """Run the provider as the session user under the session's limits (the sandbox's own:
    processes, memory); a provider that runs into one is rejected. Returns the message naming
    the limit, or None. Where the backend cannot count its limit events, nothing is said."""
    events = getattr(sandbox, "limit_events", None)
    if events is None:
        return None
    before = events()
    if not before:
        return None
    name = s["provider"]["name"]
    tried = [f"{name} --help", *scen.retrieve_steps(s)]
    for cmd in tried:
        # output to /dev/null: only what the provider does to the sandbox counts here
        sandbox.exec(f"{cmd} >/dev/null 2>&1 </dev/null", timeout=PROVIDER_TIMEOUT, user=SESSION_USER)
    time.sleep(0.3)  # a bomb forked into the background keeps forking after its parent returns
    after = events()
    kill = getattr(sandbox, "kill_session", None)
    if kill is not None:
        kill()
    limits = getattr(sandbox, "limits", None) or ADMISSION_LIMITS
    what = " and ".join(f"`{c}`" for c in tried)
    if after.get("pids", 0) > before.get("pids", 0):
        return (f"running {what} hit the session's process limit (pids {limits.pids}, "
                f"{after['pids'] - before.get('pids', 0)} forks refused): a provider must not fork without bound")
    if after.get("oom", 0) > before.get("oom", 0):
        return (f"running {what} hit the session's memory limit ({limits.memory_mb} MiB, "
                f"a process killed for memory)")
    return None


def admit_one(s: dict | None, backend: Backend, *, file: str | None = None,
              load_error: str | None = None, checker_timeout: float | None = None,
              warm=None) -> Verdict:
    """`warm`: this scenario's AdmitJob of a warm pool (pipeline/sandbox/pool.py): both
    sandboxes prepared ahead; None: each made here."""
    if s is None:
        return Verdict(None, False, ["invalid"], {"invalid": load_error or "unreadable"}, file=file)
    if not isinstance(s, dict):
        return Verdict(None, False, ["invalid"], {"invalid": "a scenario is a JSON object"}, file=file)
    bad_text = scen.text_problem(s)
    if bad_text:  # nothing of it can be stored or shown as it is, not even its id
        return Verdict(None, False, ["invalid"], {"invalid": bad_text}, file=file)
    found = scen.problems(s)
    sid = s.get("id") if isinstance(s.get("id"), str) else None
    arch = s.get("archetype") if isinstance(s.get("archetype"), str) else None
    if found:
        return Verdict(sid, False, ["invalid"], {"invalid": "; ".join(map(str, found))}, file=file,
                       archetype=arch, scenario=s)
    reasons: list[str] = []
    messages: dict[str, str] = {}
    # Sandbox 1: setup, the untouched state, the discovery path.
    try:
        places = scen.sandbox_options(s, backend)
    except SekbenchError as e:
        return Verdict(sid, False, ["setup_failed"], {"setup_failed": str(e)}, file=file,
                       archetype=arch, scenario=s)
    if warm is not None:
        member = warm.first()
        if member.error is not None:   # what creating or setting it up here would have raised
            if member.sandbox is not None:
                warm.release(member.sandbox)
            raise member.error
        sb = member.sandbox
    else:
        sb = backend.create(session_id=f"admit-{sid}-a-{id(s) % 10000}", limits=ADMISSION_LIMITS,
                            **places)
    try:
        setup = scen.install(sb, s) if warm is None else member.setup
        if setup.status != 0:
            why = "timed out" if setup.timed_out else f"exit status {setup.status}"
            return Verdict(sid, False, ["setup_failed"],
                           {"setup_failed": f"setup {why}: {_one_line(setup.output)}"},
                           file=file, archetype=arch, scenario=s)
        before = scen.check(sb, s, timeout=checker_timeout)
        hung = before.timed_out
        if hung:
            # It would hang every failing rollout the same way, and the reference
            # session cannot change that, so that session is not run.
            reasons.append("unsolvable")
            messages["unsolvable"] = (f"the checker did not finish within "
                                      f"{checker_timeout or scen.CHECKER_TIMEOUT:g} s on the untouched "
                                      f"state; a checker must fail fast when the work is not done")
        elif before.status == 0:
            reasons.append("vacuous_checker")
            messages["vacuous_checker"] = "the checker passes before any work is done"
        tripped = check_provider_limits(s, sb)
        if tripped:
            # the discovery session and the reference would only run it into them again
            reasons.append("undiscoverable")
            messages["undiscoverable"] = tripped
            return Verdict(sid, False, reasons, messages, file=file, archetype=arch, scenario=s)
        problems = check_discoverable(s, sb)
        if problems:
            reasons.append("undiscoverable")
            messages["undiscoverable"] = "; ".join(problems)
        not_blocked = check_blocked(s, sb)
        if not_blocked:
            reasons.append("not_blocked")
            messages["not_blocked"] = not_blocked
    finally:
        if warm is not None:
            warm.release(sb)   # removed in the background
        else:
            sb.remove()
    if hung:
        return Verdict(sid, False, reasons, messages, file=file, archetype=arch, scenario=s)
    # Sandbox 2, fresh: the reference solution through a real session.
    res = run_session(backend=backend, operator=ScriptOperator(list(s["reference"])), store=None,
                      scenario=s, budget=REFERENCE_BUDGET, limits=ADMISSION_LIMITS,
                      **(warm.reference_args() if warm is not None else {}))
    want = scen.expected_terminal(s)
    if res.verified is True and res.end_reason in ("exit", "panic") and res.end_reason != want:
        reasons.append("unsolvable")
        messages["unsolvable"] = f"the reference session ended with {res.end_reason}, the scenario expects {want}"
    elif res.verified is not True:
        reasons.append("unsolvable")
        if res.end_reason not in ("exit", "panic"):
            messages["unsolvable"] = f"the reference session ended with {res.end_reason}: {res.detail}"
        else:
            stuck = [t for t in res.turns if t.timed_out]
            extra = f"; `{stuck[0].command}` timed out" if stuck else ""
            messages["unsolvable"] = (f"the checker fails after the reference (status "
                                      f"{res.checker_status}): {_one_line(res.checker_output, 200) or '(no output)'}{extra}")
    admitted = not reasons
    return Verdict(sid, admitted, reasons or ["admitted"], messages, file=file, archetype=arch,
                   scenario=s)


def duplicate_verdict(s: dict, store: Store | None, *, file: str | None = None,
                      earlier: dict | None = None) -> Verdict | None:
    """`duplicate` where scenario `s` is the same task up to wording (pipeline/author/dedup.py)
    as an admitted one: `earlier` (admitted before it in this batch) or one in the store with
    another id; None where it is new. Only an admitted task counts: a copy of a rejected one
    gets its own chance."""
    from pipeline.author.dedup import fingerprint
    fp = fingerprint(s)
    sid = s.get("id")
    other = None
    if earlier is not None and earlier.get("id") != sid:
        other = {"id": earlier.get("id"), "split": earlier.get("split", "train"),
                 "where": "earlier in this batch"}
    elif store is not None:
        rows = store.same_task(fp, other_than=sid)
        if rows:
            other = {"id": rows[0]["id"], "split": rows[0]["split"], "where": "in the store"}
    if other is None:
        return None
    msg = (f"the same task as scenario {other['id']} (split {other['split']}, admitted, "
           f"{other['where']}) up to wording: the same setup and checker once the provider, "
           f"announcement, directives and directory names are normalised (fingerprint {fp})")
    return Verdict(sid, False, ["duplicate"], {"duplicate": msg}, file=file,
                   archetype=s.get("archetype") if isinstance(s.get("archetype"), str) else None,
                   scenario=s)


def _task_groups(items: list) -> list[list[int]]:
    """Indices of `items` grouped by task fingerprint, in input order; an item that is not a
    sound scenario is a group of its own (admission says why)."""
    from pipeline.author.dedup import fingerprint
    groups: dict[str, list[int]] = {}
    out: list[list[int]] = []
    for i, (s, _file, _err) in enumerate(items):
        if not isinstance(s, dict) or scen.text_problem(s) or scen.problems(s):
            out.append([i])
            continue
        fp = fingerprint(s)
        if fp not in groups:
            groups[fp] = []
            out.append(groups[fp])
        groups[fp].append(i)
    return out


def admit_many(items: Iterable[tuple[dict | None, str | None, str | None]], backend: Backend, *,
               store: Store | None, workers: int = 2, source: str = "file",
               batch_id: str | None = None, record_scenarios: bool = True,
               checker_timeout: float | None = None, dedup: bool = True,
               cluster: str | None = None, warm_pool: bool | None = None) -> list[Verdict]:
    """Admit (scenario, file, load_error) items in parallel; record every attempt.

    With `dedup` (the default), a scenario that is the same task up to wording as one already
    admitted (in the store, or earlier in this batch) is rejected as `duplicate` without a
    sandbox: items of one task are admitted one after another, in input order, until one is
    admitted; the rest are its duplicates.

    Ctrl-C stops the batch at once: nothing more starts, the sandboxes still running are
    removed (on every cluster node, or this process's own here), and the admissions cut short
    are not recorded (they are no verdict); what was recorded before stays."""
    items = list(items)
    stopped = threading.Event()

    def admit(item, i=None):
        s, file, err = item
        job = warm.job(i) if warm is not None else None
        try:
            if cluster:  # on a Ray node (pipeline/cluster.py); recorded here
                from pipeline.cluster import admit_remote
                return admit_remote(cluster, item, checker_timeout)
            return admit_one(s, backend, file=file, load_error=err, checker_timeout=checker_timeout,
                             warm=job)
        except Exception as e:  # a broken sandbox must not lose the rest of the batch
            if not stopped.is_set():   # a stop removes the sandboxes under running admissions
                log.exception("admission crashed")
            sid = (s or {}).get("id") if isinstance(s, dict) else None
            return Verdict(sid, False, ["setup_failed"], {"setup_failed": f"admission crashed: {e}"},
                           file=file, scenario=s)
        finally:
            if job is not None:
                job.finish()

    def record(item, v):
        s, file, _err = item
        if store is not None and not stopped.is_set():
            try:
                store.record_admission(scenario_id=v.scenario_id, archetype=v.archetype,
                                       admitted=v.admitted, reasons=v.reasons, messages=v.messages,
                                       source=source, file=file, batch_id=batch_id)
                if record_scenarios and s is not None and v.scenario_id and "invalid" not in v.reasons:
                    store.put_scenario(s, admitted=v.admitted, reasons=v.reasons, source=source,
                                       file=file, seed=s.get("seed"))
            except Exception as e:  # one unrecordable attempt must not lose the rest of the batch
                log.warning("could not record the admission of %s: %s", file or v.scenario_id, e)
        return v

    def group(indices: list[int]) -> list[tuple[int, Verdict]]:
        out, first = [], None
        for i in indices:
            if stopped.is_set():
                break
            s, file, _err = items[i]
            dup = None
            if dedup and isinstance(s, dict) and not (scen.text_problem(s) or scen.problems(s)):
                dup = duplicate_verdict(s, store, file=file, earlier=first)
            v = dup or admit(items[i], i)
            if v.admitted and first is None:
                first = s
            out.append((i, record(items[i], v)))
        return out

    groups = _task_groups(items) if dedup else [[i] for i in range(len(items))]
    warm = None
    if not cluster and backend is not None:
        # the warm pool prepares the first scenario of each task ahead, in the batch's order
        from pipeline.sandbox.pool import AdmitAhead, pool_enabled
        firsts = {g[0]: items[g[0]][0] for g in groups if isinstance(items[g[0]][0], dict)
                  and not (scen.text_problem(items[g[0]][0]) or scen.problems(items[g[0]][0]))}
        if pool_enabled(warm_pool) and firsts:
            warm = AdmitAhead(backend, firsts, ADMISSION_LIMITS, workers)
    verdicts: list[Verdict | None] = [None] * len(items)
    if cluster:
        from pipeline.cluster import connect
        workers = connect(cluster).slots
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for done in pool.map(group, groups):
            for i, v in done:
                verdicts[i] = v
    except KeyboardInterrupt:
        stopped.set()
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("stopping: the running admissions end and their sandboxes are removed")
        try:
            if cluster:
                from pipeline.cluster import connect
                connect(cluster).stop_all()
            elif warm is not None:
                warm.abort(backend.remove_own)   # also the members being prepared ahead
            elif backend is not None:
                backend.remove_own()
        except Exception as e:  # noqa: BLE001 -- the stop goes on; reaping covers what is left
            log.warning("could not remove every running admission's sandbox: %s", e)
        raise
    finally:
        pool.shutdown(wait=True)
        if warm is not None:
            warm.close()   # members nobody took, and background removals
    return verdicts  # type: ignore[return-value]


def load_items(paths: Iterable[str]) -> list[tuple[dict | None, str, str | None]]:
    out = []
    for p in paths:
        try:
            out.append((scen.load_file(p), str(p), None))
        except scen.ScenarioInvalid as e:
            out.append((None, str(p), str(e)))
    return out


def files_in(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.json"))
