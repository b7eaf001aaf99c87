"""The `polymodal export` command."""

from __future__ import annotations

import argparse

FORMATS = ("onnx", "hf")


def _export(args: argparse.Namespace) -> int:
    from ..api import load

    model = load(args.run, device="cpu")
    if args.format == "onnx":
        from .onnx import export_onnx

        out = export_onnx(model, args.out)
    else:
        from .hf import export_hf

        out = export_hf(model, args.out)
    print(f"wrote {out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a trained run as ONNX graphs or as a Hugging Face LLaVA folder")
    export.add_argument("run", help="a trained run folder")
    export.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx: each encoder and labelling head (checked with onnxruntime); hf: a decoder-only "
                             "model as a LlavaForConditionalGeneration folder (checked with transformers)")
    export.add_argument("--out", required=True, help="the folder to write")
    export.set_defaults(func=_export)
