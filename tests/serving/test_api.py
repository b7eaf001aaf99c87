"""Each endpoint against the Python API as the oracle: what the server answers is what `polymodal.load(run)`
gives for the same inputs; streaming gives the same text as a plain completion; the official `openai`
client works against it."""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from polymodal.serving.search import build_index
from polymodal.data.manifest import read_manifest
from polymodal.serving import ServeSettings, create_app
from polymodal.serving.search import SearchIndex
from serving.conftest import first_record, make_app, png_uri


@pytest.fixture(scope="module")
def client(served):
    with TestClient(make_app(served)) as c:
        yield c


def _chat(client, model, content, **extra):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                      **extra})


def test_a_caption_comes_as_the_message_and_streams_the_same_text(client, served, shapes_data):
    image = first_record(shapes_data)["image"]
    expected = served["caption"].model.caption(image)
    plain = _chat(client, "caption", [{"type": "image_url", "image_url": {"url": png_uri(image)}}])
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert body["usage"]["completion_tokens"] >= 1
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    streamed = _chat(client, "caption", [{"type": "image_url", "image_url": {"url": png_uri(image)}}], stream=True,
                     stream_options={"include_usage": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in streamed.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected
    assert chunks[-1]["usage"] == body["usage"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == body["choices"][0]["finish_reason"]


def test_max_tokens_and_stop_cut_the_text(client, served, shapes_data):
    image = png_uri(first_record(shapes_data)["image"])
    full = _chat(client, "caption", [{"type": "image_url", "image_url": {"url": image}}], max_tokens=20).json()
    short = _chat(client, "caption", [{"type": "image_url", "image_url": {"url": image}}], max_tokens=2).json()
    assert short["usage"]["completion_tokens"] == 2 and short["choices"][0]["finish_reason"] == "length"
    text = full["choices"][0]["message"]["content"]
    assert text.startswith(short["choices"][0]["message"]["content"])
    if len(text) > 2:
        stop = text[1:3]
        cut = _chat(client, "caption", [{"type": "image_url", "image_url": {"url": image}}], max_tokens=20,
                    stop=[stop]).json()
        assert cut["choices"][0]["message"]["content"] == text[: text.find(stop)]
        assert cut["choices"][0]["finish_reason"] == "stop"


def test_a_vqa_classifier_answers_as_the_python_api_does(client, served, shapes_data):
    record = json.loads((shapes_data / "test.jsonl").read_text().splitlines()[0])
    image = str(shapes_data / record["image"])
    for question in ("what color is the circle?", record["question"]):
        expected = served["vqa"].model.answer(image, question)
        got = _chat(client, "vqa", [{"type": "image_url", "image_url": {"url": png_uri(image)}},
                                    {"type": "text", "text": question}])
        assert got.status_code == 200, got.text
        assert got.json()["choices"][0]["message"]["content"] == expected


def test_embeddings_equal_the_python_api_as_floats_and_base64(client, served, shapes_data):
    images = [first_record(shapes_data, s)["image"] for s in ("train", "val", "test")]
    texts = ["a red circle", "a blue square on the left"]
    expected = served["clip"].model.embed(images=images, texts=texts)
    items = [*texts, *({"type": "image_url", "image_url": {"url": png_uri(p)}} for p in images)]
    got = client.post("/v1/embeddings", json={"model": "clip", "input": items}).json()
    vectors = np.array([d["embedding"] for d in got["data"]])
    assert [d["index"] for d in got["data"]] == list(range(5))
    np.testing.assert_allclose(vectors[:2], expected["text"].numpy(), atol=1e-5)
    np.testing.assert_allclose(vectors[2:], expected["image"].numpy(), atol=1e-5)
    packed = client.post("/v1/embeddings", json={"model": "clip", "input": items, "encoding_format": "base64"}).json()
    unpacked = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]])
    np.testing.assert_array_equal(unpacked, vectors.astype(np.float32))
    tokenizer = served["clip"].model.system.processors["text"].tokenizer
    assert got["usage"]["prompt_tokens"] == sum(len(tokenizer.ids(t)) for t in texts)
    infinity_style = client.post("/v1/embeddings", json={"model": "clip", "input": [
        {"modality": "image", "data": png_uri(images[0])}]}).json()
    np.testing.assert_allclose(infinity_style["data"][0]["embedding"], expected["image"][0].numpy(), atol=1e-5)


def test_classify_and_rerank_agree_with_the_python_api(client, served, shapes_data):
    image = first_record(shapes_data)["image"]
    top = served["classes"].model.classify(image, top_k=3)
    got = client.post("/v1/classify", json={"model": "classes", "top_k": 3,
                                            "input": [{"type": "image_url", "image_url": {"url": png_uri(image)}}]})
    assert got.status_code == 200, got.text
    row = got.json()["data"][0]
    assert row["label"] == top[0][0]
    assert [t["label"] for t in row["top"]] == [label for label, _ in top]
    np.testing.assert_allclose([t["score"] for t in row["top"]], [p for _, p in top], atol=1e-5)

    documents = ["a red circle", "a green triangle on the right", "a blue square"]
    emb = served["clip"].model.embed(images=[image], texts=documents)
    scores = (emb["text"] @ emb["image"][0]).numpy()
    ranked = client.post("/v1/rerank", json={"model": "clip", "query": {"type": "image_url", "image_url": {"url": png_uri(image)}},
                                             "documents": documents, "top_n": 2, "return_documents": True}).json()
    assert [r["index"] for r in ranked["results"]] == list(np.argsort(-scores)[:2])
    np.testing.assert_allclose([r["relevance_score"] for r in ranked["results"]], np.sort(scores)[::-1][:2], atol=1e-5)
    assert ranked["results"][0]["document"] == {"text": documents[ranked["results"][0]["index"]]}


