"""The docs hold together: every relative link and every ``#anchor`` in README.md, docs/*.md, bench/*.md and
train_unifer/*.md resolves (anchors as GitHub slugs headings), and every ``unifer …`` command the docs show names
a real subcommand with real flags, as the command's own parser defines them."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers import REPO

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def doc_files(root: Path = REPO) -> list[Path]:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "bench").glob("*.md")),
             *sorted((root / "train_unifer").glob("*.md"))]
    return [f for f in files if f.is_file()]


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked out unless told not to."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text, lower-cased, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # a link in a heading shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines: its headings' slugs (repeats get -1, -2, …) and HTML anchors."""
    seen: dict[str, int] = {}
    found = set()
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text, blank_code=False):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    found.update(HTML_ANCHOR.findall(text))
    return found


def link_problems(path: Path, root: Path = REPO) -> list[str]:
    """Every relative link of a Markdown file whose file, or whose #anchor in a Markdown file, does not exist."""
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):        # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file_part)).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: ({target})"
            if not dest.exists():
                problems.append(f"{where} no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where} no heading with anchor #{anchor} in {dest.name}")
    return problems


# --- the commands the docs show -----------------------------------------------------------------------------------

def shown_commands(text: str) -> list[tuple[list[str], bool]]:
    """The ``unifer …`` command lines: (words, whole) — whole for a code block's line (flags are checked too),
    not for an inline span in prose (only the subcommand is)."""
    out, fenced, pending = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            line = pending + line.split(" #", 1)[0].rstrip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            words = line.split()
            if words[:3] == ["python", "-m", "unifer"]:
                out.append((words[3:], True))
            elif words and words[0] in ("unifer", ".venv/bin/unifer"):
                out.append((words[1:], True))
        else:
            for m in INLINE_CODE.finditer(line):
                words = m.group(2).split()
                if words[:3] == ["python", "-m", "unifer"]:
                    words = words[2:]
                if words[:1] == ["unifer"] and len(words) > 1 and re.fullmatch(r"[a-z][a-z-]*", words[1]):
                    out.append((words[1:], False))
    return out


@cache
def subcommand_parser(name: str) -> argparse.ArgumentParser | None:
    from unifer import cli
    if name not in cli.COMMANDS:
        return None
    top, _ = cli.build_parser(name)
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def nested(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_problems(words: list[str], whole: bool) -> list[str]:
    shown = "unifer " + " ".join(words)
    parser = subcommand_parser(words[0])
    if parser is None:
        return [f"'{shown}': no subcommand '{words[0]}'"]
    rest = words[1:]
    if words[0] == "train":                 # unifer train sft|grpo|launch [the trainers' flags, TRL's, passed on]
        stages = next(a.choices for a in parser._actions if a.dest == "stage")
        missing = [c for c in (rest[0].split("|") if rest else []) if c not in stages]
        return [f"'{shown}': 'train' has no stage {', '.join(missing)}"] if missing else []
    children = nested(parser)
    if children and rest and not rest[0].startswith("-"):
        choice = rest[0].split("|")
        missing = [c for c in choice if c not in children]
        if missing:
            return [f"'{shown}': '{words[0]}' has no subcommand {', '.join(missing)}"]
        parser = children[choice[0]]
    if not whole:
        return []
    known = {s for a in parser._actions for s in a.option_strings}
    return [f"'{shown}': no flag {flag}" for flag in (w.split("=", 1)[0] for w in rest)
            if flag.startswith("--") and flag.strip("-[]") and flag.rstrip("]") not in known]


@cache
def script_flags(script: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / script), "--help"], check=False, capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, f"{script} --help failed: {done.stderr[-500:]}"
    return done.stdout


def script_problems(text: str) -> list[str]:
    """Every ``python <script>.py --flag`` line of a code block: the script exists and takes each flag."""
    problems = []
    for words, _ in [(line.split(), True) for line in _code_lines(text)]:
        if len(words) < 2 or words[0] != "python" or not words[1].endswith(".py"):
            continue
        if not (REPO / words[1]).is_file():
            problems.append(f"'{' '.join(words)}': no script {words[1]}")
            continue
        helptext = script_flags(words[1])
        problems += [f"'{' '.join(words)}': {words[1]} takes no {w}" for w in words[2:]
                     if w.startswith("--") and not re.search(re.escape(w.split("=")[0]) + r"\b", helptext)]
    return problems


