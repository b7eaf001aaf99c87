"""Every registered model × compatible task: builds from config, finite loss, every parameter learns."""

import pytest
import torch

from conftest import TINY_ENCODERS
from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
import hf_folders
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.fusion import FUSIONS
from polymodal.tasks import TASKS

TASK_EXTRAS = {"matching": {"inputs": {"image": "image", "text": "text"}},  # does this caption fit the picture?
               "transcription": {"inputs": {"image": "image"}},  # (the shapes data has no sound)
               "ctc": {"inputs": {"image": "image"}},
               "distill": {"teacher": {"type": "hf", "path": str(hf_folders.bert())}}}  # a tiny random BERT
DECODER = {"type": "transformer", "width": 32, "depth": 1, "num_heads": 2, "max_length": 40}
TASK_ENCODERS = {"reconstruction": {**TINY_ENCODERS, "image": {"type": "tokenizer", "image_size": 32, "downsample": 8,
                                                               "channels": [8, 8, 8, 16]}}}
FUSION_EXTRAS = {"early": {"depth": 1, "num_heads": 2}, "cross": {"depth": 1, "num_heads": 2},
                 "coattn": {"depth": 1, "num_heads": 2}, "gated_cross_attention": {"depth": 1, "num_heads": 2},
                 "perceiver": {"depth": 1, "num_heads": 2, "num_latents": 4}}
# every registered fusion, and the two legacy model types (aliases of early and late fusion)
MODEL_KINDS = {**{f"fusion-{f}": {"fusion": {"type": f, **FUSION_EXTRAS.get(f, {})}} for f in FUSIONS},
               "fusion-late-scores": {"fusion": {"type": "late", "combine": "scores"}},
               "fusion-cross-positional": {"fusion": {"type": "cross", "depth": 1, "pooling": "positional"}},
               "dual_encoder": {"type": "dual_encoder"}, "joint_transformer": {"type": "joint_transformer"}}
# a task whose model is a language model alone (the fusion unused): once, not under every fusion
LM_ONLY = {"text_to_image": ("image", "tokenizer_run", "shapes_data", "train.jsonl"),
           "text_to_audio": ("audio", "audio_tokenizer_run", "sound_data", "sound-train.jsonl"),
           "text_to_video": ("video", "video_tokenizer_run", "clip_data", "clip-train.jsonl")}
COMBINATIONS = [(m, t) for m in MODEL_KINDS for t in TASKS if t not in LM_ONLY or m == "fusion-late"]


def drawing(tokenizer_run, modality: str = "image") -> dict:
    """What text to image (sound) builds on: a trained image (sound) tokenizer (its width, 64) and a
    decoder-only LM."""
    return {"width": 64, "encoders": {modality: {"type": "tokenizer", "path": str(tokenizer_run)}},
            "decoder": {**DECODER, "architecture": "decoder_only", "max_length": 288}}


def build(data, model_kind, task_type, encoders=None, manifest="train.jsonl", **model):
    encoders = encoders or TASK_ENCODERS.get(task_type, TINY_ENCODERS)
    config = from_dict({
        "model": {**MODEL_KINDS[model_kind], "width": 32, "encoders": encoders, "tokenizer": {"vocab_size": 200},
                  **model},
        "tasks": {"t": {"type": task_type, **TASK_EXTRAS.get(task_type, {})}},
        "data": {}, "train": {},
    }, data)
    return build_system(config, read_manifest(data / manifest))


