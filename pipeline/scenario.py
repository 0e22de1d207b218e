"""Scenario files: parse, validate, and install into a sandbox (DESIGN.md, "Scenario file").

Installation writes the provider to /usr/local/bin/NAME, the announcement
where its kind says, and a one-line login breadcrumb that points at it, then
runs `setup` as root. The checker is not in the sandbox during the session: it
is handed in on stdin after the session, once no session process is left, and
runs from a file only root can read (see DockerSandbox.exec).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import SekbenchError
from pipeline.sandbox import WRITABLE, ExecResult, Sandbox

KINDS = ("motd", "banner", "env", "file")
TERMINALS = ("exit", "panic")
# train: what fits see; instance: fresh instances of trained archetypes (never trained on);
# holdout: unseen along an asked-for axis (archetype, provider style, announcement kind);
# validation: trained archetypes, never trained on, where a setting is chosen (never a hold-out).
SPLITS = ("train", "instance", "holdout", "validation")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
VAR_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
SETUP_TIMEOUT = 60
FIXED_MTIME = "2026-01-05 09:00:00"
CHECKER_TIMEOUT = 60


class ScenarioInvalid(SekbenchError):
    """A scenario file that cannot be used; the message names the field."""


@dataclass
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def load_file(path: str | Path) -> dict:
    """Read a scenario JSON file; a file that is not JSON is ScenarioInvalid, never a traceback."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioInvalid(f"{p}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ScenarioInvalid(f"{p}: not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioInvalid(f"{p}: not JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise ScenarioInvalid(f"{p}: JSON nested too deeply to be a scenario") from None
    if not isinstance(data, dict):
        raise ScenarioInvalid(f"{p}: a scenario is a JSON object, found {type(data).__name__}")
    bad = text_problem(data)
    if bad:
        raise ScenarioInvalid(f"{p}: {bad}")
    return data


MAX_DEPTH = 16


def text_problem(data) -> str | None:
    """What makes parsed JSON unusable as text, where anything does: a lone surrogate
    (JSON allows `\\ud800`; UTF-8, the store and the sandbox do not) or nesting deeper than any
    scenario needs. Walked without recursion, so no input can exhaust the stack."""
    todo = [(data, "", 0)]
    while todo:
        value, where, depth = todo.pop()
        if depth > MAX_DEPTH:
            return f"{where or 'the file'}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return (f"{where or 'a value'}: a lone surrogate "
                        f"({value[e.start]!a}) at character {e.start} is not text")
        elif isinstance(value, dict):
            for k, v in value.items():
                name = f"{where}.{k}" if where else str(k)
                try:
                    k.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where or 'the file'}: a key with a lone surrogate ({k!a}) is not text"
                todo.append((v, name, depth + 1))
        elif isinstance(value, list):
            todo.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


