"""The README's command chain on a tiny corpus, each step a real `speechid` subprocess, checked by the
files and figures it writes (not only exit codes)."""

import glob
import json
import os
import subprocess
import sys
import tarfile

import pyarrow.parquet as pq
import pytest

from speechid.config import THRESHOLD
from speechid.operating_points import OperatingPoints
from speechid.truth import read_truth


def speechid(*args, timeout=600):
    r = subprocess.run([sys.executable, "-m", "speechid", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, f"speechid {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    w = tmp_path_factory.mktemp("chain")
    out = {"w": w}
    out["synth"] = speechid("synth", w / "corpus", "--speakers", 24, "--clips-per-speaker", 4, "--aliases", 2,
                            "--plant-faults", "--seed", 3)
    out["prep"] = speechid("prep", "--input", w / "corpus" / "cv-corpus-synth-en.tar.gz", "--output", w / "data")
    out["train"] = speechid("train", "--data", w / "data", "--model-dir", w / "model", "--epochs", 2,
                            "--steps-per-epoch", 2, "--batch-speakers", 4, "--batch-clips", 2,
                            "--crop-seconds", 1.0)
    out["evaluate"] = speechid("evaluate", "--model", w / "model", "--data", w / "data", "--split", "test",
                               "--trials", 100, "--output", w / "eval")
    out["embed"] = speechid("embed", "--model", w / "model", "--input", w / "data", "--output", w / "emb")
    out["index"] = speechid("index", "--embeddings", w / "emb", "--output", w / "index")
    out["dedup"] = speechid("dedup", "--index", w / "index", "--output", w / "dedup", "--truth",
                            w / "corpus" / "aliases.tsv")
    with tarfile.open(w / "corpus" / "cv-corpus-synth-en.tar.gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("common_voice_en_20300000.mp3"))
        (w / "q.mp3").write_bytes(tar.extractfile(member).read())
    out["query"] = speechid("query", "--index", w / "index", "--model", w / "model", w / "q.mp3", "-k", 3, "--by",
                            "speaker", "--json")
    out["compare"] = speechid("compare", "--model", w / "model", w / "q.mp3", w / "q.mp3")
    return out


def test_prep_outputs_reconcile_and_name_every_planted_fault(chain):
    w = chain["w"]
    manifest = json.loads((w / "data" / "manifest.json").read_text())
    assert manifest["reconciliation"]["balanced"] is True
    planted = dict(line.split("\t") for line in (w / "corpus" / "faults.tsv").read_text().splitlines()[1:])
    expected = {r for r in planted.values() if r != "ok_converted"}
    assert expected <= set(manifest["failures"])
    for split in ("train", "dev", "test"):
        assert glob.glob(str(w / "data" / f"{split}-*.tfrecord.gz"))
    assert (w / "data" / "transform_fn").is_dir()


def test_model_directory_describes_itself(chain):
    w = chain["w"]
    config = json.loads((w / "model" / "config.json").read_text())
    # the default threshold is the seed's operating point measured on dev speakers at export (0.83 without them)
    ops = config.get("operating_points")
    assert config["threshold"] == (OperatingPoints.from_dict(ops).threshold if ops else THRESHOLD)
    assert config["sample_rate"] == 16_000 and config["model_id"]
    metrics = json.loads((w / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and 0 < metrics["trials"] <= 100  # capped by the pairs 2 speakers have
    assert {"sensitivity", "specificity", "min_dcf", "frr_at_target_far"} <= set(metrics)
    pngs = {os.path.basename(p) for p in glob.glob(str(w / "eval" / "*.png"))}
    assert len(pngs) >= 3, pngs
    assert chain["compare"].strip().splitlines()[-1].split()[-1] == "same"  # a clip against itself


def test_embeddings_index_dedup_and_query(chain):
    w = chain["w"]
    emb = json.loads((w / "emb" / "manifest.json").read_text())
    prep = json.loads((w / "data" / "manifest.json").read_text())
    assert emb["clips_written"] == sum(prep["records"].values()) and emb["reconciles"]
    table = pq.read_table(sorted(glob.glob(str(w / "emb" / "part-*.parquet"))))
    assert table.num_rows == emb["clips_written"]
    meta = json.loads((w / "index" / "meta.json").read_text())
    assert meta["count"] == table.num_rows and meta["kind"] == "flat"
    summary = json.loads((w / "dedup" / "summary.json").read_text())
    # the index carries the model's operating points (found through the embeddings' manifest), and dedup
    # decides at the model's default threshold, which lives in config.json
    model_config = json.loads((w / "model" / "config.json").read_text())
    assert meta["operating_points"] == model_config.get("operating_points")
    assert summary["threshold"] == model_config["threshold"] and "scores" in summary
    assert (w / "dedup" / "summary.txt").read_text().strip()
    truth = read_truth(w / "corpus" / "aliases.tsv")
    result = json.loads(chain["query"])
    matches = result[0]["matches"] if isinstance(result, list) else result["results"][0]["matches"]
    assert len(matches) == 3
    assert all(m["speaker_id"] in truth for m in matches)
    assert all(m["verdict"] in ("same", "different") for m in matches)
