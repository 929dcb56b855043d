"""train -> evaluate end to end on the tiny corpus, and the three commands as a user runs them."""

import inspect
import json
import os

import numpy as np
import pytest

import speechid
from speechid.app.cli import main
from speechid.audio import encode
from speechid.model.evaluation import evaluate

from .conftest import voice


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        main(list(map(str, args)))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_evaluate_writes_metrics_and_pictures(tiny_model, tiny_data, tmp_path):
    model_dir, _ = tiny_model
    out_dir = tmp_path / "eval"
    logged = []
    metrics = evaluate(
        model_dir, tiny_data, split="test", trials=1000, seed=2, output_dir=str(out_dir), log=logged.append
    )
    # test split: 4 speakers x 4 clips -> 4 * 6 same pairs, and as many different pairs.
    assert metrics["same_trials"] == metrics["different_trials"] == 24
    assert metrics["speakers"] == 4 and metrics["clips"] == 16 and metrics["split"] == "test"
    assert 0.0 <= metrics["eer"] <= 1.0 and set(metrics["min_dcf"]) == {"0.01", "0.05"}
    for key in ("sensitivity", "specificity", "frr_at_target_far", "threshold_at_target_far", "threshold"):
        assert key in metrics
    for name in ("metrics.json", "boxplot.png", "det.png", "histograms.png"):
        assert (out_dir / name).stat().st_size > 0
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["eer"] == metrics["eer"]  # the model directory keeps its last evaluation
    assert logged and "EER" in logged[0]
    again = evaluate(model_dir, tiny_data, split="test", trials=1000, seed=2, output_dir=str(out_dir), log=lambda m: 0)
    assert again["eer"] == metrics["eer"]  # seeded


def _clips(tmp_path):
    paths = []
    for name, spk, seed in (("a1", 1, 1), ("a2", 1, 2), ("b", 6, 1)):
        path = tmp_path / f"{name}.wav"
        path.write_bytes(encode(voice(spk, 2.0, seed=seed), 16_000, "WAV"))
        paths.append(path)
    return paths


def test_compare_prints_an_aligned_table_of_every_pair(tiny_model, tmp_path, capsys):
    paths = _clips(tmp_path)
    code, out, err = run(capsys, "compare", "--model", tiny_model[0], *paths)
    assert code == 0, err
    head, columns, *rows = out.strip().splitlines()
    enc = speechid.Encoder.load(tiny_model[0])
    assert head.startswith(f"Euclidean distance; same person below {enc.threshold:.3f} (")
    assert columns.split() == ["a", "b", "distance", "verdict"] and len(rows) == 3
    assert len({line.index(" distance") + len(" distance") for line in [columns]} |
               {row.index(row.split()[2]) + len(row.split()[2]) for row in rows}) == 1  # distances right-aligned
    emb = enc.embed(paths)
    for row, (i, j) in zip(rows, [(0, 1), (0, 2), (1, 2)], strict=True):
        d = float(np.linalg.norm(emb[i] - emb[j]))
        assert row.split() == [str(paths[i]), str(paths[j]), f"{d:.4f}", "same" if d < enc.threshold else "different"]
    code, out, _ = run(capsys, "compare", "--model", tiny_model[0], "--threshold", "10", paths[0], paths[2])
    assert code == 0 and out.strip().splitlines()[-1].split()[-1] == "same"


