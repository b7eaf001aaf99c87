"""Properties of whole models over any batch (hypothesis): padding never changes what real tokens give,
and any split of a batch gives the same loss."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_ENCODERS, tiny_config, write_config
from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.data.media import write_audio
from polymodal.modalities.audio.encoders import ConvAudioEncoder
from polymodal.modalities.audio.processor import AudioProcessor

WORDS = ["what", "color", "is", "the", "circle", "square", "red", "blue", "how", "many", "shapes", "left", "of",
         "zebra", "?"]
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
question = st.lists(st.sampled_from(WORDS), min_size=1, max_size=14).map(" ".join)

VARIANTS = {
    "transformer-cls": {},
    "gru-positional": {"pooling": "positional", "positions": "learned",
                       "encoders": {**TINY_ENCODERS, "text": {"type": "gru", "width": 32, "max_length": 24}}},
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def system(request, shapes_data, tmp_path_factory):
    config = tiny_config(shapes_data, "vqa")
    config["model"].update(VARIANTS[request.param])
    config = load_config(write_config(tmp_path_factory.mktemp("cfg"), config))
    records = read_manifest(config.data.train, log=lambda _: None)
    built = build_system(config, records)
    built.model.eval()
    return built, records


def batch_of(system, records):
    built, _ = system
    dataset = TaskDataset(records, built.model.tasks["vqa"].data, built.processors)
    return dataset.collate([dataset[i] for i in range(len(records))])


@SETTINGS
@given(questions=st.lists(question, min_size=2, max_size=6), first=st.integers(0, 40))
def test_padding_never_changes_the_outputs_of_real_tokens(system, questions, first):
    built, records = system
    asked = [{**records[first + i], "question": q} for i, q in enumerate(questions)]
    with torch.no_grad():
        together = built.model.encode(batch_of(system, asked)["inputs"])
        for i, record in enumerate(asked):
            alone = built.model.encode(batch_of(system, [record])["inputs"])
            torch.testing.assert_close(together.pooled[i], alone.pooled[0], atol=2e-5, rtol=1e-4)
            text, text_alone = together.modalities["text"], alone.modalities["text"]
            torch.testing.assert_close(text.tokens[i][text.mask[i]], text_alone.tokens[0][text_alone.mask[0]],
                                       atol=2e-5, rtol=1e-4)
            fused, fused_alone = together.fused, alone.fused
            torch.testing.assert_close(fused.tokens[i][fused.mask[i]], fused_alone.tokens[0][fused_alone.mask[0]],
                                       atol=2e-5, rtol=1e-4)


@SETTINGS
@given(data=st.data())
def test_any_split_of_a_batch_gives_the_same_loss(system, data):
    built, records = system
    size = data.draw(st.integers(2, 12))
    picks = data.draw(st.lists(st.integers(0, len(records) - 1), min_size=size, max_size=size))
    unseen = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
    # an answer never seen in training is left out of the loss: the splits must weigh by what counts
    asked = [{**records[p], "answer": "purple" if u else records[p]["answer"]} for p, u in zip(picks, unseen)]
    if all(unseen):
        asked[0]["answer"] = records[picks[0]]["answer"]
    cuts = sorted(data.draw(st.sets(st.integers(1, size - 1), max_size=3)))
    task = built.model.tasks["vqa"]
    with torch.no_grad():
        def loss_and_count(part):
            batch = batch_of(system, part)
            counted = int((batch["target"] != -100).sum())
            return task(built.model.encode(batch["inputs"]), batch["target"])["loss"].item(), counted

        whole, total = loss_and_count(asked)
        parts = [loss_and_count(asked[a:b]) for a, b in zip([0, *cuts], [*cuts, size])]
    weighted = sum(loss * n for loss, n in parts if n) / total
    assert weighted == pytest.approx(whole, rel=1e-4, abs=1e-5)


@settings(max_examples=10, deadline=None)
@given(seconds=st.lists(st.floats(0.05, 0.9), min_size=2, max_size=4), seed=st.integers(0, 1000))
def test_audio_of_any_length_is_zero_padded_and_encoded_as_if_alone(seconds, seed):
    rate, duration = 8000, 0.5
    processor = AudioProcessor(sample_rate=rate, duration=duration, cache_mb=0)
    torch.manual_seed(0)
    encoder = ConvAudioEncoder(out_dim=8, sample_rate=rate, duration=duration, n_mels=16).eval()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        waves, paths = [], []
        for i, s in enumerate(seconds):
            wave = np.clip(0.3 * rng.standard_normal((1, int(s * rate))), -0.99, 0.99).astype(np.float32)
            paths.append(write_audio(Path(tmp) / f"{i}.wav", wave, rate))
            waves.append(wave[0])
        inputs = [processor(p) for p in paths]
    length = int(duration * rate)
    for wave, x in zip(waves, inputs):
        expected = np.zeros(length, dtype=np.float32)
        expected[:min(length, len(wave))] = wave[:length]
        np.testing.assert_allclose(x.numpy(), expected, atol=1 / 2**15)  # 16-bit WAV: one step of quantisation
    with torch.no_grad():
        together = encoder(torch.stack(inputs))
        for i, x in enumerate(inputs):
            alone = encoder(x[None])
            torch.testing.assert_close(together.tokens[i], alone.tokens[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(together.pooled[i], alone.pooled[0], atol=1e-5, rtol=1e-4)
