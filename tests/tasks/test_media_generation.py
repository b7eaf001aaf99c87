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
from polymodal.generation import (GenerationSettings, generate_codes, generate_codes_parallel, guided, masked_after,
                                  training_mask)
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
    with pytest.raises(ValueError, match="attends only backwards"):  # no masked-token decoding through it
        MediaGenerationTask(MediaTargetData(tokenizer=tokenizer), decoder=lm, encoder=None, decoding="parallel")


# ---- MaskGIT-style parallel decoding (`decoding: parallel`) ----

class MaskingTokenizer(FakeTokenizer):
    mask_id = 2


def parallel_task(guidance: float = 3.0, **options) -> MediaGenerationTask:
    return MediaGenerationTask(MediaTargetData(tokenizer=MaskingTokenizer(), max_prompt_length=3), decoder=tiny_lm(),
                               encoder=None, cfg_dropout=0.1, guidance=guidance,
                               **{"decoding": "parallel", **options}).eval()


def test_the_cosine_schedule_by_hand():
    # ⌊64 · cos(π/2 · k/8)⌋: 64·0.9808 = 62.8, 64·0.9239 = 59.1, 64·0.8315 = 53.2, 64·0.7071 = 45.3, ...
    assert [masked_after(k, 8, 64) for k in range(9)] == [64, 62, 59, 53, 45, 35, 24, 12, 0]
    assert [masked_after(k, 1, 4) for k in range(2)] == [4, 0]  # one pass draws everything
    assert [masked_after(k, 4, 4) for k in range(5)] == [4, 3, 2, 1, 0]  # 3.70, 2.83, 1.53


def test_training_hides_the_cosine_share_of_codes_lowest_scores_first():
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.3]] * 4)
    u = torch.tensor([0.0, 0.5, 2 / 3, 0.999])  # cos: 1 → 4 codes; 0.707 → ⌈2.83⌉ = 3; 0.5 → 2; 0.0016 → at least 1
    assert training_mask(u, scores).tolist() == [[True] * 4, [True, True, False, True], [False, True, False, True],
                                                 [False, True, False, False]]


def test_the_parallel_loss_is_the_hidden_codes_cross_entropy_read_both_ways(monkeypatch):
    head = parallel_task()
    media, mask_id = head.data.media, 2
    batch = head.data.collate_targets([{"prompt": [5, 6]}, {"prompt": [7]}])
    codes = torch.tensor([[3, 0, 7, 1], [2, 2, 5, 6]])
    out = ModelOutput(modalities={"image": EncoderOutput(torch.zeros(2, 4, 16), torch.ones(2, 4, dtype=torch.bool),
                                                         torch.zeros(2, 16), codes=codes)}, pooled=None)
    draws = {(2,): torch.tensor([2 / 3, 0.999]), (2, 4): torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.8, 0.6, 0.4]])}
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: draws[tuple(shape)])
    loss = head(out, batch)["loss"]
    # oracle: row 0 hides codes 1 and 3 (2 of 4), row 1 hides code 0 (its lowest score), read with no causal mask
    hidden = [[1, 3], [0]]
    total, count = 0.0, 0
    for prompt, row, places in (([5, 6, 0], codes[0], hidden[0]), ([7, 0, 0], codes[1], hidden[1])):
        seen = [c + media.first if j not in places else mask_id for j, c in enumerate(row.tolist())]
        seq = torch.tensor([[1, *prompt, media.begin, *seen, media.end]])
        logits = head.decoder.module.lm(seq, causal=False)[0, 5:9, media.first: media.first + media.count]
        total = total + F.cross_entropy(logits[places], row[places], reduction="sum")
        count += len(places)
    torch.testing.assert_close(loss, total / count)
    causal = head.decoder.module.lm(seq)[0, 5:9, media.first: media.first + media.count]
    assert not torch.allclose(causal[places], logits[places])  # so the oracle tells the two apart


