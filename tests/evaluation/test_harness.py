"""The evaluation harness asks each task for its predictions batch by batch (`Task.predict(model, inputs)`),
so a task that predicts in a loop (generation) plugs in, and scores them with the task's metrics."""


from conftest import tiny_config, write_config
from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.evaluation.harness import evaluate


def test_the_harness_scores_what_the_tasks_predict_hook_returns(shapes_data, tmp_path):
    config = tiny_config(shapes_data, "vqa")
    config["tasks"] = {"shape": {"type": "classification", "hidden": 0}}
    config = load_config(write_config(tmp_path, config))
    records = read_manifest(shapes_data / "val.jsonl", log=lambda _: None)
    system = build_system(config, records)
    task = system.model.tasks["shape"]
    batches = []

    def always_square(model, inputs):  # a task's own loop over the model would go here
        batches.append(inputs["image"]["data"].shape[0])
        assert model is system.model and not model.training
        return ["square"] * inputs["image"]["data"].shape[0]

    task.predict = always_square
    result = evaluate(system, records, batch_size=10)["shape"]
    assert batches == [10, 10, 10, 2]
    assert result == {"accuracy": sum(r["label"] == "square" for r in records) / len(records), "n": 32.0}


def test_drop_removes_the_modality_from_every_record_a_task_reads(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa")))
    records = read_manifest(shapes_data / "val.jsonl", log=lambda _: None)
    system = build_system(config, records)
    task = system.model.tasks["vqa"]
    seen = []

    def record_inputs(model, inputs):
        seen.append({m: sorted(part) for m, part in inputs.items()})
        return ["yes"] * inputs["text"]["data"].shape[0]

    task.predict = record_inputs
    assert evaluate(system, records, batch_size=32, drop=("image",))["vqa"]["n"] == 32  # VQA can do without
    assert seen == [{"image": ["present"], "text": ["data", "mask"]}]  # no image data: the placeholder
    seen.clear()
    evaluate(system, records, batch_size=32)
    assert seen == [{"image": ["data"], "text": ["data", "mask"]}]
    assert evaluate(system, records, drop=("text",)) == {}  # without its question VQA has no record left
    seen.clear()
    assert evaluate(system, records, batch_size=32, tasks=()) == {} and seen == []  # only the tasks asked for
    assert set(evaluate(system, records, batch_size=32, tasks=("vqa",))) == {"vqa"} and len(seen) == 1
