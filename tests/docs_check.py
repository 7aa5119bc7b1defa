"""The documentation's code blocks, read and run (used by tests/test_docs.py).

Reading: :func:`fenced_blocks` finds the fenced blocks of README.md and docs/**/*.md;
:func:`shell_commands` turns a bash block into argv lists (``for VAR in a b …; do`` loops run with
their first value, comments and environment assignments dropped).

Run as a script, in a fresh interpreter (so the CLIs' process-wide settings stay out of pytest):

* ``python tests/docs_check.py check`` reads a JSON list of argv lists on stdin and prints a JSON list
  of problems, one per command (``null`` when it is fine): the script or module exists and accepts its
  arguments, ``train.py``'s config and ``--set`` overrides load, ``evaluate.py``'s suites exist and take
  its ``--opt`` keys, a resume changes only resumable keys. Nothing is trained.
* ``python tests/docs_check.py session DIR`` runs, in DIR, the README's bash blocks (``train.py`` and
  ``evaluate.py`` commands) and then every Python block of README.md and docs/ in order, as written,
  with tiny model sizes put in front of their overrides (:data:`TINY`), and prints what ran.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Commands the docs may show that are not spiraljax's: installing, notebooks, shell plumbing.
OTHER_PROGRAMS = {"pip", "jupyter", "jupytext", "export", "gcloud", "sed", "mv", "git", "cd", "{", "}"}
OTHER_MODULES = {"venv", "pytest", "pip"}
# Python blocks that are fragments of an API description rather than runnable snippets: file → reason.
NOT_RUN = {
    "docs/carried_state.md": "the carried-state contract as a fragment; tests/test_state.py runs it",
    "docs/long_context_attention.md": "the state API as a fragment; tests/test_transformer_cache.py runs it",
}
NEW_FAMILY = ("<!-- example:new-family -->", "<!-- /example:new-family -->")  # run by tests/test_new_family.py
# Sizes put in front of a doc snippet's own overrides (its values win), where the config has the field.
TINY = [
    "model.d_model=32",
    "model.n_layers=1",
    "model.seq_len=32",
    "train.batch_size=4",
    "train.eval_every=100",
    "train.log_every=50",
    "train.progress=false",
    "checkpoint.every=100",
    "eval.batches=1",
    "eval.batch_size=4",
    "eval.sample_tokens=8",
    "data.num_echoes=64",
]


@dataclass(frozen=True)
class Block:
    path: str  # relative to the project root
    line: int  # of the opening fence
    lang: str
    code: str
    runs: bool  # a Python block that the session executes


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block that starts at the beginning of a line, with the line of its opening fence."""
    text = path.read_text(encoding="utf-8")
    rel = path.relative_to(ROOT).as_posix()
    skip = [(text.index(NEW_FAMILY[0]), text.index(NEW_FAMILY[1]))] if NEW_FAMILY[0] in text else []
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.M | re.S):
        inside_example = any(a < m.start() < b for a, b in skip)
        runs = m.group(1) == "python" and not inside_example and rel not in NOT_RUN
        out.append(Block(rel, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2), runs))
    return out


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block as argv lists. A ``for VAR in v1 v2 …; do … done`` loop runs its
    body once, with ``$VAR`` / ``${VAR}`` replaced by v1; ``;``, ``&&``, ``||`` and ``|`` separate
    commands; comments, redirections and leading ``NAME=value`` assignments are dropped."""
    text = code.replace("\\\n", " ")
    for var, values in re.findall(r"\bfor (\w+) in ([^;\n]+);", text):
        text = re.sub(r"\$\{%s\}|\$%s\b" % (var, var), values.split()[0], text)
    commands: list[list[str]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token.strip(";&|"):
                current.append(token)
                continue
            while current and current[0] in ("do", "then", "else"):
                current.pop(0)
            for i, t in enumerate(current):
                if t and set(t) <= set("<>"):
                    current = current[:i]
                    break
            while current and re.fullmatch(r"[A-Za-z_]\w*=\S*", current[0]):
                current.pop(0)
            if current and current[0] not in ("for", "done", "fi"):
                commands.append(current)
            current = []
    return commands


def is_python(program: str) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", Path(program).name) is not None


# --------------------------------------------------------------------------- check (in a fresh interpreter)
class _Parsed(Exception):
    """Raised by the patched ArgumentParser.parse_args once the arguments parsed: nothing runs."""


def _parse_only(kind: str, target: str, argv: list[str]) -> str | None:
    import argparse

    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    argparse.ArgumentParser.parse_args = parse_args
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [target, *argv]
    if kind == "path":
        sys.path.insert(0, str(Path(target).parent))  # as `python benchmarks/x.py` does: its folder first
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
        return f"{target} ran without parsing its arguments"
    except _Parsed:
        return None
    except SystemExit as err:
        return f"{target}: arguments refused (exit {err.code})"
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path


def _check_train(argv: list[str]) -> str | None:
    from spiraljax import config
    from spiraljax.train.loop import resumable

    cli = runpy.run_path(str(ROOT / "train.py"), run_name="train_cli")
    args = cli["parse_args"](argv)
    if args.help_config is not None:
        cli["help_config"](args.help_config, args.config)
    elif args.resume and not args.config:
        fixed = [o.split("=", 1)[0] for o in args.set if not resumable(o.split("=", 1)[0])]
        if fixed:
            return f"--resume refuses changes to {fixed}"
    elif args.config:
        config.load(args.config, args.set)
    else:
        config.load(cli["DEFAULT_CONFIG"], cli["DEFAULT_OVERRIDES"] + args.set)
    return None


def _check_evaluate(argv: list[str]) -> str | None:
    from spiraljax import config
    from spiraljax.eval.suites import SUITE_MODULES, check_options, get_suite

    cli = runpy.run_path(str(ROOT / "evaluate.py"), run_name="evaluate_cli")
    args = cli["parse_args"](argv)
    names = list(SUITE_MODULES) if args.suite == "all" else [n.strip() for n in args.suite.split(",") if n.strip()]
    suites = [get_suite(n) for n in names]
    bad = [o for o in args.opt if "=" not in o]
    if bad:
        return f"--opt {bad[0]!r} is not key=value"
    options = dict(o.split("=", 1) for o in args.opt)
    if args.config:
        config.find_config(args.config)
        options["config"] = args.config
    check_options(suites, options)
    if args.run_dir is None and any(s.needs_run for s in suites) and args.suite != "all":
        return "a suite that needs a RUN_DIR got none"
    return None


def _check_report(argv: list[str]) -> str | None:
    from spiraljax.report import parse_args
    from spiraljax.report.lineup import LM_ENTRIES, RECALL_ENTRIES
    from spiraljax.report.long import LONG_BUDGETS, entry_names

    from spiraljax.report.recall_state import RECALL_BUDGETS
    from spiraljax.report.recall_state import entry_names as recall_names

    args = parse_args(argv)
    names = (
        entry_names(LONG_BUDGETS[args.budget])
        if args.budget in LONG_BUDGETS
        else recall_names()
        if args.budget in RECALL_BUDGETS
        else {e.name for e in LM_ENTRIES + RECALL_ENTRIES}
    )
    unknown = set(args.only.split(",")) - names if args.only else set()
    return f"--only: unknown entries {sorted(unknown)}" if unknown else None


def check_command(argv: list[str]) -> str | None:
    """None if ``argv`` is a command the docs may show and its arguments are accepted; else the problem."""
    program, args = argv[0], argv[1:]
    if Path(program).name in OTHER_PROGRAMS:
        return None
    if not is_python(program):
        return f"unknown program {program!r}"
    try:
        if args[:1] == ["-m"]:
            module, rest = args[1], args[2:]
            if module in OTHER_MODULES:
                return None
            if module == "spiraljax.report":
                return _check_report(rest)
            if module == "spiraljax.launch":
                inner = rest[rest.index("--") + 1 :] if "--" in rest else []
                return _parse_only("module", module, rest) or (check_command(inner) if inner else "no command")
            return _parse_only("module", module, rest)
        script, rest = args[0], args[1:]
        if not (ROOT / script).is_file():
            return f"{script}: no such file in the project"
        if script == "train.py":
            return _check_train(rest)
        if script == "evaluate.py":
            return _check_evaluate(rest)
        if script.startswith("notebooks/"):
            return None  # tests/test_notebooks.py runs them
        return _parse_only("path", str(ROOT / script), rest)
    except SystemExit as err:
        return f"arguments refused (exit {err.code})"
    except Exception as err:  # a config, suite or option error: report it as the command's problem
        return f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------- session (in a fresh interpreter)
def tiny_load(load):
    """``config.load`` with :data:`TINY` in front of the caller's overrides (those the config has)."""

    def load_tiny(path=None, overrides=None):
        base = load(path, overrides)
        tiny = []
        for item in TINY:
            section, field = item.split("=", 1)[0].split(".", 1)
            if field in type(getattr(base, section)).model_fields:
                tiny.append(item)
        if "cache_dir" in type(base.data).model_fields:
            tiny.append(f"data.cache_dir={Path.cwd() / '.cache'}")
        return load(path, [*tiny, *(overrides or [])])

    return load_tiny


