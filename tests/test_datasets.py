"""Input readers: every row becomes one task or one located error, and memory stays flat."""

from __future__ import annotations

import gzip
import re
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from peerflow.config import DatasetConfig, FieldSpec
from peerflow.datasets import DatasetError, RawRow, RowError, map_fields, open_dataset


def read(path: Path, **options: Any) -> list[RawRow]:
    return list(open_dataset(DatasetConfig(path=str(path), **options), path))


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


# --- JSON lines --------------------------------------------------------------


def test_jsonl_bad_lines_become_located_errors_and_the_rest_still_comes(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"q": "one"}\n'  # line 1
        "\n"  # line 2: blank, not a row
        '{"q": "two"\n'  # line 3: malformed
        "[1, 2]\n"  # line 4: not an object
        "   \n"  # line 5: blank
        '{"q": "three"}\n'  # line 6
        '"text"\n'  # line 7: not an object
        '{"q": "four"}'  # line 8: no trailing newline
    )
    rows = read(path)
    assert len(rows) == 6
    assert [r.index for r in rows] == list(range(6))
    assert [r.id for r in rows] == [f"row-{i}" for i in range(6)]
    good = [r.row["q"] for r in rows if r.error is None]
    assert good == ["one", "three", "four"]
    errors = {r.index: r.error for r in rows if r.error is not None}
    assert errors[1].startswith("line 3: invalid JSON: ")
    assert errors[2] == "line 4: expected a JSON object, got list"
    assert errors[4] == "line 7: expected a JSON object, got str"
    assert rows[1].row == '{"q": "two"'  # the raw line is kept for the error record
    assert rows[2].row == [1, 2]


def test_empty_and_blank_only_files_have_no_rows(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.jsonl"
    blank.write_bytes(b"\n\n  \n")
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,b\n")
    for path in (empty, blank, empty_csv, header_only):
        assert read(path) == [], path


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DatasetError, match=re.escape(str(path))):
        open_dataset(DatasetConfig(path="nope.jsonl"), path)


def test_unknown_suffix_and_directories_are_dataset_errors(tmp_path: Path) -> None:
    odd = tmp_path / "data.txt"
    odd.write_text('{"a": 1}\n')
    with pytest.raises(DatasetError, match=r"data\.txt.*dataset\.format"):
        read(odd)
    assert read(odd, format="jsonl")[0].row == {"a": 1}
    with pytest.raises(DatasetError, match="not a saved Hugging Face dataset"):
        read(tmp_path)
    with pytest.raises(DatasetError, match="is a directory"):
        read(tmp_path, format="jsonl")


def test_json_array_file_is_rejected_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[\n  {"a": 1}\n]\n')
    with pytest.raises(DatasetError, match="JSON array"):
        read(path)
    lines = write_jsonl(tmp_path / "lines.json", [{"a": 1}, {"a": 2}])
    assert [r.row["a"] for r in read(lines)] == [1, 2]


def test_compressed_jsonl(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    payload = b'{"a": 1}\n\n{"a": 2}\n'
    gz = tmp_path / "data.jsonl.gz"
    gz.write_bytes(gzip.compress(payload))
    zst = tmp_path / "data.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(payload))
    for path in (gz, zst):
        assert [r.row for r in read(path)] == [{"a": 1}, {"a": 2}]
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"broken\.jsonl\.gz"):
        read(broken)


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert read(path)[0].row == {"a": 1}


# --- ids, limit, repeat --------------------------------------------------------


def test_id_field_and_rows_missing_it(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"question_id": "q-a", "x": 1},
            {"x": 2},
            {"question_id": 7, "x": 3},
            {"question_id": None, "x": 4},
        ],
    )
    rows = read(path, id_field="question_id")
    assert [r.id for r in rows] == ["q-a", "@line2", "7", "@line4"]
    assert rows[1].error == "line 2: missing id field 'question_id'"
    assert rows[1].row == {"x": 2}
    assert rows[3].error == "line 4: empty id field 'question_id'"
    assert rows[0].error is None and rows[2].error is None


def test_limit_counts_error_rows_too(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 0}\nnot json\n{"a": 2}\n{"a": 3}\n')
    rows = read(path, limit=3)
    assert [r.index for r in rows] == [0, 1, 2]
    assert rows[1].error is not None
    assert read(path, limit=0) == []
    assert len(read(path, limit=100)) == 4


