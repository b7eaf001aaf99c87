"""Find the marked code blocks of the docs pages and run them on tiny settings.

A fenced code block is marked by an HTML comment on the line just before its opening fence (a blank line
between them is allowed):

    <!-- run -->                          run the block (bash or python)
    <!-- run tiny-train="--set train.val_every=1" -->
                                          run it; append these arguments to its `polymodal train` commands
                                          (after the default tiny arguments of `TINY`)
    <!-- norun: REASON -->                shown, not run; REASON says why (required)
    <!-- file: PATH -->                   write the block's text to PATH (relative to the page's folder)

Every `bash` / `sh` / `python` block must carry `run` or `norun: REASON`, so a command that no test runs
is a visible choice. The blocks of a page run in order, in one temporary folder (with a copy of the
repository's `configs/`), sharing one Python namespace: a page reads top-down as a session would.

`polymodal` commands run in this process through `polymodal.cli.main`, the console script's entry point,
with the command's own words (`shlex`) plus the tiny arguments; anything else (`torchrun`, shell pipes)
runs in `bash` with the virtual environment's `bin/` first on `PATH`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

# The arguments appended to every `polymodal SUBCOMMAND` a page runs, so its commands finish in seconds.
# A later value wins in argparse (`--n-train`) and in `--set` (the last `train.max_steps=` applies).
TINY: dict[str, list[str]] = {
    "synth": ["--n-train", "64", "--n-val", "16", "--n-test", "16", "--n-clips", "40", "--n-speech", "48"],
    "train": ["--set", "train.max_steps=2", "train.batch_size=8", "train.progress=false"],
    "ablate": ["--set", "train.max_steps=2", "train.batch_size=8", "train.progress=false"],
    "tiny-lm": ["--pretrain-steps", "2"],
    "sentences": ["--val-fraction", "0.002", "--test-fraction", "0.002"],
}

RUNNABLE = {"bash", "sh", "shell", "python", "py"}
MARKER = re.compile(r"^\s*<!--\s*(run|norun|file)\b(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
OPTION = re.compile(r'([\w-]+)="([^"]*)"')
SHELL_ONLY = re.compile(r"[|<>;&$`]")  # pipes, redirections, variables: a job for bash


class DocsError(Exception):
    """A page's block is malformed (unmarked, unknown marker) or its command failed."""


@dataclass
class Block:
    """One fenced code block of a page and the marker before it."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    kind: str | None = None  # run | norun | file | None
    options: dict[str, str] = field(default_factory=dict)
    argument: str = ""  # norun's reason, file's path

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse(text: str, page: str) -> list[Block]:
    """Every fenced code block of a Markdown page, with its marker (if any)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.group(1), match.group(2), match.group(3).lower()
        start, body, i = i, [], i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        block = Block(page, start + 1, lang, "\n".join(body) + "\n")
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        marker = MARKER.match(lines[j]) if j >= 0 else None
        if marker:
            block.kind, rest = marker.group(1), marker.group(2).strip()
            if block.kind == "run":
                block.options = dict(OPTION.findall(rest))
                leftover = OPTION.sub("", rest).strip()
                if leftover:
                    raise DocsError(f"{block.where}: run marker: cannot read {leftover!r} "
                                    f"(expected tiny-SUBCOMMAND=\"ARGS\")")
            else:
                block.argument = rest.lstrip(":").strip()
        blocks.append(block)
    return blocks


def check_marks(blocks: list[Block]) -> list[str]:
    """The problems with a page's markers: an unmarked runnable block, a norun without its reason, ..."""
    problems = []
    for b in blocks:
        if b.kind is None and b.lang in RUNNABLE:
            problems.append(f"{b.where}: a {b.lang} block needs <!-- run --> or <!-- norun: REASON --> before it")
        elif b.kind == "norun" and not b.argument:
            problems.append(f"{b.where}: <!-- norun --> needs a reason: <!-- norun: REASON -->")
        elif b.kind == "run" and b.lang not in RUNNABLE:
            problems.append(f"{b.where}: <!-- run --> on a {b.lang or 'plain'} block; "
                            f"only {', '.join(sorted(RUNNABLE))} blocks run (write files with <!-- file: PATH -->)")
        elif b.kind == "file" and (not b.argument or Path(b.argument).is_absolute() or ".." in Path(b.argument).parts):
            problems.append(f"{b.where}: <!-- file: PATH --> needs a relative path inside the page's folder")
        for key in b.options:
            if not key.startswith("tiny-"):
                problems.append(f"{b.where}: unknown run option {key!r} (expected tiny-SUBCOMMAND)")
    return problems


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, blank and comment lines left out."""
    out, current = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append((current + line).strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def split_command(command: str) -> tuple[dict[str, str], list[str]]:
    """(leading VAR=value assignments, the words) of one command, comments dropped."""
    words = shlex.split(command, comments=True)
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def subcommand(words: list[str]) -> tuple[int, str] | None:
    """(index, name) of the `polymodal` subcommand in a command's words: `polymodal train ...`, or a
    launcher's `... -m polymodal.cli train ...`; None for any other command."""
    for i, word in enumerate(words[:-1]):
        if word == "polymodal" and i == 0 or word == "polymodal.cli" and i > 0 and words[i - 1] == "-m":
            return i + 1, words[i + 1]
    return None


