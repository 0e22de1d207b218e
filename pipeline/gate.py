"""The keep-gate: a rule-based verdict on a rollout, with every reason that applies.

Each assistant turn is classified as a `command`, `prose` (narration, markdown,
sentences, nothing at all) or `over_imitation` (the model typing the prompt, a
chat-template token, or several lines). A rollout is kept only if it operated
(every turn a command), discovered (ran the provider's retrieve before doing
any work), verified, ended with `exit`, and stayed within budget.
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
PROMPT_ECHO = re.compile(r"^\s*(?:[\w.-]+@[\w.-]+:[^\s]*?[$#]:?|[$#%>])(?:\s|$)")
CODE_SPAN = re.compile(r"`[^`]*`")
TEMPLATE_TOKEN = re.compile(r"<\|[a-z_]+\|>|\[/?INST\]|<s>|</s>")
WORK_VERBS = {"mkdir", "mv", "cp", "rm", "rmdir", "chmod", "chown", "touch", "tar", "gzip",
              "gunzip", "ln", "tee", "truncate", "install", "unzip", "zip", "dd"}


def classify_turn(text: str) -> str:
    """`command`, `prose` or `over_imitation` for one assistant turn."""
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
    return False


@dataclass
class GateVerdict:
    verdict: str            # "kept", "void", or "rejected"
    reasons: list[str]      # ["kept"], ["void"], or every rejection reason that applies
    classes: list[str]

    @property
    def kept(self) -> bool:
        return self.verdict == "kept"


def gate(*, commands: list[str], end_reason: str, verified: bool | None,
         retrieve: str | None, void: bool = False) -> GateVerdict:
    classes = [classify_turn(c) for c in commands]
    if void or end_reason in VOID_ENDS:
        return GateVerdict("void", ["void"], classes)
    reasons: list[str] = []
    if not any(c == "command" for c in classes):
        reasons.append("no_operation")
    if "prose" in classes:
        reasons.append("prose_drift")
    if "over_imitation" in classes:
        reasons.append("over_imitation")
    if retrieve:
        first_retrieve = next((i for i, c in enumerate(commands) if runs_retrieve(c, retrieve)), None)
        first_work = next((i for i, c in enumerate(commands)
                           if classes[i] == "command" and does_work(c)), None)
        if first_retrieve is None or (first_work is not None and first_work < first_retrieve):
            reasons.append("undiscovered")
    if end_reason == "exit" and verified is False:
        reasons.append("premature_exit")
    if end_reason in ("max_turns", "max_seconds"):
        reasons.append("budget_overrun")
    if end_reason in ("panic", "shell_died", "operator_error"):
        reasons.append("wrong_terminal")
    if verified is not True:
        reasons.append("unverified")
    if not reasons:
        return GateVerdict("kept", ["kept"], classes)
    order = {r: i for i, r in enumerate(REASONS)}
    return GateVerdict("rejected", sorted(set(reasons), key=order.get), classes)