def test_repeat_gives_unique_suffixed_ids_and_a_global_index(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"k": "a"}, {"k": "b"}, {"k": "c"}])
    rows = read(path, repeat=3)
    assert len(rows) == 9
    assert [r.index for r in rows] == list(range(9))
    ids = [r.id for r in rows]
    assert ids[:4] == ["row-0~0", "row-1~0", "row-2~0", "row-0~1"]
    assert len(set(ids)) == 9
    keyed = read(path, repeat=2, id_field="k", limit=5)
    assert [r.id for r in keyed] == ["a~0", "b~0", "c~0", "a~1", "b~1"]


def test_dataset_can_be_iterated_again(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"a": 1}, {"a": 2}])
    dataset = open_dataset(DatasetConfig(path="d.jsonl"), path)
    assert list(dataset) == list(dataset)


# --- CSV -----------------------------------------------------------------------


def test_csv_rows_stay_strings_and_bad_records_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "id,n,flag,tags\n"  # line 1
        'a,3,true,"[""x"", ""y""]"\n'  # line 2
        "b,4,false\n"  # line 3: too few fields
        "\n"  # line 4: blank
        "c,5,true,[],extra\n"  # line 5: too many
        'd,6,false,"multi\nline"\n'  # lines 6-7: quoted newline is fine
        "e,7,true,[]\n"  # line 8
    )
    rows = read(path, id_field="id")
    assert len(rows) == 5
    assert rows[0].row == {"id": "a", "n": "3", "flag": "true", "tags": '["x", "y"]'}
    assert rows[0].id == "a"
    assert rows[1].error == "line 3: expected 4 fields, got 3"
    assert rows[1].row == ["b", "4", "false"]
    assert rows[2].error == "line 5: expected 4 fields, got 5"
    assert rows[3].row["tags"] == "multi\nline"
    assert rows[4].error is None and rows[4].id == "e"
    spec = {
        "n": FieldSpec(column="n", type="int"),
        "flag": FieldSpec(column="flag", type="bool"),
        "tags": FieldSpec(column="tags", type="list"),
    }
    assert map_fields(rows[0].row, spec) == {"n": 3, "flag": True, "tags": ["x", "y"]}


def test_csv_invalid_utf8_is_one_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n1,2\n\xff\xfe,3\n4,5\n")
    rows = read(path)
    assert [r.error for r in rows] == [None, "line 3: invalid UTF-8 at byte 1", None]
    assert rows[2].row == {"a": "4", "b": "5"}


def test_csv_duplicate_header_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"duplicate column names.*'a'"):
        read(path)


# --- Parquet -------------------------------------------------------------------


def test_parquet_streams_typed_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    n = 2000  # more than one reader batch
    table = pa.table(
        {
            "id": [f"p{i}" for i in range(n)],
            "n": list(range(n)),
            "tags": [["a", str(i)] for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=700)
    rows = read(path, id_field="id")
    assert len(rows) == n
    assert rows[1234].row == {"id": "p1234", "n": 1234, "tags": ["a", "1234"]}
    assert rows[1234].id == "p1234"
    assert len(read(path, limit=10, repeat=2)) == 10


def test_unreadable_parquet_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(DatasetError, match=r"bad\.parquet.*Parquet"):
        read(path)


# --- Hugging Face save_to_disk ---------------------------------------------------


def test_hf_dataset_saved_to_disk(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    records = [{"qid": f"h{i}", "text": f"t{i}", "score": i / 2} for i in range(25)]
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "single"))
    rows = read(tmp_path / "single", id_field="qid")
    assert [r.row for r in rows] == records
    assert rows[3].id == "h3"
    assert read(tmp_path / "single", format="hf", limit=2)[1].row == records[1]


def test_hf_dataset_dict_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    train = [{"x": i} for i in range(5)]
    test = [{"x": 100 + i} for i in range(3)]
    path = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(train),
            "test": datasets.Dataset.from_list(test),
        }
    ).save_to_disk(str(path))
    assert [r.row for r in read(path)] == train  # default split: train
    assert [r.row for r in read(path, split="test")] == test
    with pytest.raises(DatasetError, match=r"no split 'validation'.*train, test"):
        read(path, split="validation")

    no_train = tmp_path / "nt"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(test)}).save_to_disk(str(no_train))
    with pytest.raises(DatasetError, match=r"no 'train' split.*test"):
        read(no_train)


