"""bench_quality's leave-corpus-out bookkeeping, without training: corpora split by corpus, trial lists that a
later run reads back unchanged, and the headline summary per held-out corpus."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "bench_quality", os.path.join(HERE, "..", "..", "benchmarks", "bench_quality.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_a_corpus_is_trained_on_or_tested_never_both(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--output", "x", "--train-corpora", "fotaq,drascula", "--test-corpora", "drascula"])
    assert "drascula: a corpus is either trained on or tested" in capsys.readouterr().err
    args = bench.parse_args(["--output", "x"])
    assert not set(args.train) & set(args.test) and len(args.test) >= 3


def test_lists_put_held_out_corpora_first_one_per_drascula_cast():
    corpora = {"drascula": ["c/drascula-en.tar.gz", "c/drascula-es.tar.gz"], "klettres": ["k/klettres-cs.tar.gz",
               "k/klettres-de.tar.gz"], "fotaq": ["f/fotaq-en.tar.gz"]}
    lists = bench.trial_lists(corpora, ["fotaq"], ["drascula", "klettres", "asterisk"])
    assert [(x["list"], x["kind"].split(" ")[0]) for x in lists] == [
        ("drascula_en", "cross-corpus"), ("drascula_es", "cross-corpus"), ("klettres", "cross-corpus"),
        ("fotaq_heldout", "in-domain")]
    assert lists[2]["archives"] == corpora["klettres"] and lists[2]["tsvs"] == ["train.tsv", "dev.tsv", "test.tsv"]
    assert lists[3]["tsvs"] == ["test.tsv"]


def test_trials_are_written_once_and_read_back(tmp_path):
    labels = [s for s in "abcd" for _ in range(5)]
    names = [f"{s}{k}.flac" for s in "abcd" for k in range(5)]
    path = str(tmp_path / "trials" / "l.tsv")
    pairs, same = bench.trials_for(path, labels, names)
    assert same.sum() == (~same).sum() > 0
    order = np.random.default_rng(0).permutation(len(names))  # another run may sample in another order
    again, same2 = bench.trials_for(path, [labels[i] for i in order], [names[i] for i in order])
    assert [(names[order[a]], names[order[b]]) for a, b in again] == [(names[a], names[b]) for a, b in pairs]
    assert (same2 == same).all()
    with pytest.raises(SystemExit, match="no longer has"):
        bench.trials_for(path, labels[:-1], names[:-1])


def test_summary_means_per_corpus_then_over_corpora():
    def entry(corpus, ours, peer, kind="cross-corpus"):
        return {"corpus": corpus, "kind": kind, "list": corpus, "ours": {"eer": ours}, "peer": {"eer": peer}}

    entries = {"de": entry("drascula", 0.30, 0.20), "ds": entry("drascula", 0.20, 0.20),
               "k": entry("klettres", 0.10, 0.10), "f": entry("fotaq", 0.05, 0.5, "in-domain")}
    s = bench.summarise(entries, ["drascula", "klettres", "asterisk"])
    assert s["per_corpus"]["drascula"] == {"lists": ["drascula", "drascula"], "ours_eer": 0.25, "peer_eer": 0.2,
                                           "eer_ratio": 1.25}
    assert s["mean_ours_eer"] == 0.175 and s["mean_peer_eer"] == 0.15 and s["worst_corpus_ratio"] == 1.25
    assert "asterisk" not in s["per_corpus"]