def test_compare_reports_a_bad_file_and_still_compares_the_others(tiny_model, tmp_path, capsys):
    paths = _clips(tmp_path)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00garbage" * 100)
    code, out, err = run(capsys, "compare", "--model", tiny_model[0], paths[0], bad, paths[1], paths[2])
    assert code == 2
    assert err.strip().splitlines() == [f"speechid compare: error: {bad}: corrupt (format not recognised)"]
    rows = out.strip().splitlines()[2:]
    assert [r.split()[:2] for r in rows] == [[str(a), str(b)] for a, b in
                                            [(paths[0], paths[1]), (paths[0], paths[2]), (paths[1], paths[2])]]
    code, out, err = run(capsys, "compare", "--json", "--model", tiny_model[0], paths[0], bad, paths[1])
    doc = json.loads(out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert doc["distance"] == "euclidean" and doc["threshold"] == speechid.Encoder.load(tiny_model[0]).threshold
    assert [(p["a"], p["b"]) for p in doc["pairs"]] == [(str(paths[0]), str(paths[1]))]
    assert doc["pairs"][0]["verdict"] in ("same", "different")
    assert doc["pairs"][0]["explanation"].startswith(doc["pairs"][0]["verdict"] + ": ")
    assert doc["failed"] == [{"file": str(bad), "error": f"{bad}: corrupt (format not recognised)"}]


def test_commands_fail_in_one_line(tiny_model, tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00garbage" * 100)
    good = tmp_path / "good.wav"
    good.write_bytes(encode(voice(1, 1.5, seed=1), 16_000, "WAV"))
    cases = [
        ("compare", "--model", tiny_model[0], good, bad),
        ("compare", "--model", tiny_model[0], good),
        ("compare", "--model", tmp_path, good, good),
        ("train", "--data", tmp_path, "--model-dir", tmp_path / "m"),
        ("train", "--data", tmp_path / "missing", "--model-dir", tmp_path / "m"),
        ("evaluate", "--model", tiny_model[0], "--data", tiny_data, "--split", "nope"),
    ]
    for args in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_compare_gives_no_verdict_without_speech(tiny_model, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    silent.write_bytes(encode(np.zeros(32_000, np.float32), 16_000, "WAV"))
    code, out, err = run(capsys, "compare", "--model", tiny_model[0], silent, silent)
    assert code == 2 and out == "" and "Same person" not in err
    assert len(err.strip().splitlines()) == 1 and f"{silent}: no_speech" in err, err


def test_train_command_forwards_only_given_options(tiny_data, tmp_path, capsys, monkeypatch):
    import speechid.model.trainer as trainer

    seen = {}

    def fake_train(data_dir, model_dir, **kwargs):
        seen.update(kwargs, data_dir=data_dir, model_dir=model_dir)
        return {"model_id": "x", "best_dev_eer": 0.1, "best_epoch": 1, "wall_s": 1.0}

    monkeypatch.setattr(trainer, "train", fake_train)
    code, out, err = run(
        capsys,
        "train",
        "--data",
        tiny_data,
        "--model-dir",
        tmp_path / "m",
        "--epochs",
        3,
        "--crop-seconds",
        1.5,
        "--resume",
        "--speed-perturb",
        "0.9,1.1",
        "--utterance-norm",
    )
    assert code == 0, err
    assert seen["epochs"] == 3 and seen["crop_seconds"] == 1.5 and seen["resume"] is True
    assert seen["speed_perturb"] == (0.9, 1.1) and seen["network"].utterance_norm and seen["network"].pooling == "mean"
    assert "learning_rate" not in seen and "speakers_per_batch" not in seen  # the library's defaults apply
    assert "best dev EER 10.00%" in out


def _has_default(param) -> bool:
    """A value click would use when the option is not given (click 8.2+ marks "none" with a sentinel)."""
    return isinstance(param.default, (int, float, str)) and not isinstance(param.default, bool)


def test_help_defaults_match_the_library():
    from speechid.app.commands import model as commands
    from speechid.model.evaluation import evaluate as evaluate_fn
    from speechid.model.trainer import train as train_fn

    for command, fn in ((commands.train, train_fn), (commands.evaluate, evaluate_fn)):
        defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()}
        for param in command.params:
            if param.name in defaults and _has_default(param):
                assert param.show_default is True, (command.name, param.name)  # shown one way: click's
                assert param.default == defaults[param.name], (command.name, param.name)


def test_every_default_is_shown_by_click():
    """No default written into a help text ("[30]", "(default ...)"): click's show_default shows each one."""
    import re

    from speechid.app.cli import COMMANDS, LazyGroup, cli

    group = LazyGroup()
    for name in ("synth", "corpus", "train", "evaluate", "compare", "calibrate", "index", "dedup", "query"):
        command = group.get_command(None, name)
        commands = list(command.commands.values()) if hasattr(command, "commands") else [command]
        for c in commands:
            for param in c.params:
                text = getattr(param, "help", None) or ""
                assert not re.search(r"\[[^\]]*\]\s*$|\(default|\[default", text), (name, param.name, text)
                if _has_default(param) and not getattr(param, "is_flag", False):
                    assert param.show_default, (name, param.name)
    assert cli and COMMANDS


@pytest.mark.parametrize("name", ["train", "evaluate", "compare"])
def test_commands_are_listed(name, capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and name in out


def test_evaluate_refuses_a_users_folder_and_replaces_its_own(tiny_model, tiny_data, tmp_path):
    from speechid.errors import OutputError
    from tests.conftest import tree_digest

    model_dir, _ = tiny_model
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.json").write_text("my own numbers")
    before = tree_digest(str(tmp_path))
    with pytest.raises(OutputError, match="not written by"):
        evaluate(model_dir, tiny_data, split="test", trials=100, output_dir=str(tmp_path / "mine"), log=lambda m: 0)
    assert tree_digest(str(tmp_path)) == before
    out = tmp_path / "eval"
    for _ in range(2):  # the second run replaces its own output
        evaluate(model_dir, tiny_data, split="test", trials=100, output_dir=str(out), log=lambda m: 0)
    assert sorted(os.listdir(out)) == [".speechid.json", "boxplot.png", "det.png", "histograms.png", "metrics.json"]