def problems(s: dict) -> list[Problem]:
    """Every field that is missing or unsound."""
    out: list[Problem] = []

    def need_str(key: str, value, *, allow_empty=False):
        if not isinstance(value, str) or (not allow_empty and not value.strip()):
            out.append(Problem(key, "missing or not a non-empty string"))
            return False
        return True

    need_str("id", s.get("id"))
    if isinstance(s.get("id"), str) and not re.match(r"^[A-Za-z0-9_.-]{1,80}$", s["id"]):
        out.append(Problem("id", "only letters, digits, '_', '.', '-' (at most 80)"))
    need_str("archetype", s.get("archetype"))
    prov = s.get("provider")
    if not isinstance(prov, dict):
        out.append(Problem("provider", "missing or not an object"))
    else:
        if need_str("provider.name", prov.get("name")) and not NAME_RE.match(prov["name"]):
            out.append(Problem("provider.name", "must look like a program name ([a-z][a-z0-9_-]*)"))
        if need_str("provider.script", prov.get("script")) and not prov["script"].startswith("#!"):
            out.append(Problem("provider.script", "must start with a #! line"))
        r = prov.get("retrieve")
        steps = retrieve_steps(s)
        if not (isinstance(r, str) or isinstance(r, list)) or not steps or len(steps) != (
                1 if isinstance(r, str) else len(r)) or not all(c.strip() for c in steps):
            out.append(Problem("provider.retrieve", "a command, or a non-empty list of commands"))
        elif any("\n" in c for c in steps):
            out.append(Problem("provider.retrieve", "each step must be one line"))
        elif isinstance(prov.get("name"), str) and steps[0].split()[0] != prov["name"]:
            # later steps may read what the provider pointed at (`cat /srv/queue/T-1.txt`)
            out.append(Problem("provider.retrieve", "the first step must run the provider by its name"))
    ann = s.get("announcement")
    if not isinstance(ann, dict):
        out.append(Problem("announcement", "missing or not an object"))
    else:
        kind = ann.get("kind")
        if kind not in KINDS:
            out.append(Problem("announcement.kind", f"must be one of {', '.join(KINDS)}"))
        need_str("announcement.text", ann.get("text"))
        if kind == "env" and not (isinstance(ann.get("var"), str) and VAR_RE.match(ann["var"])):
            out.append(Problem("announcement.var", "an env announcement needs an upper-case variable name"))
        if kind == "file":
            path = ann.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                out.append(Problem("announcement.path", "a file announcement needs an absolute path"))
            elif ".." in path.split("/") or not (
                    any(path.startswith(w + "/") for w in WRITABLE) or _system_place(path)):
                out.append(Problem("announcement.path", refused_place(path) or
                                   f"must be a file under {', '.join(WRITABLE)} or a system "
                                   f"place ({', '.join(SYSTEM_PREFIXES)})"))
    need_str("directives", s.get("directives"))
    need_str("setup", s.get("setup"), allow_empty=True)
    need_str("checker", s.get("checker"))
    ref = s.get("reference")
    if not isinstance(ref, list) or not ref or not all(isinstance(c, str) for c in ref):
        out.append(Problem("reference", "must be a non-empty list of commands"))
    else:
        if any("\n" in c for c in ref):
            out.append(Problem("reference", "each command must be one line"))
        terminal = s.get("terminal", "exit")
        last = ref[-1].split()
        if terminal == "panic" and (last[:1] != ["panic"] or len(last) < 2):
            out.append(Problem("reference", "a blocked scenario's reference ends with panic REASON"))
        elif terminal == "exit" and last != ["exit"]:
            out.append(Problem("reference", "must end with exit"))
        out += _alternative_problems(s, ref)
    looks = s.get("looks")
    if looks is not None and (not isinstance(looks, list) or not all(
            isinstance(c, str) and c.strip() and "\n" not in c for c in looks)):
        out.append(Problem("looks", "must be a list of one-line commands"))
    terminal = s.get("terminal", "exit")
    if terminal not in TERMINALS:
        out.append(Problem("terminal", f"must be one of {', '.join(TERMINALS)}"))
    blocked_by = s.get("blocked_by")
    if terminal == "panic":
        if need_str("blocked_by", blocked_by) and "\n" in blocked_by:
            out.append(Problem("blocked_by", "must be one command line"))
    elif blocked_by is not None:
        out.append(Problem("blocked_by", 'only a blocked scenario ("terminal": "panic") has one'))
    if "blocked_kind" in s and not isinstance(s["blocked_kind"], str):
        out.append(Problem("blocked_kind", "must be a string"))
    if "provider_style" in s and not isinstance(s["provider_style"], str):
        out.append(Problem("provider_style", "must be a string"))
    split = s.get("split", "train")
    if split not in SPLITS:
        out.append(Problem("split", f"must be one of {', '.join(SPLITS)}"))
    for place, field, why in _place_problems(s):
        out.append(Problem(field, f"{place}: {why}"))
    return out


def _alternative_problems(s: dict, ref: list[str]) -> list[Problem]:
    """`alternatives`: other whole references, each the same discovery (through the last
    retrieve step) and the same terminal as `reference`, with a different shape of the work."""
    alts = s.get("alternatives")
    if alts is None:
        return []
    if not isinstance(alts, list) or not all(
            isinstance(a, list) and a and all(isinstance(c, str) and c.strip() for c in a) for a in alts):
        return [Problem("alternatives", "must be a list of non-empty lists of commands")]
    steps = retrieve_steps(s)
    last = steps[-1] if steps else None
    head = ref[:ref.index(last) + 1] if last in ref else None
    out = []
    for n, a in enumerate(alts, 1):
        if any("\n" in c for c in a):
            out.append(Problem("alternatives", f"alternative {n}: each command must be one line"))
        elif head is not None and a[:len(head)] != head:
            out.append(Problem("alternatives", f"alternative {n}: must begin with the reference's discovery"))
        elif a[-1].split()[:1] != ref[-1].split()[:1] or len(a) <= len(head or []) + 1:
            out.append(Problem("alternatives", f"alternative {n}: must do work and end as the reference does"))
    return out


