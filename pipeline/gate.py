"""The keep-gate: a rule-based verdict on a rollout, with every reason that applies.

Each assistant turn is classified as a `command`, `prose` (narration, markdown,
sentences, nothing at all) or `over_imitation` (the model typing the prompt, a
chat-template token, or several lines). A rollout is kept only if it operated
(every turn a command), discovered (ran the provider's retrieve before doing
any work; for a chain, its last step), verified, ended with the scenario's expected
terminal (`exit`, or `panic REASON` on a blocked scenario), and stayed within budget.
Infrastructure failures are `void` and never count against a model.

`undiscovered` is one code beyond DESIGN.md's list: a rollout that did work
before retrieving its directives (or never retrieved them) is not one to learn from.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

GATE_VERSION = "1"
REASONS = ("no_operation", "prose_drift", "over_imitation", "undiscovered", "premature_exit",
           "budget_overrun", "wrong_terminal", "unverified")
VOID_ENDS = {"sandbox_died", "interrupted"}

# First words that open English narration, not a command line.
PROSE_OPENERS = {
    "let", "let's", "i", "i'll", "i'm", "i've", "i'd", "sure", "sure,", "here", "here's", "okay",
    "ok", "ok,", "okay,", "first", "first,", "now", "now,", "next", "next,", "to", "the", "this",
    "that", "it", "it's", "we", "we'll", "you", "your", "great", "great!", "alright", "certainly",
    "based", "since", "as", "looks", "seems", "after", "then", "finally", "note", "note:",
    "unfortunately", "yes", "yes,", "no,", "hello", "hi", "thanks", "thank", "please", "in",
    "there", "these", "my", "our", "what", "how", "why", "well", "of", "assistant", "user",
    "system", "answer:", "output:", "command:", "step",
}
SHELL_META = re.compile(r"[|;&<>$`=*]|\\\S|^\S*/")
PROMPT_ECHO = re.compile(r"^\s*[`'\"]?(?:[\w.@-]+@[\w.-]+:[^\s]*?[$#]:?|[$#%>])(?:\s|$|[`'\"])")
CODE_SPAN = re.compile(r"`[^`]*`")
TEMPLATE_TOKEN = re.compile(r"<\|[a-z_]+\|>|\[/?INST\]|<s>|</s>")
WORK_VERBS = {"mkdir", "mv", "cp", "rm", "rmdir", "chmod", "chown", "touch", "tar", "gzip",
              "gunzip", "ln", "tee", "truncate", "install", "unzip", "zip", "dd"}


NOT_FOUND = re.compile(r"^(?:sh|dash|-sh): \d+: (.+?): not found$", re.M)
# A word a program could be called: what the shell failed to find under such a name is a
# command that named a missing program (a near-miss of the provider, a tool not installed).
PROGRAM_NAME = re.compile(r"^(?:\.{0,2}/)?[a-z0-9_][a-z0-9_.+/-]*$")
# "NAME: message" with words of an error: the shape of the output a shell shows.
ERROR_SHAPE = re.compile(r"^\S*:\S*(?:\s|$).*?\b(?:not found|found|no such|error|missing|undefined|"
                         r"cannot|can't|unable|fail\w*|denied|invalid|not enough|avoid)\b", re.I)
# A copied line shorter than this is as likely a real command that also appears in output.
ECHO_MIN = 6


def shell_not_found(text: str, exit_status: int | None, output: str | None) -> bool:
    """The shell could not run the turn's first word: status 127, or its own "WORD: not
    found" line naming that word (a pipeline's status is its last command's)."""
    line = text.strip().split("\n")[0]
    words = line.split()
    if not words:
        return False
    if exit_status == 127:
        return True
    if output:
        missing = {m.group(1) for m in NOT_FOUND.finditer(output)}
        return words[0] in missing
    return False


def echoes_output(text: str, previous_output: str | None) -> bool:
    """The turn reproduces a line the previous output showed (the model imitating the screen)."""
    line = text.strip()
    if not previous_output or len(line) < ECHO_MIN:
        return False
    shown = {ln.strip() for ln in previous_output.splitlines() if ln.strip()}
    return line in shown or line.split("\n")[0].strip() in shown


