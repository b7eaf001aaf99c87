"""Every marked code block of every docs page runs, on tiny settings (see `docblocks.py` and the
contributing page): no page shows a command that fails."""

from __future__ import annotations

import shlex

import pytest

from docblocks import DOCS, REPO, TINY, DocsError, PageRunner, check_marks, commands, page_blocks, pages, parse, \
    with_tiny

RUN_PAGES = [p for p in pages() if any(b.kind == "run" for b in page_blocks(p))]


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synth-cache")


def test_every_runnable_block_is_marked():
    problems = [problem for page in pages() for problem in check_marks(page_blocks(page))]
    assert not problems, "\n".join(problems)


def test_every_tutorial_runs_its_commands():
    tutorials = sorted((DOCS / "tutorials").glob("*.md"))
    assert len(tutorials) >= 10
    for page in tutorials:
        kinds = [b.kind for b in page_blocks(page)]
        assert kinds.count("run") >= 2, f"{page.name}: a tutorial runs its commands and its Python API"


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(REPO)) for p in RUN_PAGES])
def test_page_runs(page, tmp_path, synth_cache):
    runner = PageRunner(tmp_path, synth_cache)
    for block in page_blocks(page):
        runner.run(block)


# The runner itself: a page whose command fails must fail, and the tiny settings must be the ones that apply.

def test_tiny_arguments_come_after_the_page_own_and_win():
    from polymodal.config import apply_overrides

    words = shlex.split("polymodal train c.yaml --set train.max_steps=500 train.lr=3e-3 --out R")
    got = with_tiny(words, {"tiny-train": "--set train.batch_size=4"})
    assert got[:len(words)] == words and got[len(words):] == [*TINY["train"], "--set", "train.batch_size=4"]
    sets = [w for w in got if "=" in w and not w.startswith("--")]
    raw = {"train": {}}
    apply_overrides(raw, sets)
    assert raw["train"] == {"max_steps": 2, "lr": 3e-3, "batch_size": 4, "progress": False}
    launched = shlex.split("torchrun --nproc_per_node 2 -m polymodal.cli train c.yaml")
    assert with_tiny(launched, {}) == [*launched, *TINY["train"]]
    assert with_tiny(["ls", "train"], {}) == ["ls", "train"]


def test_markers_are_read_and_unmarked_blocks_reported():
    text = "\n".join([
        "<!-- run tiny-train=\"--set train.lr=1\" -->", "```bash", "polymodal train a.yaml \\", "    --out R",
        "```", "", "```python", "print(1)", "```",
        "<!-- norun -->", "```bash", "make demo", "```",
        "<!-- file: conf/a.yaml -->", "", "```yaml", "model: {}", "```",
        "```json", "{}", "```"])
    blocks = parse(text, "page.md")
    assert [(b.kind, b.lang) for b in blocks] == [("run", "bash"), (None, "python"), ("norun", "bash"),
                                                  ("file", "yaml"), (None, "json")]
    assert blocks[0].options == {"tiny-train": "--set train.lr=1"}
    assert commands(blocks[0].code) == ["polymodal train a.yaml      --out R"]
    assert blocks[3].argument == "conf/a.yaml" and blocks[3].code == "model: {}\n"
    problems = check_marks(blocks)
    assert len(problems) == 2
    assert "page.md:7: a python block needs" in problems[0] and "page.md:11: <!-- norun --> needs a reason" in problems[1]
    with pytest.raises(DocsError, match="cannot read"):
        parse("<!-- run tiny-train=x -->\n```bash\nls\n```\n", "p.md")


def test_a_failing_block_fails_with_its_command_and_output(tmp_path, synth_cache):
    runner = PageRunner(tmp_path, synth_cache)
    blocks = parse("<!-- file: data/x.jsonl -->\n```json\n{\"id\": \"a\", \"image\": \"nope.png\"}\n```\n"
                   "<!-- run -->\n```bash\npolymodal data check data/x.jsonl\n```\n", "p.md")
    runner.run(blocks[0])
    assert (tmp_path / "data" / "x.jsonl").is_file() and (tmp_path / "configs" / "shapes-vqa.yaml").is_file()
    with pytest.raises(DocsError) as failed:
        runner.run(blocks[1])
    assert "p.md:6: polymodal data check data/x.jsonl" in str(failed.value) and "nope.png" in str(failed.value)
    for code in ("```bash\nfalse\n```", "```bash\npolymodal train missing.yaml\n```",
                 "```python\nraise ValueError('boom')\n```"):
        with pytest.raises(DocsError):
            runner.run(parse("<!-- run -->\n" + code + "\n", "p.md")[0])
