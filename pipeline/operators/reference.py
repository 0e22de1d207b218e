"""`reference`: the scripted expert that produces the first dataset.

It follows the routine on any admitted scenario: read the announcement, run
the provider's `--help`, retrieve (every step of a chain), type the reference
solution, then `exit`, or on a blocked scenario `panic` with a reason drawn from
what the session printed (the shell's error, the provider's status line). So the
student sees recovery and not one memorised script, each session varies,
seeded and recorded in `plan_notes`: sometimes a first probe that fails (the
bare provider name, a wrong flag) before `--help`; sometimes a harmless look
around (`ls`, `pwd`, `cat` of the announcement file) before or after retrieving.

What has to be read (issue 12), each an option with its default:
- `p_recover` (0.3): first a near-miss of the last retrieve step, derived from it (words
  joined, a word dropped or repeated, a flag or word misspelt, the id missing or wrong in
  a chain, the pointed-at path mangled) and one the provider's script answers with an
  error; then what documents the step is read again (`NAME --help`, the subcommand's
  `--help`, the listing or pointer that gave the id or path) and the right command typed.
  Noted `recover:CMD`.
- `vary_shape` (on): the work is one of the scenario's correct shapes (`reference` or one
  of `alternatives`), drawn per session. Noted `shape:N` (0 is `reference`).
- `p_check` (0.6): on a scenario that ends in `exit`, a look at what the work produced
  before `exit` (the scenario's `looks`, else `cat` of the last file written). Noted
  `check:CMD`. Never on a blocked scenario: there the last thing seen is the blockage.
- `p_fix` (0): on a scenario that ends in `exit`, one work command is first typed with a
  path of the scenario's own mistyped (a letter dropped from a file or directory name), the
  shell answers "No such file or directory", and the right command follows: an error of
  one's own is fixed, not a reason to panic. Noted `fix:CMD`.
These draws come from streams of their own, so the older choices (probe, looks) of a
seed are what they were.
"""

from __future__ import annotations

import fnmatch
import random
import re
import shlex

from pipeline.author.blocked import shell_safe
from pipeline.errors import SekbenchError
from pipeline.gate import runs_step
from pipeline.operators import EndOfInput, SessionContext, register
from pipeline.render import Transcript
from pipeline.scenario import retrieve_steps

WRONG_FLAGS = ["--list", "-l", "--show", "list", "--tasks", "--get", "show", "-a", "--all",
               "--print", "status", "--todo"]
LOOKS = ["ls", "ls -la", "pwd", "ls ~"]


# What a blockage looks like on screen, most telling first: a shell error naming what failed,
# or a status the provider gave an item.
_ERROR = re.compile(r"([^\s:']+)'?: (Permission denied|No such file or directory|not found|not installed)\s*$")
_STATUS = re.compile(r"(?i)\b(on hold|cancelled|awaiting approval|never arrived|not received|nothing "
                     r"received|upload pending)\b")


def reason_from(transcript: Transcript, after: str | None = None) -> str | None:
    """A panic reason in the operator's own words, from what the session printed: the last
    shell error of the work (after the last run of `after`, the retrieve step, where given:
    a near-miss of the retrieve is no blockage), else a blocking status the provider's
    output gave."""
    turns = transcript.turns
    if after:
        last = max((i for i, t in enumerate(turns) if t.command == after), default=-1)
        turns = turns[last + 1:]
    for turn in reversed(turns):
        for line in reversed(turn.output.splitlines()):
            m = _ERROR.search(line.strip())
            if m:
                what, why = m.group(1), m.group(2)
                return shell_safe(f"blocked: {what}: {why.lower()}, cannot finish the work")
    for turn in reversed(transcript.turns):
        for line in turn.output.splitlines():
            if _STATUS.search(line):
                return shell_safe(f"blocked: the provider says {line.strip()}")
    return None


# --- near-misses of a retrieve step --------------------------------------------------------

_ARM = re.compile(r"^\t((?:'[^'\n]*'\*?\|?)+|\*)\)\n(.*?)\n\t\t;;$", re.M | re.S)
_FAILS = re.compile(r"\bexit [1-9]|>&2")


