"""Harbor tasks in and out: Terminal-Bench/Harbor task directories as sekbench scenarios, and
admitted scenarios as Harbor task directories.

A Harbor task is a folder: `task.toml` (settings), `instruction.md` (what the agent is told),
`environment/Dockerfile` (the container), `tests/test.sh` (run as root after the agent, from
the work directory, with `tests/` uploaded to /tests; it writes a reward, 1 for full marks, to
/logs/verifier/reward.txt or {"reward": x} to /logs/verifier/reward.json) and
`solution/solve.sh` (what the oracle runs).

Import keeps sekbench's point: the instruction is not handed over, it becomes the directives a
generated provider serves behind a generated announcement (pipeline/author/providers.py), so
an imported task teaches discovery too. The Dockerfile's plain copies, RUN steps that need no
network, ENV and WORKDIR become setup; the tests become a root checker that lays them out as
Harbor would and maps the reward to an exit status; the solution's commands follow the
discovery steps in the reference. What cannot be mapped (another base image than Debian, a
build that needs the network, a multi-container environment...) refuses the task with a
reason naming it; what is mapped with a change (a work directory moved under /srv, the agent
being `sek` rather than root) is a note.

Export writes what the harbor CLI reads: task.toml, instruction.md (the directives),
environment/Dockerfile (FROM a Debian image, the provider and announcement as one marked
layer, setup as a RUN step, the session user), tests/test.sh (the checker writing the reward
file) and solution/solve.sh (the reference's work commands).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import scenario as scen
from pipeline.author.archetypes.common import EOF_MARK, HOME
from pipeline.author.providers import make_announcement, make_provider
from pipeline.errors import SekbenchError
from pipeline.sandbox import WRITABLE

# The task.toml schema this writes (Harbor reads 1.x; unknown keys are ignored there).
TASK_SCHEMA = "1.1"
ARCHETYPE = "harbor"
# Where an imported checker lays out Harbor's /tests and /logs: the sandbox root is read-only,
# /tmp is always writable, and the checker empties it first so nothing the agent planted counts.
VERIFY_ROOT = "/tmp/.harbor-verify"
# A Dockerfile layer sekbench export writes for its own provider and announcement; import makes
# new ones from the instruction, so it skips that layer (from this comment to the next blank line).
DISCOVERY_MARK = "# sekbench:discovery"
FILE_MARK = "SEK_HARBOR_EOF"
VERIFIER_TIMEOUT_S = 2 * scen.CHECKER_TIMEOUT
AGENT_TIMEOUT_S = 600
# Installing packages or fetching anything needs a network the sandbox never has.
_NETWORK_CMDS = {"apt-get", "apt", "aptitude", "apk", "yum", "dnf", "microdnf", "zypper", "pip",
                 "pip3", "pipx", "uv", "uvx", "npm", "npx", "pnpm", "yarn", "curl", "wget", "conda",
                 "mamba", "micromamba", "gem", "cargo", "go", "rustup", "nvm", "bun", "deno"}
_NETWORK_SUB = {"git": {"clone", "fetch", "pull", "submodule"}}
_BASHISM = re.compile(r"\[\[|\(\(|<<<|&>|\w=\(|^\s*(source|function)\s|\$'|\{[^{}\s]*,[^{}\s]*\}"
                      r"|\$\{[^}]*(//|\^\^|,,|:\d)")


class HarborError(SekbenchError):
    """A folder that is not a Harbor task, or a task that cannot be written."""


@dataclass
class Imported:
    """One task folder read: the scenario (None when refused), why it was refused, and what
    was mapped with a change."""

    path: str
    name: str
    scenario: dict | None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"path": self.path, "task": self.name,
                "scenario_id": (self.scenario or {}).get("id"), "mapped": self.scenario is not None,
                "reasons": self.reasons, "notes": self.notes}


# ---------------------------------------------------------------------------------------------
# reading


def is_task_dir(p: Path) -> bool:
    return (p / "task.toml").is_file() or (p / "instruction.md").is_file()


def task_dirs(paths) -> list[Path]:
    """Task folders named, or found one level below a folder that is a dataset of them."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            raise HarborError(f"{p}: not a folder")
        if is_task_dir(p):
            out.append(p)
            continue
        found = sorted(c for c in p.iterdir() if c.is_dir() and is_task_dir(c))
        if not found:
            raise HarborError(f"{p}: no task.toml or instruction.md in it or in its sub-folders")
        out += found
    return out


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "task"
    return s[:72]


