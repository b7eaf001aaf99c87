"""The `polymodal` command. User errors print one clear message and exit 1, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import ConfigError, PolymodalError


SYNTH_MODALITIES = ("image", "video", "audio", "text", "speech")
# what `predict --save` writes made media as, per kind, and the generation task classes that make each
SAVE_SUFFIXES = {"images": (".png", ".jpg", ".jpeg", ".webp"), "sounds": (".wav", ".flac", ".ogg", ".mp3"),
                 "clips": (".mp4", ".mkv")}
MAKES = {"MediaGenerationTask": "images", "TextToAudioTask": "sounds", "TextToVideoTask": "clips"}
CLIP_FPS = 4  # the built-in prompted clips' rate


def _tiny_lm(args: argparse.Namespace) -> int:
    from .data.manifest import read_manifest
    from .models.tiny_lm import save_tiny_lm

    records = read_manifest(args.data)
    texts = [str(r[f]) for r in records for f in ("text", "question", "answer") if f in r]
    if not texts:
        raise PolymodalError(f"{args.data}: no text, question or answer fields to learn a tokenizer from")
    folder = save_tiny_lm(Path(args.out), args.kind, texts, width=args.width, layers=args.layers,
                          vocab_size=args.vocab_size, pretrain_steps=args.pretrain_steps, log=print)
    trained = f"pre-trained {args.pretrain_steps} steps on {len(texts)} texts" if args.pretrain_steps else "random"
    print(f"a {args.kind} causal LM (width {args.width}, {args.layers} layers, {trained}) written to {folder}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from .data.shapes import synthesize
    from .data.shapes_av import synthesize_av

    wanted = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in SYNTH_MODALITIES]
    if unknown or not wanted:
        raise PolymodalError(f"--modalities: expected a comma-separated subset of {','.join(SYNTH_MODALITIES)}, "
                             f"got {args.modalities!r}")
    if "image" in wanted:
        synthesize(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed,
                   image_size=args.image_size)
    if "video" in wanted or "audio" in wanted:  # clips carry both; records name both files
        held_out = max(50, args.n_clips // 10)
        synthesize_av(args.out, n_train=args.n_clips, n_val=held_out, n_test=held_out, seed=args.seed,
                      image_size=args.clip_size)
    if "speech" in wanted:
        from .data.spoken_digits import SpeechSettings, synthesize_speech

        synthesize_speech(Path(args.out) / "speech", SpeechSettings.scaled(args.n_speech, seed=args.seed))
    if args.generation:
        from .data.shapes_generation import synthesize_generation

        from .data.sound_generation import synthesize_sound_generation
        from .data.video_generation import synthesize_video_generation

        synthesize_generation(Path(args.out) / "generation", n_train=args.n_generation, seed=args.seed)
        synthesize_sound_generation(Path(args.out) / "generation", n_train=args.n_generation_sounds, seed=args.seed)
        synthesize_video_generation(Path(args.out) / "generation", n_train=args.n_generation_clips, seed=args.seed)
    return 0


def _sentences(args: argparse.Namespace) -> int:
    from .data.sentences import write_sentences

    write_sentences(args.out, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                    glosses=args.glosses)
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from .data.manifest import check_manifest, format_report

    records, problems = check_manifest(args.manifest)
    if problems:
        print(format_report(args.manifest, problems))
        return 1
    print(f"{args.manifest}: ok, {len(records)} records")
    lacking = {m: sum(m not in r for r in records) for m in ("image", "video", "audio", "text")}
    present = {m: n for m, n in lacking.items() if n < len(records)}  # the modalities this manifest has
    if any(present.values()):
        print("  records without " + ", ".join(f"{m}: {n}" for m, n in present.items() if n)
              + " (tasks use a learned placeholder where they can do without it)")
    return 0


def _data_shard(args: argparse.Namespace) -> int:
    from .data.manifest import read_manifest
    from .data.shards import write_shards

    if args.shard_size < 1:
        raise PolymodalError(f"--shard-size: expected at least 1 sample per shard, got {args.shard_size}")
    records = read_manifest(args.manifest)
    index = json.loads(write_shards(records, args.out, args.shard_size).read_text())
    pattern = str(Path(args.out) / index["pattern"])
    print(f"{len(records)} records in {len(index['shards'])} shards; train from them with\n"
          f"  data:\n    train: \"{pattern}\"    # or the folder: {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training.trainer import train

    config = load_config(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    folder = train(config, out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, every process returns here: one line
        print(f"model written to {folder}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .api import load
    from .data.manifest import read_manifest
    from .training.trainer import format_results

    model = load(args.run, device=args.device)
    known = sorted(model.system.processors)
    unknown = [m for m in args.drop_modality if m not in known]
    if unknown:
        raise PolymodalError(f"--drop-modality: this model has no {unknown[0]!r} encoder; it has: {', '.join(known)}")
    records, where = _eval_records(model, args)
    results = model.evaluate(records, batch_size=args.batch_size, drop=tuple(args.drop_modality))
    if not results:
        fields = {name: task.data.fields for name, task in model.system.model.tasks.items()}
        raise PolymodalError(f"{where}: no record carries the fields any task of this model needs: {fields}")
    if args.nn_baseline:
        results.update(_nn_baselines(model, read_manifest(args.nn_baseline), records))
    if args.drawings:
        from .drawings import plot_generated

        plot_generated(model, records, Path(args.drawings))
        print(f"drawings written to {args.drawings}", file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    else:
        print(format_results(results, f"evaluation on {where}"))
    return 0


def _eval_records(model, args: argparse.Namespace) -> tuple[list | dict, str]:
    """`--data`'s records for every task, else each task's own `--split` manifest from the run's config
    (`tasks.NAME.data.<split>`, else `data.<split>`)."""
    from .config import load_config
    from .data.manifest import read_records
    from .runfolder import CONFIG
    from .training.multitask import task_splits

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    if args.data:
        return read_records(args.data, on_error=args.on_error, log=log), args.data
    config = load_config(model.folder / CONFIG, [f"data.on_error={args.on_error}"])
    records = task_splits(config, args.split, log)
    if not any(records.values()):
        raise PolymodalError(f"eval: the run's config has no {args.split} manifest (data.{args.split} or "
                             f"tasks.NAME.data.{args.split}); give one with --data")
    return records, f"each task's {args.split} manifest"


def _nn_baselines(model, train: list, records: list) -> dict[str, dict[str, float]]:
    """{"TASK/nn_baseline": metrics} for each generative task: the nearest training caption's scores."""
    from .evaluation.baselines import nearest_neighbour_predictions
    from .evaluation.harness import task_records

    out = {}
    for name in _generative_tasks(model.system):
        task = model.system.model.tasks[name]
        usable = task_records(model.system, name, records.get(name, []) if isinstance(records, dict) else records)
        predictions = nearest_neighbour_predictions(model.system, name, train, usable)
        out[f"{name}/nn_baseline"] = {**task.data.metrics(predictions, usable), "n": float(len(usable))}
    if not out:
        raise PolymodalError("--nn-baseline: this model has no generative task")
    return out


