"""The generated references (config keys, commands) are what the code says today."""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from docblocks import DOCS

spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
gen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen)


@pytest.mark.parametrize("name", sorted(gen.PAGES))
def test_committed_page_is_the_generated_one(name):
    committed = (DOCS / name).read_text() if (DOCS / name).is_file() else ""
    assert committed == gen.PAGES[name](), (
        f"docs/{name} is out of date with the code: regenerate it with `{gen.REGENERATE}` and commit it")


def test_check_mode_names_a_stale_page(tmp_path, monkeypatch, capsys):
    for name in gen.PAGES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(gen.PAGES[name]())
    monkeypatch.setattr(gen, "DOCS", tmp_path)
    assert gen.main(["--check"]) == 0
    (tmp_path / "reference/config.md").write_text("old\n")
    assert gen.main(["--check"]) == 1
    assert "docs/reference/config.md is out of date" in capsys.readouterr().err


def test_every_config_part_and_settable_key_is_listed_and_no_builder_key():
    page = gen.config_page()
    s = gen.sources()
    for modality in s["modalities"].values():
        for kind, cls in modality.encoders.items():
            assert f"{{#encoder-{modality.name}-{kind}}}" in page
    for kind in [*s["fusions"], *s["decoders"]]:
        assert f"### `{kind}`" in page
    for kind in s["tasks"]:
        assert f"{{#task-{kind}}}" in page
    early = page.split("{#fusion-early}")[1].split("\n### ")[0]
    keys = {n for n, p in inspect.signature(s["fusions"]["early"]).parameters.items() if n not in gen.BUILDER_PROVIDED}
    for key in keys:
        assert f"| `{key}` |" in early
    for provided in ("width", "modalities"):
        assert f"| `{provided}` |" not in early  # the builder gives them
    model = page.split("{#model}")[1].split("\n## ")[0]
    assert "| `width` |" in model and "| `embed_dim` |" in model  # set on the model, handed down
    distill = page.split("{#task-distill}")[1].split("\n### ")[0]
    assert "| `teacher` | `mapping` |" in distill and "| `teacher_processor` |" not in distill
    assert "| `max_steps` | `int` | `1000` |" in page


def test_docstring_args_parser_reads_groups_and_continuations():
    doc = """Summary.

    Args:
        a, b: shared text
            that continues.
        c (int): its own.

    Returns:
        d: not a parameter.
    """
    assert gen.parse_args_section(doc) == {"a": "shared text that continues.", "b": "shared text that continues.",
                                           "c": "its own."}


def test_cli_page_lists_every_command_and_option():
    page = gen.cli_page()
    parser = gen.sources()["parser"]()
    commands, _ = gen._subparsers(parser)
    for name, sub in commands.items():
        assert f"## polymodal {name}" in page
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in page, (name, option)
