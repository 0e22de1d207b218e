"""A session: one login into a sandbox, turn by turn, until a terminal or a budget ends it.

Every event is appended to the store as it happens. Every session ends with
exactly one end reason from DESIGN.md, including when the run is interrupted.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass, field

from pipeline import scenario as scen
from pipeline.errors import SekbenchError
from pipeline.operators import EndOfInput, Operator, OperatorError, SessionContext
from pipeline.render import Transcript, Turn
from pipeline.sandbox import Backend, Limits
from pipeline.shell import Shell, ShellDied, TurnResult, model_view
from pipeline.store import Store, new_id

log = logging.getLogger(__name__)

END_REASONS = ("exit", "panic", "max_turns", "max_seconds", "shell_died", "sandbox_died",
               "operator_error", "interrupted")
EXIT_RE = re.compile(r"(?:^|[;&|(]|\bthen|\bdo|\belse)\s*exit(?:\s|;|$)")


@dataclass
class Budget:
    max_turns: int = 30
    max_seconds: float = 600.0
    command_timeout: float = 30.0
    # False: max_seconds counts the sandbox's time only, not the operator's time to answer, so a
    # model on a loaded machine is not cut short by the machine (the eval; the turn budget and
    # the per-command timeout still bound the session, and the operator has its own timeout)
    operator_time_counts: bool = True


@dataclass
class SessionResult:
    session_id: str
    end_reason: str
    terminal: str | None = None          # the terminal the operator typed: exit or panic
    panic_reason: str | None = None
    detail: str | None = None
    verified: bool | None = None
    checker_status: int | None = None
    checker_output: str = ""
    banner: str = ""
    turns: list[TurnResult] = field(default_factory=list)
    transcript: Transcript = field(default_factory=Transcript)
    backend: str = ""
    image: str = ""
    scenario_id: str | None = None
    seconds: float = 0.0
    void: bool = False

    def to_json(self) -> dict:
        return {
            "session_id": self.session_id, "end_reason": self.end_reason, "terminal": self.terminal,
            "panic_reason": self.panic_reason, "detail": self.detail, "verified": self.verified,
            "checker_status": self.checker_status, "scenario_id": self.scenario_id,
            "backend": self.backend, "image": self.image, "seconds": round(self.seconds, 3),
            "banner": self.banner,
            "turns": [{"command": t.command, "output": t.output, "seconds": round(t.seconds, 4),
                       "exit_status": t.exit_status, "timed_out": t.timed_out,
                       **({"markers": t.markers} if t.markers else {})} for t in self.turns],
        }


class Recorder:
    """Appends a session's events to the store, numbered, as they happen."""

    def __init__(self, store: Store | None, session_id: str):
        self.store, self.sid, self.seq = store, session_id, 0

    def event(self, kind: str, text: str = "", *, raw: bytes | None = None, turn: int | None = None):
        if self.store is None:
            return
        self.store.append_event(self.sid, self.seq, kind, text, turn=turn, raw=raw)
        self.seq += 1


def terminal_of(command: str) -> str | None:
    words = command.strip().split()
    if words[:1] == ["panic"]:
        return "panic"
    if EXIT_RE.search(command.strip()):
        return "exit"
    return None


def panic_reason(command: str) -> str:
    try:
        words = shlex.split(command)[1:]
    except ValueError:
        words = command.split()[1:]
    return " ".join(words) or "no reason given"


