"""Generate the config and CLI reference pages from the code.

    python docs/gen_reference.py           # write docs/reference/config.md and docs/reference/cli.md
    python docs/gen_reference.py --check   # exit 1, naming the page, when a committed page is out of date

The config page lists everything a config can name: the `data:` and `train:` dataclasses, the model's
own settings, each modality's encoder types and processor options, the fusions, the decoders and the
tasks. Each class's keyword parameters are its config keys, described by its Google-style docstring
(`Args:` or `Attributes:`, the class's and its bases'); parameters the builder fills itself are left out
(`BUILDER_PROVIDED`). The CLI page comes from `polymodal.cli.parser()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable

DOCS = Path(__file__).resolve().parent
REGENERATE = "python docs/gen_reference.py"

# Constructor parameters that the builder fills from other settings or objects; a config cannot set them.
BUILDER_PROVIDED = frozenset({
    "data", "width", "out_dim", "vocab_size", "pad_id", "context_dim", "modalities", "encoders", "fusion",
    "decoder", "memory", "tokenizer", "vocab", "teacher_processor", "embed_dim", "encoder",
})
# ... except on the model itself, whose `width` and `embed_dim` the config sets and the builder hands down.
MODEL_KEYS = ("width", "embed_dim")
# Keys whose config form differs from the constructor's argument (the builder makes the object from it).
CONFIG_FORMS = {
    "teacher": ("mapping", "`{type: hf, path: DIR, ...}` (a pretrained encoder of the task's modality, with "
                           "that encoder type's keys) or `{run: RUN}` (a trained Polymodal run)."),
}


def sources() -> dict[str, Any]:
    """What the pages document, each looked up in one line: a rename in the package is a one-line change here."""
    from polymodal.cli import parser
    from polymodal.config import DataConfig, TrainConfig
    from polymodal.fusion import FUSIONS
    from polymodal.modalities.registry import MODALITIES
    from polymodal.models import Backbone
    from polymodal.models.decoder import TextDecoder
    from polymodal.models.hf_decoder import HFLanguageModel
    from polymodal.tasks import TASKS

    return {"data": DataConfig, "train": TrainConfig, "model": Backbone, "modalities": MODALITIES,
            "fusions": FUSIONS, "decoders": {"transformer": TextDecoder, "hf": HFLanguageModel},
            "tasks": TASKS, "parser": parser}


def nested_encoders(cls: type) -> dict[str, tuple[str, Any]]:
    """Keys of an encoder that hold another modality's encoder config (a video's `frame`): key → (modality,
    default)."""
    from polymodal.modalities.base import HoldsEncoders

    return cls.nested_encoders() if issubclass(cls, HoldsEncoders) else {}


# ---------------------------------------------------------------------------------------------- docstrings

SECTION = re.compile(r"^(Args|Arguments|Attributes|Parameters):\s*$")
ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*(?:\([^)]*\))?:\s*(.*)$")


def parse_args_section(doc: str) -> dict[str, str]:
    """name → description from a Google-style docstring's `Args:` / `Attributes:` sections; an entry
    `a, b: text` describes both names."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    i = 0
    while i < len(lines):
        if not SECTION.match(lines[i]):
            i += 1
            continue
        i += 1
        names: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            line = lines[i]
            entry = ENTRY.match(line[4:]) if line.startswith("    ") and not line.startswith("     ") else None
            if entry:
                names = [n.strip().lstrip("*") for n in entry.group(1).split(",")]
                for name in names:
                    out.setdefault(name, entry.group(2).strip())
            elif line.strip() and names:
                for name in names:
                    out[name] = f"{out[name]} {line.strip()}".strip()
            i += 1
    return out


def described(cls: type) -> dict[str, str]:
    """The docstring descriptions of `cls`'s parameters: its own first, then its bases'."""
    out: dict[str, str] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        for doc in (klass.__dict__.get("__doc__"), getattr(init, "__doc__", None)):
            for name, text in parse_args_section(doc or "").items():
                out.setdefault(name, text)
    return out


