"""Task fingerprints: the same value for two scenarios that are the same task up to wording.

A scenario is one task wrapped in a provider, an announcement and directives phrased one of
many ways. Two scenarios are the SAME TASK when they start the session's world the same way
and count the same end state as done: the same setup (its data included) and the same checker,
expecting the same terminal, once these are normalised away:

- the provider: its name, script, help, retrieve commands and the files only it uses (the
  pointer file a retrieve step reads, with its setup lines) -- all of that is wording;
- the announcement (kind, text, its file) and the directives' phrasing: the directives are
  what the checker verifies, said in words, so the checker stands for them;
- comments, blank lines and runs of blanks in the scripts (never inside heredoc data);
- how the home is spelled (`~sek/x` or `/home/sek/x`) and which directory names were chosen:
  the working places (`/home/sek`, `/srv`, `/opt`) and every directory below them, and the
  directories below `/tmp`, `/var/tmp`, `/etc`, `/var/log`, `/var/lib`, `/var/spool`,
  `/var/cache`, `/var/mail`, are renamed `P1`, `P2`, ... in order of first appearance, one
  name per directory, so the tree's shape stays (paths inside the data are renamed the same
  way). File names and everything else in the data stay.

Not part of the task: the reference and its alternatives (ways of doing it; several shapes may
solve one task), the archetype label, the split, the seed, the id. Different data, a different threshold,
target, count or expected output make a different checker or setup, hence a different
fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re

from pipeline.scenario import retrieve_steps

FINGERPRINT_VERSION = 1
HOME = "/home/sek"
# Where a scenario's author chooses to put the work: the place itself is a chosen name.
CHOSEN_BASES = (HOME, "/srv", "/opt")
# System prefixes whose meaning is fixed; the directories below them are chosen names.
FIXED_BASES = ("/var/tmp", "/var/log", "/var/lib", "/var/spool", "/var/cache", "/var/mail",
               "/tmp", "/etc")

_PATH_RE = re.compile(r"(?<![\w.~$/@%+-])/[A-Za-z0-9._+@%-]+(?:/[A-Za-z0-9._+@%-]+)*/?")
_HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_HOME_SPELLINGS = re.compile(r"(?<![\w/.-])~sek(?=/|\b)")


def _statements(text: str) -> list[tuple[str, list[str]]]:
    """A script as (header line, heredoc body lines) statements; a body is data, kept exactly."""
    out: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        m = _HEREDOC.search(line)
        body: list[str] = []
        if m:
            strip, word = m.group(1) == "-", m.group(3)
            while i < len(lines):
                b = lines[i]
                i += 1
                if (b.lstrip("\t") if strip else b) == word:
                    break
                body.append(b)
        out.append((line, body))
    return out


def _base_of(path: str) -> tuple[str, bool] | None:
    """The base a path is under and whether that base is itself a chosen name, or None."""
    for base in CHOSEN_BASES:
        if path == base or path.startswith(base + "/"):
            return base, True
    for base in FIXED_BASES:
        if path.startswith(base + "/"):
            return base, False
    return None


def _paths(text: str) -> list[str]:
    return [m.group(0) for m in _PATH_RE.finditer(text)]


class _Renamer:
    """One scenario's directory renaming: each directory gets `P<n>` at its first appearance."""

    def __init__(self, texts: list[str]):
        found = [p for t in texts for p in _paths(t)]
        self.dirs: set[str] = set()
        for p in found:
            if p.endswith("/"):
                self.dirs.add(p.rstrip("/"))
            parts = p.rstrip("/").split("/")
            for k in range(2, len(parts)):
                self.dirs.add("/".join(parts[:k]))
        for t in texts:
            for line in t.splitlines():
                if re.search(r"\bmkdir\b|\[\s+!?\s*-d\b|\btest\s+!?\s*-d\b", line):
                    self.dirs.update(p.rstrip("/") for p in _paths(line))
        self.names: dict[str, str] = {}

    def _name(self, prefix: str) -> str:
        if prefix not in self.names:
            self.names[prefix] = f"P{len(self.names) + 1}"
        return self.names[prefix]

    def path(self, p: str) -> str:
        trail = "/" if p.endswith("/") and len(p) > 1 else ""
        p = p.rstrip("/") or "/"
        found = _base_of(p)
        if not found:
            return p + trail
        base, chosen = found
        out = [self._name(base)] if chosen else [base]
        rest = p[len(base):].strip("/")
        parts = rest.split("/") if rest else []
        prefix = base
        for k, part in enumerate(parts):
            prefix = f"{prefix}/{part}"
            last = k == len(parts) - 1
            out.append(self._name(prefix) if (not last or prefix in self.dirs) else part)
        return "/".join(out) + trail

    def text(self, line: str) -> str:
        return _PATH_RE.sub(lambda m: self.path(m.group(0)), line)