def _arms(script: str) -> list[tuple[list[str], bool]] | None:
    """The `case "$*"` arms of a provider script as (glob patterns, answers with an error);
    None where the script is not of the shape the procedural author writes."""
    if 'case "$*" in' not in script:
        return None
    body = script.split('case "$*" in', 1)[1].split("\nesac", 1)[0]
    arms = []
    for m in _ARM.finditer(body):
        pats = ["*"] if m.group(1) == "*" else [
            p.group(1) + ("*" if p.group(2) else "") for p in re.finditer(r"'([^']*)'(\*?)", m.group(1))]
        arms.append((pats, bool(_FAILS.search(m.group(2)))))
    return arms or None


def provider_fails(script: str, args: list[str]) -> bool:
    """Would the provider answer these arguments with an error? Read from its script: the
    first `case "$*"` arm that matches (`-h`/`--help` first is always help)."""
    if not args or args[0] in ("-h", "--help"):
        return False
    arms = _arms(script)
    if arms is None:
        return False
    joined = " ".join(args)
    for pats, fails in arms:
        if any(fnmatch.fnmatchcase(joined, p) for p in pats):
            return fails
    return False


def _typo(word: str, rng: random.Random) -> str | None:
    """Two neighbouring letters swapped inside a word (`pending` -> `pedning`)."""
    letters = [i for i in range(1, len(word) - 2) if word[i].isalpha() and word[i + 1].isalpha()
               and word[i] != word[i + 1]]
    if not letters:
        return None
    i = rng.choice(letters)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def near_misses(s: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """(near-miss, how, what to read again) for the last retrieve step of `s`: commands an
    operator gets almost right, each one the provider (or the shell) answers with an error."""
    name, script = s["provider"]["name"], s["provider"]["script"]
    steps = retrieve_steps(s)
    last = steps[-1]
    words = last.split()
    helps = [c for c in steps[:-1] if c.split()[-1:] in (["--help"], ["-h"])]
    syntax_help = helps[-1] if helps else f"{name} --help"
    # An id or path came from the step before (a listing, a pointer); read that again.
    id_help = steps[-2] if len(steps) >= 2 else syntax_help
    out: list[tuple[str, str, str]] = []
    if words[0] == name:
        args = words[1:]
        cands: list[tuple[list[str], str, str]] = []
        for i in range(len(args) - 1):
            cands.append((args[:i] + [args[i] + args[i + 1].lstrip("-")] + args[i + 2:], "joined", syntax_help))
        if len(args) >= 2:
            for i in range(len(args)):
                how = "id_missing" if i == len(args) - 1 and id_help != syntax_help else "dropped"
                cands.append((args[:i] + args[i + 1:], how, id_help if how == "id_missing" else syntax_help))
        for i in range(len(args)):
            cands.append((args[:i + 1] + [args[i]] + args[i + 1:], "repeated", syntax_help))
        for i, a in enumerate(args):
            if a.startswith("--") and len(a) > 3:
                cands.append((args[:i] + [a[1:]] + args[i + 1:], "flag_misspelt", syntax_help))
            elif re.fullmatch(r"-[A-Za-z]", a):
                cands.append((args[:i] + ["-" + a] + args[i + 1:], "flag_misspelt", syntax_help))
            typo = _typo(a, rng)
            if typo:
                how = "flag_misspelt" if a.startswith("-") else "misspelt"
                cands.append((args[:i] + [typo] + args[i + 1:], how, syntax_help))
        if id_help != syntax_help and re.search(r"\d$", args[-1]):
            cands.append((args[:-1] + [args[-1][:-1]], "wrong_id", id_help))
        for a, how, reread in cands:
            cmd = " ".join([name, *a])
            if cmd != last and not runs_step(cmd, last) and provider_fails(script, a):
                out.append((cmd, how, reread))
    elif len(words) == 2 and words[0] in ("cat", "less", "more", "head", "tail") and words[1].startswith("/"):
        path = words[1]
        folder, _, base = path.rpartition("/")
        stem = base.rsplit(".", 1)[0]
        for bad, how in ((f"{folder}/{stem}", "extension_dropped"), (f"{folder}/", "id_missing"),
                         (f"{folder}/{base[1:]}", "misspelt")):
            if bad != path and stem:
                out.append((f"{words[0]} {bad}", how, id_help))
    seen: set[str] = set()
    return [c for c in out if not (c[0] in seen or seen.add(c[0]))]


_REDIRECT = re.compile(r"(?<![<>2&])>>?\s*([^\s;|&<>]+)\s*$")


def looks_at(s: dict, work: list[str]) -> list[str]:
    """What a careful operator looks at before `exit`: the scenario's `looks`, else the last
    file the work wrote with a redirect."""
    if s.get("looks"):
        return list(s["looks"])
    for c in reversed(work):
        m = _REDIRECT.search(c)
        if m:
            return [f"cat {m.group(1)}"]
    return []


# A word of a work command that names a place: no glob, no variable, no quoting inside.
_PLACE = re.compile(r"^(?:~|/)[A-Za-z0-9._/-]*$")
# Commands that only read the places they name (or fail before changing anything when one is
# missing): a mistyped name there is an error and nothing else. Not mv, cp, rm -f, mkdir, ...,
# where a mistyped destination is made or a mistyped source is silently skipped.
_READERS = {"sort", "grep", "awk", "cut", "sed", "wc", "head", "tail", "cat", "find", "chmod",
            "tar", "cd", "uniq", "tr", "diff", "cmp", "du", "stat", "ls"}


def work_misses(s: dict, work: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(mistyped command, right command) for work commands that name a file or directory
    setup made: the name with one letter dropped, which the shell answers with "No such file
    or directory" and nothing changed (a redirect's output is written again by the right
    command; an append is never mistyped)."""
    out: list[tuple[str, str]] = []
    for c in work:
        words = c.split()
        if not words or words[0] not in _READERS or ">>" in c:
            continue
        for w in words:
            token = w.strip("'\"")
            if not _PLACE.match(token) or token in ("/", "~"):
                continue
            full = ("/home/sek" + token[1:] if token.startswith("~") else token).rstrip("/")
            # a place setup made by that very name (not a prefix of another name)
            if not re.search(re.escape(full) + r"(?=['\"\s/]|$)", s.get("setup", ""), re.M):
                continue
            folder, _, base = token.rstrip("/").rpartition("/")
            stem, dot, ext = base.partition(".")
            if len(stem) < 3 or not folder:
                continue
            j = rng.randrange(1, len(stem))
            bad = f"{folder}/{stem[:j]}{stem[j + 1:]}{dot}{ext}"
            out.append((c.replace(token, bad, 1), c))
            break
    return out


class ReferenceOperator:
    name = "reference"

    def __init__(self, p_probe: float = 0.35, p_look: float = 0.3, p_recover: float = 0.3,
                 p_check: float = 0.6, vary_shape: bool = True, p_fix: float = 0.0):
        self.p_probe, self.p_look = p_probe, p_look
        self.p_recover, self.p_check, self.vary_shape = p_recover, p_check, vary_shape
        self.p_fix = p_fix
        self.plan: list[str] = []
        self.plan_notes: list[str] = []
        self.retrieve = ""

    def begin(self, ctx: SessionContext) -> None:
        s = ctx.scenario
        if not s:
            raise SekbenchError("the reference operator needs a scenario (--scenario)")
        rng = random.Random(f"{ctx.seed}:{s['id']}")
        # The substance's draws (shape, recovery, check) have a stream of their own.
        more = random.Random(f"{ctx.seed}:{s['id']}:substance")
        name = s["provider"]["name"]
        steps_r = retrieve_steps(s)
        retrieve = steps_r[-1] if steps_r else ""
        shapes = [list(s["reference"]), *(list(a) for a in s.get("alternatives") or [])]
        shape = more.randrange(len(shapes)) if self.vary_shape else 0
        steps = shapes[shape]
        help_at = next((i for i, c in enumerate(steps) if c.split()[:1] == [name]), 0)
        notes = [f"shape:{shape}"] if len(shapes) > 1 else []
        before: list[str] = []
        if rng.random() < self.p_look:
            look = rng.choice(LOOKS)
            before.append(look)
            notes.append(f"look:{look}")
        if rng.random() < self.p_probe:
            script = s["provider"]["script"]
            wrong = [f for f in WRONG_FLAGS if f not in script
                     and all(f not in r.split() for r in steps_r)]
            probe = name if (not wrong or rng.random() < 0.4) else f"{name} {rng.choice(wrong)}"
            before.append(probe)
            notes.append(f"probe:{probe}")
        steps[help_at:help_at] = before
        at = next((i for i, c in enumerate(steps) if c == retrieve), None)
        if at is not None and more.random() < self.p_recover:
            misses = near_misses(s, more)
            if misses:
                miss, how, reread = more.choice(misses)
                steps[at:at] = [miss, reread]
                notes.append(f"recover:{miss}")
        terminal = steps[-1].split()[:1]
        if terminal == ["exit"] and more.random() < self.p_check:
            work = steps[(next((i + 1 for i, c in enumerate(steps) if c == retrieve), 0)):-1]
            looks = looks_at(s, work)
            if looks:
                look = more.choice(looks)
                steps.insert(len(steps) - 1, look)
                notes.append(f"check:{look}")
        after_retrieve = next((i + 1 for i, c in enumerate(steps) if c == retrieve), None)
        if after_retrieve is not None and rng.random() < self.p_look:
            ann = s["announcement"]
            look = (f"cat {shlex.quote(ann['path'])}" if ann["kind"] == "file" and rng.random() < 0.5
                    else rng.choice(LOOKS))
            steps.insert(after_retrieve, look)
            notes.append(f"look_after:{look}")
        fix = random.Random(f"{ctx.seed}:{s['id']}:fix")
        if terminal == ["exit"] and self.p_fix and fix.random() < self.p_fix:
            start = next((i + 1 for i, c in enumerate(steps) if c == retrieve), len(steps))
            misses = work_misses(s, steps[start:-1], fix)
            if misses:
                miss, right = fix.choice(misses)
                steps.insert(steps.index(right, start), miss)
                notes.append(f"fix:{miss}")
        self.plan = steps
        self.plan_notes = notes
        self.scenario = s
        self.retrieve = retrieve

    def next_command(self, transcript: Transcript) -> str:
        if not self.plan:
            raise EndOfInput("the reference plan is done without a terminal")
        command = self.plan.pop(0)
        if command.split()[:1] == ["panic"]:
            seen = reason_from(transcript, after=self.retrieve)
            if seen:
                self.plan_notes.append(f"panic_from:{seen}")
                return f"panic {seen}"
        return command

    def close(self) -> None:
        pass


@register("reference")
def _make(arg: str, options: dict) -> ReferenceOperator:
    """`reference`, or `reference:p_recover=0,p_check=1,vary_shape=false` for an ablation."""
    known = {"p_probe", "p_look", "p_recover", "p_check", "vary_shape", "p_fix"}
    kw = {k: v for k, v in options.items() if k in known}
    for part in filter(None, (x.strip() for x in arg.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or key not in known:
            raise SekbenchError(f"reference option {part!r} not understood; "
                                f"known: {', '.join(sorted(known))} (as reference:KEY=VALUE,...)")
        value = value.strip().lower()
        if key == "vary_shape":
            if value not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise SekbenchError(f"reference option vary_shape takes true or false, not {value!r}")
            kw[key] = value in ("true", "1", "yes", "on")
            continue
        try:
            kw[key] = float(value)
        except ValueError:
            raise SekbenchError(f"reference option {key} takes a probability, not {value!r}") from None
        if not 0.0 <= kw[key] <= 1.0:
            raise SekbenchError(f"reference option {key} takes a probability in [0, 1], not {value}")
    return ReferenceOperator(**kw)