def summary(obj: Any) -> str:
    """The first paragraph of a docstring, on one line."""
    doc = inspect.cleandoc(obj.__doc__ or "")
    return " ".join(doc.split("\n\n")[0].split())


# ---------------------------------------------------------------------------------------------- rendering


def yaml_value(value: Any) -> str:
    """A default as it would be written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("collections.abc.", "")


def cell(text: str) -> str:
    """Text for a table cell: a `|` outside code spans escaped (inside them, Markdown keeps it)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    if not rows:
        return ["No settings of its own.", ""]
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    out += [f"| `{k}` | {cell(f'`{t}`' if t else '')} | {cell(d)} | {cell(text)} |" for k, t, d, text in rows]
    return out + [""]


def parameter_rows(cls: type, extra_hidden: tuple[str, ...] = (), nested: dict[str, tuple[str, Any]] | None = None,
                   keep: tuple[str, ...] = ()) -> list[tuple[str, str, str, str]]:
    """One row per config key of `cls`: its keyword parameters less the builder's (`keep`: shown anyway)."""
    docs, rows = described(cls), []
    for name, p in inspect.signature(cls).parameters.items():
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        if (name in BUILDER_PROVIDED and name not in keep) or name in extra_hidden:
            continue
        default = "required" if p.default is p.empty else f"`{yaml_value(p.default)}`"
        if name in CONFIG_FORMS:
            kind, form = CONFIG_FORMS[name]
            rows.append((name, kind, default, f"{docs.get(name, '')} In the config: {form}".strip()))
            continue
        if nested and name in nested:
            modality, default = nested[name]
            rows.append((name, f"{modality} encoder mapping", f"`{yaml_value(default)}`",
                         docs.get(name, "") + f" Any `{modality}` encoder type of "
                                              f"[model.encoders.{modality}](#model-encoders-{modality})."))
            continue
        rows.append((name, type_name(p.annotation), default, docs.get(name, "")))
    return rows


def dataclass_rows(cls: type) -> list[tuple[str, str, str, str]]:
    docs, rows = described(cls), []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f"`{yaml_value(f.default)}`"
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f"`{yaml_value(f.default_factory())}`"  # type: ignore[misc]
        else:
            default = "required"
        rows.append((f.name, type_name(f.type), default, docs.get(f.name, "")))
    return rows


def where(cls: type) -> str:
    """`src/polymodal/...py`: the file that defines `cls`."""
    path = Path(inspect.getfile(cls)).resolve()
    parts = path.parts
    return "/".join(parts[parts.index("src"):]) if "src" in parts else path.name


def class_line(cls: type) -> str:
    return f"`{cls.__module__}.{cls.__qualname__}` (`{where(cls)}`)"


# ---------------------------------------------------------------------------------------------- the pages

GENERATED = ("<!-- Generated by docs/gen_reference.py from the code; do not edit. "
             f"Regenerate with `{REGENERATE}`. -->")


