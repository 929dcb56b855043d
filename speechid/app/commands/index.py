"""``speechid index``, ``speechid dedup`` and ``speechid query``: validate paths, forward to indexing.

    speechid index --embeddings embeddings/cv-en --output index/cv-en [--model models/cv-en] [--kind ...]
    speechid dedup --index index/cv-en --output dedup/cv-en [--threshold 0.83] [--level clip|speaker|both]
    speechid query --index index/cv-en --model models/cv-en who.mp3 [-k 5] [--by clip|speaker] [--json]

Thresholds: the index carries the model's operating points (config.json's block, read by the model's one
reader, ``speechid.model.model_dir``); ``--threshold`` / ``--merge-threshold`` override them for one run.
"""

from __future__ import annotations

import json
import os
import sys

import click

from speechid import outputs
from speechid.app.commands import THRESHOLD, format_table
from speechid.embedding_table import SHORT_ID, short_id
from speechid.model.model_dir import operating_points, read_config
from speechid.truth import read_clip_truth, read_truth

_DIR = click.Path(exists=True, file_okay=False, dir_okay=True)
_OUT = click.Path(file_okay=False, dir_okay=True, writable=True)


def _embeddings_model(embeddings: str) -> str | None:
    """The model directory `speechid embed` recorded in the embeddings' manifest.json, if it still exists."""
    try:
        with open(os.path.join(embeddings, "manifest.json"), encoding="utf-8") as f:
            model = json.load(f).get("model")
    except (OSError, ValueError):
        return None
    return model if isinstance(model, str) and os.path.exists(os.path.join(model, "config.json")) else None


@click.command("index")
@click.option("--embeddings", required=True, type=_DIR, help="Directory of part-*.parquet from `speechid embed`.")
@click.option("--output", required=True, type=_OUT, help="Index directory to write (replaced if it is an index).")
@click.option("--model", "model_dir", type=_DIR, default=None,
              show_default="the one named in the embeddings' manifest",
              help="Model whose operating points the index carries.")
@click.option("--kind", type=click.Choice(["auto", "flat", "ivf", "hnsw"]), default="auto", show_default=True,
              help="auto: exact up to 200k vectors, IVF-Flat above.")
@click.option("--metric", type=click.Choice(["l2", "ip"]), default="l2", show_default=True,
              help="FAISS metric; results are Euclidean either way.")
@click.option("--threshold", type=THRESHOLD, default=None, show_default="the model's default operating point",
              help="Euclidean 'same person' threshold for this index.")
@click.option("--nlist", type=int, default=None, show_default="~4 sqrt(N)", help="IVF cells.")
@click.option("--nprobe", type=int, default=None, show_default="~1% of cells, >= 16",
              help="IVF cells scanned per query.")
def index(embeddings, output, model_dir, kind, metric, threshold, nlist, nprobe):
    """Build a FAISS index over an embeddings directory (every embedding of --embeddings into --output)."""
    from speechid.indexing import build_index

    ops, model_id = None, None
    model_dir = model_dir or _embeddings_model(embeddings)
    outputs.check_apart(output, [embeddings] + ([model_dir] if model_dir else []))  # replacing it would delete them
    if model_dir:
        config = read_config(model_dir)
        ops, model_id = operating_points(config, model_dir), config.get("model_id")
    click.echo(str(build_index(embeddings, output, kind=kind, metric=metric, operating_points=ops,
                               operating_points_model_id=model_id, threshold=threshold, nlist=nlist,
                               nprobe=nprobe)))


@click.command("dedup")
@click.option("--index", "index_dir", required=True, type=_DIR, help="Index directory (`speechid index`).")
@click.option("--output", required=True, type=_OUT, help="Directory for the Parquet tables and summary.")
@click.option("--threshold", type=THRESHOLD, default=None,
              show_default="the index's: the model's default operating point",
              help="Clip-level Euclidean threshold.")
@click.option("--merge-threshold", type=THRESHOLD, default=None,
              show_default="the model's speaker-level point for each pair's clip counts",
              help="Speaker-level threshold for client_id merges: a separation, the distance between two ids' "
                   "mean voices in standard errors (about 1 for one voice under two ids).")
@click.option("--mislabel-threshold", type=THRESHOLD, default=None,
              show_default="the model's speaker-level FRR 0.1% point for one clip",
              help="Flag a clip whose separation from the rest of its client_id's clips is at or over this "
                   "(about 1 for the id's own voice).")
@click.option("--level", type=click.Choice(["clip", "speaker", "both"]), default="both", show_default=True,
              help="Clip clusters and mislabelled clips, client_id merges, or both.")
@click.option("--truth", type=click.Path(exists=True, dir_okay=False), default=None,
              help="aliases.tsv (client_id, true_speaker[, clip]) to score merges, clusters and mislabel flags.")