def test_search_finds_a_record_by_its_own_image_and_matches_brute_force(served, serve_runs, shapes_data, tmp_path):
    records = read_manifest(shapes_data / "test.jsonl")
    model = served["clip"].model
    folder = build_index(model, records, tmp_path / "index", log=lambda _: None)
    index = SearchIndex(folder)
    assert index.meta["kind"] == "exact" and index.meta["count"] == len(records)
    app = create_app([served["clip"]], ServeSettings(), {"shapes": index})
    with TestClient(app) as client:
        got = client.post("/v1/search", json={"query": {"type": "image_url", "image_url": {"url": png_uri(records[3]["image"])}},
                                              "top_k": 5}).json()
        assert got["data"][0]["id"] == records[3]["id"]
        assert got["data"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        emb = model.embed(images=[r["image"] for r in records], texts=["a red circle"])
        brute = (emb["image"] @ emb["text"][0]).numpy()
        by_text = client.post("/v1/search", json={"query": "a red circle", "top_k": 5}).json()
        assert [h["id"] for h in by_text["data"]] == [records[i]["id"] for i in np.argsort(-brute)[:5]]
        assert by_text["data"][0]["record"]["text"] == records[int(np.argmax(brute))]["text"]


def test_images_and_sounds_are_the_python_api_draws(client, served):
    prompt = "a red circle"
    expected = served["draw"].model.generate_image(prompt, n=2, seed=7)
    got = client.post("/v1/images/generations", json={"model": "draw", "prompt": prompt, "n": 2, "seed": 7})
    assert got.status_code == 200, got.text
    drawn = [np.array(Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))) for d in got.json()["data"]]
    for mine, theirs in zip(drawn, expected):
        np.testing.assert_array_equal(mine, np.array(theirs))
    waves, rate = served["sound"].model.generate_audio("a high beep", n=1, seed=3)
    sound = client.post("/v1/audio/generations", json={"model": "sound", "prompt": "a high beep", "seed": 3}).json()
    with wave.open(io.BytesIO(base64.b64decode(sound["data"][0]["b64_json"]))) as w:
        assert w.getframerate() == rate
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32767
    np.testing.assert_allclose(pcm, np.clip(waves[0], -1, 1), atol=1 / 32767 + 1e-6)


def test_the_official_openai_client_gets_chat_streams_embeddings_and_images(client, served, shapes_data):
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    image = first_record(shapes_data)["image"]
    content = [{"type": "image_url", "image_url": {"url": png_uri(image)}}]
    expected = served["caption"].model.caption(image)
    answer = ai.chat.completions.create(model="caption", messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content == expected
    stream = ai.chat.completions.create(model="caption", messages=[{"role": "user", "content": content}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == expected
    vectors = ai.embeddings.create(model="clip", input=["a red circle", "a blue square"])  # base64 by default
    np.testing.assert_allclose([d.embedding for d in vectors.data],
                               served["clip"].model.embed(texts=["a red circle", "a blue square"])["text"].numpy(),
                               atol=1e-5)
    drawn = ai.images.generate(model="draw", prompt="a red circle", n=1, extra_body={"seed": 7})
    assert np.array_equal(np.array(Image.open(io.BytesIO(base64.b64decode(drawn.data[0].b64_json)))),
                          np.array(served["draw"].model.generate_image("a red circle", n=1, seed=7)[0]))
    assert {m.id for m in ai.models.list()} == set(served)
    with pytest.raises(openai.NotFoundError):
        ai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_models_health_and_metrics(client, served):
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards["caption"]["capabilities"] == ["chat"]
    assert cards["clip"]["capabilities"] == ["embeddings", "rerank", "search"]
    assert cards["draw"]["capabilities"] == ["images"] and cards["sound"]["capabilities"] == ["audio"]
    assert cards["classes"]["capabilities"] == ["classify"]
    assert client.get("/health").json()["status"] == "ok"
    before = client.get("/metrics").text
    client.post("/v1/embeddings", json={"model": "clip", "input": "a red circle"})
    client.post("/v1/embeddings", json={"model": "clip", "input": 5})
    after = client.get("/metrics").text

    def value(text, line):
        found = [l for l in text.splitlines() if l.startswith(line + " ")]
        return float(found[0].split()[-1]) if found else 0.0

    ok = 'polymodal_requests_total{endpoint="/v1/embeddings",status="200"}'
    bad = 'polymodal_requests_total{endpoint="/v1/embeddings",status="400"}'
    assert value(after, ok) == value(before, ok) + 1 and value(after, bad) == value(before, bad) + 1
    assert "polymodal_batch_size_bucket" in after and "polymodal_queue_depth" in after