def config_page() -> str:
    s = sources()
    out = [GENERATED, "", "# Config reference", "",
           "A config is a YAML file with four sections: `model`, `tasks`, `data` and `train`. File paths in it "
           "are relative to the config file. An unknown key is an error that names the key and the allowed "
           "ones. `polymodal train CONFIG --set key.path=value ...` overrides any leaf (paths given with "
           "`--set` are relative to the current folder).", "",
           "This page is generated from the code: each section's keys are the keyword parameters of the class "
           "that the section builds, described by its docstring. Keys the builder fills itself (widths, "
           "vocabularies, the modules a part is given) are not settable and not listed.", ""]

    out += ["## data {#data}", "", summary(s["data"]), "", f"Defined by {class_line(s['data'])}.", ""]
    out += table(dataclass_rows(s["data"]))
    out += ["## train {#train}", "", summary(s["train"]), "", f"Defined by {class_line(s['train'])}.", ""]
    out += table(dataclass_rows(s["train"]))

    model = s["model"]
    out += ["## model {#model}", "", summary(model), "", f"Built as {class_line(model)}. Its keys:", ""]
    builder_rows = [
        ("encoders", "mapping", "required", "modality name → that modality's encoder: `{type: TYPE, ...}`; "
                                            "see [model.encoders](#model-encoders)."),
        ("fusion", "mapping", "required", "`{type: TYPE, ...}`: how the modalities meet; see "
                                          "[model.fusion](#model-fusion)."),
        ("decoder", "mapping", "`null`", "a text decoder for generative tasks; see [model.decoder](#model-decoder)."),
        ("tokenizer", "mapping", "`{}`", "`{vocab_size: N}`: a WordPiece tokenizer learnt from the training text "
                                         "(1000 tokens unless given); `{path: FILE}`: a saved `tokenizer.json`, or "
                                         "`package:NAME/sub` inside an installed package. Left out with a pretrained "
                                         "text encoder, which brings its own."),
    ]
    out += table(builder_rows + parameter_rows(model, keep=MODEL_KEYS))
    out += ["Configs of Polymodal 0.1 name the model `type: joint_transformer` (early fusion, its keys beside "
            "`width`) or `type: dual_encoder` (late fusion with `embed_dim: 128`); they are still accepted.", ""]

    out += ["## model.encoders {#model-encoders}", "",
            "One entry per modality: `model.encoders.MODALITY: {type: TYPE, ...}`. Every encoder returns "
            "tokens of width `model.width`.", ""]
    for name, modality in s["modalities"].items():
        out += [f"### model.encoders.{name} {{#model-encoders-{name}}}", "",
                f"Types: {', '.join(f'`{t}`' for t in modality.encoders)}.", ""]
        if modality.processor_options:
            out += ["Keys read by the preprocessing, beside any type's own keys:", ""]
            out += table([(k, "", f"`{yaml_value(v)}`", PROCESSOR_OPTIONS.get(k, ""))
                          for k, v in modality.processor_options.items()])
        for kind, cls in modality.encoders.items():
            out += [f"#### {name}: `{kind}` {{#encoder-{name}-{kind}}}", "", summary(cls), "",
                    f"{class_line(cls)}.", ""]
            out += table(parameter_rows(cls, tuple(modality.builder_provides), nested_encoders(cls)))

    out += ["## model.fusion {#model-fusion}", "",
            "`model.fusion: {type: TYPE, ...}` picks one strategy from the fusion registry.", ""]
    for kind, cls in s["fusions"].items():
        out += [f"### `{kind}` {{#fusion-{kind}}}", "", summary(cls), "", f"{class_line(cls)}.", ""]
        out += table(parameter_rows(cls))

    out += ["## model.decoder {#model-decoder}", "",
            "A text decoder for the generative tasks (`caption`, `vqa_generative`, `transcription`). Keys of "
            "every decoder, read by the builder:", ""]
    memory = described(model).get("memory", "")
    out += table([
        ("type", "str", "required", "`transformer` (ours) or `hf` (a local Hugging Face causal LM)."),
        ("architecture", "str", "`encoder_decoder` (`transformer`), `decoder_only` (`hf`)",
         "`encoder_decoder`: the decoder cross-attends to a memory; `decoder_only`: media tokens are projected "
         "into its input sequence (the only choice for `hf`)."),
        ("memory", "str", "`modalities`", f"encoder-decoder only. {memory}"),
        ("projector", "str", "`mlp`", "decoder-only only: `mlp` or `linear`, media tokens → the decoder's width."),
    ])
    for kind, cls in s["decoders"].items():
        out += [f"### `{kind}` {{#decoder-{kind}}}", "", summary(cls), "", f"{class_line(cls)}.", ""]
        out += table(parameter_rows(cls))

    out += ["## tasks {#tasks}", "",
            "`tasks.NAME: {type: TYPE, ...}`: any number of named tasks, trained together. Every task also "
            "takes `data: {train: FILE, val: FILE, test: FILE}`, its own manifests (default: the `data:` "
            "section's). A task's keys go to its data side (which record fields it reads, its targets and "
            "metrics) or to its head (its loss), whichever takes them.", ""]
    for kind, cls in s["tasks"].items():
        data_cls = cls.data_class
        out += [f"### `{kind}` {{#task-{kind}}}", "", summary(cls), "",
                f"Head: {class_line(cls)}. Data: {class_line(data_cls)}."]
        inputs = getattr(data_cls, "inputs", None)
        if inputs:
            out += ["", f"Reads by default: {', '.join(f'`{m}` from the field `{f}`' for m, f in inputs.items())}."]
        out += [""]
        out += table(parameter_rows(data_cls) + parameter_rows(cls))
    return "\n".join(out).rstrip() + "\n"


