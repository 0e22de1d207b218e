"""Two shapes of one conversation: sekbench's ccpty view and an alternating one.

The ccpty view keeps the shell's output and the next prompt as separate user turns, which is
what sekbench trains and serves. Many tools and chat templates accept only strictly
alternating roles (LLaMA-Factory's sharegpt loader, gemma/cohere templates: "Conversation
roles must alternate"), so the alternating form joins consecutive turns of one role into one,
the way a terminal shows them: one after the other, on a new line where the first did not end
with one.
"""

from __future__ import annotations

FORMS = ("ccpty", "alternating")


def join_text(a: str, b: str) -> str:
    if not a or a.endswith("\n") or not b:
        return a + b
    return a + "\n" + b


def alternate(messages: list[dict]) -> list[dict]:
    """Consecutive messages of one role merged into one; a system message stays first and
    alone. The result alternates user/assistant whenever the input starts with a user turn."""
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] and m["role"] != "system":
            out[-1] = {**out[-1], "content": join_text(out[-1]["content"], m["content"])}
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def alternates(messages: list[dict]) -> bool:
    """Whether roles alternate user/assistant after an optional leading system message."""
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(body))


def in_form(messages: list[dict], form: str) -> list[dict]:
    if form == "ccpty":
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if form == "alternating":
        return alternate(messages)
    raise ValueError(f"unknown message form {form!r} (one of {', '.join(FORMS)})")
