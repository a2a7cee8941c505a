"""A table's files as bounded pieces: every row read exactly once, in order; partitioned output
replaces the old folder only whole."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kernel.ingest import IngestError
from kernel.partitions import (
    output_folder,
    piece_rows,
    plan_pieces,
    publish_folder,
    read_piece,
    table_files,
    temporary_folder,
)


def _frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"c{i}" for i in range(rows)],
                         "note": ["a, \"quoted\" one" if i % 5 == 0 else "" for i in range(rows)],
                         "x": [str(i * 0.5) for i in range(rows)]})


def _read_all(pieces, chunk_rows=7) -> pd.DataFrame:
    return pd.concat([c for p in pieces for c in read_piece(p, chunk_rows)], ignore_index=True)


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_csv_byte_ranges_read_every_line_once_in_order(tmp_path, trailing_newline):
    path = tmp_path / "t.csv"
    text = _frame(500).to_csv(index=False)
    path.write_text(text if trailing_newline else text.rstrip("\n"))
    whole = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    for size in (64, 333, 1000, 10**6):  # ranges cutting lines anywhere, and one range
        pieces = plan_pieces(table_files(str(path)), partition_bytes=size)
        pd.testing.assert_frame_equal(_read_all(pieces), whole)
        assert sum(piece_rows(p) for p in pieces) == 500


def test_blank_lines_are_no_records(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,x\na,1\n\nb,2\n\n")
    (piece,) = plan_pieces([path])
    assert piece_rows(piece) == 2 and len(_read_all([piece])) == 2


def test_a_line_break_inside_quotes_is_refused_not_misread(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('id,x\na,"one\ntwo"\nb,3\n')
    with pytest.raises(IngestError, match="line break"):
        _read_all(plan_pieces([path]))


def test_parquet_row_groups_are_packed_within_the_row_bound(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        pq.write_table(pa.Table.from_pandas(_frame(250)), folder / f"p{i}.parquet",
                       row_group_size=40)
    pieces = plan_pieces(table_files(str(folder / "*.parquet")), partition_rows=100)
    assert all(p.rows <= 100 for p in pieces) and sum(p.rows for p in pieces) == 500
    assert [p.path for p in pieces] == sorted(p.path for p in pieces)  # file order kept
    got = _read_all(pieces)
    assert got["id"].tolist() == [f"c{i}" for i in range(250)] * 2


def test_bad_sources_and_destinations_are_one_clear_error(tmp_path):
    with pytest.raises(IngestError, match="not SQL"):
        table_files("sqlite:///x.db#t")
    with pytest.raises(IngestError, match="no .csv or .parquet files"):
        table_files(str(tmp_path / "*.parquet"))
    (tmp_path / "a.csv").write_text("id\n1\n")
    (tmp_path / "b.parquet").write_bytes(b"x")
    with pytest.raises(IngestError, match="mixes CSV and Parquet"):
        table_files(str(tmp_path))
    with pytest.raises(IngestError, match="give a folder name"):
        output_folder(str(tmp_path / "scores.parquet"))


def test_publish_replaces_the_old_folder_whole(tmp_path):
    destination = tmp_path / "scores"
    destination.mkdir()
    (destination / "old.parquet").write_text("old")
    temp = temporary_folder(destination)
    (temp / "part-00000.parquet").write_text("new")
    publish_folder(temp, destination)
    assert [p.name for p in destination.iterdir()] == ["part-00000.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]