PROCESSOR_OPTIONS = {
    "cache_mb": "MiB of decoded, resized media kept in memory between epochs (0: decode every time).",
    "fps": "resample a clip to this frame rate before sampling frames (`null`: the file's own frames).",
    "sampling": "which frames: `uniform` over the whole clip, or a `segment` of consecutive frames; at "
                "random in training, fixed in evaluation.",
}


def cli_page() -> str:
    root = sources()["parser"]()
    out = [GENERATED, "", "# Command reference", "",
           f"{root.description} Every command is `polymodal COMMAND ...`; `polymodal COMMAND --help` prints "
           "the same. A user error prints one message and exits with status 1.", ""]
    out += _commands(root, "polymodal")
    return "\n".join(out).rstrip() + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser], dict[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return dict(action.choices), helps
    return {}, {}


def _commands(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    out: list[str] = []
    children, helps = _subparsers(parser)
    for name, child in children.items():
        full = f"{prog} {name}"
        slug = full.replace("polymodal ", "").replace(" ", "-")
        grandchildren, _ = _subparsers(child)
        out += [f"## {full} {{#{slug}}}", "", (helps.get(name) or "").rstrip(".").capitalize() + ".", ""]
        if grandchildren:
            out += _commands(child, full)
            continue
        formatter = argparse.HelpFormatter(full, width=100)
        formatter.add_usage(child.usage, child._actions, child._mutually_exclusive_groups, prefix="")
        out += ["```text", formatter.format_help().strip(), "```", ""]
        rows = []
        for action in child._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = ", ".join(action.option_strings) or action.dest.upper()
            if action.choices:
                value = " \\| ".join(f"`{c}`" for c in action.choices)
            elif action.nargs == 0:
                value = "flag"
            else:
                value = f"`{action.metavar or action.dest.upper()}`"
            if action.option_strings and action.nargs != 0 and action.default not in (None, [], argparse.SUPPRESS):
                default = f"`{yaml_value(action.default)}`"
            else:
                default = "required" if action.required or not action.option_strings else ""
            rows.append(f"| `{names}` | {value} | {default} | {cell(action.help or '')} |")
        if rows:
            out += ["| argument | value | default | description |", "|---|---|---|---|", *rows, ""]
    return out


PAGES: dict[str, Callable[[], str]] = {"reference/config.md": config_page, "reference/cli.md": cli_page}


def stale() -> list[str]:
    """The pages whose committed text differs from what the code generates."""
    return [name for name, make in PAGES.items()
            if not (DOCS / name).is_file() or (DOCS / name).read_text() != make()]


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="exit 1 if a committed page is out of date")
    check = args.parse_args(argv).check
    if check:
        pages = stale()
        for name in pages:
            print(f"docs/{name} is out of date: regenerate it with `{REGENERATE}`", file=sys.stderr)
        return 1 if pages else 0
    for name, make in PAGES.items():
        (DOCS / name).parent.mkdir(parents=True, exist_ok=True)
        (DOCS / name).write_text(make())
        print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