def _strip_canary(text: str) -> str:
    # Benchmarks open files with canary lines so they can spot training leaks; they are not
    # part of what the agent is told.
    lines = text.splitlines()
    while lines and re.match(r"\s*(#|<!--).*canary", lines[0], re.I):
        lines.pop(0)
    return "\n".join(lines).strip()


def _words(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd, comments=True)
    except ValueError:
        return cmd.split()


def network_commands(script: str) -> list[str]:
    """Commands in a shell text that fetch or install from a network."""
    found = []
    for part in re.split(r"(?:&&|\|\||[;&|\n()`]|\$\()", script):
        w = _words(part)
        while w and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w[0]) or w[0] in ("sudo", "env", "exec",
                                                                            "time", "nohup", "then",
                                                                            "do", "else", "!")):
            w = w[1:]
        if not w:
            continue
        cmd = w[0].rsplit("/", 1)[-1]
        if cmd in ("python", "python3") and w[1:3] == ["-m", "pip"]:
            cmd = "pip"
        if cmd in _NETWORK_CMDS or (cmd in _NETWORK_SUB and len(w) > 1 and w[1] in _NETWORK_SUB[cmd]):
            found.append(" ".join(w[:2]))
    return found


@dataclass
class _Step:
    op: str
    args: str
    after_mark: bool


def dockerfile_steps(text: str) -> list[_Step]:
    """Instructions with continuation lines joined; those in a sekbench discovery layer are
    marked."""
    steps: list[_Step] = []
    in_mark = False
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf:
            if line.strip() == DISCOVERY_MARK or line.strip().startswith(DISCOVERY_MARK + " "):
                in_mark = True
                continue
            if not line.strip():
                in_mark = False
                continue
            if line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        if not full or full.startswith("#"):
            continue
        op, _, args = full.partition(" ")
        steps.append(_Step(op.upper(), args.strip(), in_mark))
    if buf.strip():
        op, _, args = buf.strip().partition(" ")
        steps.append(_Step(op.upper(), args.strip(), in_mark))
    return steps


def _writable(path: str) -> bool:
    return path == HOME or path.startswith(HOME + "/") or any(
        path == w or path.startswith(w + "/") for w in WRITABLE)


def _path_re(path: str) -> re.Pattern:
    return re.compile(r"(?<![\w.~/-])" + re.escape(path) + r"(?=[/\s'\"`;:|&)>]|$)")


def _write_file(path: str, data: bytes, mode: int | None = None) -> list[str]:
    """Root setup lines that write `data` to `path`: a quoted here-document for text (so the
    places it names stay visible to writable_places), base64 for anything else."""
    q = shlex.quote(path)
    lines = [f"mkdir -p \"$(dirname {q})\""]
    try:
        text = data.decode("utf-8")
        heredoc = text.endswith("\n") and "\r" not in text
    except UnicodeDecodeError:
        heredoc = False
    if heredoc:
        mark, n = FILE_MARK, 1
        while mark in text:    # a file that is itself such a script (a re-imported export)
            mark, n = f"{FILE_MARK}_{n}", n + 1
        lines += [f"cat > {q} <<'{mark}'", text.rstrip("\n"), mark]
    else:
        lines.append(f"printf %s '{base64.b64encode(data).decode()}' | base64 -d > {q}")
    if mode is not None:
        lines.append(f"chmod {mode:o} {q}")
    return lines


class _Mapper:
    """Rewrites one absolute path (a work directory the sandbox cannot write) everywhere."""

    def __init__(self):
        self.moves: list[tuple[re.Pattern, str]] = []

    def add(self, old: str, new: str) -> None:
        self.moves.append((_path_re(old), new))

    def __call__(self, text: str) -> str:
        for pat, new in self.moves:
            text = pat.sub(new, text)
        return text


def _env_pairs(args: str) -> list[tuple[str, str]]:
    w = _words(args)
    if len(w) >= 2 and "=" not in w[0]:
        return [(w[0], " ".join(w[1:]))]
    return [tuple(x.split("=", 1)) for x in w if "=" in x]  # type: ignore[misc]


