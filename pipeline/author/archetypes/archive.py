"""archive: pack, unpack, list and compress with tar and gzip."""

from __future__ import annotations

import random

from .common import (HOME, MESSAGES, OUT_DIRS, WORDS, Paths, Task, expect_set, filler, heredoc_var, parent, phrase,
                     pick_root, q, write)

# Setup builds archives here as root and removes it again.
STAGE = "/var/tmp/sekbench-stage"


def _files(rng: random.Random) -> dict[str, str]:
    """Relative path -> a one-line marker that proves the content survived."""
    subs = ["", *rng.sample(["img", "css", "notes", "data", "sub", "extra"], rng.randint(1, 2))]
    files = {}
    for n in rng.sample(WORDS, rng.randint(3, 7)):
        rel = f"{rng.choice(subs)}/{n}.{rng.choice(['txt', 'md', 'html', 'csv'])}".lstrip("/")
        files[rel] = f"{n} {rng.getrandbits(40):010x}"
    return files


def _write_all(base: str, files: dict[str, str]) -> list[str]:
    out = []
    for rel, marker in files.items():
        out += write(f"{base}/{rel}", [marker, *filler(random.Random(marker), 2)])
    return out


def _has(path: str, marker: str) -> str:
    return f"grep -qx {q(marker)} {q(path)} 2>/dev/null || fail {q(path + ' missing or wrong')}"


def _pack(rng: random.Random, paths: Paths) -> Task:
    base = pick_root(rng, ["project", "thesis", "website", "notes", "photos"])
    name = rng.choice(["docs", "site", "draft", "assets", "chapter1", "config"])
    src = f"{base}/{name}"
    files = _files(rng)
    dest = f"{HOME}/{rng.choice(['backup', 'backups', 'archive', 'outbox'])}/{name}-{rng.randint(1, 99):02d}.tar.gz"
    # Operators may archive as docs/x, ./x or home/sek/project/docs/x; any of those keeps the tree.
    checker = [f"[ -f {q(dest)} ] || fail 'no archive'", "t=$(mktemp -d)",
               f"tar -xzf {q(dest)} -C \"$t\" || fail 'not a gzip tar archive'"]
    for rel, marker in files.items():
        checker.append(f"f=$(find \"$t\" -type f -path {q('*/' + rel)} | head -n 1)")
        checker.append(f"grep -qx {q(marker)} \"$f\" 2>/dev/null || fail {q(rel + ' not in archive')}")
    first = next(iter(files))
    checker.append(_has(f"{src}/{first}", files[first]))
    s, d = paths.show(src), paths.show(dest)
    directives = phrase(
        rng,
        f"Pack the directory {s} into a gzip-compressed tar archive at {d}. Leave the original directory in place.",
        f"Make a .tar.gz backup of {s} and save it as {d}; do not delete anything.",
    )
    mk, b = f"mkdir -p {paths.show(parent(dest))}", paths.show(base)
    work = [mk, f"tar -czf {d} -C {b} {name}"]
    alts = [[mk, f"cd {b}", f"tar -czf {d} {name}", "cd"], [mk, f"tar -cf - -C {b} {name} | gzip > {d}"]]
    return Task(directives, _write_all(src, files), checker, work, [base], alts,
                [rng.choice([f"tar -tzf {d}", f"ls -l {d}"])])


def _staged_archive(rng: random.Random, name: str, files: dict[str, str]) -> tuple[str, list[str]]:
    arc = f"{pick_root(rng, ['incoming', 'downloads', 'transfer', 'inbox'])}/{name}.tar.gz"
    setup = [*_write_all(f"{STAGE}/{name}", files), f"mkdir -p {q(parent(arc))}",
             f"tar -czf {q(arc)} -C {STAGE} {q(name)}", f"rm -rf {STAGE}"]
    return arc, setup


def _unpack(rng: random.Random, paths: Paths) -> Task:
    name = rng.choice(["site", "release", "bundle", "dataset", "handout", "kit"]) + f"-{rng.randint(1, 20)}"
    files = _files(rng)
    arc, setup = _staged_archive(rng, name, files)
    dest = f"{HOME}/{rng.choice(['restore', 'unpacked', 'extracted', 'staging'])}"
    checker = [_has(f"{dest}/{name}/{rel}", marker) for rel, marker in files.items()]
    a, d = paths.show(arc), paths.show(dest)
    directives = phrase(
        rng,
        f"Unpack {a} into {d}, so that its contents end up under {d}/{name}/.",
        f"Extract the archive {a} inside the directory {d} (create it if it does not exist).",
    )
    work = [f"mkdir -p {d}", f"tar -xzf {a} -C {d}"]
    alts = [[f"mkdir -p {d}", f"cd {d}", f"tar -xzf {a}", "cd"], [f"mkdir -p {d}", f"gzip -dc {a} | tar -xf - -C {d}"]]
    return Task(directives, setup, checker, work, [parent(arc)], alts, [f"ls -R {d}"])


def _list(rng: random.Random, paths: Paths) -> Task:
    name = rng.choice(["backup", "snapshot", "export", "upload"]) + f"-{rng.randint(2019, 2024)}"
    files = _files(rng)
    arc, setup = _staged_archive(rng, name, files)
    out = f"{HOME}/{rng.choice(OUT_DIRS)}/{name}-contents.txt"
    a, o = paths.show(arc), paths.show(out)
    directives = phrase(
        rng,
        f"Without unpacking it, write the paths of the regular files (not directories) stored in {a} to {o}, "
        "one per line, as they are recorded in the archive.",
        f"List the files inside {a} into {o}: one archive path per line, leaving out the directory entries.",
    )
    mk = f"mkdir -p {paths.show(parent(out))}"
    work = [mk, f"tar -tzf {a} | grep -v '/$' > {o}"]
    alts = [[mk, f"tar -tvzf {a} | grep '^-' | awk '{{print $6}}' > {o}"],
            [mk, f"gzip -dc {a} | tar -tf - | grep -v '/$' > {o}"]]
    return Task(directives, setup, expect_set(out, [f"{name}/{rel}" for rel in files]), work, [parent(arc)], alts,
                [f"cat {o}"])


def _compress(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["logs", "old-logs", "journal", "audit"])
    log = f"{root}/{rng.choice(['app', 'access', 'sync', 'build'])}-{rng.randint(1, 31):02d}.log"
    lines = [f"{i:04d} {rng.choice(MESSAGES)}" for i in range(rng.randint(20, 60))]
    checker = [f"[ ! -e {q(log)} ] || fail 'uncompressed log still there'",
               f"[ -f {q(log + '.gz')} ] || fail 'no .gz file'",
               *heredoc_var("expected", lines),
               f"[ \"$(gzip -dc {q(log + '.gz')} | sed 's/[[:space:]]*$//')\" = \"$expected\" ] || fail 'content differs'"]
    g = paths.show(log)
    directives = phrase(
        rng,
        f"Compress {g} with gzip, so that {g}.gz exists and the uncompressed file is gone.",
        f"Save space by gzipping {g} in place (the result should be {g}.gz).",
    )
    alts = [[f"gzip -c {g} > {g}.gz", f"rm {g}"], [f"gzip < {g} > {g}.gz && rm {g}"]]
    return Task(directives, write(log, lines), checker, [f"gzip {g}"], [parent(log)], alts,
                [rng.choice([f"ls -l {paths.show(parent(log))}", f"gzip -l {g}.gz"])])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_pack, _unpack, _list, _compress])(rng, paths)