def classify_turn(text: str, *, exit_status: int | None = None, output: str | None = None,
                  previous_output: str | None = None) -> str:
    """`command`, `prose` or `over_imitation` for one assistant turn.

    The text alone decides where nothing else is known. Where the shell's answer is known
    it has the last word: a turn whose first word the shell could not run is not a
    command unless that word could be a program's name (then it named a missing program,
    which is operating, badly); it is over-imitation when it reproduces the previous
    output or has the shape of an error line ("NAME: ... not found"), prose otherwise.
    bench/bench_classifier.py measures each rule on hand-labelled turns."""
    kind = _classify_text(text)
    if kind == "over_imitation" or not shell_not_found(text, exit_status, output):
        return kind
    first = text.strip().split()[0]
    if echoes_output(text, previous_output) or ERROR_SHAPE.match(text.strip()):
        return "over_imitation"
    if kind == "command" and PROGRAM_NAME.match(first):
        return "command"
    return "prose"


def classify_turns(commands: list[str], exit_statuses: list | None = None,
                   outputs: list | None = None, *, banner: str = "") -> list[str]:
    """classify_turn over a session's turns, each judged with its own status and output and
    the output before it (the login banner before the first)."""
    out = []
    for i, c in enumerate(commands):
        status = exit_statuses[i] if exit_statuses and i < len(exit_statuses) else None
        output = outputs[i] if outputs and i < len(outputs) else None
        previous = (outputs[i - 1] if i and outputs and i - 1 < len(outputs) else banner) or None
        out.append(classify_turn(c, exit_status=status, output=output, previous_output=previous))
    return out


def _classify_text(text: str) -> str:
    if "\n" in text.strip() or PROMPT_ECHO.match(text) or TEMPLATE_TOKEN.search(text):
        return "over_imitation"
    line = text.strip()
    if not line or line.startswith("```") or line.startswith("**") or line.startswith("#!"):
        return "prose"
    words = line.split()
    first = words[0]
    # `inline code` inside a sentence is still a sentence: judge the words around it
    plain = CODE_SPAN.sub("x", line) if line.count("`") >= 2 and first[0] != "`" else line
    if re.sub(r"[^\w']", "", first.lower()) in PROSE_OPENERS and (first[0].isupper() or len(words) >= 3) \
            and not SHELL_META.search(" ".join(words[:2])):
        return "prose"
    if first[0].isupper() and not re.match(r"^[A-Z_][A-Z0-9_]*=", first) and len(words) >= 2 \
            and not SHELL_META.search(plain):
        return "prose"  # "Sort the names into out/sorted.txt." is a sentence, not a program
    if re.search(r"[.!?:]$", line) and len(words) >= 5 and not SHELL_META.search(plain) \
            and sum(w.isalpha() for w in words) >= 0.8 * len(words):
        return "prose"
    return "command"


def _tokens(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return command.split()


def runs_retrieve(command: str, retrieve: str) -> bool:
    want = _tokens(retrieve)
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command):
        got = _tokens(part)
        if got[:len(want)] == want:
            return True
    return False


def does_work(command: str) -> bool:
    """Does this command change the state a checker looks at (rather than look around)?"""
    if re.search(r"(?<![<>2&])>{1,2}(?!&)", command) or "sed -i" in command or " -o " in f" {command} ":
        return True
    for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command):
        toks = _tokens(part)
        if toks and toks[0] in WORK_VERBS:
            return True
        # The verb may come as an argument: find -delete / -exec rm, xargs mv, sudo cp.
        if toks and toks[0] == "find" and ("-delete" in toks or any(
                t in ("-exec", "-execdir") and i + 1 < len(toks) and toks[i + 1] in WORK_VERBS
                for i, t in enumerate(toks))):
            return True
        if toks and toks[0] in ("xargs", "sudo", "env", "nice") and \
                any(t in WORK_VERBS for t in toks[1:3]):
            return True
    return False