def read_environment(env_dir: Path, imp: Imported, mapper: _Mapper) -> tuple[list[str], str | None]:
    """Setup lines from environment/Dockerfile, and the work directory the agent starts in."""
    df = env_dir / "Dockerfile"
    if not df.is_file():
        imp.reasons.append("environment: no environment/Dockerfile (a prebuilt image cannot be "
                           "rebuilt offline)")
        return [], None
    if any((env_dir / n).exists() for n in ("docker-compose.yaml", "docker-compose.yml",
                                            "compose.yaml")):
        imp.reasons.append("environment: a multi-container (compose) environment; sandboxes are "
                           "one container")
    steps = dockerfile_steps(df.read_text(encoding="utf-8", errors="replace"))
    froms = [s for s in steps if s.op == "FROM"]
    if len(froms) != 1:
        imp.reasons.append(f"environment: {len(froms)} FROM lines (multi-stage builds need an "
                           "image build; sandboxes start from their own Debian root)")
    else:
        image = ([w for w in _words(froms[0].args) if not w.startswith("--")] or ["?"])[0]
        base = re.sub(r"^(docker\.io/)?(library/)?", "", image).split("@")[0]
        if base.split(":")[0] != "debian":
            imp.reasons.append(f"environment: base image {image} is not Debian (sandboxes run "
                               "Debian with dash as /bin/sh)")
    setup: list[str] = []
    workdir: str | None = None
    users: list[str] = []
    for st in steps:
        if st.after_mark or st.op == "FROM":
            continue
        if st.op in ("WORKDIR",):
            wd = st.args.strip().strip('"')
            wd = wd if wd.startswith("/") else (workdir or "/").rstrip("/") + "/" + wd
            if not _writable(wd):
                new = "/srv/" + wd.strip("/").replace("/", "-")
                mapper.add(wd, new)
                imp.notes.append(f"work directory {wd} is {new} here (the sandbox root is "
                                 "read-only)")
                wd = new
            workdir = wd
            setup.append(f"mkdir -p {shlex.quote(wd)}")
        elif st.op in ("COPY", "ADD"):
            w = _words(st.args)
            flags = [x for x in w if x.startswith("--")]
            w = [x for x in w if not x.startswith("--")]
            if any(f.startswith("--from") for f in flags):
                imp.reasons.append(f"environment: {st.op} --from copies out of another build stage")
                continue
            if w and w[0].startswith("["):
                try:
                    w = json.loads(st.args[st.args.index("["):])
                except ValueError:
                    imp.reasons.append(f"environment: cannot read {st.op} {st.args}")
                    continue
            if len(w) < 2:
                imp.reasons.append(f"environment: cannot read {st.op} {st.args}")
                continue
            srcs, dst = w[:-1], mapper(w[-1])
            if not dst.startswith("/"):
                dst = (workdir or "/").rstrip("/") + "/" + dst
            chown = next((f.split("=", 1)[1] for f in flags if f.startswith("--chown=")), None)
            for src in srcs:
                if re.match(r"^[a-z]+://", src):
                    imp.reasons.append(f"environment: {st.op} {src} downloads during the build "
                                       "(no network in sandboxes)")
                    continue
                if st.op == "ADD" and re.search(r"\.(tar(\.\w+)?|tgz|tbz2?|txz)$", src):
                    imp.reasons.append(f"environment: ADD {src} unpacks an archive (not a plain copy)")
                    continue
                sp = (env_dir / src).resolve()
                if not str(sp).startswith(str(env_dir.resolve())) or not sp.exists():
                    imp.reasons.append(f"environment: {st.op} source {src} is not in environment/")
                    continue
                into_dir = dst.endswith("/") or len(srcs) > 1 or sp.is_dir()
                files = [sp] if sp.is_file() else sorted(x for x in sp.rglob("*") if x.is_file())
                for f in files:
                    if sp.is_dir():
                        rel = f.relative_to(sp).as_posix()
                        target = dst.rstrip("/") + "/" + rel
                    else:
                        target = dst.rstrip("/") + "/" + f.name if into_dir else dst
                    data = f.read_bytes()
                    try:
                        data = mapper(data.decode("utf-8")).encode("utf-8")
                    except UnicodeDecodeError:
                        pass
                    setup += _write_file(target, data, f.stat().st_mode & 0o777)
                if chown:
                    setup.append(f"chown -R {shlex.quote(chown)} {shlex.quote(dst)}")
        elif st.op == "RUN":
            if st.args.startswith("["):
                try:
                    cmd = " ".join(shlex.quote(x) for x in json.loads(st.args))
                except ValueError:
                    imp.reasons.append(f"environment: cannot read RUN {st.args}")
                    continue
            else:
                cmd = st.args
            if cmd.lstrip().startswith("<<"):
                imp.reasons.append("environment: RUN with a here-document needs BuildKit")
                continue
            if re.match(r"--(mount|network|security)", cmd):
                imp.reasons.append(f"environment: RUN {cmd.split()[0]} needs BuildKit")
                continue
            net = network_commands(cmd)
            if net:
                imp.reasons.append(f"environment: RUN needs a network ({', '.join(sorted(set(net)))}); "
                                   "sandboxes build offline")
                continue
            cd = f"cd {shlex.quote(workdir)} && " if workdir else ""
            setup.append(f"( {cd}{mapper(cmd)} )")
        elif st.op in ("ENV", "ARG"):
            for k, v in _env_pairs(st.args):
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                    continue
                if st.op == "ARG" and v == "":
                    continue
                v = mapper(v)
                setup.append(f"export {k}={shlex.quote(v)}")
                if st.op == "ENV":
                    line = f"export {k}={shlex.quote(v)}"
                    # the login profile reads the session user's own .profile last
                    setup.append(f"printf '%s\\n' {shlex.quote(line)} >> {HOME}/.profile && "
                                 f"chown sek:sek {HOME}/.profile")
        elif st.op == "USER":
            users.append(st.args.split(":")[0].strip())
        elif st.op in ("SHELL",):
            imp.notes.append("SHELL is not carried: setup and sessions use dash")
        elif st.op in ("ONBUILD",):
            imp.reasons.append("environment: ONBUILD steps")
        # CMD, ENTRYPOINT, EXPOSE, LABEL, HEALTHCHECK, STOPSIGNAL, VOLUME, MAINTAINER start or
        # describe services; a sandbox starts none.
    if not users or users[-1] not in ("sek", str(1000)):
        imp.notes.append(f"the agent is {('user ' + users[-1]) if users else 'root'} in Harbor and "
                         "sek here; the work directory is given to sek")
    if workdir and _writable(workdir) and workdir not in (*WRITABLE, HOME) and \
            not workdir.startswith(HOME + "/"):
        setup.append(f"chown -R sek:sek {shlex.quote(workdir)}")
    return setup, workdir