def test_hf_directory_without_arrow_files(tmp_path: Path) -> None:
    path = tmp_path / "hf"
    path.mkdir()
    (path / "state.json").write_text('{"_data_files": []}')
    with pytest.raises(DatasetError, match="no Arrow data files"):
        read(path)
    (path / "state.json").write_text('{"_data_files": [{"filename": "gone.arrow"}]}')
    with pytest.raises(DatasetError, match=r"gone\.arrow.*missing"):
        read(path)


# --- map_fields ----------------------------------------------------------------------


def test_map_fields_short_form_and_empty_mapping() -> None:
    row = {"q": "why?", "opts": ["a", "b"], "other": 1}
    assert map_fields(row, {"question": "q", "options": "opts"}) == {
        "question": "why?",
        "options": ["a", "b"],
    }
    copied = map_fields(row, {})
    assert copied == row and copied is not row


def test_map_fields_missing_required_names_the_variable() -> None:
    with pytest.raises(RowError) as info:
        map_fields({"x": 1}, {"question": "q"})
    assert info.value.field == "question"
    assert info.value.message == "missing field 'q' (column for prompt variable 'question')"
    with pytest.raises(RowError, match="missing field 'q'"):
        map_fields({"x": 1}, {"question": FieldSpec(column="q", type="str")})


def test_map_fields_optional_fields_take_their_default() -> None:
    fields = {
        "hint": FieldSpec(column="hint", required=False, default="none"),
        "n": FieldSpec(column="n", type="int", required=False, default=0),
        "tags": FieldSpec(column="tags", type="list", required=False, default=[]),
    }
    out = map_fields({"n": ""}, fields)  # an empty CSV cell counts as not given
    assert out == {"hint": "none", "n": 0, "tags": []}
    out["tags"].append("x")  # a mutable default is not shared between rows
    assert map_fields({"n": None}, fields)["tags"] == []


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        ("str", "abc", "abc"),
        ("int", 3, 3),
        ("int", "3", 3),
        ("int", " -12 ", -12),
        ("float", 2, 2.0),
        ("float", 2.5, 2.5),
        ("float", "2.5", 2.5),
        ("bool", True, True),
        ("bool", "false", False),
        ("bool", "True", True),
        ("list", [1], [1]),
        ("list", "[1, 2]", [1, 2]),
        ("dict", {"a": 1}, {"a": 1}),
        ("dict", '{"a": 1}', {"a": 1}),
        ("any", None, None),
    ],
)
def test_map_fields_accepts_and_coerces(type_: str, value: Any, expected: Any) -> None:
    out = map_fields({"c": value}, {"v": FieldSpec(column="c", type=type_)})  # type: ignore[arg-type]
    assert out["v"] == expected
    assert type(out["v"]) is type(expected)


@pytest.mark.parametrize(
    ("type_", "value", "shown"),
    [
        ("str", 5, "got int 5"),
        ("int", True, "got bool True"),
        ("int", 2.5, "got float 2.5"),
        ("int", "3.5", "got str '3.5'"),
        ("float", False, "got bool False"),
        ("float", "abc", "got str 'abc'"),
        ("bool", "yes", "got str 'yes'"),
        ("bool", 1, "got int 1"),
        ("list", "a, b", "got str 'a, b'"),
        ("list", "[1, 2", "got str '[1, 2'"),
        ("list", '{"a": 1}', "got str"),
        ("dict", [1], "got list [1]"),
        ("str", None, "is null"),
        ("int", None, "is null"),
    ],
)
def test_map_fields_wrong_types_name_field_type_and_value(
    type_: str, value: Any, shown: str
) -> None:
    with pytest.raises(RowError) as info:
        map_fields({"col": value}, {"var": FieldSpec(column="col", type=type_)})  # type: ignore[arg-type]
    assert info.value.field == "var"
    assert f"expected {type_}" in info.value.message
    assert "'col'" in info.value.message and "'var'" in info.value.message
    assert shown in info.value.message


def test_map_fields_truncates_long_values_in_errors() -> None:
    with pytest.raises(RowError) as info:
        map_fields({"c": "x" * 10_000}, {"v": FieldSpec(column="c", type="int")})
    assert len(info.value.message) < 200


# --- memory ------------------------------------------------------------------------


