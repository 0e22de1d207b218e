"""Directive-providers and announcements: everything that varies around a task but the task.

A provider is a small POSIX sh program that documents itself under `--help` and
prints the directives when called the way its help says. Names, flag styles,
help layouts, output layouts, error wording and announcements all vary, so a
model can only succeed by reading rather than by remembering one spelling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .archetypes.common import EOF_MARK, HOME

PROVIDER_NAMES = [
    "orders", "taskd", "dispatch", "worklist", "duty", "assign", "tasker", "briefing", "ticketq", "chores",
    "agenda", "runbook", "workq", "queuectl", "opsdesk", "handoff", "roster", "docket", "errand", "backlog",
    "triage", "mission", "punchlist", "sked", "jobsheet", "directive", "taskctl", "todoq", "workorder", "standup",
]

# Each is the argument string after the name; the help documents it verbatim.
RETRIEVE_ARGS = [
    "--list", "-l", "--pending", "--print", "show --all", "pending", "get --mine", "list --open", "fetch",
    "next", "-p", "--show", "tasks", "view --full", "queue --dump", "read all", "--today", "inbox", "--open",
    "assigned", "list -a", "current", "--mine", "show current",
]

RETRIEVE_DESCRIPTIONS = [
    "print the assignments waiting for you", "show your open work orders", "list the tasks assigned to this account",
    "display pending directives", "print what you are asked to do", "show the current assignment in full",
    "dump the queue entries addressed to you", "read the items handed to you",
]

SUMMARIES = [
    "hand out work assignments to this account", "client for the host's task queue", "show what needs doing here",
    "read the duty roster for this machine", "fetch work orders from the dispatcher", "the local assignment desk",
    "deliver directives to operators", "keep track of jobs assigned to you",
]


@dataclass(frozen=True)
class Decoy:
    """A harmless extra option the help also documents."""

    args: str
    description: str
    body: str


def _decoys(name: str, rng: random.Random) -> list[Decoy]:
    version = f"{rng.randint(0, 3)}.{rng.randint(0, 19)}.{rng.randint(0, 9)}"
    return [
        Decoy("--version", "print the version and exit", f"echo '{name} {version}'"),
        Decoy("--count", "print how many items are open", "echo 1"),
        Decoy("status", "show whether the queue is reachable", f"echo '{name}: queue online, 1 open item'"),
        Decoy("--whoami", "print the account the queue serves", "id -un"),
        Decoy("ping", "check the connection to the dispatcher", "echo pong"),
        Decoy("--config", "show where settings are read from", f"echo '/etc/{name}.conf (absent, using defaults)'"),
        Decoy("--history", "list the items you closed before", "echo 'no closed items'"),
        Decoy("stats", "print queue statistics", "printf 'open: 1\\nclosed: 0\\n'"),
    ]


# (arguments, description) rows of a help listing.
Entries = list[tuple[str, str]]


def _table(entries: Entries, indent: str = "  ") -> list[str]:
    width = max(len(a) for a, _ in entries) + 3
    return [f"{indent}{a.ljust(width)}{d}" for a, d in entries]


def _help_gnu(name: str, summary: str, entries: Entries, retrieve: str, rng: random.Random) -> list[str]:
    section = rng.choice(["Options:", "Commands and options:", "Actions:"])
    return [f"Usage: {name} [OPTION]...", f"{summary[0].upper()}{summary[1:]}.", "", section,
            *_table([*entries, ("-h, --help", "display this help and exit")])]


def _help_man(name: str, summary: str, entries: Entries, retrieve: str, rng: random.Random) -> list[str]:
    lines = ["NAME", f"    {name} - {summary}", "", "SYNOPSIS", f"    {name} {retrieve}", f"    {name} --help", "",
             rng.choice(["OPTIONS", "COMMANDS", "USAGE"])]
    for a, d in [*entries, ("--help", "show this text")]:
        lines += [f"    {a}", f"        {d}"]
    return lines


def _help_argparse(name: str, summary: str, entries: Entries, retrieve: str, rng: random.Random) -> list[str]:
    usage = " ".join(f"[{a}]" for a, _ in entries)
    return [f"usage: {name} [-h] {usage}", "", summary, "", "options:",
            *_table([("-h, --help", "show this help message and exit"), *entries])]


def _help_modern(name: str, summary: str, entries: Entries, retrieve: str, rng: random.Random) -> list[str]:
    lines = [f"{name} - {summary}", "", "Usage:", f"  {name} <command> [flags]", "",
             rng.choice(["Available commands:", "Flags and commands:", "What it does:"]),
             *_table([*entries, ("--help", "this help")])]
    if rng.random() < 0.5:
        lines += ["", "Examples:", f"  {name} {retrieve}"]
    return lines




def _directive_block(rng: random.Random, name: str, directives: str) -> list[str]:
    """How the retrieve output frames the directives; they always stay on one line."""
    item = rng.randint(100, 9999)
    layout = rng.randrange(5)
    if layout == 0:
        return [f"Assignment #{item} ({rng.choice(['open', 'new', 'pending'])})", directives]
    if layout == 1:
        return [f"== {name}: 1 open item ==", f"[{item}] {directives}"]
    if layout == 2:
        return [f"TASK {item}", "  assigned: sek", f"  priority: {rng.choice(['low', 'normal', 'high'])}",
                f"  text: {directives}"]
    if layout == 3:
        return [directives]
    return [f"From: {rng.choice(['ops-lead', 'dispatcher', 'admin', 'scheduler'])}",
            f"Subject: {rng.choice(['your task', 'work order', 'today', 'assignment'])}", "", directives]


def _errors(rng: random.Random, name: str, usage_hint: str) -> tuple[str, str]:
    """Shell for an unknown argument and for no argument at all."""
    unknown = rng.choice([
        f"printf '%s\\n' \"{name}: unrecognized option '$1'\" \"Try '{name} --help' for more information.\" >&2",
        f"printf '%s\\n' 'usage: {name} [-h] ...' \"{name}: error: unrecognized arguments: $*\" >&2",
        f"printf '%s\\n' \"{name}: unknown command \\\"$1\\\"\" \"Run '{name} --help' for usage.\" >&2",
    ]) + "\n\t\texit 2"
    bare = rng.choice([
        f"echo '{name}: missing argument; see {name} --help' >&2\n\t\texit 2",
        f"echo '{name}: 1 item waiting. {usage_hint}'",
        "help",
    ])
    return unknown, bare


# How the directives are reached: one command, or a chain each step of which is documented
# by what the earlier ones printed. Named so whole styles can be held out (--holdout-providers).
DISCOVERY_STYLES = ("direct", "listing", "subcommand", "pointer")
HELP_STYLES = {"gnu": _help_gnu, "man": _help_man, "argparse": _help_argparse, "modern": _help_modern}
PROVIDER_STYLES = (*DISCOVERY_STYLES, *HELP_STYLES)

LIST_ARGS = ["list", "ls", "queue", "--list", "items", "inbox"]
SHOW_ARGS = ["show", "view", "get", "open", "cat", "read"]
SUBCOMMANDS = ["tasks", "work", "queue", "orders", "jobs", "items"]
SUB_FLAGS = ["--pending", "--mine", "--open", "--all", "--next", "--dump", "--full"]
WHERE_ARGS = ["--where", "locate", "--inbox", "where", "path", "--spool"]
# The pointer style keeps the directives in a file of their own, where a real queue would.
POINTER_DIRS = ["/srv/{name}/inbox", "/var/spool/{name}/sek", "/opt/{name}/queue", "/var/lib/{name}/inbox"]


def _item_id(rng: random.Random) -> str:
    return rng.choice(["T-", "WO-", "#", "JOB-", "REQ-", ""]).replace("#", "") + str(rng.randint(1000, 9899))


def make_provider(rng: random.Random, directives: str, *, notes: list[str] | None = None,
                  discovery: str | None = None, help_style: str | None = None) -> tuple[dict, list[str]]:
    """A provider dict {name, script, retrieve, style} that serves `directives` (and `notes`,
    status lines printed beside them), and root setup lines it needs (the pointer's file).
    `discovery` and `help_style` pick from DISCOVERY_STYLES and HELP_STYLES (drawn if None)."""
    notes = list(notes or [])
    name = rng.choice(PROVIDER_NAMES)
    discovery = discovery or rng.choice(DISCOVERY_STYLES)
    help_style = help_style or rng.choice(list(HELP_STYLES))
    summary = rng.choice(SUMMARIES)
    block = [*_directive_block(rng, name, directives), *notes]
    cases: list[str] = []          # extra `case "$*"` arms, already indented
    extra_funcs: list[str] = []
    setup: list[str] = []
    if discovery == "direct":
        args = rng.choice(RETRIEVE_ARGS)
        steps = [f"{name} {args}"]
        documented = [(args, rng.choice(RETRIEVE_DESCRIPTIONS))]
        cases.append(f"\t'{args}')\n\t\tcat <<'{EOF_MARK}'\n" + "\n".join(block) + f"\n{EOF_MARK}\n\t\t;;")
        synopsis = args
    elif discovery == "listing":
        lst, show = rng.choice(LIST_ARGS), rng.choice(SHOW_ARGS)
        item = _item_id(rng)
        title = rng.choice(["work order", "assignment", "task for sek", "request", "ticket"])
        state = "on hold" if any("hold" in n.lower() for n in notes) else rng.choice(["open", "new", "assigned"])
        listing = [f"{'ID':<10}{'STATUS':<10}TITLE", f"{item:<10}{state:<10}{title}"]
        steps = [f"{name} {lst}", f"{name} {show} {item}"]
        documented = [(lst, "list the items assigned to you, with their ids"),
                      (f"{show} ID", "print one item in full")]
        cases.append(f"\t'{lst}')\n\t\tcat <<'{EOF_MARK}'\n" + "\n".join(listing) + f"\n{EOF_MARK}\n\t\t;;")
        cases.append(f"\t'{show} {item}')\n\t\tcat <<'{EOF_MARK}'\n" + "\n".join(block) + f"\n{EOF_MARK}\n\t\t;;")
        cases.append(f"\t'{show}'|'{show} '*)\n\t\techo \"{name}: no such item: ${{2:-(none given)}}; "
                     f"'{name} {lst}' shows the ids\" >&2\n\t\texit 1\n\t\t;;")
        synopsis = f"{show} ID"
    elif discovery == "subcommand":
        sub, flag = rng.choice(SUBCOMMANDS), rng.choice(SUB_FLAGS)
        steps = [f"{name} {sub} --help", f"{name} {sub} {flag}"]
        documented = [(sub, f"work with your assignments (see '{name} {sub} --help')")]
        sub_help = [f"Usage: {name} {sub} [FLAG]", "", f"Read the {sub} addressed to this account.", "",
                    "Flags:", *_table([(flag, rng.choice(RETRIEVE_DESCRIPTIONS)),
                                       ("--count", "print how many are open"), ("-h, --help", "this help")])]
        extra_funcs += ["subhelp() {", f"\tcat <<'{EOF_MARK}'", *sub_help, EOF_MARK, "}"]
        cases.append(f"\t'{sub} --help'|'{sub} -h')\n\t\tsubhelp\n\t\t;;")
        cases.append(f"\t'{sub} {flag}')\n\t\tcat <<'{EOF_MARK}'\n" + "\n".join(block) + f"\n{EOF_MARK}\n\t\t;;")
        cases.append(f"\t'{sub} --count')\n\t\techo 1\n\t\t;;")
        cases.append(f"\t'{sub}'|'{sub} '*)\n\t\techo \"{name} {sub}: which ones? see '{name} {sub} --help'\" >&2"
                     "\n\t\texit 2\n\t\t;;")
        synopsis = f"{sub} --help"
    elif discovery == "pointer":
        where = rng.choice(WHERE_ARGS)
        item = _item_id(rng)
        path = f"{rng.choice(POINTER_DIRS).format(name=name)}/{item}.txt"
        steps = [f"{name} {where}", f"cat {path}"]
        documented = [(where, rng.choice(["print which file holds your directives",
                                          "say where your assignment is kept",
                                          "show the path of your current work order"]))]
        said = rng.choice([f"Your directives are in {path}", f"Current assignment for sek: {path}",
                           f"1 item waiting; it is kept in {path}"])
        cases.append(f"\t'{where}')\n\t\techo '{said}'\n\t\t;;")
        dirpath = path.rsplit("/", 1)[0]
        setup += [f"mkdir -p {dirpath}", f"cat > {path} <<'{EOF_MARK}'", *block, EOF_MARK,
                  f"chmod 644 {path}"]
        synopsis = where
    else:
        raise ValueError(f"unknown discovery style {discovery!r}; known: {', '.join(DISCOVERY_STYLES)}")
    first = steps[0].split()[1]
    decoys = [d for d in _decoys(name, rng) if d.args.split()[0] not in
              {a.split()[0] for a, _ in documented} | {first}]
    decoys = rng.sample(decoys, rng.randint(1, 3))
    entries = [(d.args, d.description) for d in decoys]
    for doc in documented:
        entries.insert(rng.randint(0, len(entries)), doc)
    help_lines = HELP_STYLES[help_style](name, summary, entries, synopsis, rng)
    unknown, bare = _errors(rng, name, f"Try {name} --help.")
    script = [
        "#!/bin/sh",
        f"# {name} - {summary}",
        "help() {", f"\tcat <<'{EOF_MARK}'", *help_lines, EOF_MARK, "}",
        *extra_funcs,
        'case "$1" in -h|--help) help; exit 0 ;; esac',
        'case "$*" in',
        *cases,
        *(f"\t'{d.args}')\n\t\t{d.body}\n\t\t;;" for d in decoys),
        f"\t'')\n\t\t{bare}\n\t\t;;",
        f"\t*)\n\t\t{unknown}\n\t\t;;",
        "esac",
        "",
    ]
    retrieve: str | list[str] = steps[0] if len(steps) == 1 else steps
    return ({"name": name, "script": "\n".join(script), "retrieve": retrieve,
             "style": f"{discovery}+{help_style}"}, setup)


ANNOUNCE_LINES = [
    "Assignments are handed out by {name}(1).",
    "Your work for this session is queued in {name}. Run '{name} --help' to see how to read it.",
    "Tasks for this account come from the {name} command.",
    "Directives: see {name} --help.",
    "This machine's job queue is managed by {name}(1); start with its --help.",
    "Pending work is available through {name}.",
    "Welcome. Today's tasks are served by {name}.",
    "Work orders are no longer emailed; read them with {name}.",
    "Something needs doing on this host. Ask {name} what.",
]

ENV_VARS = ["TASK_PROVIDER", "TASKS", "WORK_SOURCE", "ASSIGNMENTS", "DIRECTIVES", "JOB_SOURCE", "ORDERS_FROM",
            "SEK_TASKS", "DUTY_TOOL", "WORK_QUEUE", "INSTRUCTIONS", "TODO_FROM"]

ENV_VALUES = ["{name}", "{name} --help", "tasks are served by {name}(1)", "run {name} --help for your assignments",
              "/usr/local/bin/{name}", "ask {name}"]

FILE_PATHS = [f"{HOME}/README.assignments", f"{HOME}/NOTICE", f"{HOME}/START_HERE.txt", f"{HOME}/WELCOME",
              f"{HOME}/README", "/srv/NOTICE", "/srv/README.first", "/opt/README"]

KINDS = ["motd", "banner", "env", "file"]


def make_announcement(rng: random.Random, name: str, kinds: list[str] | None = None) -> tuple[dict, list[str]]:
    """An announcement dict and the commands that read it when it is not already on screen;
    its kind is drawn from `kinds` (all by default)."""
    kind = rng.choice(list(kinds or KINDS))
    line = rng.choice(ANNOUNCE_LINES).format(name=name)
    if kind == "motd":
        return {"kind": "motd", "text": line}, []
    if kind == "banner":
        text = rng.choice(["{}", "*** {} ***", ">> {}", "[notice] {}"]).format(line)
        return {"kind": "banner", "text": text}, []
    if kind == "env":
        var = rng.choice(ENV_VARS)
        text = rng.choice(ENV_VALUES).format(name=name)
        return {"kind": "env", "var": var, "text": text}, [f'echo "${var}"']
    # Sometimes where a service would keep its notice (/etc/NAME/...): a system place.
    path = rng.choice([*FILE_PATHS, f"/etc/{name}/NOTICE", f"/etc/{name}/README"])
    title = rng.choice(["WELCOME", "Read me first", "Notice to operators", "About this account"])
    text = f"{title}\n{'=' * len(title)}\n\n{line}\n"
    if rng.random() < 0.5:
        text += f"\n-- {rng.choice(['admin', 'ops', 'the night shift', 'IT'])}\n"
    return {"kind": "file", "path": path, "text": text}, [f"cat {path}"]