def _generative_tasks(system) -> list[str]:
    """The names of the tasks whose prediction is generated text."""
    from .tasks.generative import TextGenerationTask

    return [name for name, task in system.model.tasks.items() if isinstance(task, TextGenerationTask)]


def _predict(args: argparse.Namespace) -> int:
    from .api import load
    from .data.media import write_audio, write_video

    model = load(args.run, device=args.device)
    kinds = set(model.tasks.values())
    result: dict[str, object] = {}
    media = {"image": (args.image or [None])[0], "video": args.video, "audio": args.audio}
    if args.question is not None:
        result["answer"] = model.answer(question=args.question, top_k=args.top_k, **media)
    elif args.text is not None:
        if not args.image:
            raise PolymodalError("--text ranks images: give them with --image (repeat it)")
        result["ranking"] = [{"image": str(args.image[i]), "similarity": s}
                             for i, s in model.retrieve(args.text, args.image, k=len(args.image))]
    elif kinds & set(MAKES):
        made = [MAKES[k] for k in MAKES if k in kinds]
        suffix = Path(args.save or "").suffix.lower()
        wanted = next((m for m in made if suffix in SAVE_SUFFIXES[m]), made[0])
        if args.prompt is None:
            raise PolymodalError(f"this model makes {' and '.join(made)}: give --prompt TEXT (and --save "
                                 f"OUT{SAVE_SUFFIXES[wanted][0]})")
        options = dict(n=args.n, guidance=args.guidance, seed=args.seed, steps=args.steps,
                       temperature=args.temperature if args.temperature != 1.0 else None,
                       top_p=args.top_p if args.top_p != 1.0 else None)
        if wanted == "sounds":
            waves, rate = model.generate_audio(args.prompt, **options)
            result["sounds"] = _save_media(list(waves), args.save, "sounds", lambda w, p: write_audio(p, w, rate))
        elif wanted == "clips":
            clips = model.generate_video(args.prompt, **options)
            result["clips"] = _save_media(list(clips), args.save, "clips",
                                          lambda c, p: write_video(p, c, fps=CLIP_FPS, lossless=True))
        else:
            result["images"] = _save_media(model.generate_image(args.prompt, **options), args.save, "images",
                                           lambda image, p: image.save(p))
    elif args.audio is not None and "CTCTask" in kinds:
        result["text"] = model.transcribe(args.audio)
    elif _generative_tasks(model.system):
        settings = {"num_beams": args.beam or 1, "sample": args.sample, "top_p": args.top_p,
                    "temperature": args.temperature, "seed": args.seed, "max_new_tokens": args.max_new_tokens}
        given = {f"{m}s": [v] for m, v in media.items() if v is not None}
        result["text"] = model.generate(args.prompt, **given, **settings)[0]
    elif "ClassificationTask" in kinds:
        result["label"] = model.classify(top_k=args.top_k, **media)
    else:
        raise PolymodalError(f"this model's tasks are {sorted(kinds)}: give --question for VQA or --text to "
                             f"rank the images by a caption")
    if args.explain:
        given = {"question": args.question, "image": media["image"], "video": args.video, "audio": args.audio}
        result["explanation"] = str(model.explain(args.explain, **given))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if isinstance(value, list):
                print(f"{key}:")
                for item in value:
                    print(f"  {item}")
            else:
                print(f"{key}: {value}")
    return 0


