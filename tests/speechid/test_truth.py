"""The truth file (aliases.tsv): two columns (client_id rows), three (and clip rows), with or without a BOM."""

import pytest

from speechid.errors import ConfigError
from speechid.truth import read_clip_truth, read_truth


def test_two_columns_give_client_ids_and_no_clip_rows(tmp_path):
    path = tmp_path / "aliases.tsv"
    path.write_text("client_id\ttrue_speaker\na\tann\na2\tann\nb\tbo\n")
    assert read_truth(str(path)) == {"a": "ann", "a2": "ann", "b": "bo"}
    assert read_clip_truth(str(path)) == {}


def test_clip_rows_are_read_apart_and_never_change_a_client_ids_voice(tmp_path):
    path = tmp_path / "aliases.tsv"
    # id rows leave the clip column empty; a clip of bo's voice filed under ann's id a
    path.write_text("client_id\ttrue_speaker\tclip\na\tann\t\nb\tbo\t\na\tbo\tcommon_voice_en_7.mp3\n")
    assert read_truth(str(path)) == {"a": "ann", "b": "bo"}
    assert read_clip_truth(str(path)) == {"common_voice_en_7.mp3": "bo"}


def test_a_byte_order_mark_and_windows_line_ends_are_read(tmp_path):
    path = tmp_path / "aliases.tsv"
    text = "client_id\ttrue_speaker\tclip\r\na\tann\t\r\na\tbo\tx \"quoted\" name.mp3\r\n"
    path.write_bytes(("\ufeff" + text).encode("utf-8"))  # as spreadsheet programs save it
    assert read_truth(str(path)) == {"a": "ann"}
    assert read_clip_truth(str(path)) == {'x "quoted" name.mp3': "bo"}  # QUOTE_NONE: quotes are characters


def test_a_short_row_in_a_three_column_file_is_a_client_id_row(tmp_path):
    path = tmp_path / "aliases.tsv"
    path.write_text("client_id\ttrue_speaker\tclip\na\tann\n")
    assert read_truth(str(path)) == {"a": "ann"} and read_clip_truth(str(path)) == {}


@pytest.mark.parametrize("content", ["", "a\tann\n", "clip\ttrue_speaker\nx.mp3\tann\n"])
def test_a_file_without_the_header_is_refused_by_both_readers(tmp_path, content):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    for reader in (read_truth, read_clip_truth):
        with pytest.raises(ConfigError, match="not a truth file"):
            reader(str(path))
