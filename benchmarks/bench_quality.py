"""Speaker-verification quality on real voices, side by side with a pretrained peer; prints JSON.

    python benchmarks/bench_quality.py --output bench-quality [--budget-minutes 30] [--train-corpora fotaq,synth]
    python benchmarks/bench_quality.py --output bench-quality --steps 400 --augment none --loss triplet   # a lever

The defaults are the recommended recipe (README, "Quality on real voices"): FOTAQ + synthetic train
speakers, augmentation, triplet + AAM, P x K = 16 x 4 crops of 1.5 s.

1. builds (or reuses, under OUTPUT/corpora) the FOTAQ and Drascula corpora from the Debian packages and
   a synthetic one, and preps the training corpora together (one speaker vocabulary) into OUTPUT/data;
2. trains the recipe (the flags below) into OUTPUT/model, stopping after the epoch that crosses the
   budget (``--steps`` fixes the number of steps instead, for lever-by-lever comparisons);
3. scores fixed, seeded trial lists, each from clips decoded straight out of the corpus archives:
   - ``fotaq_heldout``: the FOTAQ test characters (never trained on);
   - ``drascula_en`` / ``drascula_es``: every Drascula character; cross-corpus unless Drascula is trained on;
   - ``synth_test``: the synthetic test speakers;
   EER, minDCF (p_target 0.01), and sensitivity/specificity at the model's threshold;
4. scores the same trials with Resemblyzer (``requirements-bench.txt``, run in its own interpreter:
   ``--peer-python``, default ``.venv-bench/bin/python``); when it is missing the JSON says so;
5. prints our EER, the peer's and their ratio per list.

The Debian packages (flight-of-the-amazon-queen, drascula, drascula-spanish) are installed by hand
(`apt-get install ...`); without them only the synthetic list is scored.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from speechid.errors import ConfigError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_CLIPS_PER_SPEAKER = 40
TRIALS = 20_000


def log(text: str) -> None:
    print(f"bench_quality: {text}", file=sys.stderr, flush=True)


def build_corpora(root: str, synth_speakers: int) -> dict[str, list[str]]:
    """name -> archives, building what is missing; real corpora are skipped when their package is."""
    from speechid.corpora import drascula, fotaq, synth
    from speechid.corpora.release import write_release

    out = {}
    synth_dir = os.path.join(root, "synth")
    if not glob.glob(os.path.join(synth_dir, "*.tar.gz")):
        log(f"synthesising {synth_speakers} speakers")
        synth.make_corpus(synth_dir, speakers=synth_speakers, clips_per_speaker=12, seed=0)
    out["synth"] = sorted(glob.glob(os.path.join(synth_dir, "*.tar.gz")))
    for name, make in (
        ("fotaq", lambda d: write_release(d, fotaq.RELEASE, fotaq.clips(), seed=0)),
        ("drascula", lambda d: write_release(d, drascula.RELEASE, drascula.clips(), seed=0)),
    ):
        d = os.path.join(root, name)
        if not glob.glob(os.path.join(d, "*.tar.gz")):
            try:
                log(f"building the {name} corpus")
                make(d)
            except ConfigError as e:
                log(f"skipping {name}: {e}")
                continue
        out[name] = sorted(glob.glob(os.path.join(d, "*.tar.gz")))
    return out


def prep(archives: list[str], out: str) -> None:
    if os.path.exists(os.path.join(out, "manifest.json")):
        return
    from speechid.pipelines.prep import run

    log(f"prepping {len(archives)} archives into {out}")
    args = [flag for a in archives for flag in ("--input", a)]
    run([*args, "--output", out, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])


def archive_clips(archive: str, splits: set[str] | None, sample_rate: int) -> tuple[list, list[str]]:
    """(waveforms, speaker labels) of the clips the archive's split TSVs list for ``splits`` (None: all)."""
    from speechid.corpora.release import sample_clips

    tsvs = [f"{s}.tsv" for s in (splits or ("train", "dev", "test"))]
    return sample_clips(archive, tsvs, sample_rate, MAX_CLIPS_PER_SPEAKER, seed=0)


def trial_lists(corpora: dict[str, list[str]], trained: set[str], sample_rate: int) -> dict[str, tuple]:
    lists = {}
    if "fotaq" in corpora:
        lists["fotaq_heldout"] = archive_clips(corpora["fotaq"][0], {"test"}, sample_rate)
    for archive in corpora.get("drascula", []):
        lang = archive.rsplit("-", 1)[-1].split(".")[0]
        splits = {"test"} if "drascula" in trained else None
        lists[f"drascula_{lang}"] = archive_clips(archive, splits, sample_rate)
    lists["synth_test"] = archive_clips(corpora["synth"][0], {"test"}, sample_rate)
    return lists