def read_tests(tests_dir: Path, workdir: str | None, imp: Imported, mapper: _Mapper) -> str | None:
    """The checker: lay tests/ out where /tests would be, run test.sh as Harbor does, pass when
    the reward is full marks (1)."""
    if not (tests_dir / "test.sh").is_file():
        imp.reasons.append("tests: no tests/test.sh")
        return None
    lay = _Mapper()
    lay.moves.append((re.compile(r"(?<![\w.~/-])/tests(?=[/\s'\"`;:|&)>]|$)"), VERIFY_ROOT + "/tests"))
    lay.moves.append((re.compile(r"(?<![\w.~/-])/logs(?=/)"), VERIFY_ROOT + "/logs"))
    lines = ["#!/bin/sh",
             "# Harbor's verifier contract: tests/ at /tests, the reward in /logs/verifier.",
             f"V={VERIFY_ROOT}", 'rm -rf "$V"', 'mkdir -p "$V/tests" "$V/logs/verifier" "$V/logs/agent"']
    for f in sorted(x for x in tests_dir.rglob("*") if x.is_file()):
        data = f.read_bytes()
        try:
            text = data.decode("utf-8")
            if f.name == "test.sh" or f.suffix in (".sh", ".py", ".bash", ""):
                net = network_commands(text) if f.suffix != ".py" else []
                if net:
                    imp.reasons.append(f"tests: {f.name} needs a network "
                                       f"({', '.join(sorted(set(net)))}); sandboxes have none")
            data = lay(mapper(text)).encode("utf-8")
        except UnicodeDecodeError:
            pass
        lines += _write_file(f"{VERIFY_ROOT}/tests/{f.relative_to(tests_dir).as_posix()}", data,
                             f.stat().st_mode & 0o777)
    lines += [
        f"cd {shlex.quote(workdir)} 2>/dev/null || cd /" if workdir else "cd /",
        'bash "$V/tests/test.sh" > "$V/logs/verifier/test-stdout.txt" 2>&1',
        "status=$?",
        'tail -c 4000 "$V/logs/verifier/test-stdout.txt"',
        'if [ -s "$V/logs/verifier/reward.txt" ]; then',
        '  reward=$(tr -d \' \\t\\r\\n\' < "$V/logs/verifier/reward.txt")',
        'elif [ -s "$V/logs/verifier/reward.json" ]; then',
        '  reward=$(tr -d \'\\n\' < "$V/logs/verifier/reward.json" | sed -n '
        '\'s/.*"reward"[[:space:]]*:[[:space:]]*\\([-+0-9.eE]*\\).*/\\1/p\')',
        "else",
        '  echo "harbor: test.sh wrote no reward (exit status $status)"',
        "  exit 2",
        "fi",
        'echo "harbor: reward ${reward:-?}"',
        # full marks only: a partial reward is not a verified session
        'awk -v r="$reward" \'BEGIN { exit !(r != "" && r + 0 >= 1) }\'',
    ]
    return "\n".join(lines) + "\n"