@click.option("--max-neighbors", type=int, default=None, show_default="1000", help="Neighbours kept per clip.")
@click.option("--nprobe", type=int, default=None, show_default="the index's",
              help="IVF cells scanned by the range search.")
def dedup(index_dir, output, threshold, merge_threshold, mislabel_threshold, level, truth, max_neighbors, nprobe):
    """Find client_ids that are one voice and clips filed under the wrong one."""
    from speechid.indexing import dedup as run_dedup
    from speechid.indexing.dedup import DEFAULT_MAX_NEIGHBORS, SUMMARY_TXT

    outputs.check_apart(output, [index_dir] + ([truth] if truth else []))  # replacing it would delete them
    truth_map = read_truth(truth) if truth else None
    clip_truth = read_clip_truth(truth) if truth else None
    if max_neighbors is not None and max_neighbors < 1:
        raise click.BadParameter("must be at least 1", param_hint="--max-neighbors")
    result = run_dedup(index_dir, output, threshold=threshold, merge_threshold=merge_threshold,
                       mislabel_threshold=mislabel_threshold, level=level, truth=truth_map, clip_truth=clip_truth,
                       max_neighbors=max_neighbors or DEFAULT_MAX_NEIGHBORS, nprobe=nprobe)
    with open(os.path.join(result.output_dir, SUMMARY_TXT), encoding="utf-8") as f:
        click.echo(f.read(), nl=False)


@click.command("query")
@click.option("--index", "index_dir", required=True, type=_DIR, help="Index directory (`speechid index`).")
@click.option("--model", "model_dir", required=True, type=_DIR, help="Model directory the index was embedded with.")
@click.argument("clips", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-k", type=click.IntRange(min=1), default=5, show_default=True, help="Neighbours per clip.")
@click.option("--by", type=click.Choice(["clip", "speaker"]), default="clip", show_default=True)
@click.option("--threshold", type=THRESHOLD, default=None, show_default="the index's",
              help="Euclidean threshold (--by speaker: to the centroid, instead of the speaker-level decision).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of text (always full ids).")
@click.option("--full-ids", is_flag=True,
              help=f"Print whole speaker ids instead of their first {SHORT_ID} characters.")
def query(index_dir, model_dir, clips, k, by, threshold, as_json, full_ids):
    """Nearest clips or speakers of each CLIP, with Euclidean distance and same/different verdict."""
    from speechid.indexing import SpeakerIndex
    from speechid.indexing.store import check_model_id, read_meta

    meta = read_meta(index_dir)
    # Refuse a model of another model_id before importing TensorFlow and loading weights (seconds);
    # query_file checks the loaded encoder again.
    check_model_id(meta["model_id"], read_config(model_dir)["model_id"], index_dir)
    import speechid

    encoder = speechid.Encoder.load(model_dir)
    failed: dict[str, str] = {}  # a file that cannot be used is reported on its own line; the others are answered
    results = SpeakerIndex.load(index_dir).query_file(clips, encoder, k=k, by=by, threshold=threshold, failed=failed)
    if as_json:
        click.echo(json.dumps({"index": index_dir, "model_id": meta["model_id"],
                               "results": [r.to_dict() for r in results],
                               "failed": [{"file": f, "error": why} for f, why in failed.items()]}, indent=2))
    else:
        _print_results(results, by, full_ids)
    for why in failed.values():
        click.echo(f"speechid query: error: {why}", err=True)
    if failed:
        sys.exit(2)  # bad input, as compare does; the good clips were answered above


def _print_results(results, by: str, full_ids: bool) -> None:
    for r in results:
        by_separation = any(getattr(m, "separation", None) is not None for m in r.matches)
        stat = "separation" if by_separation else "Euclidean distance"
        click.echo(f"{r.query}  (nearest {by}s; {stat}, same person below {r.threshold:.3f}: "
                   f"{r.meaning or 'given, not calibrated'})")
        rows = [(m.rank, (m.speaker_id or "-") if full_ids else short_id(m.speaker_id),
                 m.clip_id if by == "clip" else m.n_clips, f"{m.distance:.4f}",
                 *((f"{m.separation:.3f}",) if by_separation else ()),
                 m.verdict + (" (the query's own audio: this clip or a copy of it)"
                              if getattr(m, "identical", False) else "")) for m in r.matches]
        head = ("rank", "speaker_id", "clip_id" if by == "clip" else "clips", "distance",
                *(("separation",) if by_separation else ()), "verdict")
        right = (0, 3) if by == "clip" else (0, 2, 3, 4) if by_separation else (0, 2, 3)
        click.echo("\n".join(format_table(head, rows, right=right, indent="  ")))
