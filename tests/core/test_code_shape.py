"""Shape rules the restructuring of 0.3 set: builders small enough to read, model outputs that hold tensors."""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from pathlib import Path

import torch

from polymodal.modalities.base import EncoderOutput
from polymodal.models.output import ModelOutput

SRC = Path(__file__).parents[2] / "src" / "polymodal"
MAX_LINES = 50


def function_lengths(path: Path) -> dict[str, int]:
    """Qualified function name → its number of lines (decorators and docstring included)."""
    lengths = {}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lengths[f"{node.name}.{item.name}"] = item.end_lineno - item.lineno + 1
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lengths[node.name] = node.end_lineno - node.lineno + 1
    return lengths


def test_every_builder_and_the_trainer_setup_are_under_50_lines():
    long = {f"{path.name}:{name}": n for path in sorted((SRC / "build").glob("*.py"))
            for name, n in function_lengths(path).items() if n >= MAX_LINES}
    assert long == {}
    assert function_lengths(SRC / "training" / "trainer.py")["Trainer.__init__"] < MAX_LINES


def test_the_line_count_sees_a_long_function(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("class A:\n    def f(self):\n" + "        x = 1\n" * 60 + "\ndef g():\n    pass\n")
    assert function_lengths(source) == {"A.f": 61, "g": 2}


def test_a_model_output_holds_tensors_only():
    """No modules or callables ride along: a head that needs a part of the model is given it when built."""
    tensor_like = {torch.Tensor, EncoderOutput}
    for field in dataclasses.fields(ModelOutput):
        hint = typing.get_type_hints(ModelOutput)[field.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        parts = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
        for part in parts:
            if typing.get_origin(part) is dict:
                key, value = typing.get_args(part)
                assert key is str and value in tensor_like, field.name
            else:
                assert part in tensor_like, field.name
