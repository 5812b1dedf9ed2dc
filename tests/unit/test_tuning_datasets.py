"""Dataset rules of guide chapter 6: one test per rule, asserting the line number and the message."""
from __future__ import annotations

import csv
import io
import json

import pytest

from services.tuning.datasets import (DatasetFormat, DatasetInvalid, DatasetRejected, FileKind, format_rules,
                                      parse_dataset)

LORA = dict(tune_type="lora", template_id="qwen2-7b")


def jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records).encode() + b"\n"


def alpaca(i: int = 0) -> dict:
    return {"instruction": f"question {i}", "input": "", "output": f"answer {i}"}


def moss(cid: int = 1) -> dict:
    return {"conversation_id": cid, "chat": {"turn_1": {"Human": "hi", "MOSS": "hello"},
                                             "turn_2": {"Human": "how are you", "MOSS": "fine"}}}


def sharegpt(*roles: str) -> dict:
    return {"conversations": [{"from": r, "value": f"text {i}"} for i, r in enumerate(roles)]}


def issues_of(data: bytes, *, filename="d.jsonl", fmt="alpaca", **kw) -> list[tuple[int, str, str]]:
    with pytest.raises(DatasetInvalid) as info:
        parse_dataset(data, filename=filename, dataset_format=fmt, **{**LORA, **kw})
    return [(i.line, i.rule, i.message) for i in info.value.issues]


def parse_with_examples(data: bytes, **kw):
    """The summary and the trainer's examples, read back from the jsonl the parser wrote."""
    sink = io.BytesIO()
    parsed = parse_dataset(data, sink=sink, **kw)
    return parsed, [json.loads(line) for line in sink.getvalue().splitlines()]


