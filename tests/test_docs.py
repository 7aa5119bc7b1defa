"""The README and docs/ say what the code does: every command's arguments are accepted, the README's
quickstart and every Python snippet run as written, links resolve, the family verdicts quote the
generated report, and the user docs name no internal work items."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import ROOT, subprocess_env
from docs_check import doc_files, fenced_blocks, shell_commands

HELPER = ROOT / "tests" / "docs_check.py"
FIRST_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.lock -e . && .venv/bin/python train.py",
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.lock -e . && .venv/bin/python -m pytest",
]


def rel(path) -> str:
    return path.relative_to(ROOT).as_posix()


def all_blocks():
    return [b for path in doc_files() for b in fenced_blocks(path)]


def test_the_readme_starts_with_the_two_commands():
    """`.ci/run` runs exactly the second one; the first trains the default experiment."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[:5] == ["# spiraljax", "", "```bash", *FIRST_COMMANDS]
    assert "pip install -r requirements.lock -e . && .venv/bin/python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_shell_blocks_are_read_as_commands():
    code = (
        "for K in 0 1; do\n  A=1 python train.py --workdir runs/x_s$K --set train.seed=$K  # K = 0, 1\ndone\n"
        'python a.py --x "b c" > out.txt && python d.py \\\n  --e f; pip install g\n'
    )
    assert shell_commands(code) == [
        ["python", "train.py", "--workdir", "runs/x_s0", "--set", "train.seed=0"],
        ["python", "a.py", "--x", "b c"],
        ["python", "d.py", "--e", "f"],
        ["pip", "install", "g"],
    ]


def test_every_command_in_the_docs_is_accepted():
    """Each ``python …`` line of a bash block: the script or module exists and parses its arguments,
    train.py's config and overrides load, evaluate.py's suites exist and take its options. A command
    that trains is run for real by the session test (README) or by the test named beside it."""
    bash = [b for b in all_blocks() if b.lang == "bash"]
    placeholders = [
        f"{b.path}:{b.line}: {m.group(0)}"
        for b in bash
        for m in re.finditer(r"\S*<\w[\w-]*>\S*", re.sub(r"#.*", "", b.code))
    ]
    assert not placeholders, f"write a runnable value (or a for loop) instead of a placeholder: {placeholders}"
    commands = [(b, argv) for b in bash for argv in shell_commands(b.code)]
    assert len(commands) > 50
    out = subprocess.run(
        [sys.executable, str(HELPER), "check"],
        input=json.dumps([argv for _, argv in commands]),
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    problems = [
        f"{b.path}:{b.line}: {' '.join(argv)}\n    {p}"
        for (b, argv), p in zip(commands, json.loads(out.stdout.splitlines()[-1]))
        if p
    ]
    assert not problems, "\n".join(problems)


def test_the_command_check_can_fail():
    bad = [
        ["python", "train.py", "--set", "model.d_modle=3"],
        ["python", "evaluate.py", "RUN", "--opt", "tokenz=3"],
        ["python", "benchmarks/hebbian.py", "--no-such-flag"],
        ["python", "train.py", "--workdir", "r", "--resume", "--set", "model.d_model=3"],
        ["make", "all"],
    ]
    out = subprocess.run(
        [sys.executable, str(HELPER), "check"],
        input=json.dumps(bad),
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    problems = json.loads(out.stdout.splitlines()[-1])
    assert all(problems), problems
    assert "d_modle" in problems[0] and "tokenz" in problems[1] and "refused" in problems[2]
    assert "resume" in problems[3] and "unknown program" in problems[4]


def test_the_readme_quickstart_and_every_snippet_run_as_written(tmp_path):
    """In a fresh directory: the README's train.py / evaluate.py commands in order (the default
    experiment, train, evaluate, resume, the sweep), then every Python block of README.md and docs/,
    each after the commands that create what it reads; tiny model sizes come first in every config's
    overrides, the docs' own values win."""
    out = subprocess.run(
        [sys.executable, str(HELPER), "session", str(tmp_path)],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    ran = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("DOCS-SESSION "))[13:])
    commands = [r["command"] for r in ran if "command" in r]
    assert commands[0] == ".venv/bin/python train.py"  # the README's first command: the default experiment
    assert any("--resume" in c for c in commands) and any(c.startswith("python evaluate.py") for c in commands)
    assert any("runs/sweep/" in c for c in commands)
    expected = {(b.path, b.line) for b in all_blocks() if b.runs}
    assert {(r["path"], r["line"]) for r in ran if r.get("python")} == expected
    assert ("README.md", next(b.line for b in all_blocks() if b.path == "README.md" and b.lang == "python")) in expected
    assert (tmp_path / "runs" / "spiralformer_femto_default" / "samples" / "step_0000800.txt").is_file()  # as docs say
    assert (tmp_path / "runs" / "tt" / "checkpoints").is_dir()
    assert (tmp_path / "runs" / "notebook" / "config.yaml").is_file()


def _slug(heading: str) -> str:
    """The anchor a forge gives a Markdown heading (lower case, punctuation dropped, spaces to '-')."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"^```.*?^```$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_links_between_the_docs_resolve():
    broken = []
    for path in [
        *doc_files(),
        ROOT / "CHANGELOG.md",
        ROOT / "benchmarks" / "README.md",
        ROOT / "notebooks" / "README.md",
    ]:
        text = re.sub(r"^```.*?^```$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{rel(path)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{rel(path)}: {target} (no such heading)")
            elif anchor and dest.is_dir() and anchor not in _anchors(dest / "README.md"):
                broken.append(f"{rel(path)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _report_block(text: str) -> str:
    return text[text.index("<!-- report:small:begin -->") : text.index("<!-- report:small:end -->")]


def test_each_number_of_the_family_verdicts_comes_from_the_report_block():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = _report_block(text)
    rows = [
        ln
        for ln in text.splitlines()
        if ln.startswith("| ") and "`model.family`" not in ln and ln.count("|") == 6 and "](docs/results/" in ln
    ]
    assert len(rows) == 5, rows
    missing = []
    for row in rows:
        verdict = row.split("|")[4]
        for number in re.findall(r"\d+(?:\.\d+)?", verdict):
            if not re.search(r"(?<![\d.])" + re.escape(number) + r"(?![\d])", block):
                missing.append(f"{number} ({row.split('|')[1].strip()})")
    assert not missing, f"verdict numbers not in the report block: {missing}"


def test_user_docs_name_no_internal_work_items():
    """Issue and item numbers mean nothing to a reader; the history that needs them is CHANGELOG.md's."""
    pattern = re.compile(r"(?<![\w&/])#\d+\b|\b(?:issue|item|items)\s+#?\d+", re.I)
    hits = [
        f"{rel(p)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for p in doc_files()
        if "notes" not in p.parts
        for text in [p.read_text(encoding="utf-8")]
        for m in pattern.finditer(text)
    ]
    assert not hits, hits


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