@pytest.mark.parametrize("model_kind, task_type", COMBINATIONS)
def test_forward_loss_and_gradients(shapes_data, model_kind, task_type, request):
    if model_kind == "fusion-gated_cross_attention" and task_type == "classification":
        pytest.skip("gated cross-attention reads into the text stream, which an image-only task does not give")
    torch.manual_seed(0)
    needs_space = task_type in ("contrastive", "itm") and model_kind != "dual_encoder"
    generative = "decoder" in TASKS[task_type].needs
    data, manifest, extras = shapes_data, "train.jsonl", {"decoder": DECODER} if generative else {}
    if task_type in LM_ONLY:
        modality, run, data_fixture, manifest = LM_ONLY[task_type]
        extras, data = drawing(request.getfixturevalue(run), modality), request.getfixturevalue(data_fixture)
    system = build(data, model_kind, task_type, manifest=manifest, **({"embed_dim": 16} if needs_space else {}),
                   **extras)
    with torch.no_grad():  # gated cross-attention starts with its gates shut: open them, or nothing flows
        for name, p in system.model.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.5)
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(data / manifest)[:8], task.data, system.processors)
    batch = dataset.collate([dataset[i] for i in range(8)])
    out = system.model({"t": batch})["t"]
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    unused = ["backbone.absent"]  # parameters a task legitimately leaves alone; placeholders: no example lacks one
    if task_type == "contrastive":  # aligned before fusion: the fusion is for the fused tasks
        unused += ["backbone.fusion"]
    else:  # the embedding space is for contrastive tasks
        unused += ["backbone.logit_scale", "backbone.projections"]
    if generative:  # the decoder reads the image's tokens (memory: modalities): no fusion, no text encoder
        unused += ["backbone.fusion", "backbone.encoders.text"]
    if task_type in LM_ONLY:  # the tokenizer is frozen: its codes are the targets
        unused += [f"backbone.encoders.{LM_ONLY[task_type][0]}"]
    if task_type in ("mlm", "masked_modelling", "reconstruction"):  # one encoder's own tokens: no fusion, not
        unused += ["backbone.fusion", "backbone.encoders." + ("image" if task_type == "mlm" else "text")]  # the other
    if task_type == "ctc":  # the frames of the one encoder it reads: no fusion, no other encoder
        unused += ["backbone.fusion", "backbone.encoders.text"]
    if task_type == "distill":  # the text encoder's own vector, mapped into the teacher's width
        unused += ["backbone.fusion", "backbone.encoders.image"]
    if task_type == "classification":  # image only: the text encoder is not run
        unused += ["backbone.encoders.text"]
        if model_kind in ("fusion-cross", "fusion-coattn", "fusion-cross-positional", "fusion-gated_sum"):  # one stream
            unused += [n for n, _ in system.model.named_parameters()
                       if n.startswith("backbone.fusion") and (".text" in n or ".cross." in n or ".ln_c." in n
                                                               or n.startswith("backbone.fusion.co."))]
        if model_kind == "fusion-gated_sum":  # one modality: the softmax gate over one is 1, whatever its logits
            unused += ["backbone.fusion.gate"]
    for name, p in system.model.named_parameters():
        if any(name.startswith(u) for u in unused):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_one_step_of_sgd_lowers_the_loss(shapes_data):
    torch.manual_seed(0)
    system = build(shapes_data, "joint_transformer", "vqa")
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:16], task.data, system.processors)
    batch = dataset.collate([dataset[i] for i in range(16)])
    opt = torch.optim.Adam(system.model.parameters(), lr=1e-3)
    first = system.model({"t": batch})["t"]["loss"]
    for _ in range(20):
        loss = system.model({"t": batch})["t"]["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()


def test_contrastive_needs_an_embedding_space(shapes_data):
    with pytest.raises(ConfigError, match="needs per-modality embeddings.*model.embed_dim"):
        build(shapes_data, "joint_transformer", "contrastive")


def test_joint_embedding_space_has_the_dual_encoders_weight_names(shapes_data):
    """So `train.init_from` carries a CLIP-style space into a joint model (and back)."""
    dual = build(shapes_data, "dual_encoder", "contrastive", embed_dim=16).model.state_dict()
    joint = build(shapes_data, "joint_transformer", "contrastive", embed_dim=16).model.state_dict()
    space = {k: v.shape for k, v in dual.items() if k.startswith(("backbone.projections", "backbone.logit_scale"))}
    assert space and space == {k: joint[k].shape for k in space}
    plain = build(shapes_data, "joint_transformer", "vqa").model.state_dict()
    assert not any(k.startswith("backbone.projections") for k in plain)  # no space unless asked for


def test_identity_projections_start_the_space_at_the_pooled_vectors(shapes_data):
    """`projection_init: identity`: each embedding is the encoder's L2-normalised pooled vector itself."""
    system = build(shapes_data, "dual_encoder", "contrastive", embed_dim=32, projection_init="identity")
    model = system.model.eval()
    records = read_manifest(shapes_data / "val.jsonl")[:4]
    dataset = TaskDataset(records, model.tasks["t"].data, system.processors)
    inputs = dataset.collate([dataset[i] for i in range(len(records))])["inputs"]
    with torch.no_grad():
        out = model.encode(inputs, fuse=False)
    for name, embedding in out.embeddings.items():
        torch.testing.assert_close(embedding, torch.nn.functional.normalize(out.modalities[name].pooled, dim=-1))
    default = build(shapes_data, "dual_encoder", "contrastive", embed_dim=32).model.eval()
    assert not torch.equal(default.backbone.projections["text"].weight, torch.eye(32))
    with pytest.raises(ConfigError, match="model.projection_init: 'identity' needs embed_dim equal to width"):
        build(shapes_data, "dual_encoder", "contrastive", embed_dim=16, projection_init="identity")
    with pytest.raises(ConfigError, match="model.projection_init: expected one of default, identity"):
        build(shapes_data, "dual_encoder", "contrastive", embed_dim=32, projection_init="orthogonal")


def test_vit_image_encoder_composes_too(shapes_data):
    encoders = {**TINY_ENCODERS, "image": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32,
                                           "depth": 1, "num_heads": 2}}
    system = build(shapes_data, "joint_transformer", "vqa", encoders)
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:4], task.data, system.processors)
    batch = dataset.collate([dataset[i] for i in range(4)])
    image = system.model.encode(batch["inputs"]).modalities["image"]
    assert image.tokens.shape == (4, 1 + (32 // 8) ** 2, 32)  # CLS + a 4 × 4 grid of 8 px patches
    system.model({"t": batch})["t"]["loss"].backward()
    vit = system.model.backbone.encoders["image"]
    for name, p in vit.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gru_text_and_positional_pooling_compose(shapes_data):
    torch.manual_seed(0)
    encoders = {**TINY_ENCODERS, "text": {"type": "gru", "width": 16, "max_length": 24}}
    system = build(shapes_data, "joint_transformer", "vqa", encoders, pooling="positional", max_length=96)
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:8], task.data, system.processors)
    out = system.model({"t": dataset.collate([dataset[i] for i in range(8)])})["t"]
    out["loss"].backward()
    for name, p in system.model.named_parameters():
        if not name.startswith("backbone.absent"):  # every example has every modality here
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("alias, fusion", [
    ({"type": "joint_transformer", "depth": 1, "pooling": "positional", "max_length": 96, "embed_dim": 16},
     {"fusion": {"type": "early", "depth": 1, "pooling": "positional", "max_length": 96}, "embed_dim": 16}),
    ({"type": "dual_encoder", "combine": "mean"}, {"fusion": {"type": "late", "combine": "mean"}, "embed_dim": 128}),
])
def test_legacy_model_types_are_the_composition_with_one_fusion(shapes_data, alias, fusion):
    def built(model):
        torch.manual_seed(0)
        config = from_dict({"model": {"width": 32, "encoders": TINY_ENCODERS, "tokenizer": {"vocab_size": 200},
                                      **model}, "tasks": {"t": {"type": "vqa"}}, "data": {}, "train": {}}, shapes_data)
        return build_system(config, read_manifest(shapes_data / "train.jsonl")).model.state_dict()

    old, new = built(alias), built(fusion)
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old)