def table_csv(rows: list[list]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def table_xlsx(rows: list[list]) -> bytes:
    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# --- valid files become the trainer's examples ---------------------------------------------------

def test_alpaca_becomes_messages_with_input_appended_and_history_kept():
    record = {"instruction": "sum these", "input": "1, 2", "output": "3", "system": "be brief",
              "history": [["hi", "hello"]]}
    parsed, examples = parse_with_examples(jsonl(record, alpaca(1)), filename="a.jsonl", dataset_format="alpaca",
                                           **LORA)
    assert parsed.sample_count == 2 and parsed.dataset_format is DatasetFormat.alpaca
    assert examples[0]["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "sum these\n1, 2"},
        {"role": "assistant", "content": "3"}]


def test_moss_turns_become_alternating_messages():
    _, examples = parse_with_examples(jsonl(moss()), filename="m.jsonl", dataset_format="moss", **LORA)
    assert [m["role"] for m in examples[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert examples[0]["messages"][3]["content"] == "fine"


def test_sharegpt_with_tools_system_and_function_roles():
    record = sharegpt("human", "function_call", "observation", "gpt")
    record.update(system="sys", tools="a calculator")
    _, examples = parse_with_examples(jsonl(record), filename="s.jsonl", dataset_format="sharegpt", **LORA)
    messages = examples[0]["messages"]
    assert messages[0] == {"role": "system", "content": "sys\n\nTools:\na calculator"}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant"]


def test_pretraining_takes_text_records():
    _, examples = parse_with_examples(jsonl({"text": "a document"}, {"text": "another"}), filename="p.jsonl",
                                      dataset_format="alpaca", tune_type="pretrain", template_id="qwen2.5-14b")
    assert examples == [{"text": "a document"}, {"text": "another"}]


def test_a_json_array_file_numbers_records_by_their_first_line():
    text = '[\n  {"text": "one"},\n  {"text": ""}\n]\n'
    problems = issues_of(text.encode(), filename="p.json", tune_type="pretrain", template_id="qwen2.5-14b")
    assert problems == [(3, "empty_field", "'text' must not be empty")]


def test_blank_lines_are_not_samples():
    parsed = parse_dataset(b"\n" + jsonl(alpaca(1)) + b"\n\n" + jsonl(alpaca(2)), filename="a.jsonl",
                           dataset_format="alpaca", **LORA)
    assert parsed.sample_count == 2


# --- one rule each ------------------------------------------------------------------------------

def test_malformed_json_names_every_bad_line():
    data = jsonl(alpaca(1), '{"instruction": "x", "output": ', alpaca(3), "not json at all")
    problems = issues_of(data)
    assert [(line, rule) for line, rule, _ in problems] == [(2, "malformed_json"), (4, "malformed_json")]
    assert "malformed JSON" in problems[0][2] and "column" in problems[0][2]


def test_a_line_that_is_not_an_object():
    assert issues_of(jsonl(alpaca(), "[1, 2]")) == [(2, "not_an_object", "must be a JSON object, got an array")]


def test_missing_fields_are_named():
    problems = issues_of(jsonl(alpaca(), {"instruction": "q"}, {"output": "a"}))
    assert problems == [(2, "missing_field", "missing field 'output'"),
                        (3, "missing_field", "missing field 'instruction'")]


def test_moss_missing_chat_and_missing_turn_fields():
    problems = issues_of(jsonl(moss(), {"conversation_id": 2},
                               {"conversation_id": 3, "chat": {"turn_1": {"Human": "hi"}}}), fmt="moss")
    assert problems == [(2, "missing_field", "missing field 'chat'"),
                        (3, "missing_field", "missing field 'chat.turn_1.MOSS'")]


def test_moss_turn_numbering():
    record = {"conversation_id": 1, "chat": {"turn_1": {"Human": "a", "MOSS": "b"}, "turn_3": {"Human": "c", "MOSS": "d"}}}
    assert issues_of(jsonl(record), fmt="moss") == [
        (1, "bad_turn", "'chat' turns must be numbered turn_1, turn_2, ... without gaps")]


def test_moss_non_positive_conversation_id():
    assert issues_of(jsonl(moss(1), moss(0), moss(-2)), fmt="moss") == [
        (2, "non_positive_id", "'conversation_id' must be a positive integer, got 0"),
        (3, "non_positive_id", "'conversation_id' must be a positive integer, got -2")]


def test_empty_human_or_assistant_text():
    record = {"conversation_id": 1, "chat": {"turn_1": {"Human": "  ", "MOSS": ""}}}
    assert issues_of(jsonl(record), fmt="moss") == [
        (1, "empty_field", "'chat.turn_1.Human' must not be empty"),
        (1, "empty_field", "'chat.turn_1.MOSS' must not be empty")]
    assert issues_of(jsonl({"instruction": "q", "output": ""})) == [(1, "empty_field", "'output' must not be empty")]


def test_wrong_field_type():
    assert issues_of(jsonl({"instruction": 5, "output": "a"})) == [
        (1, "wrong_type", "'instruction' must be a string, got a number")]


def test_sharegpt_role_order_gpt_at_an_odd_position():
    problems = issues_of(jsonl(sharegpt("human", "gpt"), sharegpt("gpt", "human")), fmt="sharegpt")
    assert problems == [
        (2, "role_order", "'conversations[0].from' is 'gpt' at position 1; odd positions must be human or observation"),
        (2, "role_order", "'conversations[1].from' is 'human' at position 2; even positions must be gpt or function_call")]


def test_sharegpt_observation_at_an_even_position():
    problems = issues_of(jsonl(sharegpt("human", "observation")), fmt="sharegpt")
    assert problems == [(1, "role_order", "'conversations[1].from' is 'observation' at position 2; "
                                          "even positions must be gpt or function_call")]


def test_sharegpt_must_end_with_the_model_side():
    assert issues_of(jsonl(sharegpt("human", "gpt", "human")), fmt="sharegpt") == [
        (1, "role_order", "'conversations' has 3 messages; it must end with a gpt or function_call message "
                          "(an even count)")]


def test_sharegpt_unknown_role_and_missing_conversations():
    problems = issues_of(jsonl(sharegpt("human", "bot"), {"system": "x"}), fmt="sharegpt")
    assert problems == [
        (1, "unknown_role", "'conversations[1].from' is 'bot'; expected one of human, observation, gpt, "
                            "function_call, function"),
        (2, "missing_field", "missing field 'conversations'")]


def test_sft_refuses_pretraining_records_and_vice_versa():
    assert issues_of(jsonl({"text": "doc"})) == [
        (1, "missing_field", "missing field 'instruction' ({\"text\": ...} records are for incremental "
                             "pretraining; fine-tuning needs instruction/output)")]
    assert issues_of(jsonl(alpaca()), tune_type="pretrain", template_id="qwen2.5-14b") == [
        (1, "missing_field", "missing field 'text' (incremental pretraining takes {\"text\": ...} records, "
                             "not instruction/output)")]


def test_a_format_the_tune_type_does_not_accept():
    with pytest.raises(DatasetRejected) as info:
        parse_dataset(jsonl(moss()), filename="m.jsonl", dataset_format="moss", tune_type="pretrain",
                      template_id="qwen2.5-14b")
    assert info.value.field == "dataset_format"
    assert "MOSS is not accepted for incremental pretraining; use Alpaca" in str(info.value)
    with pytest.raises(DatasetRejected) as info:  # table 6-2: Qwen2.5-7B takes Alpaca and ShareGPT only
        parse_dataset(jsonl(moss()), filename="m.jsonl", dataset_format="moss", tune_type="lora",
                      template_id="qwen2.5-7b")
    assert "use Alpaca, ShareGPT" in str(info.value)
    with pytest.raises(DatasetRejected, match="csv files are not accepted for incremental pretraining"):
        parse_dataset(table_csv([["conversation_id", "human", "assistant"], [1, "a", "b"]]), filename="t.csv",
                      dataset_format=None, tune_type="pretrain", template_id="qwen2.5-14b")


def test_unknown_file_type():
    with pytest.raises(DatasetRejected, match=r"must be a \.jsonl, \.json, \.csv or \.xlsx file"):
        parse_dataset(b"x", filename="data.txt", dataset_format="alpaca", **LORA)


def test_every_bad_line_is_reported_not_just_the_first():
    lines = [alpaca(i) if i % 3 else "{" for i in range(30)]
    problems = issues_of(jsonl(*lines))
    assert [p[0] for p in problems] == [i + 1 for i in range(30) if i % 3 == 0]


# --- tables ---------------------------------------------------------------------------------------

def test_csv_rows_with_one_id_form_one_conversation_converted_to_moss():
    rows = [["conversation_id", "human", "assistant"], [1, "hi", "hello"], [2, "q", "a"], [1, "again", "sure"]]
    parsed, examples = parse_with_examples(table_csv(rows), filename="t.csv", dataset_format=None, **LORA)
    assert parsed.converted_from is FileKind.csv and parsed.dataset_format is DatasetFormat.moss
    assert parsed.converted[0] == {"conversation_id": 1, "chat": {"turn_1": {"Human": "hi", "MOSS": "hello"},
                                                                  "turn_2": {"Human": "again", "MOSS": "sure"}}}
    assert parsed.sample_count == 2
    assert [m["content"] for m in examples[0]["messages"]] == ["hi", "hello", "again", "sure"]


def test_xlsx_becomes_alpaca_for_hf_format_templates():
    rows = [["conversation_id", "human", "assistant"], [7, "first", "one"], [7, "second", "two"]]
    parsed = parse_dataset(table_xlsx(rows), filename="t.xlsx", dataset_format=None, tune_type="lora",
                           template_id="qwen2.5-7b")
    assert parsed.dataset_format is DatasetFormat.alpaca and parsed.converted_from is FileKind.xlsx
    assert parsed.converted == [{"instruction": "second", "input": "", "output": "two",
                                 "history": [["first", "one"]]}]


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_table_rules_name_the_row(kind):
    rows = [["conversation_id", "human", "assistant"], [1, "ok", "ok"], [0, "a", "b"], [-3, "a", "b"],
            [2, "", "b"], [3, "a", None], ["x", "a", "b"]]
    data = table_csv(rows) if kind == "csv" else table_xlsx(rows)
    assert issues_of(data, filename=f"t.{kind}", fmt=None) == [
        (3, "non_positive_id", "'conversation_id' must be a positive integer, got " + ("'0'" if kind == "csv" else "0")),
        (4, "non_positive_id", "'conversation_id' must be a positive integer, got " + ("'-3'" if kind == "csv" else "-3")),
        (5, "empty_field", "'human' must not be empty"),
        (6, "empty_field", "'assistant' must not be empty"),
        (7, "non_positive_id", "'conversation_id' must be a positive integer, got 'x'")]


def test_csv_line_numbers_follow_multiline_cells():
    data = b'conversation_id,human,assistant\n1,"two\nlines",ok\n0,a,b\n'
    assert issues_of(data, filename="t.csv", fmt=None) == [
        (4, "non_positive_id", "'conversation_id' must be a positive integer, got '0'")]


def test_table_header_must_have_the_three_columns():
    assert issues_of(table_csv([["id", "human", "assistant"], [1, "a", "b"]]), filename="t.csv", fmt=None) == [
        (1, "missing_column", "header is missing column(s) conversation_id; the table must have exactly "
                              "conversation_id, human, assistant")]


def test_format_rules_follow_table_6_2():
    assert format_rules("qwen2-7b", "full").table is DatasetFormat.moss
    assert format_rules("qwen2.5-32b", "lora").jsonl == (DatasetFormat.alpaca, DatasetFormat.sharegpt)
    assert format_rules("qwen2.5-14b", "pretrain") .table is None


def test_an_xlsx_that_would_inflate_past_the_cap_is_refused_before_it_is_opened(monkeypatch):
    """Issue 14.4: a zip bomb disguised as a workbook."""
    import io
    import zipfile

    from services.tuning import datasets

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * 5_000_000)   # ~5 kB compressed
    monkeypatch.setattr(datasets, "MAX_XLSX_UNZIPPED_BYTES", 1_000_000)
    with pytest.raises(DatasetRejected, match=r"unpacks to 5000000 bytes; at most 1000000"):
        parse_dataset(bomb.getvalue(), filename="t.xlsx", dataset_format=None, tune_type="lora",
                      template_id="qwen2-custom")


def test_a_file_named_xlsx_that_is_no_zip_is_refused_saying_so():
    with pytest.raises(DatasetRejected, match="not a zip archive"):
        parse_dataset(b"conversation_id,human,assistant\n", filename="t.xlsx", dataset_format=None,
                      tune_type="lora", template_id="qwen2-custom")
