"""Drawing media from text: the code vocabulary, the training sequence and its loss, classifier-free
guidance's dropout and formula, constrained sampling, and the GenEval-style metrics, each against an
oracle (the model run on whole sequences without a cache, a hand-built layout, real images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polymodal.data.shapes_generation import synthesize_generation
from polymodal.data.manifest import read_manifest
from polymodal.generation import GenerationSettings, generate_codes, guided
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.text.tokenizer import TextTokenizer
from polymodal.models.decoder import TextDecoder
from polymodal.models.multimodal_lm import MultimodalLM, media_vocabularies
from polymodal.models.output import ModelOutput
from polymodal.tasks.media_generation import MediaGenerationTask, MediaTargetData

TEXT, CODES, GRID = 20, 8, 4  # text ids, codes, codes per image


class FakeTokenizer:
    cls_id, sep_id, pad_id = 1, 2, 0

    def ids(self, text: str) -> list[int]:
        return [3 + (sum(map(ord, w)) % (TEXT - 3)) for w in text.split()]


def tiny_lm(seed: int = 0) -> MultimodalLM:
    torch.manual_seed(seed)
    decoder = TextDecoder(vocab_size=TEXT + CODES + 2, width=32, depth=2, num_heads=4, max_length=32, init_std=0.2)
    return MultimodalLM(decoder, ["image"], 16, codes={"image": (CODES, GRID)}).eval()


def task(cfg_dropout: float = 0.1, guidance: float = 3.0, **options) -> MediaGenerationTask:
    lm = tiny_lm()
    return MediaGenerationTask(MediaTargetData(tokenizer=FakeTokenizer(), **options), decoder=lm, encoder=None,
                               cfg_dropout=cfg_dropout, guidance=guidance).eval()


def test_codes_take_ids_after_the_text_vocabulary_with_their_markers():
    media = media_vocabularies(20, {"image": (8, 4), "audio": (5, 3)})
    assert (media["audio"].begin, media["audio"].end, media["audio"].first) == (20, 21, 22)  # name order
    assert (media["image"].begin, media["image"].end, media["image"].first, media["image"].count) == (27, 28, 29, 8)
    assert media["image"].ids(torch.tensor([[0, 7, 3, 1]])).tolist() == [[27, 29, 36, 32, 30, 28]]
    lm = tiny_lm()
    assert lm.text_vocab_size == TEXT and "image" not in lm.projectors  # a discrete modality is not projected
    codes = torch.tensor([[0, 1, 2, 3]])
    span, mask = lm.spans(ModelOutput(modalities={"image": EncoderOutput(torch.zeros(1, 4, 16), torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 16), codes=codes)}, pooled=None))["image"]
    torch.testing.assert_close(span, lm.lm.embed(torch.tensor([[20, 22, 23, 24, 25, 21]])))  # the LM's own rows
    assert mask.all()


def test_a_training_sequence_is_start_prompt_begin_codes_end_with_the_loss_on_what_is_drawn():
    head = task(max_prompt_length=3)
    media = head.data.media
    batch = head.data.collate_targets([{"prompt": [5, 6]}, {"prompt": [7]}])
    first, begin, end = media.first, media.begin, media.end
    # the prompt padded to its 3 places: every code at the same position, whatever the prompt's length
    assert batch["ids"].tolist() == [[1, 5, 6, 0, begin, *[first] * GRID, end], [1, 7, 0, 0, begin, *[first] * GRID, end]]
    assert batch["mask"].all()  # the pads are seen: a fixed-length condition, not a hole
    assert batch["loss_mask"].tolist() == [[False] * 4 + [True] * 6] * 2
    assert batch["slots"].tolist() == [[False] * 5 + [True] * 4 + [False]] * 2
    assert batch["prompt_mask"].tolist() == [[False, True, True] + [False] * 7, [False, True] + [False] * 8]
    codes = torch.tensor([[3, 0, 7, 1], [2, 2, 5, 6]])
    out = ModelOutput(modalities={"image": EncoderOutput(torch.zeros(2, 4, 16), torch.ones(2, 4, dtype=torch.bool),
                                                         torch.zeros(2, 16), codes=codes)}, pooled=None)
    loss = head(out, batch)["loss"]
    # oracle: each sequence alone, through the language model, cross-entropy on begin, codes and end
    total, count = 0.0, 0
    for prompt, row in (([5, 6, 0], codes[0]), ([7, 0, 0], codes[1])):
        seq = torch.tensor([[1, *prompt, begin, *(row + first).tolist(), end]])
        logits = head.decoder.module.lm(seq)[0]
        n = len(prompt) + 1  # the position that predicts begin
        total += F.cross_entropy(logits[n - 1:-1], seq[0, n:], reduction="sum")
        count += GRID + 2
    torch.testing.assert_close(loss, total / count)


def test_guidance_dropout_turns_the_prompt_into_the_unconditional_row(monkeypatch):
    head = task(cfg_dropout=0.5).train()
    batch = head.data.collate_targets([{"prompt": [5, 6, 9]}, {"prompt": [7]}])
    codes = torch.tensor([[3, 0, 7, 1], [2, 2, 5, 6]])
    out = ModelOutput(modalities={"image": EncoderOutput(torch.zeros(2, 4, 16), torch.ones(2, 4, dtype=torch.bool),
                                                         torch.zeros(2, 16), codes=codes)}, pooled=None)
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.tensor([[0.2], [0.9]]))  # drop the first only
    dropped = head(out, batch)["loss"]
    expected = head.eval()(out, head.data.collate_targets([{"prompt": []}, {"prompt": [7]}]))["loss"]
    torch.testing.assert_close(dropped, expected)
    kept = head.eval()(out, batch)["loss"]
    assert not torch.allclose(kept, dropped)  # the prompt matters to the model, so hiding it is seen


def test_the_guidance_formula_by_hand():
    c, u = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    assert guided(c, u, 3.0).tolist() == [[4.0, -2.0, -5.0]]  # 1 + 3·(2 − 1), 1 + 3·(0 − 1), 1 + 3·(−1 − 1)
    assert torch.equal(guided(c, u, 1.0), c) and torch.equal(guided(c, u, 0.0), u)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_guided_codes_are_the_whole_sequence_oracles_both_rows_in_one_batch(cache):
    lm = tiny_lm(1)
    media = lm.media["image"]
    empty = ModelOutput(modalities={}, pooled=None)
    prompts = [[1, 5, 6, 7, media.begin], [1, 9, media.begin]]  # different lengths: left-padded together
    free = [1, media.begin]
    settings = GenerationSettings(max_new_tokens=GRID, cache=cache)
    codes = generate_codes(lambda r, **o: lm.start(empty, r, **o), prompts, 0, media, settings,
                           guidance=3.0, unconditional=free)
    assert codes.shape == (2, GRID)
    for i, prompt in enumerate(prompts):  # each prompt alone, no cache: the unconditional row sees no prompt
        cond, uncond = list(prompt), list(free)
        for t in range(GRID):
            c = lm.lm(torch.tensor([cond]))[0, -1, media.first: media.first + media.count]
            u = lm.lm(torch.tensor([uncond]))[0, -1, media.first: media.first + media.count]
            code = int((u + 3.0 * (c - u)).argmax())
            assert int(codes[i, t]) == code, (i, t)
            cond.append(media.first + code)
            uncond.append(media.first + code)
    plain = generate_codes(lambda r, **o: lm.start(empty, r, **o), prompts, 0, media, settings, guidance=1.0)
    unguided = generate_codes(lambda r, **o: lm.start(empty, r, **o), prompts, 0, media, settings, guidance=3.0,
                              unconditional=free)
    assert torch.equal(unguided, codes) and not torch.equal(plain, codes)  # guidance changes these draws


def test_guidance_one_is_plain_sampling_and_codes_stay_in_their_span():
    lm = tiny_lm(2)
    media = lm.media["image"]
    with torch.no_grad():  # make the text ids and the end marker far likelier than any code
        lm.lm.embed.weight[: media.first] *= 30
    empty = ModelOutput(modalities={}, pooled=None)
    prompts = [[1, 5, media.begin]] * 64
    settings = GenerationSettings(max_new_tokens=GRID, sample=True, seed=3, temperature=2.0)
    codes = generate_codes(lambda r, **o: lm.start(empty, r, **o), prompts, 0, media, settings, guidance=1.0)
    assert codes.shape == (64, GRID) and int(codes.min()) >= 0 and int(codes.max()) < media.count
    assert len(set(codes[:, 0].tolist())) > 3  # sampled, not greedy
    generator = torch.Generator().manual_seed(3)  # the oracle: the plain sampling loop
    seqs = torch.tensor(prompts)
    for t in range(GRID):
        logits = lm.lm(seqs)[:, -1, media.first: media.first + media.count] / 2.0
        code = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
        assert torch.equal(codes[:, t], code)
        seqs = torch.cat([seqs, (code + media.first)[:, None]], 1)


def test_geneval_metrics_pass_real_images_and_fail_blank_ones(tmp_path):
    synthesize_generation(tmp_path, n_train=40, n_val=0, n_test=12, n_heldout=0, log=lambda _: None)
    records = read_manifest(tmp_path / "test.jsonl")
    train = read_manifest(tmp_path / "train.jsonl")
    data = MediaTargetData(tokenizer=FakeTokenizer(), vocab=MediaTargetData.vocab_from(train, {}))
    from PIL import Image
    real = [torch.from_numpy(np.array(Image.open(r["image"]).convert("RGB")))[None] for r in records]
    blank = [torch.full((2, 64, 64, 3), 240, dtype=torch.uint8) for _ in records]
    scores = data.metrics([{"images": b, "ceiling": r} for b, r in zip(blank, real)], records)
    assert scores["geneval_ceiling"] == 1.0 and scores["geneval"] == 0.0
    assert set(k for k in scores if k.startswith("geneval/")) == {f"geneval/{r['category']}" for r in records}
    assert "geneval_retrieval" in scores


def test_retrieval_takes_the_training_prompt_sharing_the_most_words():
    data = MediaTargetData(tokenizer=FakeTokenizer(), vocab=["a red circle\tA.png", "a blue square\tB.png",
                                                             "two red circles\tC.png"])
    assert data.nearest("a red square") in ("A.png", "B.png")
    assert data.nearest("a blue square") == "B.png"
    assert data.nearest("two red circles") == "C.png"
    assert data.nearest("red circle") == "A.png"  # 2 shared of 2 and 3 words beats 1 of 2 and 3


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="places media"):
        MediaTargetData(tokenizer=FakeTokenizer(), prompt="<image> {text}")
    with pytest.raises(ValueError, match="cfg_dropout > 0"):
        task(cfg_dropout=0.0, guidance=3.0)
    with pytest.raises(ValueError, match="max_length"):
        task(max_prompt_length=40)


@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_a_hugging_face_lm_grows_its_vocabulary_by_the_codes(tmp_path, lora):
    pytest.importorskip("transformers")
    from polymodal.builders.decoder import build_decoder
    from polymodal.models.tiny_lm import save_tiny_lm

    folder = save_tiny_lm(tmp_path / "lm", "gpt2", ["a red circle", "two blue squares"] * 10)
    spec = {"type": "hf", "path": str(folder), **({"lora": lora} if lora else {})}
    lm, _, tokenizer = build_decoder(spec, 16, ["image"], None, {"image": (CODES, GRID)})
    text = tokenizer.vocab_size
    media = lm.media["image"]
    assert lm.text_vocab_size == text and (media.begin, media.first) == (text, text + 2)
    assert lm.vocab_size == text + CODES + 2
    ids = torch.tensor([[1, 5, media.begin, media.first + 3, media.first + 7, media.end]])
    logits = lm.lm(ids)
    assert logits.shape == (1, 6, text + CODES + 2)
    logits[0, -1, media.first:].sum().backward()
    grads = [p.grad for n, p in lm.named_parameters() if p.requires_grad and "wte" in n]
    assert grads and any(g is not None and g[media.first:].abs().sum() > 0 for g in grads)  # the new rows learn
