"""Speaker-verification quality on corpora the model never trained on, beside a pretrained peer; prints JSON.

    python benchmarks/bench_quality.py --output bench-quality                  # the recommended recipe
    python benchmarks/bench_quality.py --output bench-quality --steps 2000 --utterance-norm   # one lever

Leave-corpus-out: training and test corpora are disjoint *by corpus*, not only by speaker. Held-out
speakers of a training corpus share its microphones, rooms and mixing; users' voices do not, so the
headline counts only corpora left out of training.

1. builds (or reuses, under OUTPUT/corpora) every corpus whose Debian package is installed, with its
   ``speechid corpus`` recipe and seed 0, and the synthetic one; preps the training corpora together (one
   speaker vocabulary) into OUTPUT/data/<names>;
2. trains the recipe (the flags below) into OUTPUT/model-<time>; the checkpoint is chosen by the trainer on
   the dev speakers of the training corpora (several corpora, none of them tested), never on a test corpus;
   ``--steps`` fixes the optimizer steps (lever-by-lever comparisons), else ``--budget-minutes`` bounds it;
3. scores fixed trial lists of clips decoded straight out of the release archives (at most 40 clips a
   speaker, seeded; 20,000 balanced trials a list). The first run writes each list's trials to
   OUTPUT/trials/<list>.tsv (clip_a, clip_b, same); later runs read them back and score the same trials:
   - cross-corpus (the headline): every speaker of each test corpus, one list per corpus (Drascula one per
     cast, since each language is another cast);
   - in-domain (second, labelled so): the test speakers of each training corpus;
4. scores the same trials with Resemblyzer (``requirements-bench.txt``, in its own interpreter:
   ``--peer-python``, default ``.venv-bench/bin/python``); its embeddings are cached beside the trials;
5. prints per list and per held-out corpus our EER, the peer's and their ratio, and the mean over held-out
   corpora, as JSON (also written to OUTPUT/quality.json).

Corpora and their packages (install by hand, ``apt-get install ...``): fotaq (flight-of-the-amazon-queen),
drascula (drascula drascula-spanish drascula-italian), bass (beneath-a-steel-sky), asterisk
(asterisk-core-sounds-{en,es,fr,it,ru}-wav asterisk-prompt-it-menardi-wav), klettres (klettres-data),
ktuberling (ktuberling-data); synth needs nothing. ``klettres+uncredited`` and ``ktuberling+uncredited`` take
every language folder no credit covers as one voice (``speechid corpus ktuberling --uncredited``).
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from speechid.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_CLIPS_PER_SPEAKER = 40
TRIALS = 20_000
DEFAULT_TRAIN = "fotaq,bass,ktuberling,synth"
DEFAULT_TEST = "drascula,asterisk,klettres"
PER_ARCHIVE = {"drascula"}  # one trial list per archive: each language is another cast


def log(text: str) -> None:
    print(f"bench_quality: {text}", file=sys.stderr, flush=True)


def build_corpora(root: str, names: list[str], synth_speakers: int) -> dict[str, list[str]]:
    """name -> archives, building what is missing; a corpus whose package is missing is left out (logged)."""
    from speechid.corpora import recipes, synth
    from speechid.corpora.release import write_release

    out = {}
    for name in names:
        base, _, option = name.partition("+")
        if base != "synth" and base not in recipes.RECIPES or option not in ("", "uncredited"):
            raise SystemExit(f"bench_quality: unknown corpus {name!r}; choose from synth, {', '.join(recipes.RECIPES)}")
        d = os.path.join(root, name)
        if not glob.glob(os.path.join(d, "*.tar.gz")):
            log(f"building the {name} corpus")
            if name == "synth":
                synth.make_corpus(d, speakers=synth_speakers, clips_per_speaker=12, seed=0)
            else:
                try:
                    src = recipes.source(base, uncredited=True) if option else recipes.source(base)
                except ConfigError as e:
                    log(f"leaving out {name}: {e}")
                    continue
                write_release(d, src.release, src.clips, seed=0, sources=src.paths, caveat=src.caveat)
        out[name] = sorted(glob.glob(os.path.join(d, "*.tar.gz")))
    return out


def prep(archives: list[str], out: str) -> None:
    if os.path.exists(os.path.join(out, "manifest.json")):
        return
    from speechid.pipelines.prep import run

    log(f"prepping {len(archives)} archives into {out}")
    args = [flag for a in archives for flag in ("--input", a)]
    run([*args, "--output", out, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])


def trial_lists(corpora: dict[str, list[str]], train: list[str], test: list[str]) -> list[dict]:
    """The lists to score: (name, kind, archives, split TSVs) per list; cross-corpus first."""
    lists = []
    for name in test:
        archives = corpora.get(name, [])
        groups = [[a] for a in archives] if name in PER_ARCHIVE else ([archives] if archives else [])
        for group in groups:
            suffix = "_" + group[0].rsplit("-", 1)[-1].split(".")[0] if name in PER_ARCHIVE else ""
            lists.append({"list": f"{name}{suffix}", "corpus": name, "kind": "cross-corpus", "archives": group,
                          "tsvs": ["train.tsv", "dev.tsv", "test.tsv"]})
    for name in train:
        if name in corpora:
            lists.append({"list": f"{name}_heldout", "corpus": name, "kind": "in-domain (held-out speakers of a "
                          "training corpus)", "archives": corpora[name], "tsvs": ["test.tsv"]})
    return lists


def load_clips(spec: dict, sample_rate: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    from speechid.corpora.release import sample_clips

    waves, labels, names = [], [], []
    for archive in spec["archives"]:
        w, lab, n = sample_clips(archive, spec["tsvs"], sample_rate, MAX_CLIPS_PER_SPEAKER, seed=0)
        waves += w
        labels += lab
        names += n
    return waves, labels, names


def trials_for(path: str, labels: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The list's trials: read from ``path`` when a run wrote it, else drawn (seeded) and written there."""
    from speechid.model.evaluation import make_trials

    index = {n: i for i, n in enumerate(names)}
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        missing = [r for r in rows if r["clip_a"] not in index or r["clip_b"] not in index]
        if missing:
            raise SystemExit(f"bench_quality: {path}: {len(missing)} trials name clips this corpus no longer has; "
                             "remove the file to draw new trials")
        pairs = np.array([[index[r["clip_a"]], index[r["clip_b"]]] for r in rows], np.int64)
        return pairs, np.array([r["same"] == "1" for r in rows])
    pairs, same = make_trials(labels, TRIALS, seed=0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["clip_a", "clip_b", "same"])
        w.writerows((names[a], names[b], int(s)) for (a, b), s in zip(pairs, same, strict=True))
    return pairs, same