def with_tiny(words: list[str], options: dict[str, str]) -> list[str]:
    """The words plus the tiny arguments for their `polymodal` subcommand (defaults, then the marker's)."""
    found = subcommand(words)
    if found is None:
        return words
    name = found[1]
    if name == "data":  # `polymodal data check`: nothing to shrink
        return words
    return [*words, *TINY.get(name, []), *shlex.split(options.get(f"tiny-{name}", ""))]


@dataclass
class PageRunner:
    """Runs one page's blocks in order in `workdir`; `synth_cache` keeps synthesised data between pages."""

    workdir: Path
    synth_cache: Path
    namespace: dict = field(default_factory=lambda: {"__name__": "__docs__"})
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.workdir / "configs").exists():
            shutil.copytree(REPO / "configs", self.workdir / "configs")

    def run(self, block: Block) -> None:
        if block.kind == "file":
            path = self.workdir / block.argument
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
        elif block.kind == "run" and block.lang in ("python", "py"):
            self._python(block)
        elif block.kind == "run":
            for command in commands(block.code):
                self._command(command, block)

    @contextlib.contextmanager
    def _inside(self, env: dict[str, str]):
        old_cwd, old_env = Path.cwd(), {k: os.environ.get(k) for k in env}
        os.chdir(self.workdir)
        os.environ.update(env)
        try:
            yield
        finally:
            os.chdir(old_cwd)
            for key, value in old_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _python(self, block: Block) -> None:
        out = io.StringIO()
        with self._inside({}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                exec(compile(block.code, block.where, "exec"), self.namespace)
            except Exception:
                raise DocsError(f"{block.where}: the Python block failed:\n{out.getvalue()[-3000:]}"
                                f"{traceback.format_exc(limit=-6)}") from None
        self.log.append(f"$ python ({block.where})\n{out.getvalue()}")

    def _command(self, command: str, block: Block) -> None:
        env, words = split_command(command)
        words = with_tiny(words, block.options)
        found = subcommand(words)
        if found is not None and found[0] == 1 and not SHELL_ONLY.search(command):
            self._polymodal(words[1:], env, f"{block.where}: {command}")
        else:
            self._shell(shlex.join(words) if found is not None else command, env, f"{block.where}: {command}")

    def _polymodal(self, argv: list[str], env: dict[str, str], what: str) -> None:
        if argv[0] == "synth" and "--out" in argv:
            self._cached_synth(argv, what)
        else:
            self._main(argv, env, what)

    def _main(self, argv: list[str], env: dict[str, str], what: str) -> None:
        from polymodal.cli import main

        out = io.StringIO()
        with self._inside(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code
            except Exception:
                code = traceback.format_exc(limit=-6)
        self.log.append(f"$ polymodal {shlex.join(argv)}\n{out.getvalue()}")
        if code != 0:
            raise DocsError(f"{what}\nexited with {code}:\n{out.getvalue()[-4000:]}")

    def _cached_synth(self, argv: list[str], what: str) -> None:
        """`polymodal synth`: synthesised into the cache the first time its arguments (all but --out) are
        seen, then copied to --out."""
        i = argv.index("--out")
        target, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        cached = self.synth_cache / hashlib.sha1(" ".join(rest).encode()).hexdigest()[:16]
        if not (cached / ".done").exists():
            self._main([*rest, "--out", str(cached)], {}, what)
            (cached / ".done").touch()
        else:
            self.log.append(f"$ polymodal {shlex.join(argv)}  (copied from the cache)")
        shutil.copytree(cached, self.workdir / target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".done"))

    def _shell(self, command: str, env: dict[str, str], what: str) -> None:
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        result = subprocess.run(["bash", "-c", command], cwd=self.workdir, capture_output=True, text=True,
                                env={**os.environ, **env, "PATH": path}, timeout=300)
        self.log.append(f"$ {command}\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise DocsError(f"{what}\nexited with {result.returncode}:\n{(result.stdout + result.stderr)[-4000:]}")


def pages() -> list[Path]:
    """Every Markdown page of the docs site, and the README (its quickstart runs too)."""
    return [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]


def page_blocks(path: Path) -> list[Block]:
    return parse(path.read_text(), str(path.relative_to(REPO)))