READERS = ("cat", "less", "more", "head", "tail", "sed", "awk", "grep")


def runs_step(command: str, step: str) -> bool:
    """Does `command` run this retrieve step? A step that reads a file the provider pointed at
    (`cat /srv/q/T-1.txt`) is run by any reader of that path, spelled with ~ or not."""
    if runs_retrieve(command, step):
        return True
    want = _tokens(step)
    if len(want) == 2 and want[0] in READERS and want[1].startswith("/"):
        home = "/home/sek"
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", command):
            toks = _tokens(part)
            if toks and toks[0] in READERS and any(
                    (home + t[1:] if t.startswith("~/") else t) == want[1] for t in toks[1:]):
                return True
    return False


def _has_reason(reason: str | None) -> bool:
    return bool(reason and reason.strip() and reason.strip() != "no reason given")


@dataclass
class GateVerdict:
    verdict: str            # "kept", "void", or "rejected"
    reasons: list[str]      # ["kept"], ["void"], or every rejection reason that applies
    classes: list[str]

    @property
    def kept(self) -> bool:
        return self.verdict == "kept"


def gate(*, commands: list[str], end_reason: str, verified: bool | None,
         retrieve: str | list[str] | None, void: bool = False,
         expected_terminal: str = "exit", panic_reason: str | None = None, exit_statuses: list | None = None,
         outputs: list | None = None, banner: str = "", untrained=()) -> GateVerdict:
    """`untrained`: indices of turns the data shows but never trains (a student's stray that
    the reference then corrected, pipeline/operators/takeover.py): their class is recorded
    and not held against the trajectory."""
    # The shell's answer to each turn (status, output) is part of the judgement where known.
    classes = classify_turns(commands, exit_statuses, outputs, banner=banner)
    if void or end_reason in VOID_ENDS:
        return GateVerdict("void", ["void"], classes)
    # The reason after `panic` is free text by design ("panic the upload never arrived."):
    # the terminal line itself is a command however much it reads like a sentence.
    if end_reason == "panic" and commands and classes and "\n" not in commands[-1].strip() \
            and commands[-1].split()[:1] == ["panic"] and classes[-1] == "prose":
        classes = [*classes[:-1], "command"]
    reasons: list[str] = []
    skip = set(untrained)
    judged = [c for i, c in enumerate(classes) if i not in skip]
    if not any(c == "command" for c in judged):
        reasons.append("no_operation")
    if "prose" in judged:
        reasons.append("prose_drift")
    if "over_imitation" in judged:
        reasons.append("over_imitation")
    steps = [retrieve] if isinstance(retrieve, str) else [c for c in retrieve or [] if c]
    if steps:
        # A chain counts as discovered once its last step ran: the directives come from it.
        last = steps[-1]
        first_retrieve = next((i for i, c in enumerate(commands) if runs_step(c, last)), None)
        first_work = next((i for i, c in enumerate(commands)
                           if classes[i] == "command" and does_work(c)), None)
        if first_retrieve is None or (first_work is not None and first_work < first_retrieve):
            reasons.append("undiscovered")
    blocked = expected_terminal == "panic"
    if end_reason == "exit" and verified is False and not blocked:
        reasons.append("premature_exit")
    if end_reason in ("max_turns", "max_seconds"):
        reasons.append("budget_overrun")
    # Blocked work ends with `panic REASON`; finished work with `exit`. Either the other way
    # round, a bare `panic`, or a dead shell is the wrong terminal.
    if end_reason in ("shell_died", "operator_error") or (end_reason == "exit" and blocked) \
            or (end_reason == "panic" and (not blocked or not _has_reason(panic_reason))):
        reasons.append("wrong_terminal")
    if verified is not True:
        reasons.append("unverified")
    if not reasons:
        return GateVerdict("kept", ["kept"], classes)
    order = {r: i for i, r in enumerate(REASONS)}
    return GateVerdict("rejected", sorted(set(reasons), key=order.get), classes)
