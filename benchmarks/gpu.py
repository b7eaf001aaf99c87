"""Where users train: CLIP training against HF, GPT-2 decoding against HF `generate`, the trainer end to end.

On the GPU there is (else on the CPU, where the figures say little about a GPU):
  matmul:  the chip's measured ceiling, a bf16 N×N×N matmul (TFLOP/s);
  clip:    a training step (forward, symmetric InfoNCE, backward, AdamW) of Polymodal's dual encoder and
           of HF `CLIPModel` at ViT-B/16 size (12 × 768, 224 px / 16, 77 text tokens), batch 256, under
           bf16 autocast, eager and `torch.compile`d: samples/s and MFU (the FLOPs of one step counted by
           `FlopCounterMode`, over the GPU's dense bf16 peak from `training/speed.py`'s table);
  decode:  GPT-2-small greedy decoding (64-token prompt, 128 new tokens), ours (eager, and with a static KV
           cache and a compiled step: CUDA graphs) against HF `generate` on the same weights, batch 1 and
           32, after checking the tokens are equal: tokens/s;
  trainer: `polymodal train configs/shapes-vqa.yaml` with its defaults on the built-in data: samples/s and
           the share of step time spent waiting for data (from the run's metrics.jsonl).
Each figure goes to `--out` (JSON) as soon as it is measured, so a run cut short keeps what it measured;
the last line printed is the same JSON object. `--tiny` runs every part at toy sizes (a CPU check that
the script works; its figures mean nothing).

    python benchmarks/gpu.py [--tiny] [--parts matmul,clip,decode,trainer] [--out gpu.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_vs_hf import build_hf, build_ours  # noqa: E402  (the same two models, at other sizes)

from polymodal.training.speed import peak_tflops  # noqa: E402

PARTS = ("matmul", "clip", "decode", "trainer")
FULL = {"clip": dict(layers=12, width=768, heads=12, image_size=224, patch=16, seq_len=77, batch=256),
        "decode": dict(layers=12, width=768, heads=12, vocab=50257, prompt=64, new_tokens=128, batches=(1, 32)),
        "matmul": 8192, "iters": 20, "warmup": 5, "trainer_steps": 200, "synth": 20000}
TINY = {"clip": dict(layers=2, width=64, heads=2, image_size=32, patch=8, seq_len=16, batch=8),
        "decode": dict(layers=2, width=64, heads=2, vocab=500, prompt=8, new_tokens=8, batches=(1, 4)),
        "matmul": 256, "iters": 3, "warmup": 1, "trainer_steps": 6, "synth": 96}


class Figures(dict):
    """The figures measured so far, written to `path` after each one."""

    def __init__(self, path: Path | None):
        super().__init__()
        self.path = path

    def put(self, key: str, value) -> None:
        self[key] = value
        if self.path is not None:
            self.path.write_text(json.dumps(self, indent=1) + "\n")
        print(f"{key}: {json.dumps(value)}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], object], device: torch.device, iters: int, warmup: int) -> float:
    """The median wall time of `step` after `warmup` untimed calls (compilation happens there)."""
    times = []
    for i in range(warmup + iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul(n: int, device: torch.device, sizes: dict) -> float:
    """TFLOP/s of a bf16 n×n×n matmul (fp32 on a CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    seconds = median_seconds(lambda: a @ b, device, sizes["iters"], sizes["warmup"])
    return 2 * n**3 / seconds / 1e12


def clip(device: torch.device, sizes: dict, figures: Figures) -> None:
    """Training samples/s and MFU of ours and HF's CLIP, eager and compiled."""
    a = argparse.Namespace(**sizes["clip"])
    with tempfile.TemporaryDirectory() as tmp:
        system = build_ours(a, Path(tmp))
    tok = system.tokenizer
    models = {"ours": system.model.to(device), "hf": build_hf(a, tok).to(device)}
    B, T = a.batch, a.seq_len
    images = torch.randn(B, 3, a.image_size, a.image_size, device=device)
    ids = torch.randint(5, tok.vocab_size, (B, T), device=device)
    ids[:, 0], ids[:, -1] = tok.cls_id, tok.sep_id
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    batch = {"retrieval": {"inputs": {"image": {"data": images}, "text": {"data": ids, "mask": mask}},
                           "target": torch.zeros(B, dtype=torch.long, device=device)}}
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else nullcontext
    peak = peak_tflops(device, "bf16" if bf16 else "fp32")

    def loss_of(name: str, model) -> torch.Tensor:
        if name == "ours":
            return model(batch)["retrieval"]["loss"]
        return model(input_ids=ids, pixel_values=images, attention_mask=mask.long(), return_loss=True).loss

    for compiled in (False, True):
        for name, module in models.items():
            model = torch.compile(module) if compiled else module
            optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_of(name, model)
                loss.backward()
                optimizer.step()

            if not compiled:  # the FLOPs of one step, counted eagerly
                counter = FlopCounterMode(display=False)
                with counter:
                    with autocast():
                        loss = loss_of(name, module)
                    loss.backward()
                module.zero_grad(set_to_none=True)
                figures.put(f"clip_{name}_tflop_per_step", float(f"{counter.get_total_flops() / 1e12:.4g}"))
            seconds = median_seconds(step, device, sizes["iters"], sizes["warmup"])
            flops = figures[f"clip_{name}_tflop_per_step"] * 1e12
            tag = f"clip_{name}_{'compiled' if compiled else 'eager'}"
            figures.put(f"{tag}_samples_per_s", round(B / seconds, 1))
            if peak:
                figures.put(f"{tag}_mfu", round(flops / seconds / (peak * 1e12), 4))
    for mode in ("eager", "compiled"):
        figures.put(f"clip_{mode}_ratio", round(figures[f"clip_ours_{mode}_samples_per_s"]
                                                / figures[f"clip_hf_{mode}_samples_per_s"], 3))


@torch.inference_mode()
def decode(device: torch.device, sizes: dict, figures: Figures) -> None:
    """Greedy tokens/s of ours and HF `generate` on the same GPT-2 weights (tokens checked equal)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from polymodal.generation import GenerationSettings, generate
    from polymodal.models.gpt2 import decoder_from_gpt2

    s = sizes["decode"]
    config = GPT2Config(vocab_size=s["vocab"], n_positions=s["prompt"] + s["new_tokens"], n_embd=s["width"],
                        n_layer=s["layers"], n_head=s["heads"], bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config).eval().to(device)
    hf.generation_config.eos_token_id = None  # exactly new_tokens tokens, as ours without stops
    ours = decoder_from_gpt2(hf).to(device)
    settings = GenerationSettings(max_new_tokens=s["new_tokens"])
    for batch in s["batches"]:
        ids = torch.randint(1, s["vocab"], (batch, s["prompt"]), generator=torch.Generator().manual_seed(batch))
        ids = ids.to(device)
        mask = torch.ones_like(ids, dtype=torch.bool)
        capacity = s["prompt"] + s["new_tokens"]
        # on a GPU: inductor with CUDA graphs; at toy sizes on a CPU: traced without generating code
        compiled = {"backend": "aot_eager"} if device.type == "cpu" else True
        variants = {
            "ours": lambda: generate(lambda r: ours.session(repeat=r), ids, mask, settings),
            "ours_compiled": lambda: generate(lambda r: ours.session(repeat=r, max_length=capacity, compile=compiled),
                                              ids, mask, settings),
            "hf": lambda: hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=s["new_tokens"],
                                      min_new_tokens=s["new_tokens"], do_sample=False, num_beams=1),
        }
        reference = variants["hf"]()[:, s["prompt"]:].tolist()
        same = variants["ours"]() == reference and variants["ours_compiled"]() == reference
        figures.put(f"decode_batch{batch}_same_tokens", same)
        for name, fn in variants.items():
            seconds = median_seconds(fn, device, max(3, sizes["iters"] // 4), 1)
            figures.put(f"decode_batch{batch}_{name}_tokens_per_s", round(batch * s["new_tokens"] / seconds, 1))
        figures.put(f"decode_batch{batch}_ratio", round(figures[f"decode_batch{batch}_ours_tokens_per_s"]
                                                        / figures[f"decode_batch{batch}_hf_tokens_per_s"], 3))
        figures.put(f"decode_batch{batch}_compiled_ratio",
                    round(figures[f"decode_batch{batch}_ours_compiled_tokens_per_s"]
                          / figures[f"decode_batch{batch}_hf_tokens_per_s"], 3))


def trainer(sizes: dict, figures: Figures) -> None:
    """`polymodal train configs/shapes-vqa.yaml` with its defaults: samples/s and the data-wait share."""
    from polymodal.config import load_config
    from polymodal.data.shapes import synthesize
    from polymodal.demo import shipped_config
    from polymodal.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, n_train=sizes["synth"], n_val=32, n_test=0, log=lambda _: None)
        steps = sizes["trainer_steps"]
        config = load_config(shipped_config("shapes-vqa.yaml"), [
            f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}", f"train.max_steps={steps}",
            f"train.log_every={max(1, steps // 4)}", f"train.ckpt_every={10 * steps}", "train.progress=false"])
        Trainer(config, Path(tmp) / "run", log=lambda _: None).fit()
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "samples_per_s" in r][1:] or [r for r in rows if "samples_per_s" in r]
    figures.put("trainer_vqa_samples_per_s", round(statistics.median(r["samples_per_s"] for r in timed), 1))
    figures.put("trainer_vqa_data_wait", round(statistics.median(r["data_wait"] for r in timed), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: checks the script, measures nothing")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as they come")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    sizes = TINY if args.tiny else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    figures = Figures(args.out)
    figures.put("device", torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    figures.put("torch", torch.__version__)
    started = time.perf_counter()
    if "matmul" in parts:
        figures.put("matmul_tflops", float(f"{matmul(sizes['matmul'], device, sizes):.4g}"))
    if "clip" in parts:
        clip(device, sizes, figures)
    if "decode" in parts:
        decode(device, sizes, figures)
    if "trainer" in parts:
        trainer(sizes, figures)
    figures.put("seconds", round(time.perf_counter() - started, 1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