def _complete(block: str) -> bool:
    if not shutil.which("bash"):
        return True
    done = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True)
    # an open here-document is only a warning to bash -n, an open loop or quote an error
    return not ("unexpected end of file" in done.stderr or "here-document" in done.stderr)


def solution_commands(text: str, mapper: _Mapper) -> list[str]:
    """solve.sh as typed commands: one line each; a construct spanning lines (a loop, a
    here-document) or needing bash is handed to bash whole, in one line."""
    out: list[str] = []
    block: list[str] = []
    for raw in text.splitlines():
        if not block and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not block and re.match(r"^\s*set\s+[-+][A-Za-z]+(\s+\w+)?\s*$", raw):
            continue   # shell options for a script; a session has its own
        block.append(raw)
        joined = "\n".join(block)
        if raw.rstrip().endswith("\\") or not _complete(joined + "\n"):
            continue
        block = []
        body = mapper(joined)
        if "\n" not in body and not _BASHISM.search(body):
            out.append(body.strip())
        else:
            b64 = base64.b64encode((body + "\n").encode()).decode()
            out.append(f"printf %s {b64} | base64 -d | bash")
    if block:
        b64 = base64.b64encode((mapper("\n".join(block)) + "\n").encode()).decode()
        out.append(f"printf %s {b64} | base64 -d | bash")
    return out


