"""`polymodal export RUN --format hf --out DIR`: a decoder-only model built from a Hugging Face CLIP vision
encoder and a Hugging Face causal LM, as a `LlavaForConditionalGeneration` folder (weights, config, processor,
chat template) that `transformers` loads, and vLLM or SGLang serve, giving Polymodal's greedy tokens.

How Polymodal's model maps onto LLaVA's:
- vision tower: the CLIP vision transformer itself, read at its last layer with every token (LLaVA's
  `vision_feature_layer: -1`, `vision_feature_select_strategy: full`): what Polymodal's `hf` image encoder
  hands on;
- projector: Polymodal's encoder output projection (to `model.width`) and the first linear layer of its
  `mlp` projector are two linear maps in a row: their product is LLaVA's `linear_1`; the GELU and the second
  layer are LLaVA's `act` and `linear_2`;
- the learned marker vector before each image's tokens becomes a token of its own, `<polymodal:image>`,
  whose embedding row is that vector; the image placeholder `<image>` is another new token; both are
  suppressed in generation (`generation_config.suppress_tokens`), as Polymodal's vocabulary lacks them;
- LoRA adapters (peft) are merged into the weights they adapt.
What does not map (a CNN or SigLIP image encoder, a `linear` projector, several modalities, a media
tokenizer's codes, Polymodal's own decoder) is a clear error naming it.
"""

from __future__ import annotations

import copy
import json
import string
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..api import LoadedModel
from ..errors import PolymodalError
from ..models.hf_decoder import HFLanguageModel
from ..models.multimodal_lm import MultimodalLM
from ..modalities.pretrained import HFImageEncoder
from ..tasks.generative import TextGenerationTask

MARKER, IMAGE = "<polymodal:image>", "<image>"


def _refuse(what: str) -> PolymodalError:
    return PolymodalError(f"--format hf writes a LLaVA model (a Hugging Face CLIP vision encoder, an mlp projector, "
                          f"a Hugging Face causal LM); this run does not map: {what}")


def _merged(module: nn.Module) -> nn.Module:
    """A copy of `module` with any LoRA adapters merged into its weights."""
    module = copy.deepcopy(module)
    return module.merge_and_unload() if hasattr(module, "merge_and_unload") else module


def _parts(model: LoadedModel) -> tuple[str, TextGenerationTask, HFImageEncoder, MultimodalLM, HFLanguageModel]:
    tasks = [(n, t) for n, t in model.system.model.tasks.items() if isinstance(t, TextGenerationTask)]
    if not tasks:
        raise _refuse(f"it has no text-generating task (its tasks: {model.tasks})")
    name, task = tasks[0]
    decoder = task.decoder.module
    if not isinstance(decoder, MultimodalLM):
        raise _refuse(f"task {name!r} decodes with {type(decoder).__name__}, not a decoder-only LM "
                      f"(model.decoder: {{type: hf, path: ...}})")
    if not isinstance(decoder.lm, HFLanguageModel):
        raise _refuse(f"its language model is {type(decoder.lm).__name__}, not a Hugging Face causal LM")
    if decoder.media:
        raise _refuse(f"it reads or writes a tokenizer's codes ({', '.join(decoder.media)})")
    if list(decoder.projectors) != ["image"]:
        raise _refuse(f"it reads {', '.join(decoder.projectors)}; LLaVA reads one image")
    encoder = model.system.model.backbone.encoders["image"]
    if not isinstance(encoder, HFImageEncoder):
        raise _refuse(f"its image encoder is {type(encoder).__name__}, not a Hugging Face one "
                      f"(model.encoders.image: {{type: hf, path: CLIP_FOLDER}})")
    vision = getattr(encoder.model, "base_model", encoder.model)
    kind = type(getattr(vision, "model", vision)).__name__
    if "CLIPVision" not in kind:
        raise _refuse(f"its image encoder is {kind}; LLaVA's reading of the last layer matches a CLIP vision "
                      f"transformer's (SigLIP's normalises its last layer, Polymodal reads it before)")
    projector = decoder.projectors["image"]
    if not (isinstance(projector, nn.Sequential) and len(projector) == 3 and isinstance(projector[1], nn.GELU)
            and projector[1].approximate == "none"):
        raise _refuse("its projector is not mlp (Linear, GELU, Linear): set model.decoder.projector: mlp")
    return name, task, encoder, decoder, decoder.lm


