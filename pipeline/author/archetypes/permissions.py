"""permissions: set file modes exactly as asked."""

from __future__ import annotations

import random

from .common import HOME, SERVICES, WORDS, Paths, Task, filler, phrase, pick_root, q, write


def _mode_is(path: str, mode: str) -> str:
    return f'[ "$(stat -c %a {q(path)})" = {mode} ] || fail {q(path + " is not mode " + mode)}'


def symbolic(mode: str) -> str:
    """An octal mode as chmod's symbolic form: 640 -> u=rw,g=r,o= (the same bits)."""
    parts = []
    for who, digit in zip("ugo", mode[-3:]):
        d = int(digit)
        parts.append(who + "=" + "".join(c for c, bit in (("r", 4), ("w", 2), ("x", 1)) if d & bit))
    return ",".join(parts)


def relative(old: str, new: str) -> str:
    """chmod's relative form that takes mode `old` to `new`: 644 -> 750 is u+x,g+x,o-r."""
    parts = []
    for who, a, b in zip("ugo", old[-3:], new[-3:]):
        a, b = int(a), int(b)
        plus = "".join(c for c, bit in (("r", 4), ("w", 2), ("x", 1)) if b & bit and not a & bit)
        minus = "".join(c for c, bit in (("r", 4), ("w", 2), ("x", 1)) if a & bit and not b & bit)
        parts += [f"{who}+{plus}"] * bool(plus) + [f"{who}-{minus}"] * bool(minus)
    return ",".join(parts)


def _exact_mode(rng: random.Random, paths: Paths) -> Task:
    kind = rng.choice(["key", "script", "private_dir"])
    root = pick_root(rng, ["secrets", "keys", "bin", "tools", "vault", "private"])
    if kind == "key":
        path = f"{root}/{rng.choice(['api', 'deploy', 'backup', 'signing'])}_{rng.choice(SERVICES)}.key"
        start, mode = "644", rng.choice(["600", "400", "640"])
        setup = write(path, [f"key-{rng.getrandbits(64):016x}"])
        why = {"600": "so that only its owner can read and write it",
               "400": "so that only its owner can read it, and nobody can write it",
               "640": "so that the owner can read and write it, the group can only read it, and others get nothing"}[mode]
    elif kind == "script":
        path = f"{root}/{rng.choice(['backup', 'rotate', 'deploy', 'sync', 'report'])}-{rng.choice(WORDS)}.sh"
        start, mode = "644", rng.choice(["700", "750", "755"])
        setup = write(path, ["#!/bin/sh", f"echo {rng.choice(WORDS)}"])
        why = {"700": "so that only its owner can read, write and run it",
               "750": "so that the owner has full access and the group can read and run it",
               "755": "so that everyone can run it but only the owner can change it"}[mode]
    else:
        path = f"{root}/{rng.choice(['journal', 'notes', 'drafts', 'ledger'])}"
        start, mode = "755", rng.choice(["700", "750"])
        setup = [f"mkdir -p {q(path)}", *write(f"{path}/readme.txt", filler(rng, 2))]
        why = {"700": "so that nobody but its owner can enter or list it",
               "750": "so that the group can enter and list it but others cannot"}[mode]
    setup.append(f"chmod {start} {q(path)}")
    directives = phrase(rng, f"Set the permissions of {paths.show(path)} to {mode} {why}.",
                        f"Change the mode of {paths.show(path)} to {mode}, {why}.")
    p = paths.show(path)
    look = f"ls -ld {p}" if kind == "private_dir" else f"ls -l {p}"
    alts = [[f"chmod {symbolic(mode)} {p}"], [f"chmod {relative(start, mode)} {p}"]]
    return Task(directives, setup, [_mode_is(path, mode)], [f"chmod {mode} {p}"], [root], alts,
                [rng.choice([look, f"stat -c '%a %n' {p}"])])


