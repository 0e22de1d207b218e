"""dir_organize: move files into the directories their names call for."""

from __future__ import annotations

import random

from .common import HOME, NAMES, WORDS, Paths, Task, phrase, pick_root, q, write


def _file_at(path: str, marker: str) -> str:
    # The marker proves the file was moved, not recreated empty.
    return f"grep -qx {q(marker)} {q(path)} 2>/dev/null || fail {q(path + ' missing')}"


def _gone(path: str) -> str:
    return f"[ ! -e {q(path)} ] || fail {q(path + ' still there')}"


def _by_extension(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["downloads", "drop", "incoming", "unsorted", "desktop", "dump"])
    exts = rng.sample(["pdf", "jpg", "png", "txt", "csv", "mp3", "zip", "doc", "odt"], rng.randint(2, 4))
    setup, checker, names = [f"mkdir -p {q(root)}"], [], rng.sample(WORDS, rng.randint(5, 12))
    used = set()
    for i, n in enumerate(names):
        ext = exts[i % len(exts)] if i < len(exts) else rng.choice(exts)
        used.add(ext)
        marker = f"{n}.{ext} {rng.getrandbits(32):08x}"
        setup += write(f"{root}/{n}.{ext}", [marker])
        checker += [_file_at(f"{root}/{ext}/{n}.{ext}", marker), _gone(f"{root}/{n}.{ext}")]
    checker.append(f"[ -z \"$(find {q(root)} -maxdepth 1 -type f)\" ] || fail 'loose files left'")
    r = paths.show(root)
    directives = phrase(
        rng,
        f"Move every file in {r} into a subdirectory of {r} named after its extension (for example {r}/{exts[0]}/{names[0]}.{exts[0]}). "
        f"Leave no loose files at the top of {r}.",
        f"Sort the files in {r} by type: each file goes into {r}/EXT/ where EXT is its extension without the dot.",
    )
    order = " ".join(sorted(used))
    work = [f"cd {r}", f"for e in {order}; do mkdir -p $e; mv *.$e $e/; done", "cd"]
    alts = [[f"cd {r}", 'for f in *.*; do mkdir -p "${f##*.}"; mv "$f" "${f##*.}/"; done', "cd"],
            [f"mkdir -p {' '.join(f'{r}/{e}' for e in sorted(used))}",
             *(f"mv {r}/*.{e} {r}/{e}/" for e in sorted(used))]]
    return Task(directives, setup, checker, work, [root], alts, [f"ls -R {r}"])


def _by_year(rng: random.Random, paths: Paths) -> Task:
    root = pick_root(rng, ["statements", "invoices", "scans", "minutes", "receipts"])
    years = sorted(rng.sample(range(2015, 2025), rng.randint(2, 4)))
    kind = rng.choice(["report", "invoice", "minutes", "scan", "memo"])
    setup, checker = [f"mkdir -p {q(root)}"], []
    dates, wanted = set(), rng.randint(5, 12)
    while len(dates) < wanted:
        dates.add(f"{rng.choice(years)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}")
    for d in sorted(dates):
        name = f"{d}-{kind}.txt"
        marker = f"{kind} {d} {rng.getrandbits(32):08x}"
        setup += write(f"{root}/{name}", [marker])
        checker += [_file_at(f"{root}/{d[:4]}/{name}", marker), _gone(f"{root}/{name}")]
    r = paths.show(root)
    used = sorted({d[:4] for d in dates})
    directives = phrase(
        rng,
        f"The files in {r} are named YYYY-MM-DD-{kind}.txt. Move each one into a directory {r}/YYYY for its year.",
        f"File everything in {r} by year: "
        f"a file whose name starts with 2019- belongs in {r}/2019/, and so on for every year present.",
    )
    work = [f"cd {r}", f"for y in {' '.join(map(str, used))}; do mkdir -p $y; mv $y-* $y/; done", "cd"]
    alts = [[f"cd {r}", f'for f in *-{kind}.txt; do y=$(echo "$f" | cut -c1-4); mkdir -p $y; mv "$f" $y/; done', "cd"],
            [f"mkdir -p {' '.join(f'{r}/{y}' for y in used)}", *(f"mv {r}/{y}-* {r}/{y}/" for y in used)]]
    return Task(directives, setup, checker, work, [root], alts, [f"ls -R {r}"])


def _by_prefix(rng: random.Random, paths: Paths) -> Task:
    root = f"{HOME}/{rng.choice(['inbox', 'mail', 'incoming', 'desk'])}"
    prefix = rng.choice(["invoice_", "draft_", "offer_", "contract_", "scan_"])
    dest = f"{HOME}/{rng.choice(['archive', 'filed', 'kept', 'records'])}/{prefix.rstrip('_')}s"
    setup, checker = [f"mkdir -p {q(root)}"], []
    for i, n in enumerate(rng.sample(NAMES, rng.randint(5, 11))):
        name = f"{prefix}{n.lower()}.txt" if i % 2 == 0 else f"{n.lower()}_{rng.choice(WORDS)}.txt"
        marker = f"{name} {rng.getrandbits(32):08x}"
        setup += write(f"{root}/{name}", [marker])
        if name.startswith(prefix):
            checker += [_file_at(f"{dest}/{name}", marker), _gone(f"{root}/{name}")]
        else:
            checker.append(_file_at(f"{root}/{name}", marker))
    r, d = paths.show(root), paths.show(dest)
    directives = phrase(
        rng,
        f"Move all files in {r} whose names start with {prefix} into {d} (create it if needed). "
        "Leave the other files where they are.",
        f"Create {d} and move every {prefix}* file from {r} into it; nothing else in {r} should move.",
    )
    alts = [[f"mkdir -p {d}", f"find {r} -maxdepth 1 -type f -name '{prefix}*' -exec mv {{}} {d}/ \\;"],
            [f"mkdir -p {d}", f"for f in {r}/{prefix}*; do mv \"$f\" {d}/; done"]]
    return Task(directives, setup, checker, [f"mkdir -p {d}", f"mv {r}/{prefix}* {d}/"], [root], alts,
                [rng.choice([f"ls {d}", f"ls {d} {r}"])])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_by_extension, _by_year, _by_prefix])(rng, paths)