def test_streaming_memory_stays_flat(tmp_path: Path) -> None:
    """Fails if the reader is changed to load the file (or its rows) all at once."""
    path = tmp_path / "big.jsonl"
    n = 200_000
    filler = "lorem ipsum dolor sit amet " * 6  # ~160 bytes: a ~45 MB file
    with path.open("wb") as f:
        for i in range(n):
            f.write(orjson.dumps({"id": f"r{i}", "text": filler, "n": i}) + b"\n")
    dataset = open_dataset(DatasetConfig(path="big.jsonl", id_field="id"), path)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        count = sum(1 for raw in dataset if raw.error is None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == n
    assert peak - base < 20 * 1024 * 1024, f"peak growth {(peak - base) / 1e6:.1f} MB"


# --- duplicate ids: every input line keeps its own record ---------------------------


def test_repeated_id_becomes_an_error_row_with_a_derived_id(tmp_path: Path, caplog) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "x": 1},  # line 1
            {"id": "b", "x": 2},  # line 2
            {"id": "a", "x": 3},  # line 3: repeats line 1
            {"id": "a", "x": 4},  # line 4: again
        ],
    )
    dataset = open_dataset(DatasetConfig(path="d.jsonl", id_field="id"), path)
    with caplog.at_level("WARNING", logger="peerflow.datasets"):
        rows = list(dataset)
    assert len(rows) == 4
    assert [r.id for r in rows] == ["a", "b", "a#dup@line3", "a#dup@line4"]
    assert len({r.id for r in rows}) == 4
    assert rows[0].error is None and rows[1].error is None
    assert rows[2].error.startswith("line 3: duplicate id 'a'")
    assert "'a#dup@line3'" in rows[2].error
    assert rows[3].row == {"id": "a", "x": 4}  # the row is kept for the record
    assert dataset.duplicate_ids == 2
    assert sum("duplicate id 'a'" in r.getMessage() for r in caplog.records) == 2
    assert [r.id for r in dataset] == [r.id for r in rows]  # deterministic: resume stays exact


def test_reader_made_ids_never_collide_with_real_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"id": "x"}\n'  # line 1
        "not json\n"  # line 2: the reader names it @line2
        '{"id": "@line2"}\n'  # line 3: a real id equal to the reader-made one
        '{"id": "row-1"}\n'  # line 4: what the reader used to generate for line 2
        '{"nope": 1}\n'  # line 5: no id, @line5
    )
    rows = read(path, id_field="id")
    ids = [r.id for r in rows]
    assert len(rows) == 5 and len(set(ids)) == 5
    assert ids[:2] == ["x", "@line2"]
    assert ids[2] == "@line2#dup@line3" and "duplicate id '@line2'" in rows[2].error
    assert ids[3] == "row-1" and rows[3].error is None
    assert ids[4] == "@line5" and rows[4].error == "line 5: missing id field 'id'"


def test_a_taken_derived_id_gets_a_counter(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a#dup@line3"},
            {"id": "a"},
            {"id": "a"},
            {"id": "a#dup@line3"},
        ],
    )
    rows = read(path, id_field="id")
    ids = [r.id for r in rows]
    assert ids == ["a#dup@line3", "a", "a#dup2@line3", "a#dup@line3#dup@line4"]
    assert len(set(ids)) == 4