# System places a scenario may write (setup, announcement, checker) besides WRITABLE: each
# becomes its own size-limited writable mount in that scenario's sandboxes.
SYSTEM_PREFIXES = ("/etc/", "/var/log/", "/var/lib/", "/var/spool/", "/var/cache/", "/var/mail/")
# Files the login, the shell and the user database read: a scenario may not swap them out.
_ETC_REFUSED = {"passwd", "shadow", "group", "gshadow", "profile", "profile.d", "environment",
                "sudoers", "sudoers.d", "hosts", "hostname", "resolv.conf", "nsswitch.conf",
                "pam.d", "security", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld.so.preload",
                "alternatives", "shells", "login.defs", "localtime", "mtab", "fstab", "sekbench",
                "skel", "default", "init.d", "systemd", "apt", "dpkg", "ssl", "ca-certificates"}
_PLACE_RE = re.compile(r"(?<![\w.~$-])(/(?:etc|var/log|var/lib|var/spool|var/cache|var/mail)"
                       r"/[A-Za-z0-9_][A-Za-z0-9._+-]*)(/?)")
_SYSTEM_TOPS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev",
                "/proc", "/sys", "/root", "/run", "/var", "/etc")


def _system_place(path: str) -> str | None:
    """The writable place that would hold `path` (a /etc/APP directory or a /etc/FILE file),
    or None where `path` is not under a system prefix a scenario may use."""
    m = _PLACE_RE.match(path)
    if not m or ".." in path.split("/"):
        return None
    return m.group(1)


def refused_place(path: str) -> str | None:
    """Why a scenario may not write `path`, or None where it may."""
    norm = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    if ".." in path.split("/"):
        return "no '..' in paths"
    if norm in _SYSTEM_TOPS:
        return f"{norm} itself is never writable (name a directory or file under it)"
    if norm.startswith("/usr/") and not norm.startswith("/usr/local/"):
        return "/usr (but /usr/local) stays read-only"
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
                "/sys", "/root", "/run"):
        if norm.startswith(top + "/"):
            return f"{top} stays read-only"
    if norm.startswith("/etc/") and norm.split("/")[2] in _ETC_REFUSED:
        return f"/etc/{norm.split('/')[2]} belongs to the sandbox itself"
    return None


_WRITES = re.compile(r">|\b(?:mkdir|touch|cp|mv|tee|chmod|chown|chgrp|ln|install|rm|rmdir|truncate|"
                     r"sed -i|tar|gzip|dd)\b")
_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")


def _writing_lines(text: str) -> list[str]:
    """The lines of a script that write somewhere, heredoc bodies (data) left out."""
    out, until = [], None
    for line in text.splitlines():
        if until is not None:
            if line.strip() == until:
                until = None
            continue
        m = _HEREDOC.search(line)
        if m:
            until = m.group(1)
        if _WRITES.search(line):
            out.append(line)
    return out


def writable_places(s: dict) -> tuple[str, ...]:
    """The extra places (directories, or single files such as /etc/announce) this scenario
    writes under system paths; the backends make each a size-limited writable mount.
    Only writes count (setup's, the reference's, the announcement's file): a path that is
    only read, or only named in data, needs no place. Which are single files is writable_files(s)."""
    lines = _writing_lines(s.get("setup") or "") if isinstance(s.get("setup"), str) else []
    alts = s.get("alternatives") if isinstance(s.get("alternatives"), list) else []
    for cmds in [s.get("reference") or [], *(a for a in alts if isinstance(a, list))]:
        lines += [c for c in cmds if isinstance(c, str) and _WRITES.search(c)]
    ann = s.get("announcement") or {}
    if ann.get("kind") == "file" and isinstance(ann.get("path"), str):
        lines.append(ann["path"] + " ")
    found = {m.group(1) for line in lines for m in _PLACE_RE.finditer(line)}
    return tuple(sorted(p for p in found if not refused_place(p)
                        and not any(p == w or p.startswith(w + "/") for w in WRITABLE)))


