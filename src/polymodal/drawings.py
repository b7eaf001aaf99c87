"""Pictures of what a generation model makes (`polymodal eval --drawings`, the demo's report): drawings framed
by the shapes detector's verdict, clips as frame strips framed by the clip judge's, sounds as spectrograms framed
by the sound judge's, with each sound as a WAV beside the picture."""

from __future__ import annotations

from pathlib import Path

from .errors import PolymodalError


def plot_generated(model, records: list | dict, path: Path) -> None:
    """`polymodal eval --drawings` and the demo: what the model's generation task makes, as evaluation makes it (the task's samples,
    guidance and seed), judged. Images: per GenEval category, the first record's prompt and its drawings,
    framed by the shapes detector's verdict. Sounds: per distinct prompt (up to eight), the spectrograms of
    its sounds framed by the sound judge's verdict, and each sound as a WAV beside the picture."""
    from .evaluation.harness import task_records
    from .tasks.media_generation import MediaGenerationTask

    names = [n for n, t in model.system.model.tasks.items() if isinstance(t, MediaGenerationTask)]
    if not names:
        raise PolymodalError("--drawings: this model has no generation task (text_to_image, text_to_audio, "
                             "text_to_video)")
    head = model.system.model.tasks[names[0]]
    usable = task_records(model.system, names[0], records.get(names[0], []) if isinstance(records, dict) else records)
    key = (lambda r: r["category"]) if head.data.modality == "image" else head.data.prompt_text  # a row each
    first: dict[str, dict] = {}
    for record in usable:
        if "spec" in record and len(first) < 8:
            first.setdefault(key(record), record)
    if not first:
        raise PolymodalError("--drawings: no record has a `spec` to judge it by (polymodal synth --generation)")
    chosen = list(first.values())
    prompts = [head.data.prompt_text(r) for r in chosen]
    if head.data.modality == "audio":
        _plot_sounds(model, head, names[0], chosen, prompts, path)
    elif head.data.modality == "video":
        import numpy as np

        from .data.video_generation import judge_clip
        from .report import plot_drawings

        groups = model.generate_video(prompts, n=head.samples, seed=head.seed, task=names[0])
        plot_drawings([{"prompt": p, "category": r["category"], "images": [np.concatenate(list(c), 1) for c in clips],
                        "passed": [all(judge_clip(r["spec"], c).values()) for c in clips]}
                       for r, p, clips in zip(chosen, prompts, groups)], path)
    else:
        from .data.shapes_detector import detect, satisfies
        from .report import plot_drawings

        groups = model.generate_image(prompts, n=head.samples, seed=head.seed, task=names[0])
        plot_drawings([{"prompt": p, "category": r["category"], "images": images,
                        "passed": [satisfies(r["spec"], detect(im)) for im in images]}
                       for r, p, images in zip(chosen, prompts, groups)], path)


def _plot_sounds(model, head, name: str, chosen: list[dict], prompts: list[str], path: Path) -> None:
    """`--drawings` for a sound model: the spectrogram grid at `path` and PATH-STEM-<row>-<sample>.wav."""
    import torch

    from .data.media import write_audio
    from .data.sound_judge import ATTRIBUTES, trained_judge
    from .report import plot_sounds

    waves, rate = model.generate_audio(prompts, n=head.samples, seed=head.seed, task=name)
    encoder, judge = head.encoder.module, trained_judge()
    rows = []
    for row, (record, group) in enumerate(zip(chosen, waves)):
        heard = judge.judge(group)
        for k, wave in enumerate(group):
            write_audio(path.with_name(f"{path.stem}-{row}-{k}.wav"), wave, rate)
        mels = encoder.mel(torch.as_tensor(group).to(encoder.mel.window.device)).cpu().numpy()
        rows.append({"prompt": head.data.prompt_text(record), "mels": list(mels),
                     "heard": [f"{h['count']} {h['pitch']} {h['voice']}" for h in heard],
                     "passed": [all(h[a] == record["spec"][a] for a in ATTRIBUTES) for h in heard]})
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_sounds(rows, path)
