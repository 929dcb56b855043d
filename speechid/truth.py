"""The ground-truth file: ``aliases.tsv`` beside a release (``speechid synth``, ``speechid corpus``), a header
row and one ``client_id<TAB>true_speaker`` row per client_id, that ``speechid dedup --truth`` scores merges
against. This is its one reader.

Read as the release's TSVs are (``csv.QUOTE_NONE``), and with or without a UTF-8 byte-order mark, as
spreadsheet programs save it.
"""

from __future__ import annotations

import csv

from speechid.errors import ConfigError

TRUTH_COLUMNS = ("client_id", "true_speaker")


def read_truth(aliases_tsv: str) -> dict[str, str]:
    """client_id -> true speaker. A file without the header (or not UTF-8 text) is a ``ConfigError``."""
    try:
        with open(aliases_tsv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not set(TRUTH_COLUMNS) <= set(reader.fieldnames or ()):
                raise ConfigError(f"{aliases_tsv}: not a truth file: expected a header row with the tab-separated "
                                  f"columns {', '.join(TRUTH_COLUMNS)}")
            return {r["client_id"]: r["true_speaker"] for r in reader}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{aliases_tsv}: not UTF-8 text ({e.reason} at byte {e.start})") from None