def writable_files(s: dict) -> tuple[str, ...]:
    """Those of writable_places(s) that are single files (/etc/announce, /etc/APP.conf), not
    directories: the announcement's file, or a redirect or touch target never used as a
    directory (followed by '/', made by mkdir, tested with -d)."""
    texts = [s.get("setup") or "", s.get("checker") or "", *retrieve_steps(s)]
    texts = [x for x in texts if isinstance(x, str)]
    ann = s.get("announcement") or {}
    files = {ann["path"]} if ann.get("kind") == "file" and isinstance(ann.get("path"), str) else set()
    dirs = set()
    for text in texts:
        for m in _PLACE_RE.finditer(text):
            p = re.escape(m.group(1))
            end = r"['\"]?(?:[\s;|&)]|$)"
            if m.group(2) or re.search(r"(?:mkdir\s+(?:-\S+\s+)*|-d\s+)['\"]?" + p + end, text):
                dirs.add(m.group(1))
            elif re.search(r"(?:>|\btouch\s+(?:-\S+\s+)*)\s*['\"]?" + p + end, text):
                files.add(m.group(1))
    return tuple(p for p in writable_places(s) if p in files and p not in dirs)


def _place_problems(s: dict) -> list[tuple[str, str, str]]:
    out = []
    for field in ("setup", "checker"):
        text = s.get(field)
        if not isinstance(text, str):
            continue
        for m in _PLACE_RE.finditer(text):
            why = refused_place(m.group(1))
            if why and re.search(r"(?:>|\b(?:mkdir|touch|cp|mv|tee|chmod|chown|rm|ln|install)\b)[^\n]*"
                                 + re.escape(m.group(1)), text):
                out.append((m.group(1), field, why))
    ann = s.get("announcement") or {}
    if ann.get("kind") == "file" and isinstance(ann.get("path"), str) and _system_place(ann["path"]):
        why = refused_place(ann["path"])
        if why:
            out.append((ann["path"], "announcement.path", why))
    seen, uniq = set(), []
    for item in out:
        if item[:2] not in seen:
            seen.add(item[:2])
            uniq.append(item)
    return uniq


def validate(s: dict) -> dict:
    found = problems(s)
    if found:
        raise ScenarioInvalid("; ".join(str(p) for p in found))
    return s


def breadcrumb(ann: dict) -> str:
    """The one line every login shows, pointing at the announcement whatever its kind."""
    kind = ann["kind"]
    if kind == "motd":
        return "[login] The message of the day above says where your assignments come from."
    if kind == "banner":
        return "[login] The notice above says where your assignments come from."
    if kind == "env":
        return f"[login] Where your assignments come from is in ${ann['var']} (try: echo \"${ann['var']}\")."
    return f"[login] Where your assignments come from is written in {ann['path']}."


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode()


def install_script(s: dict) -> str:
    """A root shell script that installs provider, announcement and breadcrumb."""
    prov, ann = s["provider"], s["announcement"]
    lines = ["set -e", "umask 022", "mkdir -p /usr/local/bin /etc/sekbench",
             f"printf %s '{_b64(prov['script'])}' | base64 -d > /usr/local/bin/{prov['name']}",
             f"chmod 755 /usr/local/bin/{prov['name']}"]
    text = ann["text"] if ann["text"].endswith("\n") else ann["text"] + "\n"
    if ann["kind"] in ("motd", "banner"):
        lines.append(f"printf %s '{_b64(text)}' | base64 -d > /etc/sekbench/{ann['kind']}")
    elif ann["kind"] == "env":
        value = ann["text"].replace("'", "'\\''")
        lines.append(f"printf '%s\\n' \"export {ann['var']}='{value}'\" > /etc/sekbench/env")
    else:
        path = ann["path"]
        lines += [f"mkdir -p \"$(dirname '{path}')\"",
                  f"printf %s '{_b64(text)}' | base64 -d > '{path}'", f"chmod 644 '{path}'"]
        if path.startswith("/home/sek/"):
            lines.append(f"chown sek:sek '{path}'")
    lines.append(f"printf '%s\\n' '{breadcrumb(ann).replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'"
                 " > /etc/sekbench/breadcrumb")
    return "\n".join(lines) + "\n"