def test_parallel_decoding_reveals_the_most_confident_codes_on_schedule():
    media = media_vocabularies(TEXT, {"image": (CODES, GRID)})["image"]
    seen = []

    def forward(ids, mask):  # code j's place prefers code (j + 1) % CODES, surer the later the place
        seen.append(ids.clone())
        logits = torch.zeros(*ids.shape, TEXT + CODES + 2)
        for j in range(GRID):
            logits[:, ids.shape[1] - GRID - 1 + j, media.first + (j + 1) % CODES] = 1.0 + j
        return logits

    settings = GenerationSettings(max_new_tokens=GRID)
    codes = generate_codes_parallel(forward, [[1, 5, media.begin], [1, media.begin]], 0, 2, media, settings,
                                    steps=2)
    assert codes.tolist() == [[1, 2, 3, 4]] * 2
    assert len(seen) == 2  # one pass per step
    first, second = seen
    assert first.tolist() == [[1, 5, media.begin, 2, 2, 2, 2, media.end], [0, 1, media.begin, 2, 2, 2, 2, media.end]]
    # ⌊4 · cos(π/4)⌋ = 2 stay hidden after the first pass: the two least sure places, 0 and 1
    assert second[:, 3:7].tolist() == [[2, 2, media.first + 3, media.first + 4]] * 2


def test_parallel_decoding_is_the_step_by_step_oracle_with_guidance():
    lm = tiny_lm(3)
    media = lm.media["image"]
    empty = ModelOutput(modalities={}, pooled=None)
    prompts, free = [[1, 5, 6, 7, media.begin], [1, 9, 0, 0, media.begin]], [1, 0, 0, 0, media.begin]
    settings = GenerationSettings(max_new_tokens=GRID)
    codes = generate_codes_parallel(lambda i, m: lm.position_logits(empty, i, m), prompts, 0, 2, media, settings,
                                    steps=GRID, guidance=3.0, unconditional=free)
    for i, prompt in enumerate(prompts):  # one code a pass: the surest of the guided greedy draws
        canvas = [2] * GRID
        for _ in range(GRID):
            c, u = (lm.lm(torch.tensor([[*row, *canvas, media.end]]), causal=False)[0, 5:9, media.first: media.first + media.count]
                    for row in (prompt, free))
            scores = (u + 3.0 * (c - u)).log_softmax(-1)
            best, where = scores.max(-1)
            best[[j for j in range(GRID) if canvas[j] != 2]] = float("-inf")
            j = int(best.argmax())
            canvas[j] = media.first + int(where[j])
        assert codes[i].tolist() == [c - media.first for c in canvas]
    plain = generate_codes_parallel(lambda i, m: lm.position_logits(empty, i, m), prompts, 0, 2, media, settings,
                                    steps=GRID)
    assert not torch.equal(plain, codes)  # guidance changes these draws


def test_parallel_training_learns_codes_from_the_prompt():
    head = parallel_task(steps=2).train()
    optimiser = torch.optim.Adam(head.decoder.module.parameters(), lr=3e-3)
    batch = head.data.collate_targets([{"prompt": [5]}, {"prompt": [7]}] * 4)
    codes = torch.tensor([[1, 1, 6, 6], [3, 4, 3, 4]] * 4)
    out = ModelOutput(modalities={"image": EncoderOutput(torch.zeros(8, 4, 16), torch.ones(8, 4, dtype=torch.bool),
                                                         torch.zeros(8, 16), codes=codes)}, pooled=None)
    torch.manual_seed(0)
    for _ in range(150):
        loss = head(out, batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    head.eval()
    drawn = head.draw([[5], [7]], guidance=1.0, settings=GenerationSettings(max_new_tokens=GRID))
    assert drawn.tolist() == [[1, 1, 6, 6], [3, 4, 3, 4]]


def test_parallel_decoding_needs_our_decoder_a_mask_token_and_no_cache_settings():
    with pytest.raises(ValueError, match="decoding: expected one of autoregressive, parallel"):
        parallel_task(decoding="diffusion")
    with pytest.raises(ValueError, match="mask token"):
        MediaGenerationTask(MediaTargetData(tokenizer=FakeTokenizer()), decoder=tiny_lm(), encoder=None,
                            decoding="parallel")
    with pytest.raises(ValueError, match="steps: expected 1 to 4"):
        parallel_task(steps=5)
    for options in ({"cache": "static"}, {"compiled": True}):  # no KV cache to keep: refused, not ignored
        with pytest.raises(ValueError, match="parallel decoding reads the whole sequence"):
            parallel_task(**options)
