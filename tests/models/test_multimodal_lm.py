"""The decoder-only multimodal LM: media spliced into the sequence, HF causal LMs (GPT-2, Llama) as the
decoder, offline, frozen (stage 1) or with LoRA (stage 2)."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from polymodal.api import load  # noqa: E402
from polymodal.builders import build_system  # noqa: E402
from polymodal.config import from_dict, load_config  # noqa: E402
from polymodal.data.loader import TaskDataset  # noqa: E402
from polymodal.data.manifest import read_manifest  # noqa: E402
from polymodal.errors import ConfigError  # noqa: E402
from polymodal.generation import GenerationSettings, generate, left_pad  # noqa: E402
from polymodal.models.splice import MEDIA, media_id, splice  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from polymodal.training.trainer import train  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from polymodal.models.tiny_lm import save_tiny_lm  # noqa: E402

IMAGE = {"type": "cnn", "image_size": 32, "channels": [8, 16], "positions": "sinusoidal2d"}


def test_splice_puts_each_span_in_place_and_says_where_to_read():
    embed = lambda ids: ids[..., None].float().expand(*ids.shape, 2)  # noqa: E731  (vector = (id, id))
    span = torch.tensor([[[100., 100.], [101., 101.], [-1., -1.]], [[200., 200.], [201., 201.], [202., 202.]]])
    span_mask = torch.tensor([[True, True, False], [True, True, False]])
    image = media_id("image")
    ids = torch.tensor([[1, image, 5, 6], [1, 7, image, 0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    embeds, out_mask, last = splice(ids, mask, embed, {"image": (span, span_mask)})
    assert embeds[0, :, 0].tolist() == [1, 100, 101, 5, 6] and out_mask[0].all()
    assert embeds[1, :, 0].tolist() == [1, 7, 200, 201, 0] and out_mask[1].tolist() == [True] * 4 + [False]
    assert last.tolist() == [[0, 2, 3, 4], [0, 1, 3, 3]]  # a span is read at its last vector; padding: before
    left, left_mask, left_last = splice(ids, mask, embed, {"image": (span, span_mask)}, left=True)
    assert left[1, :, 0].tolist() == [0, 1, 7, 200, 201] and left_mask[1].tolist() == [False] + [True] * 4
    assert left_last.tolist() == [[0, 2, 3, 4], [1, 2, 4, 4]]
    gone, gone_mask, gone_last = splice(ids, mask, embed)  # no spans: placeholders vanish
    assert gone[0, :3, 0].tolist() == [1, 5, 6] and gone_mask.sum(1).tolist() == [3, 2]
    assert gone_last.tolist() == [[0, 0, 1, 2], [0, 1, 1, 1]]
    gone_left, gone_left_mask, gone_left_last = splice(ids, mask, embed, left=True)
    assert gone_left[1, :, 0].tolist() == [0, 1, 7] and gone_left_mask[1].tolist() == [False, True, True]
    assert gone_left_last.tolist() == [[0, 0, 1, 2], [1, 2, 2, 2]]


def reference_splice(ids, mask, embed, spans, left):
    """The splice written token by token (the oracle of the vectorised one)."""
    vectors = embed(ids.clamp(min=0))
    rows, lasts = [], []
    for b in range(ids.shape[0]):
        pieces, last, count = [], [], 0
        for t in range(ids.shape[1]):
            token = int(ids[b, t])
            if bool(mask[b, t]) and token >= 0:
                pieces.append(vectors[b, t: t + 1])
                count += 1
            elif bool(mask[b, t]) and MEDIA[-token - 1] in spans:
                tokens, real = spans[MEDIA[-token - 1]]
                pieces.append(tokens[b][real[b]])
                count += int(real[b].sum())
            last.append(max(count - 1, 0))
        rows.append(torch.cat(pieces) if pieces else vectors.new_zeros(0, vectors.shape[-1]))
        lasts.append(last)
    total = max(r.shape[0] for r in rows)
    embeds, out_mask = vectors.new_zeros(len(rows), total, vectors.shape[-1]), torch.zeros(len(rows), total, dtype=torch.bool)
    last = torch.tensor(lasts)
    for b, row in enumerate(rows):
        start = total - row.shape[0] if left else 0
        embeds[b, start: start + row.shape[0]], out_mask[b, start: start + row.shape[0]] = row, True
        last[b] += start
    return embeds, out_mask, last


def ragged_prompts(seed: int = 0):
    """Six rows of random ids, each with at most one image and one audio placeholder, ragged masks; an
    image span of 4 (one row's last two vectors padding) and an audio span of 3."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (6, 9), generator=g)
    for modality, rows in (("image", [0, 1, 3, 5]), ("audio", [0, 2, 3])):
        for b in rows:
            ids[b, int(torch.randint(0, 9, (), generator=g))] = media_id(modality)
    mask = torch.arange(9)[None] < torch.tensor([9, 7, 1, 4, 0, 8])[:, None]
    image_real = torch.ones(6, 4, dtype=torch.bool)
    image_real[1, 2:] = False
    spans = {"image": (100 + torch.randn(6, 4, 3, generator=g), image_real),
             "audio": (200 + torch.randn(6, 3, 3, generator=g), torch.ones(6, 3, dtype=torch.bool))}
    return ids, mask, spans


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("which", [(), ("video",), ("image",), ("image", "audio")])
def test_the_vectorised_splice_is_the_token_by_token_one(left, which):
    """One scatter puts every vector where the per-token reference does, on ragged rows with spans of
    padded and unpadded media, and none (placeholders vanish); gradients reach the ids' embeddings and the
    spans."""
    ids, mask, spans = ragged_prompts()
    table = torch.randn(50, 3, requires_grad=True)
    embed = lambda x: table[x]  # noqa: E731
    given = {m: spans[m] for m in which if m in spans}
    if "video" in which:  # a span of a modality no prompt places changes nothing
        given["video"] = (torch.zeros(6, 2, 3), torch.ones(6, 2, dtype=torch.bool))
    for a, b in zip(splice(ids, mask, embed, given, left=left), reference_splice(ids, mask, embed, given, left)):
        assert torch.equal(a, b)
    splice(ids, mask, embed, given, left=left)[0].sum().backward()
    assert table.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def lm_folders(shapes_data, tmp_path_factory):
    records = read_manifest(shapes_data / "train.jsonl")
    texts = [r["text"] for r in records] + [r["question"] for r in records]
    root = tmp_path_factory.mktemp("lms")
    return {kind: save_tiny_lm(root / kind, kind, texts) for kind in ("gpt2", "llama")}


def config(data, lm, steps=60, **decoder):
    return {"model": {"fusion": {"type": "late"}, "width": 32, "encoders": {"image": IMAGE},
                      "decoder": {"type": "hf", "path": str(lm), **decoder}},
            "tasks": {"caption": {"type": "caption", "max_length": 20, "prompt": "<image> a picture of"}},
            "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
            "train": {"max_steps": steps, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "log_every": 1,
                      "progress": False, "val_every": 0}}


def batch_of(system, data, n=4):
    task = system.model.tasks["caption"]
    dataset = TaskDataset(read_manifest(data / "train.jsonl")[:n], task.data, system.processors)
    return dataset.collate([dataset[i] for i in range(n)])


def test_logits_are_the_lms_on_the_spliced_sequence(shapes_data, lm_folders):
    system = build_system(from_dict(config(shapes_data, lm_folders["gpt2"]), shapes_data))
    system.model.eval()
    batch = batch_of(system, shapes_data)
    out = system.model.encode(batch["inputs"], fuse=False)
    decoder = system.model.backbone.decoder
    got = decoder.next_logits(out, batch["target"]["ids"], batch["target"]["mask"])
    hf = decoder.lm.model
    for row in range(4):  # by hand: [start] [marker, projected image tokens] prompt answer
        ids = batch["target"]["ids"][row][batch["target"]["mask"][row]]
        image = out.modalities["image"]
        media = torch.cat([decoder.markers["image"][None], decoder.projectors["image"](image.tokens[row])])
        words = hf.get_input_embeddings()(ids[2:])
        sequence = torch.cat([hf.get_input_embeddings()(ids[:1]), media, words])[None]
        expected = hf(inputs_embeds=sequence).logits[0]
        n_media = media.shape[0]
        torch.testing.assert_close(got[row, 0], expected[0], atol=1e-5, rtol=0)  # [start] → the marker's slot
        torch.testing.assert_close(got[row, 1], expected[n_media], atol=1e-5, rtol=0)  # read after the span
        torch.testing.assert_close(got[row, 2: len(ids)], expected[n_media + 1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_generation_with_the_cache_equals_greedy_by_hand(shapes_data, lm_folders, kind):
    system = build_system(from_dict(config(shapes_data, lm_folders[kind]), shapes_data))
    system.model.eval()
    batch = batch_of(system, shapes_data, n=3)
    out = system.model.encode(batch["inputs"], fuse=False)
    decoder, task = system.model.backbone.decoder, system.model.tasks["caption"]
    prompts = [[task.data.tokenizer.cls_id, *p] for p in batch["target"]["prompt"]]
    prompts[1] = prompts[1][:-2]  # prompts of different lengths: left padding
    ids, mask = left_pad(prompts, task.data.tokenizer.pad_id)
    got = generate(lambda r: decoder.start(out, r), ids, mask, GenerationSettings(max_new_tokens=6))
    with torch.no_grad():  # HF's static cache, sized at the prefill for the spliced prompt
        static = generate(lambda r, **o: decoder.start(out, r, **o), ids, mask,
                          GenerationSettings(max_new_tokens=6, cache="static"))
    assert static == got
    for row, prompt in enumerate(prompts):  # no cache: the whole sequence each step
        seq = list(prompt)
        single = type(out)(modalities={m: type(e)(tokens=e.tokens[row:row + 1], mask=e.mask[row:row + 1],
                                                  pooled=e.pooled[row:row + 1]) for m, e in out.modalities.items()},
                           pooled=None)
        for _ in range(6):
            logits = decoder.next_logits(single, torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.bool))
            seq.append(int(logits[0, -1].argmax()))
        assert got[row] == seq[len(prompt):]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_a_tiny_hf_lm_trains_through_the_multimodal_lm_offline(shapes_data, lm_folders, kind, tmp_path,
                                                                monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    train(load_config(write_config(tmp_path, config(shapes_data, lm_folders[kind]))), run)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] / 2
    model = load(run)
    records = read_manifest(shapes_data / "val.jsonl")
    assert set(model.evaluate(records)["caption"]) == {"bleu4", "cider", "exact_match", "n"}
    assert isinstance(model.caption(records[0]["image"]), str)
    images = [r["image"] for r in records[:4]]
    assert model.generate(images=images, cache="static") == model.generate(images=images)


def test_stage_one_trains_the_projector_and_stage_two_lora_only(shapes_data, lm_folders, tmp_path):
    lm = lm_folders["gpt2"]
    stage1 = config(shapes_data, lm, steps=8)
    stage1["train"]["freeze"] = ["backbone.decoder.lm"]
    train(load_config(write_config(tmp_path, stage1, "stage1.yaml")), tmp_path / "one")
    before = transformers.AutoModelForCausalLM.from_pretrained(lm).state_dict()
    after = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    prefix = "backbone.decoder.lm.model."
    assert all(torch.equal(after[prefix + k], v) for k, v in before.items())  # the LM did not move
    fresh = build_system(from_dict(stage1, tmp_path)).model.state_dict()
    assert not torch.equal(after["backbone.decoder.projectors.image.0.weight"],
                           fresh["backbone.decoder.projectors.image.0.weight"])  # the projector did

    stage2 = config(shapes_data, lm, steps=8, lora={"r": 4})
    stage2["train"]["init_from"] = str(tmp_path / "one")
    system = build_system(from_dict(stage2, tmp_path), read_manifest(shapes_data / "train.jsonl"))
    lm_params = dict(system.model.backbone.decoder.lm.named_parameters())
    trainable = [n for n, p in lm_params.items() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(lm_params[n].numel() for n in trainable) < 0.05 * sum(p.numel() for p in lm_params.values())
    train(load_config(write_config(tmp_path, stage2, "stage2.yaml")), tmp_path / "two")
    two = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    projector = "backbone.decoder.projectors.image.0.weight"
    assert not torch.equal(two[projector], after[projector])  # started from stage 1, then trained on
    base = [k for k in two if k.startswith(prefix) and "lora_" not in k and k.endswith("c_attn.base_layer.weight")]
    assert base and all(torch.equal(two[k], before[k.removeprefix(prefix + "base_model.model.")
                                                   .replace(".base_layer", "")]) for k in base)
    record = read_manifest(shapes_data / "val.jsonl")[0]
    stage_two = load(tmp_path / "two")
    assert stage_two.caption(record["image"]) == stage_two.predict("caption", [record])[0]


@pytest.mark.parametrize("decoder,message", [
    ({"type": "hf"}, "model.decoder: missing required key 'path'"),
    ({"type": "hf", "path": "/nonexistent/lm"}, "model.decoder.path: no Hugging Face model folder at /nonexistent/lm"),
    ({"type": "hf", "path": "LM", "architecture": "encoder_decoder"}, "architecture: expected decoder_only"),
    ({"type": "hf", "path": "LM", "lora": {"rank": 4}}, "lora: unknown key 'rank'"),
    ({"type": "hf", "path": "LM", "projector": "conv"}, "projector: expected linear or mlp, got 'conv'"),
])
def test_bad_hf_decoder_settings_are_clear_errors(shapes_data, lm_folders, decoder, message):
    decoder = {k: (str(lm_folders["gpt2"]) if v == "LM" else v) for k, v in decoder.items()}
    spec = config(shapes_data, lm_folders["gpt2"])
    spec["model"]["decoder"] = decoder
    with pytest.raises(ConfigError, match=message):
        build_system(from_dict(spec, shapes_data), read_manifest(shapes_data / "train.jsonl"))


@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("which", [(), ("image", "audio")])
def test_compiled_splice_traces_whole_and_gives_the_eager_vectors(left, which):
    """Under torch.compile the spliced length is L + Σ (S − 1), known when tracing (no data-dependent shape,
    no wait on the data): `fullgraph=True` fails on any graph break; each row's vectors and the vectors
    read at `last` are the eager ones."""
    ids, mask, spans = ragged_prompts()
    spans = {m: spans[m] for m in which}
    table = torch.randn(50, 3)
    embed = lambda x: table[x]  # noqa: E731
    torch._dynamo.reset()
    traced = torch.compile(lambda i, m: splice(i, m, embed, spans, left=left), fullgraph=True, backend="eager")
    (eager, eager_mask, eager_last), (static, static_mask, static_last) = splice(ids, mask, embed, spans, left=left), traced(ids, mask)
    assert static.shape[1] == 9 + sum(t.shape[1] - 1 for t, _ in spans.values()) >= eager.shape[1]
    for b in range(6):
        assert torch.equal(eager[b][eager_mask[b]], static[b][static_mask[b]])
        assert torch.equal(eager[b][eager_last[b][mask[b]]], static[b][static_last[b][mask[b]]])