def _code_lines(text: str) -> list[str]:
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif fenced:
            out.append(line.split(" #", 1)[0].rstrip().rstrip("\\"))
    return out


# --- the tests ----------------------------------------------------------------------------------------------------

def test_every_relative_link_and_anchor_resolves():
    files = doc_files()
    assert REPO / "README.md" in files and any(f.parent.name == "docs" for f in files)
    problems = [p for f in files for p in link_problems(f)]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_reachable_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    unlinked = [f.name for f in sorted((REPO / "docs").glob("*.md")) if f"docs/{f.name}" not in readme]
    assert not unlinked, f"docs pages the README's map does not link: {unlinked}"


def test_every_unifer_command_shown_exists_with_its_flags():
    shown = [(f, c) for f in doc_files() for c in shown_commands(f.read_text(encoding="utf-8"))]
    assert len(shown) >= 20, "the commands went missing from the docs"
    problems = [f"{f.relative_to(REPO)}: {p}" for f, (words, whole) in shown for p in command_problems(words, whole)]
    assert not problems, "\n".join(problems)


def test_every_script_shown_exists_and_takes_its_flags():
    problems = [f"{f.relative_to(REPO)}: {p}" for f in doc_files() for p in script_problems(f.read_text("utf-8"))]
    assert not problems, "\n".join(problems)


# --- the checker itself can fail ----------------------------------------------------------------------------------

def test_slugs_follow_github():
    assert slug("What happens when…") == "what-happens-when"
    assert slug("1. Data — see [`data/README.md`](data/README.md)") == "1-data--see-datareadmemd"
    assert slug("Read the reasoning: `unifer report`") == "read-the-reasoning-unifer-report"
    assert slug("The openai engine: `--sections openai`") == "the-openai-engine---sections-openai"


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Page B\n\n## Same\n\n## Same\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text("# Top\n\n[ok](docs/b.md) [ok](docs/b.md#page-b) [ok](docs/b.md#same-1) [ok](#top)\n"
                    "[web](https://example.org/x#y) `[in code](nowhere.md)`\n\n```\n[fenced](nowhere.md)\n```\n",
                    encoding="utf-8")
    assert link_problems(page, tmp_path) == []
    page.write_text("# Top\n\n[gone](docs/c.md)\n[bad anchor](docs/b.md#same-2)\n[self](#bottom)\n"
                    "![figure](figs/none.png)\n", encoding="utf-8")
    problems = link_problems(page, tmp_path)
    assert len(problems) == 4, problems
    assert "README.md:3: (docs/c.md) no such file" in problems[0]
    assert "#same-2" in problems[1] and "#bottom" in problems[2] and "figs/none.png" in problems[3]


@pytest.mark.parametrize(("line", "expected"), [
    ("unifer ferbench build --image-root /dataset", []),
    ("unifer nosuch --x", ["no subcommand 'nosuch'"]),
    ("unifer ferbench destroy", ["no subcommand destroy"]),
    ("unifer infer --set rafdb --no-such-flag 3", ["no flag --no-such-flag"]),
    ("unifer train sft --learning_rate 1e-5", []),
    ("unifer train dpo", ["no stage dpo"]),
])
def test_a_command_that_does_not_exist_is_reported(line, expected):
    problems = [p for words, whole in shown_commands(f"```bash\n{line}\n```\n") for p in command_problems(words, whole)]
    assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), problems


def test_a_script_or_script_flag_that_does_not_exist_is_reported():
    problems = script_problems("```bash\npython eval_rafdb/code/eval_unifer.py --run x --no-such-flag\n"
                               "python eval_nowhere/code/infer_unifer.py --model M\n```\n")
    assert len(problems) == 2, problems
    assert "takes no --no-such-flag" in problems[0] and "no script eval_nowhere" in problems[1]


def test_every_test_file_the_docs_name_exists():
    """A path like tests/infer/test_openai_engine.py in a doc, a recipe or a test names a file that is there."""
    pattern = re.compile(r"tests/[a-z_/]*test_[a-z_0-9]+\.py")
    files = [p for p in REPO.rglob("*") if p.suffix in {".md", ".py", ".yaml"} and p.is_file()
             and not {".venv", ".demo", ".git", "node_modules"} & set(p.relative_to(REPO).parts)]
    missing = sorted({f"{p.relative_to(REPO)}: {m}" for p in files for m in pattern.findall(p.read_text("utf-8"))
                      if not (REPO / m).is_file()})
    assert not missing, "\n".join(missing)