@pytest.mark.parametrize("model, needle", [
    ({"type": "joint_transformer", "fusion": {"type": "early"}}, "model.fusion: model.type 'joint_transformer' "
                                                                   "already chooses the fusion"),
    ({"fusion": {"type": "blend"}}, "model.fusion.type: expected one of early, late, gated_sum, cross, coattn, "
                                    "gated_cross_attention, perceiver, got 'blend'"),
    ({}, "model.fusion.type: expected one of"),
    ({"fusion": {"type": "early", "pooling": "max"}}, "model.fusion.pooling: expected 'cls' or 'positional'"),
    ({"fusion": {"type": "early", "depht": 2}}, "model.fusion: unknown key 'depht'; allowed keys: depth"),
    ({"type": "joint_transformer", "combine": "mean"}, "model: unknown key 'combine' for model.type "
                                                        "'joint_transformer'; allowed keys:"),
    ({"fusion": {"type": "early"}, "depth": 2}, "model: unknown key 'depth'; allowed keys: decoder, "
                                                "embed_dim, encoders, fusion, init_temperature, projection_init, "
                                                "tokenizer, width (a "
                                                "fusion's settings go under model.fusion)"),
])
def test_model_config_errors_name_the_key(shapes_data, model, needle):
    config = from_dict({"model": {"width": 32, "encoders": TINY_ENCODERS, "tokenizer": {"vocab_size": 200}, **model},
                        "tasks": {"t": {"type": "vqa"}}, "data": {}, "train": {}}, shapes_data)
    with pytest.raises(ConfigError) as error:
        build_system(config, read_manifest(shapes_data / "train.jsonl"))
    assert needle in str(error.value)


@pytest.mark.parametrize("frame, needle", [
    ({"type": "mlp"}, "model.encoders.video.frame.type: expected one of cnn, vit, got 'mlp'"),
    ({"type": "cnn", "chanels": [8]}, "model.encoders.video.frame: unknown key 'chanels'"),
    ({"type": "cnn", "channels": [6]}, "model.encoders.video.frame: groups=8 does not divide channels=6"),
    ("cnn", "model.encoders.video.frame: expected a mapping with a type, got 'cnn'"),
])
def test_a_video_encoders_frame_encoder_is_checked_where_it_is_configured(shapes_data, frame, needle):
    encoders = {"video": {"type": "frames", "image_size": 16, "num_frames": 2, "frame": frame}}
    config = from_dict({"model": {"width": 16, "fusion": {"type": "late"}, "encoders": encoders},
                        "tasks": {"t": {"type": "classification", "inputs": {"video": "video"}}},
                        "data": {}, "train": {}}, shapes_data)
    with pytest.raises(ConfigError) as error:
        build_system(config, [{"id": "a", "video": "a.mp4", "label": "x"}])
    assert needle in str(error.value)
