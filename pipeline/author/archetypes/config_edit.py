"""config_edit: change, add or disable settings in a config file, leaving the rest intact."""

from __future__ import annotations

import random
import re

from .common import HOME, SERVICES, WORDS, Paths, Task, heredoc_var, phrase, q, write

KEYS = [
    "port", "host", "log_level", "workers", "timeout", "max_clients", "cache_size", "retries", "listen",
    "data_dir", "backup_hour", "compression", "keepalive", "queue_depth", "user_agent", "theme", "language",
    "batch_size", "poll_interval", "region",
]


def _value(rng: random.Random, key: str) -> str:
    if key in ("host", "listen"):
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if key in ("log_level",):
        return rng.choice(["debug", "info", "warn", "error"])
    if key in ("compression", "keepalive"):
        return rng.choice(["on", "off"])
    if key in ("data_dir",):
        return f"/var/lib/{rng.choice(WORDS)}"
    if key in ("user_agent", "theme", "language", "region"):
        return rng.choice(WORDS)
    return str(rng.randint(1, 9000))


def _config(rng: random.Random) -> tuple[str, str, list[str], dict[str, str]]:
    """A config file: path, separator, its lines, and its key/value settings."""
    svc = rng.choice(SERVICES)
    path = rng.choice([f"{HOME}/.config/{svc}/{svc}.conf", f"{HOME}/{svc}/settings.ini",
                       f"{HOME}/etc/{svc}.conf", f"/srv/{svc}/config.ini", f"/opt/{svc}/etc/{svc}.conf"])
    sep = rng.choice([" = ", "=", ": "])
    keys = rng.sample(KEYS, rng.randint(5, 9))
    settings = {k: _value(rng, k) for k in keys}
    lines = [f"# {svc} configuration", ""]
    if sep != ": " and rng.random() < 0.5:
        lines.append(f"[{svc}]")
    for k in keys:
        lines.append(f"{k}{sep}{settings[k]}")
    return path, sep, lines, settings


def _sep_re(sep: str) -> str:
    return "[[:space:]]*:[[:space:]]*" if ":" in sep else "[[:space:]]*=[[:space:]]*"


def _rest_unchanged(path: str, keys: list[str], lines: list[str]) -> list[str]:
    """Every line not about `keys` must be exactly as it was."""
    pattern = "^#?[[:space:]]*(" + "|".join(keys) + ")[[:space:]]*[=:]"
    others = [x for x in lines if not re.match(r"#?\s*(" + "|".join(keys) + r")\s*[=:]", x)]
    return [
        *heredoc_var("others", others),
        f"[ \"$(norm {q(path)} | grep -Ev {q(pattern)})\" = \"$others\" ] || fail 'other lines changed'",
    ]


def _setting_is(path: str, key: str, value: str, sep: str) -> str:
    line = f"^{key}{_sep_re(sep)}{value}[[:space:]]*$"
    return f"[ \"$(grep -Ec {q(line)} {q(path)})\" = 1 ] || fail {q(key + ' is not ' + value)}"


def _change(rng: random.Random, paths: Paths) -> Task:
    path, sep, lines, settings = _config(rng)
    keys = rng.sample(sorted(settings), rng.randint(1, 2))
    new = {}
    for k in keys:
        while (v := _value(rng, k)) == settings[k]:
            pass
        new[k] = v
    checker = [*_rest_unchanged(path, keys, lines)]
    checker += [_setting_is(path, k, new[k], sep) for k in keys]
    checker += [f"[ \"$(grep -Ec {q('^' + k + '[[:space:]]*[=:]')} {q(path)})\" = 1 ] || fail {q(k + ' repeated')}"
                for k in keys]
    asks = " and ".join(f"{k} to {new[k]}" for k in keys)
    p = paths.show(path)
    directives = phrase(rng, f"In {p}, set {asks}. Leave every other line of the file unchanged.",
                        f"Edit {p}: change {asks}; do not touch any other setting.")
    script = "; ".join(f"s|^{k}{sep}.*|{k}{sep}{new[k]}|" for k in keys)
    # The changed lines may move (the checker reads settings, not positions): drop and re-add.
    alts = [[*(f"sed -i '/^{k}{sep}/c {k}{sep}{new[k]}' {p}" for k in keys)],
            [f"grep -Ev '^({'|'.join(keys)})[ =:]' {p} > {p}.new",
             f"printf '%s\\n' {' '.join(q(k + sep + new[k]) for k in keys)} >> {p}.new", f"mv {p}.new {p}"]]
    return Task(directives, write(path, lines), checker, [f"sed -i '{script}' {p}"], [path.rsplit("/", 1)[0]],
                alts, [rng.choice([f"cat {p}", f"grep -E '^({'|'.join(keys)})' {p}"])])


def _disable(rng: random.Random, paths: Paths) -> Task:
    path, sep, lines, settings = _config(rng)
    key = rng.choice(sorted(settings))
    old = f"{key}{sep}{settings[key]}"
    checker = [*_rest_unchanged(path, [key], lines),
               f"grep -Eq {q('^[[:space:]]*' + key + '[[:space:]]*[=:]')} {q(path)} && fail {q(key + ' still active')}",
               f"grep -Eq {q('^#[[:space:]]*' + key + _sep_re(sep) + settings[key] + '[[:space:]]*$')} {q(path)}"
               f" || fail {q(key + ' line not commented out')}"]
    p = paths.show(path)
    directives = phrase(rng, f"Disable the {key} setting in {p} by commenting out its line with a leading #. "
                             "Change nothing else.",
                        f"Comment out the line '{old}' in {p} (put # in front of it); keep the rest of the file as it is.")
    alts = [[f"sed -i '/^{key}[ =:]/s/^/#/' {p}"],
            [f"awk '/^{key}[ =:]/{{$0 = \"#\" $0}} {{print}}' {p} > {p}.new", f"mv {p}.new {p}"]]
    return Task(directives, write(path, lines), checker, [f"sed -i 's|^{key}{sep}|#&|' {p}"],
                [path.rsplit("/", 1)[0]], alts, [f"cat {p}"])


def _add(rng: random.Random, paths: Paths) -> Task:
    path, sep, lines, settings = _config(rng)
    key = rng.choice([k for k in KEYS if k not in settings])
    value = _value(rng, key)
    checker = [*_rest_unchanged(path, [key], lines), _setting_is(path, key, value, sep)]
    p = paths.show(path)
    directives = phrase(rng, f"Add the setting {key}{sep}{value} as a new line at the end of {p}, "
                             "keeping the existing lines as they are.",
                        f"{p} needs one more line: {key}{sep}{value}. Append it and leave everything else alone.")
    alts = [[f"printf '%s\\n' '{key}{sep}{value}' >> {p}"], [f"sed -i '$a {key}{sep}{value}' {p}"]]
    return Task(directives, write(path, lines), checker, [f"echo '{key}{sep}{value}' >> {p}"], [path.rsplit("/", 1)[0]],
                alts, [rng.choice([f"cat {p}", f"tail -n 3 {p}"])])


def build(rng: random.Random, paths: Paths) -> Task:
    return rng.choice([_change, _change, _disable, _add])(rng, paths)