def _exec_scripts(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["scripts", "bin", "jobs", "hooks", "cron.d"])
    # Which scripts (the extension) varies, and only the directives say it.
    ext, lang, shebang = rng.choice([("sh", "shell scripts", "#!/bin/sh"), ("py", "Python scripts", "#!/usr/bin/env python3"),
                                     ("pl", "Perl scripts", "#!/usr/bin/perl"), ("rb", "Ruby scripts", "#!/usr/bin/env ruby")])
    names = rng.sample(WORDS, rng.randint(4, 9))
    scripts = names[: rng.randint(2, len(names) - 2)]
    others = [f"{n}.{rng.choice(['txt', 'conf', 'md', *(e for e in ('sh', 'py') if e != ext)])}" for n in names[len(scripts):]]
    setup, checker = [f"mkdir -p {q(root)}"], []
    for n in scripts:
        p = f"{root}/{n}.{ext}"
        setup += [*write(p, [shebang, f"print('{n}')" if ext != "sh" else f"echo {n}"]), f"chmod 644 {q(p)}"]
        checker.append(f"[ -x {q(p)} ] || fail {q(p + ' is not executable')}")
    for o in others:
        p = f"{root}/{o}"
        setup += [*write(p, filler(rng, 2)), f"chmod 644 {q(p)}"]
        checker.append(_mode_is(p, "644"))
    directives = phrase(
        rng,
        f"Make every .{ext} file in {paths.show(root)} executable by its owner; leave the other files there unchanged.",
        f"The {lang} (*.{ext}) in {paths.show(root)} cannot be run yet. "
        "Add the owner execute bit to each of them, and only to them.",
    )
    r = paths.show(root)
    alts = [[f"find {r} -name '*.{ext}' -exec chmod u+x {{}} +"],
            [f"for f in {r}/*.{ext}; do chmod u+x \"$f\"; done"]]
    return Task(directives, setup, checker, [f"chmod u+x {r}/*.{ext}"], [root], alts, [f"ls -l {r}"])


def _lock_down_tree(rng: random.Random, paths: Paths) -> Task:
    root = f"{HOME}/{rng.choice(['private', 'personal', 'finance', 'medical', 'hr-files', 'contracts', 'payroll', 'legal', 'tax-papers', 'letters'])}"
    subs = ["", *rng.sample(["2022", "2023", "tax", "letters", "scans", "old", "signed"], 2)]
    # Whose permissions go varies: group and others, or others only (the group keeps its own).
    who = rng.choice(["go", "o"])
    dmode, fmode = ("700", "600") if who == "go" else ("750", "640")
    setup, checker = [], []
    for sub in subs:
        d = f"{root}/{sub}".rstrip("/")
        setup += [f"mkdir -p {q(d)}", f"chmod 755 {q(d)}"]
        checker.append(_mode_is(d, dmode))
        for _ in range(rng.randint(1, 3)):
            f = f"{d}/{rng.choice(WORDS)}-{rng.randint(10, 99)}.txt"
            setup += [*write(f, filler(rng, 2)), f"chmod 644 {q(f)}"]
            checker.append(_mode_is(f, fmode))
    r = paths.show(root)
    if who == "go":
        directives = phrase(
            rng,
            f"Take away all group and other permissions from {r} and everything inside it, "
            "keeping the owner's permissions as they are.",
            f"Nobody but you should be able to read anything under {r}: remove every group and other permission bit from that directory and all files and directories in it.",
        )
        alts = [[f"find {r} -exec chmod go-rwx {{}} +"], [f"chmod -R g=,o= {r}"]]
    else:
        directives = phrase(
            rng,
            f"Take away every permission of others (not the owner, not the group) from {r} and everything inside it; "
            "leave the owner's and the group's permissions as they are.",
            f"Users outside the group must not get into {r}: remove the other permission bits from that directory "
            "and all files and directories in it, and change nothing else.",
        )
        alts = [[f"find {r} -exec chmod o-rwx {{}} +"], [f"chmod -R o= {r}"]]
    return Task(directives, setup, checker, [f"chmod -R {who}-rwx {r}"], [root], alts, [f"ls -lR {r}"])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_exact_mode, _exec_scripts, _lock_down_tree])(rng, paths)