def run_session(*, backend: Backend, operator: Operator, store: Store | None,
                scenario: dict | None = None, budget: Budget | None = None,
                limits: Limits | None = None, seed: int = 0, options: dict | None = None,
                batch_id: str | None = None, session_id: str | None = None,
                verify: bool = True, should_stop=None, pool=None,
                on_driven=None) -> SessionResult:
    """Run one session to its end; record it; verify the final state against the checker.

    With `pool` (pipeline/sandbox/pool.py, whose preparer is `prepare_sandbox`), the sandbox
    is the one prepared for `session_id` ahead of time when there is a sound one, and it is
    removed in the background. `on_driven` is called once the operator's part is over (last
    turn, or a start that failed), before the checker runs."""
    budget = budget or Budget()
    limits = limits or Limits()
    sid = session_id or new_id()
    started = time.monotonic()
    image = getattr(backend, "image", "")
    res = SessionResult(sid, "interrupted", backend=backend.name, image=image,
                        scenario_id=(scenario or {}).get("id"))
    if store is not None:
        store.session_start(id=sid, scenario_id=res.scenario_id, operator=operator.name,
                            backend=backend.name, image=image, max_turns=budget.max_turns,
                            max_seconds=budget.max_seconds, batch_id=batch_id,
                            meta={"seed": seed, "limits": limits.__dict__})
    rec = Recorder(store, sid)
    sandbox = None
    opened = None
    try:
        if pool is not None:
            # prepared ahead (created, set up, logged in) while earlier sessions ran, or now
            member = pool.take(sid, {"scenario": scenario, "limits": limits})
            sandbox, opened = member.sandbox, member.shell
            if member.error is not None:
                res.end_reason, res.detail, res.void = "sandbox_died", str(member.error), True
                return res
            setup = member.setup
        else:
            try:
                sandbox = backend.create(session_id=sid, limits=limits,
                                         **scen.sandbox_options(scenario, backend))
            except SekbenchError as e:
                res.end_reason, res.detail, res.void = "sandbox_died", str(e), True
                return res
            setup = scen.install(sandbox, scenario) if scenario is not None else None
        if setup is not None and setup.status != 0:
            res.end_reason, res.void = "sandbox_died", True
            res.detail = "scenario setup failed: " + " ".join(setup.output.split())[:300]
            return res
        _drive(res, rec, sandbox, operator, scenario, budget, limits, seed, options or {}, started,
               should_stop, opened=opened)
        opened = None
    except KeyboardInterrupt:
        res.end_reason, res.detail = "interrupted", "interrupted by the user"
    except SekbenchError as e:  # the sandbox (or its engine) went away under the session
        res.end_reason, res.detail, res.void = "sandbox_died", str(e), True
    finally:
        res.seconds = time.monotonic() - started
        if on_driven is not None:
            on_driven()
        if sandbox is not None:
            try:
                if scenario is not None and verify and res.end_reason != "interrupted":
                    _verify(res, sandbox, scenario)
            except KeyboardInterrupt:
                res.end_reason = "interrupted"
            except SekbenchError as e:
                res.verified = None
                res.end_reason, res.void = "sandbox_died", True
                res.detail = f"{res.detail + '; ' if res.detail else ''}verification: {e}"
            finally:
                if opened is not None:   # a pre-opened shell the session never reached
                    opened.login.close()
                if pool is not None:
                    pool.release(sandbox)   # removed in the background
                else:
                    sandbox.remove()
        try:
            operator.close()
        except Exception:
            pass
        rec.event("terminal", res.end_reason if not res.detail else f"{res.end_reason}: {res.detail}")
        if store is not None:
            store.session_end(sid, res.end_reason, terminal=res.terminal, detail=res.detail,
                              turns=len(res.turns))
    return res


def _verify(res: SessionResult, sandbox, scenario: dict) -> None:
    if not sandbox.alive():
        return
    # A process the session left behind (a daemon behind a FIFO, say) could answer the checker
    # or change the state under it: the checker runs only once none is left.
    kill = getattr(sandbox, "kill_session", None)
    if kill is not None:
        left = kill()
        if left != 0:
            res.verified, res.checker_status = False, None
            res.checker_output = (f"[sekbench: {left if left > 0 else 'some'} session processes "
                                  "survived being killed; the checker was not run]")
            return
    check = scen.check(sandbox, scenario)
    res.checker_status = check.status
    res.checker_output = check.output
    res.verified = check.status == 0


