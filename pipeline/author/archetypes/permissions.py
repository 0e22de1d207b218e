"""permissions: set file modes exactly as asked."""

from __future__ import annotations

import random

from .common import HOME, SERVICES, WORDS, Paths, Task, filler, phrase, pick_root, q, write


def _mode_is(path: str, mode: str) -> str:
    return f'[ "$(stat -c %a {q(path)})" = {mode} ] || fail {q(path + " is not mode " + mode)}'


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
    return Task(directives, setup, [_mode_is(path, mode)], [f"chmod {mode} {paths.show(path)}"], [root])


def _exec_scripts(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["scripts", "bin", "jobs", "hooks", "cron.d"])
    names = rng.sample(WORDS, rng.randint(4, 9))
    scripts = names[: rng.randint(2, len(names) - 2)]
    others = [f"{n}.{rng.choice(['txt', 'conf', 'md'])}" for n in names[len(scripts):]]
    setup, checker = [f"mkdir -p {q(root)}"], []
    for n in scripts:
        p = f"{root}/{n}.sh"
        setup += [*write(p, ["#!/bin/sh", f"echo {n}"]), f"chmod 644 {q(p)}"]
        checker.append(f"[ -x {q(p)} ] || fail {q(p + ' is not executable')}")
    for o in others:
        p = f"{root}/{o}"
        setup += [*write(p, filler(rng, 2)), f"chmod 644 {q(p)}"]
        checker.append(_mode_is(p, "644"))
    directives = phrase(
        rng,
        f"Make every .sh file in {paths.show(root)} executable by its owner; leave the other files there unchanged.",
        f"The shell scripts (*.sh) in {paths.show(root)} cannot be run yet. "
        "Add the owner execute bit to each of them, and only to them.",
    )
    return Task(directives, setup, checker, [f"chmod u+x {paths.show(root)}/*.sh"], [root])


def _lock_down_tree(rng: random.Random, paths: Paths) -> Task:
    root = f"{HOME}/{rng.choice(['private', 'personal', 'finance', 'medical', 'hr-files'])}"
    subs = ["", *rng.sample(["2022", "2023", "tax", "letters", "scans"], 2)]
    setup, checker = [], []
    for sub in subs:
        d = f"{root}/{sub}".rstrip("/")
        setup += [f"mkdir -p {q(d)}", f"chmod 755 {q(d)}"]
        checker.append(_mode_is(d, "700"))
        for _ in range(rng.randint(1, 3)):
            f = f"{d}/{rng.choice(WORDS)}-{rng.randint(10, 99)}.txt"
            setup += [*write(f, filler(rng, 2)), f"chmod 644 {q(f)}"]
            checker.append(_mode_is(f, "600"))
    directives = phrase(
        rng,
        f"Take away all group and other permissions from {paths.show(root)} and everything inside it, "
        "keeping the owner's permissions as they are.",
        f"Nobody but you should be able to read anything under {paths.show(root)}: remove every group and other permission bit from that directory and all files and directories in it.",
    )
    return Task(directives, setup, checker, [f"chmod -R go-rwx {paths.show(root)}"], [root])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_exact_mode, _exec_scripts, _lock_down_tree])(rng, paths)