def score(emb: np.ndarray, pairs: np.ndarray, same: np.ndarray, threshold: float, labels: list[str]) -> dict:
    from speechid.model.evaluation import verification_metrics

    d = np.linalg.norm(emb[pairs[:, 0]] - emb[pairs[:, 1]], axis=1)
    m = verification_metrics(d[same], d[~same], threshold)
    return {
        "eer": round(m["eer"], 4),
        "min_dcf_0.01": round(m["min_dcf"]["0.01"], 4),
        "threshold": threshold,
        "sensitivity": round(m["sensitivity"], 4),
        "specificity": round(m["specificity"], 4),
        "trials": m["trials"],
        "speakers": len(set(labels)),
        "clips": len(labels),
    }


def peer_embeddings(waves: list[np.ndarray], names: list[str], rate: int, python: str, cache_dir: str) -> np.ndarray:
    """Resemblyzer's embeddings of the clips, cached by the clips' names and rate (its weights are fixed)."""
    key = hashlib.sha256("\n".join([str(rate), *names]).encode()).hexdigest()[:16]
    cached = os.path.join(cache_dir, f"{key}.npy")
    if os.path.exists(cached):
        return np.load(cached)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npy")
        np.savez(src, rate=rate, **{f"clip_{i}": w for i, w in enumerate(waves)})
        r = subprocess.run([python, os.path.join(HERE, "peer_resemblyzer.py"), src, dst],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
        emb = np.load(dst)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(cached, emb)
    return emb


def train_model(args, corpora: dict[str, list[str]], train: list[str], out: str) -> tuple[str, dict]:
    from speechid.model.network import NetworkConfig
    from speechid.model.trainer import train as run_train

    data_dir = os.path.join(out, "data", "-".join(sorted(train)))
    prep(sorted(a for c in train for a in corpora[c]), data_dir)
    model_dir = os.path.join(out, "model-" + time.strftime("%Y%m%d-%H%M%S"))
    steps = args.steps
    summary = run_train(
        data_dir, model_dir, epochs=(steps // args.steps_per_epoch) if steps else 10_000,
        steps_per_epoch=args.steps_per_epoch, speakers_per_batch=args.speakers_per_batch,
        clips_per_speaker=args.clips_per_speaker, crop_seconds=args.crop_seconds, learning_rate=args.learning_rate,
        margin=args.margin, loss=args.loss, aam_scale=args.aam_scale, aam_margin=args.aam_margin,
        time_budget_s=None if steps else args.budget_minutes * 60, augment=args.augment,
        speed_perturb=tuple(float(x) for x in args.speed_perturb.split(",") if x),
        network=NetworkConfig(pooling=args.pooling, utterance_norm=args.utterance_norm), log=log,
    )
    keys = ("optimizer_steps", "best_epoch", "best_dev_eer", "wall_s", "clips_per_s", "trainable_parameters")
    return model_dir, {k: summary[k] for k in keys}


def summarise(entries: dict, test: list[str]) -> dict:
    """Per held-out corpus: the mean of its lists' EERs (ours, the peer's, their ratio); then the mean of those."""
    corpora = {}
    for name in test:
        rows = [e for e in entries.values() if e["corpus"] == name and e["kind"] == "cross-corpus"]
        if not rows:
            continue
        ours = float(np.mean([e["ours"]["eer"] for e in rows]))
        row = {"lists": [e["list"] for e in rows], "ours_eer": round(ours, 4)}
        if all("peer" in e for e in rows):
            peer = float(np.mean([e["peer"]["eer"] for e in rows]))
            row.update(peer_eer=round(peer, 4), eer_ratio=round(ours / max(peer, 1e-9), 3))
        corpora[name] = row
    out = {"per_corpus": corpora}
    if corpora:
        out["mean_ours_eer"] = round(float(np.mean([c["ours_eer"] for c in corpora.values()])), 4)
        if all("peer_eer" in c for c in corpora.values()):
            out["mean_peer_eer"] = round(float(np.mean([c["peer_eer"] for c in corpora.values()])), 4)
            out["mean_eer_ratio"] = round(out["mean_ours_eer"] / max(out["mean_peer_eer"], 1e-9), 3)
            out["worst_corpus_ratio"] = max(c["eer_ratio"] for c in corpora.values())
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True)
    ap.add_argument("--budget-minutes", type=float, default=50.0, help="Training wall time (without --steps).")
    ap.add_argument("--steps", type=int, default=None, help="Fixed optimizer steps (overrides the budget).")
    ap.add_argument("--train-corpora", default=DEFAULT_TRAIN,
                    help="Comma-separated, of synth, fotaq, bass, drascula, asterisk, klettres, ktuberling.")
    ap.add_argument("--test-corpora", default=DEFAULT_TEST, help="Held out of training: the headline lists.")
    ap.add_argument("--synth-speakers", type=int, default=100)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--batch-speakers", dest="speakers_per_batch", type=int, default=16)
    ap.add_argument("--batch-clips", dest="clips_per_speaker", type=int, default=4)
    ap.add_argument("--crop-seconds", type=float, default=1.5)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--loss", default="triplet+aam", help="triplet, aam or triplet+aam.")
    ap.add_argument("--aam-scale", type=float, default=30.0)
    ap.add_argument("--aam-margin", type=float, default=0.2)
    ap.add_argument("--pooling", default="mean", help="mean, stats (mean and standard deviation) or last.")
    ap.add_argument("--utterance-norm", action="store_true", help="Subtract each clip's mean log-mel.")
    ap.add_argument("--speed-perturb", default="", help="Comma-separated speeds (e.g. 0.9,1.1): each training "
                    "speaker played at each speed is one more speaker.")
    ap.add_argument("--augment", default="standard", help="Training augmentation: none or the trainer's preset name.")
    ap.add_argument("--peer-python", default=os.path.join(os.path.dirname(HERE), ".venv-bench", "bin", "python"))
    ap.add_argument("--model", default=None, help="Score an existing model directory instead of training.")
    args = ap.parse_args(argv)
    args.train = [c for c in args.train_corpora.split(",") if c]
    args.test = [c for c in args.test_corpora.split(",") if c]
    both = sorted(set(args.train) & set(args.test))
    if both:
        ap.error(f"{', '.join(both)}: a corpus is either trained on or tested, never both")
    return args


def _import_everything_now() -> None:
    """Import every module a run uses before it starts: a run takes tens of minutes, and a module first
    imported at its end (the export, the scoring) would otherwise be whatever the working tree holds then."""
    import importlib

    for name in ("speechid.model.trainer", "speechid.model.export", "speechid.model.calibration",
                 "speechid.model.encoder", "speechid.model.evaluation", "speechid.corpora.release",
                 "speechid.corpora.recipes", "speechid.pipelines.prep", "speechid.operating_points"):
        importlib.import_module(name)


def main(argv=None) -> dict:
    args = parse_args(argv)
    _import_everything_now()
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    skip = ("output", "peer_python", "train", "test")
    result: dict = {"recipe": {k: v for k, v in vars(args).items() if k not in skip}}
    corpora = build_corpora(os.path.join(out, "corpora"), args.train + args.test, args.synth_speakers)
    train = [c for c in args.train if c in corpora]
    result["trained_on"], result["held_out"] = train, [c for c in args.test if c in corpora]
    result["left_out_not_installed"] = [c for c in args.train + args.test if c not in corpora]
    if not train:
        raise SystemExit("bench_quality: no training corpus is available")

    from speechid.model.encoder import Encoder

    model_dir = args.model
    if model_dir is None:
        model_dir, result["training"] = train_model(args, corpora, train, out)
        result["checkpoint_chosen_on"] = f"dev speakers of the training corpora ({', '.join(train)})"
    enc = Encoder.load(model_dir)
    result["model_dir"] = model_dir
    peer_ok = os.path.exists(args.peer_python)
    result["peer"] = "resemblyzer (GE2E, pretrained)" if peer_ok else f"not installed ({args.peer_python})"
    entries = {}
    for spec in trial_lists(corpora, train, result["held_out"]):
        waves, labels, names = load_clips(spec, enc.sample_rate)
        if len(set(labels)) < 2:
            log(f"{spec['list']}: {len(set(labels))} speaker(s), no trials to score")
            continue
        pairs, same = trials_for(os.path.join(out, "trials", f"{spec['list']}.tsv"), labels, names)
        entry = {k: spec[k] for k in ("list", "corpus", "kind")}
        entry["ours"] = score(enc.embed_waveforms(waves), pairs, same, enc.threshold, labels)
        if peer_ok:
            try:
                emb = peer_embeddings(waves, names, enc.sample_rate, args.peer_python, os.path.join(out, "peer"))
                entry["peer"] = score(emb, pairs, same, enc.threshold, labels)
                entry["eer_ratio"] = round(entry["ours"]["eer"] / max(entry["peer"]["eer"], 1e-9), 3)
            except RuntimeError as e:
                peer_ok = False
                result["peer"] = f"failed: {e}"
        entries[spec["list"]] = entry
        log(f"{spec['list']} ({spec['kind'].split(' ')[0]}): ours EER {entry['ours']['eer']:.3f}"
            + (f", peer {entry['peer']['eer']:.3f}" if "peer" in entry else ""))
    result["cross_corpus"] = summarise(entries, result["held_out"])
    result["lists"] = entries
    print(json.dumps(result, indent=2))
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