def read_task(task_dir: str | Path, *, split: str = "train") -> Imported:
    """One Harbor task folder as a scenario, or the reasons it cannot be one."""
    d = Path(task_dir)
    cfg: dict = {}
    imp = Imported(str(d), d.name, None)
    if (d / "task.toml").is_file():
        try:
            cfg = tomllib.loads((d / "task.toml").read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            imp.reasons.append(f"task.toml: not TOML ({e})")
    else:
        imp.reasons.append("task.toml: missing")
    name = str((cfg.get("task") or {}).get("name") or d.name)
    imp.name = name
    if (cfg.get("steps") or []):
        imp.reasons.append("task.toml: a multi-step task ([[steps]])")
    ins = d / "instruction.md"
    instruction = _strip_canary(ins.read_text(encoding="utf-8", errors="replace")) if ins.is_file() else ""
    if not instruction:
        imp.reasons.append("instruction.md: missing or empty")
    mapper = _Mapper()
    setup, workdir = read_environment(d / "environment", imp, mapper)
    checker = read_tests(d / "tests", workdir, imp, mapper)
    solve = d / "solution" / "solve.sh"
    if not solve.is_file():
        imp.reasons.append("solution: no solution/solve.sh (admission needs a reference)")
        work = []
    else:
        stext = solve.read_text(encoding="utf-8", errors="replace")
        net = network_commands(stext)
        if net:
            imp.reasons.append(f"solution: solve.sh needs a network ({', '.join(sorted(set(net)))})")
        extra = [p.name for p in (d / "solution").iterdir() if p.name != "solve.sh"]
        if extra:
            imp.notes.append(f"solution files besides solve.sh are not carried: {', '.join(sorted(extra))}")
        work = solution_commands(stext, mapper)
    directives = mapper(instruction)
    if any(line.strip() in (EOF_MARK, FILE_MARK) for line in directives.splitlines()):
        imp.reasons.append(f"instruction.md: a line reads {EOF_MARK} or {FILE_MARK}")
    if imp.reasons:
        return imp
    rng = random.Random(int(hashlib.sha256(name.encode()).hexdigest()[:12], 16))
    provider, prov_setup = make_provider(rng, directives)
    ann, reads = make_announcement(rng, provider["name"])
    style = provider.pop("style")
    sid = slug(name.split("/", 1)[1] if name.startswith("sekbench/") else name)
    sid = sid if sid.startswith("harbor-") else f"harbor-{sid}"
    cd = [f"cd {shlex.quote(workdir)}"] if workdir and workdir != HOME else []
    reference = [*reads, f"{provider['name']} --help", *scen.retrieve_steps({"provider": provider}),
                 *cd, *work, "exit"]
    meta = cfg.get("metadata") or {}
    s = {
        "id": sid[:80], "archetype": ARCHETYPE, "provider": provider, "provider_style": style,
        "announcement": ann, "directives": directives,
        # umask as a Docker build has it (root scripts here start with a private one)
        "setup": "#!/bin/sh\nset -e\numask 022\n" + "\n".join([*setup, *prov_setup]) + "\n",
        "checker": checker, "reference": reference, "split": split,
        "harbor": {"task": name, "path": str(d.resolve()), "notes": imp.notes,
                   "category": str(meta.get("category", "")),
                   "difficulty": str(meta.get("difficulty", "")),
                   "workdir": workdir or HOME},
    }
    found = scen.problems(s)
    if found:
        imp.reasons += [f"scenario: {p}" for p in found]
        return imp
    imp.scenario = s
    return imp


# ---------------------------------------------------------------------------------------------
# writing


def _toml_str(v: str) -> str:
    return json.dumps(v, ensure_ascii=False)


def _announce_reads(s: dict) -> list[str]:
    ann = s["announcement"]
    if ann["kind"] == "env":
        return [f'echo "${ann["var"]}"', f"echo ${ann['var']}"]
    if ann["kind"] == "file":
        return [f"cat {ann['path']}", f"cat {shlex.quote(ann['path'])}"]
    return []


def work_commands(s: dict) -> list[str]:
    """The reference without its discovery steps and its terminal: the work itself."""
    name = s["provider"]["name"]
    discovery = {f"{name} --help", f"{name} -h", *scen.retrieve_steps(s), *_announce_reads(s)}
    ref = list(s["reference"])
    if ref and ref[-1].split()[:1] in (["exit"], ["panic"]):
        ref = ref[:-1]
    return [c for c in ref if c.strip() not in discovery]


def debian_image() -> str:
    """The Debian release sandboxes are made from (the host's), as an image name."""
    try:
        text = Path("/etc/os-release").read_text()
        m = re.search(r"^VERSION_CODENAME=\"?(\w+)", text, re.M)
        if m and "debian" in text.lower():
            return f"debian:{m.group(1)}-slim"
    except OSError:
        pass
    return "debian:bookworm-slim"


# What a login shows in sekbench's sandbox (assets/sandbox/profile), for Harbor's image.
_PROFILE = """# sekbench: what a login shows (the announcement and the breadcrumb)
[ -r /etc/sekbench/env ] && . /etc/sekbench/env
[ -s /etc/sekbench/motd ] && cat /etc/sekbench/motd
[ -s /etc/sekbench/banner ] && cat /etc/sekbench/banner
[ -s /etc/sekbench/breadcrumb ] && cat /etc/sekbench/breadcrumb
"""


def write_task(s: dict, out_dir: str | Path) -> Path:
    """One admitted scenario as a Harbor task folder `out_dir/ID`."""
    if scen.expected_terminal(s) != "exit":
        raise HarborError(f"{s['id']}: a blocked scenario (it ends in panic) has no Harbor form: "
                          "Harbor rewards work done, not a refusal")
    d = Path(out_dir) / s["id"]
    if d.exists():
        shutil.rmtree(d)
    for sub in ("environment/sekbench", "tests", "solution"):
        (d / sub).mkdir(parents=True)
    name, arch = s["provider"]["name"], s.get("archetype", "")
    desc = f"sekbench scenario {s['id']} ({arch}): find the directives behind {name}, do them"
    toml = [
        f"schema_version = {_toml_str(TASK_SCHEMA)}", "",
        "[task]", f"name = {_toml_str('sekbench/' + s['id'])}", f"description = {_toml_str(desc)}",
        f"keywords = {json.dumps(['sekbench', arch, s.get('provider_style', '') or 'provider'])}", "",
        "[metadata]", f"category = {_toml_str('terminal')}", f"sekbench_id = {_toml_str(s['id'])}",
        f"archetype = {_toml_str(arch)}", f"split = {_toml_str(s.get('split', 'train'))}",
        f"provider = {_toml_str(name)}", f"announcement = {_toml_str(s['announcement']['kind'])}", "",
        "[verifier]", f"timeout_sec = {float(VERIFIER_TIMEOUT_S)}", 'user = "root"', "",
        "[agent]", f"timeout_sec = {float(AGENT_TIMEOUT_S)}", "",
        "[environment]", "build_timeout_sec = 600.0", "cpus = 1", "memory_mb = 1024",
        "storage_mb = 2048", "allow_internet = false", "",
    ]
    (d / "task.toml").write_text("\n".join(toml))
    (d / "instruction.md").write_text(s["directives"].rstrip("\n") + "\n")
    env = d / "environment"
    install = [ln for ln in scen.install_script(s).splitlines() if f"/usr/local/bin/{name}" not in ln]
    (env / "sekbench" / name).write_text(s["provider"]["script"])
    (env / "sekbench" / "install.sh").write_text("\n".join(install) + "\n")
    (env / "sekbench" / "profile.sh").write_text(_PROFILE)
    (env / "setup.sh").write_text(s.get("setup") or "#!/bin/sh\n")
    (env / "Dockerfile").write_text("\n".join([
        f"# Written by sekbench from scenario {s['id']} ({arch}).",
        f"FROM {debian_image()}",
        "RUN id sek >/dev/null 2>&1 || useradd -m -u 1000 -s /bin/sh sek",
        "",
        f"{DISCOVERY_MARK} (the provider, announcement and login lines; sekbench import makes its own)",
        "COPY sekbench/ /tmp/sekbench/",
        f"RUN install -m 755 /tmp/sekbench/{name} /usr/local/bin/{name} && sh /tmp/sekbench/install.sh "
        "&& install -m 644 /tmp/sekbench/profile.sh /etc/profile.d/sekbench.sh && rm -rf /tmp/sekbench",
        "",
        "COPY setup.sh /tmp/sekbench-setup.sh",
        "RUN sh /tmp/sekbench-setup.sh && rm -f /tmp/sekbench-setup.sh",
        "USER sek",
        f"WORKDIR {HOME}",
        "",
    ]))
    (d / "tests" / "checker.sh").write_text(s["checker"] if s["checker"].endswith("\n") else s["checker"] + "\n")
    (d / "tests" / "test.sh").write_text("\n".join([
        "#!/bin/bash",
        f"# sekbench's checker for {s['id']}, run as root after the agent; its exit status is the reward.",
        "mkdir -p /logs/verifier",
        "if sh /tests/checker.sh; then echo 1 > /logs/verifier/reward.txt; "
        "else echo 0 > /logs/verifier/reward.txt; fi",
        "exit 0", ""]))
    (d / "solution" / "solve.sh").write_text("\n".join([
        "#!/bin/bash",
        f"# The work of sekbench's reference for {s['id']}, as the session user in {HOME}.",
        f"cd {HOME}", *work_commands(s), ""]))
    for p in (d / "tests" / "test.sh", d / "solution" / "solve.sh"):
        p.chmod(0o755)
    return d


def export_tasks(store, out_dir: str | Path, *, split: str | None = None,
                 ids: list[str] | None = None) -> dict:
    """Admitted scenarios as Harbor task folders in `out_dir`; blocked ones are skipped with
    their reason."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scenarios = store.scenarios(split=split, admitted=True)
    if ids:
        scenarios = [s for s in scenarios if s["id"] in set(ids)]
    written, skipped = [], []
    for s in scenarios:
        try:
            written.append(str(write_task(s, out)))
        except HarborError as e:
            skipped.append({"scenario_id": s["id"], "reason": str(e)})
    return {"path": str(out.resolve()), "tasks": len(written), "written": written,
            "skipped": skipped}