def _save_media(items: list, save: str | None, kind: str, write) -> list[str]:
    """Write made `kind` ("images", "sounds", "clips") to `save` (one: that path; several: PATH-0.EXT,
    PATH-1.EXT, ...) with `write(item, path)`, and return the paths."""
    suffixes = SAVE_SUFFIXES[kind]
    if not save:
        raise PolymodalError(f"--save OUT{suffixes[0]}: where to write the {kind}")
    path = Path(save)
    if path.suffix.lower() not in suffixes:
        raise PolymodalError(f"--save {save}: expected a file name for {kind} ({', '.join(suffixes)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [path] if len(items) == 1 else [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(len(items))]
    for item, target in zip(items, paths):
        write(item, target)
    return [str(p) for p in paths]


def _ablate(args: argparse.Namespace) -> int:
    from .ablation import run_ablation, run_modality_ablation
    from .fusion import FUSIONS
    from .config import load_config

    config = load_config(args.config, args.set + ([f"train.device={args.device}"] if args.device else []))
    if args.drop_modality:
        if args.fusion is not None:
            raise ConfigError("--fusion and --drop-modality: one ablation at a time")
        run_modality_ablation(config, args.drop_modality, Path(args.out), rate=args.dropout)
    else:
        fusions = [f.strip() for f in (args.fusion or ",".join(FUSIONS)).split(",") if f.strip()]
        run_ablation(config, fusions, Path(args.out))
    print(f"ablation written to {Path(args.out) / 'ablation.md'} and {Path(args.out) / 'ablation.json'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), quick=args.quick, seed=args.seed)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="polymodal", description="Multimodal transformers: synthesise data, train, evaluate, "
                                                          "predict, compare fusions.")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="synthesise the built-in benchmark, train, evaluate, write a report")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster run (smoke test)")
    demo.add_argument("--seed", type=int, default=0, help="train.seed of every run (the data stay the same)")
    demo.set_defaults(func=_demo)

    synth = sub.add_parser("synth", help="write the built-in 'shapes' benchmark: manifests + images / clips / sounds")
    synth.add_argument("--out", required=True)
    synth.add_argument("--modalities", default="image,text",
                       help="image,text: pictures with captions and questions (OUT/*.jsonl); with video or audio "
                            "also moving-shape clips with sound (OUT/av/*.jsonl); speech: spoken digit strings "
                            "by espeak-ng, test voices unheard in training (OUT/speech/*.jsonl; needs espeak-ng)")
    synth.add_argument("--n-clips", type=int, default=3000, help="training clips (val and test: a tenth each, at least 50)")
    synth.add_argument("--clip-size", type=int, default=32, help="clip width and height in pixels")
    synth.add_argument("--n-train", type=int, default=20000,
                       help="training images (the VQA recipe needs about 20 000 to learn from scratch)")
    synth.add_argument("--n-val", type=int, default=500)
    synth.add_argument("--n-test", type=int, default=500)
    synth.add_argument("--n-speech", type=int, default=6000,
                       help="training utterances of --modalities speech (validation and single words: a 20th "
                            "each, test: a 12th; at least 8 each)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--generation", action="store_true",
                       help="also GenEval-style prompts with the images that match them (OUT/generation/*.jsonl: "
                            "train, val, test and a held-out split of unseen colour-shape pairs and relations), "
                            "prompted sounds (sound-*.jsonl) and prompted clips (clip-*.jsonl)")
    synth.add_argument("--n-generation", type=int, default=6000, help="training prompts of --generation")
    synth.add_argument("--n-generation-sounds", type=int, default=2000,
                       help="training sounds of --generation (OUT/generation/sound-*.jsonl)")
    synth.add_argument("--n-generation-clips", type=int, default=2000,
                       help="training clips of --generation (OUT/generation/clip-*.jsonl: \"a small red circle "
                            "moving left\")")
    synth.set_defaults(func=_synth)

    sentences = sub.add_parser("sentences", help="write a corpus of real English sentences (WordNet 3.0's "
                                                 "examples, shipped) as train / val / test manifests")
    sentences.add_argument("--out", required=True)
    sentences.add_argument("--val-fraction", type=float, default=0.03)
    sentences.add_argument("--test-fraction", type=float, default=0.06)
    sentences.add_argument("--glosses", action="store_true",
                           help="add WordNet's 104 000 definitions to the training split (extra text to learn from)")
    sentences.set_defaults(func=_sentences)

    lm = sub.add_parser("tiny-lm", help="write a small Hugging Face causal LM folder (to try a decoder-only model "
                                        "offline): its tokenizer learnt from a manifest's text, its weights "
                                        "pre-trained on that text")
    lm.add_argument("--data", required=True, help="a manifest whose text, question and answer fields the "
                                                  "tokenizer learns")
    lm.add_argument("--out", required=True)
    lm.add_argument("--kind", choices=("gpt2", "llama"), default="gpt2")
    lm.add_argument("--width", type=int, default=128)
    lm.add_argument("--layers", type=int, default=2)
    lm.add_argument("--vocab-size", type=int, default=500)
    lm.add_argument("--pretrain-steps", type=int, default=400,
                    help="generative pre-training on the manifest's text first (0: leave it random)")
    lm.set_defaults(func=_tiny_lm)

    data = sub.add_parser("data", help="data utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="validate a manifest and every file it points to")
    check.add_argument("manifest")
    check.set_defaults(func=_data_check)
    shard = data_sub.add_parser("shard", help="write a manifest as WebDataset tar shards, to stream in training")
    shard.add_argument("manifest")
    shard.add_argument("--out", required=True, help="the folder for shard-000000.tar, ... and shards.json")
    shard.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    shard.set_defaults(func=_data_shard)

    train = sub.add_parser("train", help="train a config into a run folder")
    train.add_argument("config")
    train.add_argument("--out", help="run folder (default runs/<config name>)")
    train.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE", help="override config leaves")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    train.set_defaults(func=_train)

    ab = sub.add_parser("ablate", help="train and evaluate one config under several fusion strategies")
    ab.add_argument("config")
    ab.add_argument("--fusion", default=None, help="comma-separated fusion types (default: all)")
    ab.add_argument("--drop-modality", default=None, metavar="NAME",
                    help="instead: train with modality dropout, without dropout, and without NAME, and "
                         "evaluate each with and without NAME")
    ab.add_argument("--dropout", type=float, default=0.5, help="with --drop-modality: the training dropout chance")
    ab.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY.PATH=VALUE", help="override config leaves")
    ab.add_argument("--out", required=True, help="folder for one run per variant and the ablation report")
    ab.add_argument("--device", default=None, help="train and evaluate on: auto, cpu, cuda or cuda:N "
                                                   "(default: the config's train.device)")
    ab.set_defaults(func=_ablate)

    ev = sub.add_parser("eval", help="evaluate a trained run on a manifest")
    ev.add_argument("run")
    ev.add_argument("--data", help="manifest (JSON Lines) for every task (default: each task's own --split manifest "
                                   "from the run's config)")
    ev.add_argument("--split", choices=("val", "test"), default="test",
                    help="without --data: which of each task's manifests to evaluate on")
    ev.add_argument("--json", action="store_true", help="print one JSON object {task: {metric: value}}")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--device", default="auto", help="where to run: auto (a GPU when there is one), cpu, cuda or cuda:N")
    ev.add_argument("--on-error", choices=("fail", "skip"), default="fail")
    ev.add_argument("--drawings", metavar="PNG", help="a generation model: also a grid of what it makes, framed "
                    "green where the judge passes it: text_to_image, one prompt per GenEval category (the shapes "
                    "detector); text_to_audio, spectrograms of up to eight prompts (the sound judge), each sound "
                    "also written as PNG-STEM-<row>-<sample>.wav; text_to_video, frame strips of up to eight "
                    "prompts (the shapes detector on every frame)")
    ev.add_argument("--nn-baseline", metavar="TRAIN_MANIFEST",
                    help="also score the nearest-neighbour caption baseline: each record gets the caption of the "
                         "training record whose media is most similar (generative tasks)")
    ev.add_argument("--drop-modality", action="append", default=[], metavar="NAME",
                    help="evaluate with this modality removed from every record (repeatable)")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser("predict", help="one prediction from a trained run")
    pr.add_argument("run")
    pr.add_argument("--image", action="append", help="image path (repeat to rank several)")
    pr.add_argument("--video", help="video path (a model trained on clips)")
    pr.add_argument("--audio", help="audio path (a model trained on sounds)")
    pr.add_argument("--question", help="a question about the image or clip (VQA)")
    pr.add_argument("--text", help="a caption to rank the images by (retrieval)")
    pr.add_argument("--top-k", type=int, default=1)
    pr.add_argument("--prompt", help="text the generated text continues (generative models)")
    pr.add_argument("--beam", type=int, metavar="K", help="beam search with K beams (generative models)")
    pr.add_argument("--sample", action="store_true", help="sample instead of taking the most likely token")
    pr.add_argument("--top-p", type=float, default=1.0, help="with --sample: nucleus sampling")
    pr.add_argument("--temperature", type=float, default=1.0, help="with --sample")
    pr.add_argument("--seed", type=int, default=0, help="with --sample")
    pr.add_argument("--max-new-tokens", type=int, metavar="N")
    pr.add_argument("--save", metavar="OUT.png|OUT.wav", help="a text-to-image or text-to-sound model: where to "
                    "write the drawing(s) or sound(s)")
    pr.add_argument("-n", type=int, default=1, help="a text-to-image or text-to-sound model: how many to make")
    pr.add_argument("--guidance", type=float, help="a text-to-image or text-to-sound model: classifier-free "
                    "guidance scale (default: the task's; 1 turns it off)")
    pr.add_argument("--steps", type=int, help="a generation task with decoding: parallel: its passes "
                    "(default: the task's)")
    pr.add_argument("--explain", metavar="OUT.png", help="also save a picture of where the answer attended")
    pr.add_argument("--json", action="store_true")
    pr.add_argument("--device", default="auto", help="where to run: auto (a GPU when there is one), cpu, cuda or cuda:N")
    pr.set_defaults(func=_predict)

    from .export.commands import add_commands as add_export
    from .serving.commands import add_commands as add_serving

    add_serving(sub)
    add_export(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except PolymodalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