def export_hf(model: LoadedModel, out: str | Path) -> Path:
    """Write the run as a LLaVA folder; returns it."""
    import transformers
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    name, task, encoder, decoder, lm = _parts(model)
    out = Path(out)
    vision = _merged(encoder.model)
    vision = getattr(vision, "vision_model", vision)
    causal = _merged(lm.model)
    hidden = vision.config.hidden_size
    layers = len(vision.encoder.layers)
    vision_config = CLIPVisionConfig(**{**vision.config.to_dict(), "num_hidden_layers": layers})

    # the tokenizer: the LM's own, with the marker and the image placeholder added, and a start token only
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(lm.path), local_files_only=True)
    ours = task.data.tokenizer
    if tokenizer.convert_tokens_to_ids(IMAGE) not in (None, tokenizer.unk_token_id):
        raise _refuse(f"the LM's tokenizer already has {IMAGE}")
    tokenizer.add_special_tokens({"additional_special_tokens": [MARKER, IMAGE]})
    marker_id, image_id = tokenizer.convert_tokens_to_ids(MARKER), tokenizer.convert_tokens_to_ids(IMAGE)
    vocab = max(marker_id, image_id) + 1
    if lm.vocab_size != lm.text_vocab_size or marker_id < lm.text_vocab_size:
        raise _refuse("its language model's vocabulary was grown by Polymodal")
    _start_token_only(tokenizer, ours.cls_id)

    causal.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():  # untied (LLaVA ties only Llama-style names): the output rows of the new tokens are 0
        head = nn.Linear(causal.config.hidden_size, vocab, bias=False)
        head.weight.copy_(causal.get_output_embeddings().weight)
        head.weight[lm.text_vocab_size:] = 0
        embeddings = causal.get_input_embeddings().weight
        embeddings[lm.text_vocab_size:] = 0
        embeddings[marker_id] = decoder.markers["image"].detach()
    text_config = copy.deepcopy(causal.config)
    text_config.tie_word_embeddings = False

    config = LlavaConfig(vision_config=vision_config, text_config=text_config, image_token_index=image_id,
                         projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
                         multimodal_projector_bias=True, image_seq_length=_image_tokens(vision_config),
                         tie_word_embeddings=False)
    llava = LlavaForConditionalGeneration(config).eval()
    tower = llava.model.vision_tower
    getattr(tower, "vision_model", tower).load_state_dict(vision.state_dict())
    llava.model.language_model.load_state_dict(causal.get_decoder().state_dict())
    llava.lm_head.load_state_dict(head.state_dict())
    with torch.no_grad():
        first, second = decoder.projectors["image"][0], decoder.projectors["image"][2]
        proj = encoder.proj
        weight = first.weight if isinstance(proj, nn.Identity) else first.weight @ proj.weight
        bias = first.bias if isinstance(proj, nn.Identity) else first.weight @ proj.bias + first.bias
        target = llava.model.multi_modal_projector
        target.linear_1.weight.copy_(weight)
        target.linear_1.bias.copy_(bias)
        target.linear_2.weight.copy_(second.weight)
        target.linear_2.bias.copy_(second.bias)
    llava.generation_config.suppress_tokens = [marker_id, image_id]
    llava.generation_config.bos_token_id = ours.cls_id
    llava.generation_config.eos_token_id = list(task.generation.stop_ids) or [ours.sep_id]
    llava.generation_config.pad_token_id = ours.pad_id
    llava.generation_config.max_new_tokens = task.generation.max_new_tokens
    out.mkdir(parents=True, exist_ok=True)
    llava.save_pretrained(out)

    image_processor = model.system.processors["image"].hf
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision_config.patch_size, vision_feature_select_strategy="full",
                               num_additional_image_tokens=1, image_token=IMAGE,
                               chat_template=_chat_template(task))
    processor.save_pretrained(out)
    (out / "polymodal.json").write_text(json.dumps({"source": str(model.folder), "task": name,
                                                    "prompt": _prompt(task, "{text}"), "marker_token": MARKER,
                                                    "image_token": IMAGE}, indent=2) + "\n")
    return out


def _image_tokens(vision_config: Any) -> int:
    return (vision_config.image_size // vision_config.patch_size) ** 2 + 1


def _start_token_only(tokenizer: Any, start_id: int | None) -> None:
    """Make the tokenizer add the start token alone (not an end token after the prompt), as Polymodal's
    generation starts: `[start] prompt`."""
    from tokenizers import processors

    backend = tokenizer.backend_tokenizer
    if start_id is None:
        backend.post_processor = None
        return
    token = tokenizer.convert_ids_to_tokens(start_id)
    backend.post_processor = processors.TemplateProcessing(single=f"{token} $A", pair=f"{token} $A $B",
                                                           special_tokens=[(token, start_id)])


def _prompt(task: TextGenerationTask, field: str) -> str:
    """The task's prompt template as LLaVA text: each media placeholder as the marker and `<image>`, its
    question field as `field`; media the template does not place go first, as Polymodal puts them."""
    data = task.data
    pieces = [p for p in data._pieces]
    placed = {p[1:-1] for p in pieces if p.startswith("<") and p.endswith(">")}
    text = "".join(MARKER + IMAGE for m in sorted(data.inputs) if m not in placed and m == "image")
    for piece in pieces:
        if piece.startswith("<") and piece.endswith(">"):
            text += MARKER + IMAGE
        else:
            names = [f for _, f, _, _ in string.Formatter().parse(piece) if f]
            text += piece.format_map({n: field for n in names}) if names else piece
    return text


def _chat_template(task: TextGenerationTask) -> str:
    """A Jinja chat template that renders the last user message's text into the task's prompt (a captioning
    prompt with no question field ignores it)."""
    prompt = _prompt(task, "\x00")
    before, _, after = prompt.partition("\x00")
    question = bool(task.data.prompt_fields)
    parts = ["{%- set ns = namespace(text='') -%}",
             "{%- for message in messages if message['role'] == 'user' -%}",
             "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}",
             "{%- else -%}{%- set ns.text = (message['content'] | selectattr('type', 'equalto', 'text') "
             "| map(attribute='text') | join(' ')) -%}{%- endif -%}",
             "{%- endfor -%}",
             before.replace("{", "{{ '{' }}") + ("{{ ns.text }}" + after if question else "")]
    return "".join(parts)