def test_duplicates_with_repeat_stay_unique_in_every_pass(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a"}, {"id": "a"}, {"id": "b"}])
    dataset = open_dataset(DatasetConfig(path="d.jsonl", id_field="id", repeat=2), path)
    ids = [r.id for r in dataset]
    assert ids == ["a~0", "a~0#dup@line2", "b~0", "a~1", "a~1#dup@line2", "b~1"]
    assert dataset.duplicate_ids == 2


def test_positional_ids_need_no_duplicate_check(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a"}, {"id": "a"}])
    rows = read(path)
    assert [r.id for r in rows] == ["row-0", "row-1"]
    assert all(r.error is None for r in rows)


# --- damaged compressed input ------------------------------------------------------


def _payload(n: int) -> bytes:
    return b"".join(
        orjson.dumps({"id": f"r{i}", "text": "lorem ipsum " * 8}) + b"\n" for i in range(n)
    )


def _assert_truncated(rows: list[RawRow], n: int) -> None:
    good = [r for r in rows if r.error is None]
    bad = [r for r in rows if r.error is not None]
    assert 0 <= len(good) < n
    assert len(bad) == 1 and bad[0] is rows[-1], [r.error for r in bad]
    assert re.match(
        rf"line {len(good) + 1}: the compressed input is truncated or corrupt after this point: ",
        bad[0].error,
    ), bad[0].error
    assert bad[0].line == len(good) + 1
    assert len({r.id for r in rows}) == len(rows)


@pytest.mark.parametrize("size", [2000, 5])
def test_truncated_gzip_gives_one_located_error(tmp_path: Path, size: int) -> None:
    data = gzip.compress(_payload(size))
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    for options in ({}, {"id_field": "id"}):
        rows = read(path, **options)  # must not raise
        _assert_truncated(rows, size)
    assert [r.id for r in read(path)] == [r.id for r in read(path)]  # a re-run sees the same


@pytest.mark.parametrize("size", [2000, 5])
def test_truncated_zstd_gives_one_located_error(tmp_path: Path, size: int) -> None:
    zstandard = pytest.importorskip("zstandard")
    data = zstandard.ZstdCompressor().compress(_payload(size))
    path = tmp_path / "d.jsonl.zst"
    path.write_bytes(data[: len(data) // 2])
    _assert_truncated(read(path, id_field="id"), size)


def test_corrupt_gzip_and_zstd_end_in_one_located_error(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    payload = _payload(2000)
    for name, data in (
        ("d.jsonl.gz", gzip.compress(payload)),
        ("d.jsonl.zst", zstandard.ZstdCompressor().compress(payload)),
    ):
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0xFF
        damaged[len(damaged) // 2 + 1] ^= 0xFF
        path = tmp_path / name
        path.write_bytes(bytes(damaged))
        rows = read(path)
        assert "truncated or corrupt after this point" in rows[-1].error, name
        assert rows[-1].error.startswith(f"line {rows[-1].line}: ")


def test_multi_frame_zstd_reads_every_frame(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    c = zstandard.ZstdCompressor()
    path = tmp_path / "d.jsonl.zst"
    path.write_bytes(c.compress(b'{"a": 1}\n') + c.compress(b'{"a": 2}\n'))
    assert [r.row for r in read(path)] == [{"a": 1}, {"a": 2}]


def test_truncated_gzip_csv_gives_one_located_error(tmp_path: Path) -> None:
    text = "id,text\n" + "".join(f"r{i},lorem ipsum dolor {i}\n" for i in range(3000))
    data = gzip.compress(text.encode())
    path = tmp_path / "d.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    rows = read(path, id_field="id")
    good = [r for r in rows if r.error is None]
    assert 0 < len(good) < 3000
    assert rows[-1].error.startswith(f"line {len(good) + 2}: the compressed input is truncated")


def test_a_file_that_is_not_what_its_suffix_says_is_a_dataset_error(tmp_path: Path) -> None:
    for name in ("d.jsonl.gz", "d.jsonl.zst"):
        path = tmp_path / name
        path.write_bytes(b'{"a": 1}\n')
        with pytest.raises(DatasetError, match=r"not a (gzip|zstd) file"):
            read(path)


# --- 1-based locations and plain-word messages ---------------------------------------


def test_rows_carry_their_1_based_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert [(r.index, r.line) for r in read(path)] == [(0, 1), (1, 3)]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('a\n1\n"multi\nline"\n3\n')
    assert [r.line for r in read(csv_path)] == [2, 3, 5]


def test_parquet_rows_are_numbered_from_1(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"k": ["a", None, "c"]}), path)
    rows = read(path, id_field="k")
    assert [r.line for r in rows] == [1, 2, 3]
    assert rows[1].id == "@row2" and rows[1].error == "row 2: empty id field 'k'"


def test_jsonl_invalid_utf8_says_so_in_words(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n{"a": [1, 2')
    rows = read(path)
    assert rows[1].error == "line 2: invalid UTF-8 at byte 11"
    assert "surrogates" not in rows[1].error
    assert rows[2].error.startswith(
        "line 3: invalid JSON: the line ends before the JSON value is complete (column "
    )


def test_columns_are_read_cheaply(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "d.jsonl", [{"q": 1, "a": 2}, {"z": 3}])
    assert open_dataset(DatasetConfig(path="d.jsonl"), jsonl).columns() == ["q", "a"]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("q,a\n1,2\n")
    assert open_dataset(DatasetConfig(path="d.csv"), csv_path).columns() == ["q", "a"]
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"q": [1], "b": [2]}), tmp_path / "d.parquet")
    dataset = open_dataset(DatasetConfig(path="d.parquet"), tmp_path / "d.parquet")
    assert dataset.columns() == ["q", "b"]


def test_map_fields_null_names_the_field() -> None:
    with pytest.raises(RowError) as info:
        map_fields({"q": None}, {"question": FieldSpec(column="q", type="str")})
    assert info.value.field == "question"
    assert info.value.message == "field 'q' (prompt variable 'question') is null, expected str"
