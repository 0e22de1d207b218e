"""cleanup: delete exactly the junk asked for and keep everything else."""

from __future__ import annotations

import random

from .common import WORDS, Paths, Task, phrase, pick_root, q


def _kept(path: str) -> str:
    return f"[ -e {q(path)} ] || fail {q(path + ' was removed')}"


def _removed(path: str) -> str:
    return f"[ ! -e {q(path)} ] || fail {q(path + ' still there')}"


def _tree(rng: random.Random, root: str) -> list[str]:
    subs = ["", *rng.sample(["src", "lib", "docs", "build", "cache", "tests", "assets"], rng.randint(2, 4))]
    return [f"{root}/{s}".rstrip("/") for s in subs]


def _junk_pattern(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["project", "workspace", "site", "repo", "thesis", "app"])
    junk_ext = rng.choice(["tmp", "bak", "swp", "orig", "old"])
    keep_ext = rng.sample(["c", "h", "txt", "md", "py", "html", "css", "json"], 3)
    setup, checker, junk = [], [], 0
    for d in _tree(rng, root):
        setup.append(f"mkdir -p {q(d)}")
        for n in rng.sample(WORDS, rng.randint(2, 5)):
            is_junk = rng.random() < 0.4
            name = f"{n}.{rng.choice(keep_ext)}"
            if is_junk:
                # Junk like notes.md.bak looks like a kept file, so a sloppy pattern costs.
                name = f"{name}.{junk_ext}" if rng.random() < 0.5 else f"{n}.{junk_ext}"
            path = f"{d}/{name}"
            setup.append(f"printf '%s\\n' {q(n)} > {q(path)}")
            checker.append(_removed(path) if is_junk else _kept(path))
            junk += is_junk
    if not junk:
        path = f"{root}/{rng.choice(WORDS)}.{junk_ext}"
        setup.append(f"printf 'x\\n' > {q(path)}")
        checker.append(_removed(path))
    r = paths.show(root)
    directives = phrase(
        rng,
        f"Delete every file ending in .{junk_ext} under {r}, including in its subdirectories. Keep all other files.",
        f"Clean up {r}: remove all *.{junk_ext} files anywhere in the tree and nothing else.",
    )
    alts = [[f"find {r} -type f -name '*.{junk_ext}' -exec rm {{}} +"],
            [f"find {r} -type f -name '*.{junk_ext}' | xargs rm -f"]]
    return Task(directives, setup, checker, [f"find {r} -type f -name '*.{junk_ext}' -delete"], [root], alts,
                [rng.choice([f"find {r} -type f", f"ls -R {r}"])])


def _empty_dirs(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["scratch", "staging", "exports", "media", "uploads", "sandbox", "builds", "mirror",
                           "transfers", "old-site", "imports", "tmp-work"])
    setup, checker = [f"mkdir -p {q(root)}", f"printf 'keep\\n' > {q(root + '/INDEX')}"], []
    for top in rng.sample(WORDS, rng.randint(3, 6)):
        d = f"{root}/{top}"
        setup.append(f"mkdir -p {q(d)}")
        shape = rng.randrange(3)
        if shape == 0:
            checker.append(_removed(d))
        elif shape == 1:
            # Nested empties: removing the child empties the parent too.
            setup.append(f"mkdir -p {q(d + '/' + rng.choice(WORDS))}")
            checker.append(_removed(d))
        else:
            f = f"{d}/{rng.choice(WORDS)}.dat"
            setup.append(f"printf 'data\\n' > {q(f)}")
            checker += [_kept(f)]
            empty = f"{d}/{rng.choice(['old', 'tmp', 'new'])}"
            setup.append(f"mkdir -p {q(empty)}")
            checker.append(_removed(empty))
    checker.append(_kept(f"{root}/INDEX"))
    if not any("still there" in c for c in checker):
        setup.append(f"mkdir -p {q(root + '/void')}")
        checker.append(_removed(root + "/void"))
    r = paths.show(root)
    directives = phrase(
        rng,
        f"Remove every empty directory under {r}, including directories that only become empty once their empty subdirectories are gone. "
        "Do not delete any files.",
        f"{r} is littered with empty directories. Delete all of them (nested ones too) but keep every file.",
    )
    alts = [[f"find {r} -mindepth 1 -depth -type d -empty -exec rmdir {{}} \\;"],
            [f"find {r} -depth -mindepth 1 -type d -exec rmdir {{}} + 2>/dev/null"]]
    return Task(directives, setup, checker, [f"find {r} -mindepth 1 -type d -empty -delete"], [root], alts,
                [rng.choice([f"find {r}", f"ls -R {r}"])])


def _large_files(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["cache", "downloads", "dumps", "tmpfiles", "spool"])
    limit = rng.choice([100, 200, 500])
    setup, checker, big = [f"mkdir -p {q(root)}"], [], 0
    for n in rng.sample(WORDS, rng.randint(4, 9)):
        is_big = rng.random() < 0.45
        # Sizes keep clear of the limit so rounding in find -size cannot matter.
        kib = rng.randint(limit * 2, limit * 3) if is_big else rng.randint(1, limit // 2)
        path = f"{root}/{n}.{rng.choice(['bin', 'dat', 'img', 'blob'])}"
        setup.append(f"head -c {kib * 1024} /dev/zero > {q(path)}")
        checker.append(_removed(path) if is_big else _kept(path))
        big += is_big
    if not big:
        path = f"{root}/{rng.choice(WORDS)}.iso"
        setup.append(f"head -c {limit * 3 * 1024} /dev/zero > {q(path)}")
        checker.append(_removed(path))
    r = paths.show(root)
    directives = phrase(
        rng,
        f"Free some space: delete every file in {r} that is larger than {limit} KiB, and keep the smaller ones.",
        f"Remove the files in {r} bigger than {limit} kilobytes (1 KiB = 1024 bytes). Smaller files must stay.",
    )
    alts = [[f"find {r} -type f -size +{limit}k -exec rm {{}} +"],
            [f"find {r} -type f -size +{limit * 1024}c -delete"]]
    return Task(directives, setup, checker, [f"find {r} -type f -size +{limit}k -delete"], [root], alts,
                [f"ls -l {r}"])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_junk_pattern, _empty_dirs, _large_files])(rng, paths)