def provider_paths(s: dict) -> set[str]:
    """Files only the provider and announcement use: what a retrieve step reads (the pointer's
    file), the announcement's file and the provider's program."""
    prov = s.get("provider") if isinstance(s.get("provider"), dict) else {}
    out = {f"/usr/local/bin/{prov.get('name') or ''}"}
    for step in retrieve_steps({"provider": prov}):
        out.update(p.rstrip("/") for p in _paths(_HOME_SPELLINGS.sub(HOME, _tilde(step))))
    ann = s.get("announcement") if isinstance(s.get("announcement"), dict) else {}
    if ann.get("kind") == "file" and isinstance(ann.get("path"), str):
        out.add(ann["path"].rstrip("/"))
    return out


def _tilde(cmd: str) -> str:
    """The session user's `~/x` (a command the session types) as /home/sek/x."""
    return re.sub(r"(?<![\w/.-])~(?=/|\s|$)", HOME, cmd)


def _provider_owned(header: str, owned: set[str]) -> bool:
    """A setup statement that only serves the provider: every path it names is one of the
    provider's files or a directory holding one."""
    found = [p.rstrip("/") for p in _paths(header)]
    if not found:
        return False
    return all(p in owned or any(o.startswith(p + "/") for o in owned) for p in found)


def _clean(header: str) -> str:
    return " ".join(header.split())


def canonical(s: dict) -> dict:
    """What the fingerprint hashes: the scenario's task with its wording normalised away."""
    if not isinstance(s, dict):
        s = {}
    owned = provider_paths(s)
    scripts = {}
    for field in ("checker", "setup"):
        text = s.get(field) if isinstance(s.get(field), str) else ""
        text = _HOME_SPELLINGS.sub(HOME, text)
        kept = []
        for header, body in _statements(text):
            h = _clean(header)
            if not h or (h.startswith("#") and not body):
                continue  # blank lines, comments, the #! line: wording
            if field == "setup" and _provider_owned(h, owned):
                continue
            kept.append((h, body))
        scripts[field] = kept
    renamer = _Renamer([h + "\n" + "\n".join(b) for f in ("checker", "setup") for h, b in scripts[f]])
    out = {"terminal": s.get("terminal", "exit") if s.get("terminal") in ("exit", "panic") else "exit"}
    for field in ("checker", "setup"):
        out[field] = [[renamer.text(h), *(renamer.text(x) for x in b)] for h, b in scripts[field]]
    return out


def fingerprint(s: dict) -> str:
    """16 hex digits naming the scenario's task up to wording (see the module's doc)."""
    blob = json.dumps({"v": FINGERPRINT_VERSION, **canonical(s)}, sort_keys=True,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def duplicates(scenarios: list[dict]) -> dict[str, str]:
    """Within one list, in order: each later scenario's id -> the id of the first with its task."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for s in scenarios:
        fp = fingerprint(s)
        if fp in first and first[fp] != s.get("id"):
            out[s.get("id")] = first[fp]
        else:
            first.setdefault(fp, s.get("id"))
    return out