def _drive(res: SessionResult, rec: Recorder, sandbox, operator: Operator, scenario: dict | None,
           budget: Budget, limits: Limits, seed: int, options: dict, started: float,
           should_stop=None, opened: "Opened | None" = None) -> None:
    streamed = {"turn": 0}

    def on_output(data: bytes) -> None:
        rec.event("output", model_view(data), raw=data, turn=streamed["turn"])
        streamed["bytes"] = streamed.get("bytes", 0) + len(data)

    if opened is not None:   # logged in ahead by the pool: the same login, done earlier
        shell, login = opened.shell, opened.login
        shell.on_output = on_output
    else:
        shell = Shell(None, on_output=on_output, reap=sandbox.reap, pids=sandbox.pids_current,
                      pids_limit=limits.pids)
        try:
            login = sandbox.login(shell.env())
        except Exception as e:
            res.end_reason, res.detail, res.void = "sandbox_died", f"login failed: {e}", True
            return
        shell.channel = login.channel
    try:
        if opened is not None:
            res.banner = opened.banner
        else:
            try:
                res.banner = shell.login()
            except ShellDied as e:
                gone = not sandbox.alive()
                res.end_reason = "sandbox_died" if gone else "shell_died"
                res.detail, res.void = f"login: {e}" + (" (the sandbox stopped)" if gone else ""), True
                return
        res.transcript.banner = res.banner
        rec.event("banner", res.banner)
        try:
            operator.begin(SessionContext(scenario=scenario, seed=seed, session_id=res.session_id,
                                          options=options,
                                          interrupt=lambda: login.channel.send(b"\x03")))
        except (SekbenchError, OperatorError) as e:
            res.end_reason, res.detail = "operator_error", str(e)
            res.void = getattr(e, "void", True)
            return
        thinking = 0.0       # seconds spent waiting for the operator's commands
        while True:
            idx = len(res.turns)
            elapsed = time.monotonic() - started - (0.0 if budget.operator_time_counts else thinking)
            if should_stop is not None and should_stop():
                res.end_reason, res.detail = "interrupted", "the run was stopped"
                return
            if rec.store is not None and rec.store.stop_requested(res.session_id):
                res.end_reason, res.detail = "interrupted", "this session was asked to stop"
                return
            if idx >= budget.max_turns:
                res.end_reason = "max_turns"
                return
            if elapsed >= budget.max_seconds:
                res.end_reason = "max_seconds"
                return
            res.transcript.prompt = shell.prompt
            rec.event("prompt", shell.prompt, turn=idx)
            asked = time.monotonic()
            try:
                command = operator.next_command(res.transcript)
            except EndOfInput as e:
                res.end_reason, res.detail = "operator_error", f"no terminal typed: {e}"
                return
            except OperatorError as e:
                res.end_reason, res.detail, res.void = "operator_error", str(e), e.void
                return
            thinking += time.monotonic() - asked
            # One turn types one line; a reply that runs on (no stop sequence) is kept whole
            # for the gate, which calls it over-imitation.
            reply = (command or "").replace("\r", "")
            command = reply.split("\n")[0]
            rec.event("command", command, turn=idx)
            streamed.update(turn=idx, bytes=0)
            terminal = terminal_of(command)
            timeout = max(0.5, min(budget.command_timeout, budget.max_seconds - elapsed))
            ended: ShellDied | None = None
            try:
                turn = shell.run(command, timeout=timeout)
            except ShellDied as e:
                ended = e
                turn = e.partial or TurnResult(command=command)
            if reply.strip("\n") != command:
                turn.reply = reply
            _record_turn(res, rec, shell, idx, turn, streamed.get("bytes", 0))
            if ended is not None:
                if should_stop is not None and should_stop():
                    res.end_reason, res.detail = "interrupted", "the run was stopped"
                else:
                    _classify_end(res, sandbox, login, terminal, command, str(ended))
                return
    finally:
        login.close()


