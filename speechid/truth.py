"""The ground-truth file: ``aliases.tsv`` beside a release (``speechid synth``, ``speechid corpus``), that
``speechid dedup --truth`` scores against. This is its one reader.

A header row, then:

* one ``client_id<TAB>true_speaker`` row per client_id (the voice behind it: two ids of one voice are an
  alias, which client_id merges should find);
* with a third column ``clip`` (the clip's path as the release's TSVs give it, which is the ``clip_id`` of
  the embeddings and of the index), one row per clip filed under a client_id that is not its voice's
  (``--plant-mislabels``): ``client_id`` is the id it is filed under, ``true_speaker`` the voice it is.
  Rows of client_ids leave that column empty, and a two-column file (no mislabelled clips) stays valid.

Read as the release's TSVs are (``csv.QUOTE_NONE``), and with or without a UTF-8 byte-order mark, as
spreadsheet programs save it.
"""

from __future__ import annotations

import csv

from speechid.errors import ConfigError

TRUTH_COLUMNS = ("client_id", "true_speaker")
CLIP_COLUMN = "clip"


def _rows(aliases_tsv: str) -> list[dict]:
    try:
        with open(aliases_tsv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not set(TRUTH_COLUMNS) <= set(reader.fieldnames or ()):
                raise ConfigError(f"{aliases_tsv}: not a truth file: expected a header row with the tab-separated "
                                  f"columns {', '.join(TRUTH_COLUMNS)}")
            return list(reader)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{aliases_tsv}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_truth(aliases_tsv: str) -> dict[str, str]:
    """client_id -> true speaker, from the client_id rows (clip rows are left out: ``read_clip_truth``).
    A file without the header (or not UTF-8 text) is a ``ConfigError``."""
    return {r["client_id"]: r["true_speaker"] for r in _rows(aliases_tsv) if not r.get(CLIP_COLUMN)}


def read_clip_truth(aliases_tsv: str) -> dict[str, str]:
    """clip (the release's path, the index's clip_id) -> true speaker, for the clips filed under another
    voice's client_id; empty for a file without the ``clip`` column."""
    return {r[CLIP_COLUMN]: r["true_speaker"] for r in _rows(aliases_tsv) if r.get(CLIP_COLUMN)}