def score(emb: np.ndarray, labels: list[str], threshold: float) -> dict:
    from speechid.model.evaluation import make_trials, verification_metrics

    pairs, same = make_trials(labels, TRIALS, seed=0)
    d = np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)
    m = verification_metrics(d[same], d[~same], threshold)
    return {
        "eer": round(m["eer"], 4),
        "eer_threshold": round(m["eer_threshold"], 4),
        "min_dcf_0.01": round(m["min_dcf"]["0.01"], 4),
        "threshold": threshold,
        "sensitivity": round(m["sensitivity"], 4),
        "specificity": round(m["specificity"], 4),
        "trials": m["trials"],
        "speakers": len(set(labels)),
        "clips": len(labels),
    }


def peer_embeddings(waves: list[np.ndarray], rate: int, python: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npy")
        np.savez(src, rate=rate, **{f"clip_{i}": w for i, w in enumerate(waves)})
        r = subprocess.run([python, os.path.join(HERE, "peer_resemblyzer.py"), src, dst],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
        return np.load(dst)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--budget-minutes", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=None, help="Fixed optimizer steps (overrides the budget).")
    ap.add_argument("--train-corpora", default="fotaq,synth", help="Comma-separated, of synth, fotaq, drascula.")
    ap.add_argument("--synth-speakers", type=int, default=100)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--batch-speakers", dest="speakers_per_batch", type=int, default=16)
    ap.add_argument("--batch-clips", dest="clips_per_speaker", type=int, default=4)
    ap.add_argument("--crop-seconds", type=float, default=1.5)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--loss", default="triplet+aam", help="triplet, aam or triplet+aam.")
    ap.add_argument("--aam-scale", type=float, default=30.0)
    ap.add_argument("--aam-margin", type=float, default=0.2)
    ap.add_argument("--pooling", default="mean", help="mean, stats (mean and standard deviation) or last.")
    ap.add_argument("--augment", default="standard", help="Training augmentation: none or the trainer's preset name.")
    ap.add_argument("--peer-python", default=os.path.join(os.path.dirname(HERE), ".venv-bench", "bin", "python"))
    ap.add_argument("--model", default=None, help="Score an existing model directory instead of training.")
    args = ap.parse_args(argv)

    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    result: dict = {"recipe": {k: v for k, v in vars(args).items() if k not in ("output", "peer_python")}}
    corpora = build_corpora(os.path.join(out, "corpora"), args.synth_speakers)
    trained = [c for c in args.train_corpora.split(",") if c]
    missing = [c for c in trained if c not in corpora]
    if missing:
        raise SystemExit(f"bench_quality: training corpora {missing} are not available (Debian packages missing?)")

    from speechid.model.encoder import Encoder

    model_dir = args.model
    if model_dir is None:
        from speechid.model.network import NetworkConfig
        from speechid.model.trainer import train

        data_dir = os.path.join(out, "data", "-".join(sorted(trained)))
        prep(sorted(a for c in trained for a in corpora[c]), data_dir)
        model_dir = os.path.join(out, "model-" + time.strftime("%Y%m%d-%H%M%S"))
        steps = args.steps
        epochs = (steps // args.steps_per_epoch) if steps else 10_000
        summary = train(
            data_dir, model_dir, epochs=epochs, steps_per_epoch=args.steps_per_epoch,
            speakers_per_batch=args.speakers_per_batch, clips_per_speaker=args.clips_per_speaker,
            crop_seconds=args.crop_seconds, learning_rate=args.learning_rate, margin=args.margin,
            loss=args.loss, aam_scale=args.aam_scale, aam_margin=args.aam_margin,
            time_budget_s=None if steps else args.budget_minutes * 60, augment=args.augment,
            network=NetworkConfig(pooling=args.pooling), log=log,
        )
        result["training"] = {k: summary[k] for k in ("optimizer_steps", "best_epoch", "best_dev_eer", "wall_s",
                                                      "clips_per_s", "trainable_parameters")}
    enc = Encoder.load(model_dir)
    result["model_dir"] = model_dir
    lists = trial_lists(corpora, set(trained), enc.sample_rate)
    peer_ok = os.path.exists(args.peer_python)
    result["peer"] = "resemblyzer (GE2E, pretrained)" if peer_ok else f"not installed ({args.peer_python})"
    result["lists"] = {}
    for name, (waves, labels) in lists.items():
        ours = score(enc.embed_waveforms(waves), labels, enc.threshold)
        entry = {"ours": ours}
        if peer_ok:
            try:
                theirs = score(peer_embeddings(waves, enc.sample_rate, args.peer_python), labels, enc.threshold)
                entry["peer"] = theirs
                entry["eer_ratio"] = round(ours["eer"] / max(theirs["eer"], 1e-9), 3)
            except RuntimeError as e:
                peer_ok = False
                result["peer"] = f"failed: {e}"
        result["lists"][name] = entry
        log(f"{name}: ours EER {ours['eer']:.3f}" + (f", peer {entry['peer']['eer']:.3f}" if "peer" in entry else ""))
    print(json.dumps(result, indent=2))
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