def _record_turn(res: SessionResult, rec: Recorder, shell: Shell, idx: int, turn: TurnResult,
                 streamed: int) -> None:
    rest = turn.raw[streamed:]
    notes = "".join(f"\n[sekbench: {n}]" for n in turn.notes)
    if rest or notes:
        rec.event("output", model_view(rest, shell.nonce.encode()) + notes, raw=rest, turn=idx)
    for note in turn.markers:
        # the session printed something shaped like the harness's prompt marker
        rec.event("marker", note, turn=idx)
    res.turns.append(turn)
    prompt = res.transcript.prompt or shell.prompt
    res.transcript.turns.append(Turn(prompt=prompt, command=turn.command, output=turn.output,
                                     exit_status=turn.exit_status, seconds=turn.seconds,
                                     timed_out=turn.timed_out, reply=turn.reply))
    res.transcript.prompt = None
    if rec.store is not None:
        rec.store.record_turn(res.session_id, idx, prompt=prompt, command=turn.command,
                              output=turn.output, exit_status=turn.exit_status,
                              seconds=turn.seconds, timed_out=int(turn.timed_out),
                              truncated=int(turn.truncated))


def _classify_end(res: SessionResult, sandbox, login, terminal: str | None, command: str,
                  why: str) -> None:
    if not sandbox.alive():
        res.end_reason, res.detail, res.void = "sandbox_died", "the sandbox stopped", True
    elif terminal == "panic":
        res.end_reason, res.terminal = "panic", "panic"
        res.panic_reason = panic_reason(command)
        res.detail = res.panic_reason
    elif terminal == "exit":
        res.end_reason, res.terminal = "exit", "exit"
        status = login.exit_status()
        if status is not None:
            res.detail = f"exit status {status}"
    else:
        status = login.exit_status()
        res.end_reason = "shell_died"
        res.detail = why + (f" (status {status})" if status is not None else "")


@dataclass
class Opened:
    """A login shell opened ahead of its session, at its first prompt."""
    shell: Shell
    login: object
    banner: str


def prepare_sandbox(backend: Backend, key: str, spec: dict, *, login: bool = True):
    """What a session does before its operator's first turn, done ahead for a warm pool:
    create the sandbox (named for session `key`), install the scenario and run its setup,
    log the session user in to the first prompt. A step that fails leaves the rest undone;
    a login that fails is dropped, so the session logs in itself and reports it."""
    from pipeline.sandbox.pool import Warm
    scenario, limits = spec.get("scenario"), spec.get("limits") or Limits()
    member = Warm(key)
    try:
        member.sandbox = backend.create(session_id=key, limits=limits,
                                        **scen.sandbox_options(scenario, backend))
    except SekbenchError as e:
        member.error = e
        return member
    if scenario is not None:
        try:
            member.setup = scen.install(member.sandbox, scenario)
        except SekbenchError as e:   # the sandbox went away during setup: the session says so
            member.error = e
            return member
        if member.setup.status != 0:
            return member
    if login and spec.get("login", True):
        shell = Shell(None, reap=member.sandbox.reap, pids=member.sandbox.pids_current,
                      pids_limit=limits.pids)
        opened = None
        try:
            handle = member.sandbox.login(shell.env())
            shell.channel = handle.channel
            opened = Opened(shell, handle, "")
            opened.banner = shell.login()
            member.shell = opened
        except Exception as e:  # noqa: BLE001 -- the session's own login reports it
            log.info("pre-login for %s failed (%s); the session logs in itself", key, e)
            if opened is not None:
                handle.close()
    return member


def session_in_sandbox(sandbox, operator: Operator, budget: Budget, *,
                       limits: Limits | None = None) -> SessionResult:
    """A session in a sandbox someone else created and will remove (admission uses it);
    not recorded in the store."""
    res = SessionResult(new_id(), "interrupted", backend=sandbox.backend, image=sandbox.image)
    _drive(res, Recorder(None, res.session_id), sandbox, operator, None, budget,
           limits or Limits(), 0, {}, time.monotonic())
    return res