def session(workdir: Path) -> list[dict]:
    """Run the README's train.py / evaluate.py commands, then every Python block, in ``workdir``."""
    os.chdir(workdir)
    from spiraljax import config

    config.load = tiny_load(config.load)
    train_cli = runpy.run_path(str(ROOT / "train.py"), run_name="train_cli")
    evaluate_cli = runpy.run_path(str(ROOT / "evaluate.py"), run_name="evaluate_cli")
    ran = []
    blocks = [b for path in doc_files() for b in fenced_blocks(path)]
    readme = [b for b in blocks if b.path == "README.md"]
    for block in readme + [b for b in blocks if b.path != "README.md"]:
        if block.lang == "bash" and block.path == "README.md":
            for argv in shell_commands(block.code):
                if is_python(argv[0]) and argv[1:2] in (["train.py"], ["evaluate.py"]):
                    cli = train_cli if argv[1] == "train.py" else evaluate_cli
                    code = cli["main"](argv[2:])
                    assert code == 0, f"{block.path}:{block.line}: {shlex.join(argv)} exited {code}"
                    ran.append({"path": block.path, "line": block.line, "command": shlex.join(argv)})
        elif block.runs:
            exec(compile(block.code, f"{block.path}:{block.line}", "exec"), {"__name__": "__docs__"})
            ran.append({"path": block.path, "line": block.line, "python": True})
    return ran


if __name__ == "__main__":
    if sys.argv[1] == "check":
        os.environ.setdefault("SPIRALJAX_REUSE_HOST_MEMORY", "0")  # benchmarks import it; nothing is timed here
        print(json.dumps([check_command(argv) for argv in json.loads(sys.stdin.read())]))
    else:
        result = session(Path(sys.argv[2]))
        print("DOCS-SESSION " + json.dumps(result))