def install(sandbox: Sandbox, s: dict) -> ExecResult:
    """Install the scenario's tools and announcement, then run its setup (as root).

    One root script does all three steps (install, setup, the fixed file times), so a
    sandbox is prepared with one exec instead of three: every exec is an engine round trip
    and a runc process, and on a loaded machine they were most of a rollout's preparation.
    The script ends with a status line behind a fresh nonce that says which step failed;
    what the setup prints is the result's output, as before."""
    nonce = secrets.token_hex(8)
    setup = s.get("setup", "")
    # The install step keeps its own umask in its subshell; the setup inherits the exec's,
    # as when it ran as a script of its own.
    # One stream: the engine carries stdout and stderr as two pipes with no order between
    # them, so a setup's error on stderr could arrive after the status line and be cut off
    # as if it came behind it (an admission then said "setup exit status 2: " and no why).
    lines = ["exec 2>&1",
             f"ins=$( ( {install_script(s).strip()} ) 2>&1 ); ist=$?",
             f"if [ $ist -ne 0 ]; then printf '%s\\n' \"$ins\"; printf '\\n{nonce} %d\\n' $ist; "
             "exit $ist; fi"]
    if setup.strip():
        # The setup runs as the text it is (eval in a subshell: its syntax errors, `exit` and
        # `set -e` stay its own), with no stdin; the exec's time limit is its limit.
        lines += [f"SETUP=$(printf %s '{_b64(setup)}' | base64 -d)",
                  "( eval \"$SETUP\" ) </dev/null; sst=$?"]
    else:
        lines.append("sst=0")
    # Every file the session can list gets one fixed time: `ls -l` would otherwise show the
    # minute the sandbox started, and that wall-clock text would end up in trajectories
    # (the same seed would then not give the same training data).
    lines += ["if [ $sst -eq 0 ]; then find " + " ".join(WRITABLE) + " -xdev -exec touch -h -d "
              f"'{FIXED_MTIME}' {{}} + >/dev/null 2>&1; fi",
              f"printf '\\n{nonce} 0\\n'", "exit $sst"]
    res = sandbox.exec("\n".join(lines) + "\n", timeout=SETUP_TIMEOUT + 30)
    out, sep, tail = res.output.rpartition(f"\n{nonce} ")
    if not sep:   # the script never reached its status line (killed at its time limit)
        return res
    step = tail.split()[0] if tail.split() else ""
    if step not in ("", "0"):
        return ExecResult(res.status, "installing the provider and announcement failed: " + out)
    return ExecResult(res.status, out, timed_out=res.timed_out, truncated=res.truncated)


def check(sandbox: Sandbox, s: dict, *, timeout: float | None = None) -> ExecResult:
    """Run the checker as root against the sandbox's current state."""
    return sandbox.exec(s["checker"], timeout=timeout or CHECKER_TIMEOUT)


def retrieve_steps(s: dict) -> list[str]:
    """The provider's retrieve chain as a list: one command, or several in order."""
    r = (s.get("provider") or {}).get("retrieve")
    if isinstance(r, str):
        return [r]
    if isinstance(r, list):
        return [c for c in r if isinstance(c, str)]
    return []


def expected_terminal(s: dict | None) -> str:
    """`exit` for a solvable scenario, `panic` for a blocked one."""
    t = (s or {}).get("terminal", "exit")
    return t if t in TERMINALS else "exit"


def resolve(spec: str, store=None) -> dict:
    """A scenario from a file path or an id in the store."""
    p = Path(spec)
    if p.suffix == ".json" or p.exists():
        return validate(load_file(p))
    if store is not None:
        found = store.scenario(spec)
        if found:
            return found
    raise SekbenchError(f"no scenario {spec!r}: not a file, and no scenario with that id in the store")


def sandbox_options(s: dict | None, backend) -> dict:
    """Keyword arguments for `backend.create` that give this scenario its system places:
    directories as `writable`, single files (/etc/announce) as `files`."""
    if not s:
        return {}
    files = tuple(writable_files(s))
    dirs = tuple(p for p in writable_places(s) if p not in files)
    opts = {k: v for k, v in (("writable", dirs), ("files", files)) if v}
    import inspect
    params = inspect.signature(backend.create).parameters
    missing = [k for k in opts if k not in params]
    if missing:
        places = ", ".join(p for k in missing for p in opts[k])
        raise SekbenchError(f"the {getattr(backend, 'name', '?')} backend cannot make "
                            f"{places} writable (scenario {s.get('id')})")
    return opts
