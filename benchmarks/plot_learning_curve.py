"""The learning curve of README "Quality on real voices": cross-corpus EER against the number of real
speakers trained on, from ``bench_quality.py`` results (each JSON names its training corpora; the real
speakers are counted from the releases' speakers.tsv beside them, train split only).

    python benchmarks/plot_learning_curve.py --output docs/learning-curve.png bench-quality/run*.json

Prints the points as JSON too. Every run should share everything but the training corpora (steps,
recipe, test corpora): the script refuses a mix of held-out corpora.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys


def real_train_speakers(result: dict, root: str) -> int:
    n = 0
    for corpus in result["trained_on"]:
        if corpus == "synth":
            continue
        with open(os.path.join(root, "corpora", corpus, "speakers.tsv"), newline="", encoding="utf-8") as f:
            n += sum(1 for r in csv.DictReader(f, delimiter="\t") if r["split"] == "train")
    return n


def points(paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        root = os.path.dirname(os.path.abspath(result["model_dir"]))
        cc = result["cross_corpus"]
        out.append({"run": os.path.basename(path), "trained_on": result["trained_on"],
                    "real_speakers": real_train_speakers(result, root),
                    "mean_eer": cc["mean_ours_eer"], "peer_mean_eer": cc["mean_peer_eer"],
                    "per_corpus": {k: v["ours_eer"] for k, v in cc["per_corpus"].items()},
                    "peer_per_corpus": {k: v["peer_eer"] for k, v in cc["per_corpus"].items()},
                    "steps": result["training"]["optimizer_steps"]})
    held = {tuple(sorted(p["per_corpus"])) for p in out}
    if len(held) > 1:
        raise SystemExit(f"plot_learning_curve: the runs hold out different corpora: {sorted(held)}")
    return sorted(out, key=lambda p: p["real_speakers"])


def plot(pts: list[dict], output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["real_speakers"] for p in pts]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    for colour, corpus in zip(colours, pts[0]["per_corpus"], strict=False):
        ax.plot(x, [100 * p["per_corpus"][corpus] for p in pts], "o-", color=colour, lw=1.2, ms=4,
                label=f"{corpus} (peer {100 * pts[0]['peer_per_corpus'][corpus]:.1f}%)")
    ax.plot(x, [100 * p["mean_eer"] for p in pts], "s-", color="black", lw=2.2, ms=6,
            label="mean over held-out corpora")
    ax.axhline(100 * pts[0]["peer_mean_eer"], color="#d62728", ls="--", lw=1.5,
               label=f"peer (Resemblyzer), mean {100 * pts[0]['peer_mean_eer']:.1f}%")
    ax.set_xlabel("real speakers trained on (beside 80 synthetic ones)")
    ax.set_ylabel("EER on corpora never trained on (%)")
    ax.set_title(f"Cross-corpus EER against real training speakers ({pts[0]['steps']:,} steps each)")
    ax.set_xticks(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(output)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", required=True, help="PNG to write")
    ap.add_argument("results", nargs="+", help="bench_quality.py JSON results")
    args = ap.parse_args(argv)
    pts = points(args.results)
    plot(pts, args.output)
    json.dump(pts, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
