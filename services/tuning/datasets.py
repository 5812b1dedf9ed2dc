"""Tuning datasets: parse, validate and normalise MOSS / Alpaca / ShareGPT files (guide chapter 6).

Pure functions, no servers. Validation runs before any compute and reports *every* bad line with
its number and the rule it breaks, so a user fixes the whole file in one go. Valid records become
the trainer's examples: ``{"messages": [{"role", "content"}, ...]}`` for fine-tuning and
``{"text": ...}`` for incremental pretraining.

Files: ``.jsonl`` (one record per line), ``.json`` (an array; a record is numbered by the line it
starts on), ``.csv`` / ``.xlsx`` (columns conversation_id, human, assistant; rows sharing an id form
one multi-turn conversation) which are converted to MOSS or Alpaca as table 6-2 says.

A ``.jsonl`` file is validated as a stream (``normalise_dataset`` over its chunks): memory holds one
chunk and one line, never the file, so a 5 GB dataset costs the API little. The other kinds cannot be
read line by line cheaply and are read whole, under a smaller cap.
"""
from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO, Generator, Iterable, Iterator

SFT_TUNE_TYPES = ("full", "lora")
PRETRAIN = "pretrain"
MAX_REPORTED_ISSUES = 1000  # a file with millions of bad lines still gets a bounded answer
MIB = 1024 ** 2
# A .jsonl line is one sample. Training reads at most 4096 tokens of a sample (about 16 KiB of text),
# so a 1 MiB line is already mostly cut off; the cap is what bounds memory while streaming a file.
MAX_LINE_BYTES = 1 * MIB
# .json arrays, .csv and .xlsx are read whole (a record may span lines): a smaller cap than the
# 5 GB a .jsonl file may have (services/tuning/models.py MAX_DATASET_BYTES).
MAX_WHOLE_FILE_BYTES = 512 * MIB


class DatasetFormat(StrEnum):
    moss = "moss"
    alpaca = "alpaca"
    sharegpt = "sharegpt"


class FileKind(StrEnum):
    jsonl = "jsonl"
    json = "json"
    csv = "csv"
    xlsx = "xlsx"

    @property
    def is_table(self) -> bool:
        return self in (FileKind.csv, FileKind.xlsx)

    @property
    def streams(self) -> bool:
        """Validated line by line; every other kind is read whole (at most MAX_WHOLE_FILE_BYTES)."""
        return self is FileKind.jsonl


FORMAT_LABELS = {DatasetFormat.moss: "MOSS", DatasetFormat.alpaca: "Alpaca", DatasetFormat.sharegpt: "ShareGPT"}

# Table 6-2: templates whose tuning checkpoints are Hugging Face format take Alpaca/ShareGPT and turn
# tables into Alpaca; every other tunable model (Megatron format) also takes MOSS, tables become MOSS.
HF_FORMAT_TEMPLATES = frozenset({"qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b-1k"})


@dataclass(frozen=True)
class FormatRules:
    """Which dataset formats a (template, tune type) accepts."""
    jsonl: tuple[DatasetFormat, ...]   # formats accepted as .jsonl/.json
    table: DatasetFormat | None        # what csv/xlsx are converted to; None: tables not accepted


def format_rules(template_id: str, tune_type: str) -> FormatRules:
    if tune_type == PRETRAIN:  # table 6-2: incremental pretraining takes Alpaca {"text"} records only
        return FormatRules(jsonl=(DatasetFormat.alpaca,), table=None)
    if template_id in HF_FORMAT_TEMPLATES:
        return FormatRules(jsonl=(DatasetFormat.alpaca, DatasetFormat.sharegpt), table=DatasetFormat.alpaca)
    return FormatRules(jsonl=(DatasetFormat.moss, DatasetFormat.alpaca, DatasetFormat.sharegpt),
                       table=DatasetFormat.moss)


def file_kind(path: str) -> FileKind | None:
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return FileKind(suffix) if suffix in FileKind._value2member_map_ else None


@dataclass(frozen=True)
class Issue:
    line: int       # 1-based: file line (jsonl, csv), sheet row (xlsx), line a record starts on (json)
    rule: str       # stable code: malformed_json, missing_field, role_order, non_positive_id, ...
    message: str    # what is wrong and what is expected

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class DatasetInvalid(Exception):
    """The file breaks the format rules; ``issues`` lists every bad line (the first ``MAX_REPORTED_ISSUES``)."""

    def __init__(self, issues: list[Issue], *, total: int | None = None):
        self.issues = issues[:MAX_REPORTED_ISSUES]
        self.total = total if total is not None else len(issues)
        shown = "; ".join(str(i) for i in self.issues[:5])
        more = f" (and {self.total - 5} more)" if self.total > 5 else ""
        super().__init__(f"{self.total} invalid line(s): {shown}{more}")


class DatasetRejected(Exception):
    """The file as a whole cannot be used (wrong type for the tune type, unreadable, empty)."""

    def __init__(self, message: str, *, field: str = "dataset_path"):
        super().__init__(message)
        self.field = field


@dataclass
class ParsedDataset:
    """What validation learnt; the examples themselves went out as jsonl (see ``normalise_dataset``)."""
    sample_count: int                         # valid records = the trainer's examples
    dataset_format: DatasetFormat             # the format the records are in (after a table conversion)
    converted_from: FileKind | None = None    # csv/xlsx when the platform converted the file
    converted: list[dict] = field(default_factory=list)  # the converted MOSS/Alpaca records (tables only)


# The trainer's examples, one JSON line each, then (as the generator's return value) the summary.
Normalised = Generator[bytes, None, ParsedDataset]


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

def normalise_dataset(chunks: Iterable[bytes], *, filename: str, dataset_format: str | None, tune_type: str,
                      template_id: str) -> Normalised:
    """Validate a file read as chunks; yield the trainer's examples as jsonl and return the summary.

    DatasetInvalid (every bad line) or DatasetRejected is raised after the last example was yielded,
    so a consumer must discard what it received when that happens. Once a line is bad no further
    examples are yielded (they would be discarded), but every line is still checked.
    """
    kind = file_kind(filename)
    if kind is None:
        raise DatasetRejected(f"dataset_path: '{filename}' must be a .jsonl, .json, .csv or .xlsx file")
    rules = format_rules(template_id, tune_type)
    pretrain = tune_type == PRETRAIN
    if kind.is_table:
        if rules.table is None:
            raise DatasetRejected(
                f"dataset_path: {kind.value} files are not accepted for incremental pretraining; "
                "use an Alpaca .jsonl file of {\"text\": ...} records", field="dataset_path")
        return (yield from _parse_table(_read_whole(chunks, kind=kind), kind=kind, target=rules.table,
                                        pretrain=pretrain))
    if dataset_format is None:
        raise DatasetRejected("dataset_format is required for .jsonl/.json files (moss, alpaca or sharegpt)",
                              field="dataset_format")
    fmt = DatasetFormat(dataset_format)
    if fmt not in rules.jsonl:
        accepted = ", ".join(FORMAT_LABELS[f] for f in rules.jsonl)
        what = "incremental pretraining" if pretrain else f"{tune_type} tuning of '{template_id}'"
        raise DatasetRejected(f"dataset_format: {FORMAT_LABELS[fmt]} is not accepted for {what}; "
                              f"use {accepted}", field="dataset_format")
    if kind.streams:
        records = _jsonl_records(split_lines(chunks, max_line_bytes=MAX_LINE_BYTES))
    else:
        records = _json_array_records(_read_whole(chunks, kind=kind))
    return (yield from _validate_records(records, fmt=fmt, pretrain=pretrain))


def parse_dataset(data: bytes, *, filename: str, dataset_format: str | None, tune_type: str,
                  template_id: str, sink: BinaryIO | None = None) -> ParsedDataset:
    """A file already in memory, through the same path as a stream; examples go to ``sink`` if given."""
    produced = normalise_dataset([data], filename=filename, dataset_format=dataset_format, tune_type=tune_type,
                                 template_id=template_id)
    while True:
        try:
            line = next(produced)
        except StopIteration as done:
            return done.value
        if sink is not None:
            sink.write(line)


def check_whole_file_size(kind: FileKind, size: int) -> None:
    """Kinds that are read whole are refused past MAX_WHOLE_FILE_BYTES, pointing at .jsonl."""
    if not kind.streams and size > MAX_WHOLE_FILE_BYTES:
        raise _too_large_to_read_whole(kind, f"{size} bytes")


def _too_large_to_read_whole(kind: FileKind, size: str) -> DatasetRejected:
    return DatasetRejected(f"dataset_path: a .{kind.value} file is read whole, so it may be at most "
                           f"{MAX_WHOLE_FILE_BYTES // MIB} MiB ({MAX_WHOLE_FILE_BYTES} bytes); this one has {size}. "
                           "Use .jsonl for larger files (validated line by line, up to 5 GB)")


def _validate_records(records: Iterator[tuple[int, Any, Issue | None]], *, fmt: DatasetFormat,
                      pretrain: bool) -> Normalised:
    check = RECORD_CHECKS[(fmt, pretrain)]
    issues: list[Issue] = []
    samples = 0
    total = 0
    for line, record, problem in records:
        found = [problem] if problem else []
        if not found and not isinstance(record, dict):
            found = [Issue(line, "not_an_object", f"must be a JSON object, got {_json_type(record)}")]
        example = None
        if not found:
            example, found = check(record, line)
        if found:
            total += len(found)
            if len(issues) < MAX_REPORTED_ISSUES:
                issues.extend(found)
        else:
            samples += 1
            if not total:
                yield jsonl_line(example)
    if issues:
        raise DatasetInvalid(issues, total=total)
    if not samples:
        raise DatasetRejected("dataset_path: the file contains no samples")
    return ParsedDataset(sample_count=samples, dataset_format=fmt)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------

def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatasetInvalid([Issue(line, "not_utf8", "is not valid UTF-8 text")]) from None


def _read_whole(chunks: Iterable[bytes], *, kind: FileKind) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_WHOLE_FILE_BYTES:   # the file may have grown since its size was checked
            raise _too_large_to_read_whole(kind, f"more than {MAX_WHOLE_FILE_BYTES} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def split_lines(chunks: Iterable[bytes], *, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, line without its b"\\n") for every line of a byte stream, the last one
    included (b"" when the stream ends with a newline). A line longer than ``max_line_bytes`` is
    skipped without being kept and comes out as None: memory holds one chunk and one line."""
    number = 1
    pending = bytearray()   # the start of a line that continues in the next chunk
    too_long = False        # the current line is past the cap: drop its bytes until its newline
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if too_long or len(pending) + end - start > max_line_bytes:
                yield number, None
            elif pending:
                pending += chunk[start:end]
                yield number, bytes(pending)
            else:
                yield number, chunk[start:end]
            pending.clear()
            too_long = False
            number += 1
            start = end + 1
        if not too_long:
            pending += chunk[start:]
            if len(pending) > max_line_bytes:
                too_long = True
                pending.clear()
    yield number, None if too_long else bytes(pending)


def _jsonl_records(lines: Iterable[tuple[int, bytes | None]]) -> Iterator[tuple[int, Any, Issue | None]]:
    for number, raw in lines:
        if raw is None:
            yield number, None, Issue(number, "line_too_long",
                                      f"is longer than {MAX_LINE_BYTES} bytes, the most one sample line may have")
            continue
        text = raw.strip()
        if not text:
            continue  # blank lines (e.g. the trailing newline) are not samples
        try:
            yield number, json.loads(text.decode("utf-8-sig")), None
        except UnicodeDecodeError:
            yield number, None, Issue(number, "not_utf8", "is not valid UTF-8 text")
        except json.JSONDecodeError as exc:
            yield number, None, Issue(number, "malformed_json",
                                      f"malformed JSON ({exc.msg} at column {exc.colno})")


def _json_array_records(data: bytes) -> Iterator[tuple[int, Any, Issue | None]]:
    """Items of a top-level JSON array, each numbered by the line it starts on."""
    text = _decode(data)
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text).end()
    if not text.startswith("[", pos):
        # A single object per line in a .json file is common: read it as jsonl.
        yield from _jsonl_records(split_lines([data], max_line_bytes=MAX_LINE_BYTES))
        return
    pos = ws.match(text, pos + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield exc.lineno, None, Issue(exc.lineno, "malformed_json",
                                          f"malformed JSON ({exc.msg} at column {exc.colno}); "
                                          "the rest of the array cannot be read")
            return
        yield line, item, None
        pos = ws.match(text, pos).end()
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()
            continue
        if text.startswith("]", pos):
            return
        at = text.count("\n", 0, pos) + 1
        yield at, None, Issue(at, "malformed_json", "malformed JSON (expected ',' or ']' between array items)")
        return


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


# ---------------------------------------------------------------------------------------------
# Record rules per format
# ---------------------------------------------------------------------------------------------

def _text(record: dict, key: str, line: int, issues: list[Issue], *, where: str = "",
          required: bool = True) -> str | None:
    """A string field: missing, wrong type and empty are separate rules."""
    name = f"{where}{key}"
    if key not in record or record[key] is None:
        if required:
            issues.append(Issue(line, "missing_field", f"missing field '{name}'"))
        return None
    value = record[key]
    if not isinstance(value, str):
        issues.append(Issue(line, "wrong_type", f"'{name}' must be a string, got {_json_type(value)}"))
        return None
    if required and not value.strip():
        issues.append(Issue(line, "empty_field", f"'{name}' must not be empty"))
        return None
    return value


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer():
        return int(value) if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def _check_conversation_id(record: dict, line: int, issues: list[Issue]) -> None:
    if "conversation_id" not in record:
        issues.append(Issue(line, "missing_field", "missing field 'conversation_id'"))
    elif _positive_int(record["conversation_id"]) is None:
        issues.append(Issue(line, "non_positive_id",
                            f"'conversation_id' must be a positive integer, got {record['conversation_id']!r}"))


_TURN = re.compile(r"^turn_(\d+)$")


def check_moss(record: dict, line: int) -> tuple[dict | None, list[Issue]]:
    issues: list[Issue] = []
    _check_conversation_id(record, line, issues)
    chat = record.get("chat")
    if chat is None:
        issues.append(Issue(line, "missing_field", "missing field 'chat'"))
        return None, issues
    if not isinstance(chat, dict) or not chat:
        issues.append(Issue(line, "wrong_type", "'chat' must be a non-empty object of turn_1, turn_2, ..."))
        return None, issues
    numbers = []
    for key in chat:
        match = _TURN.match(key)
        if not match:
            issues.append(Issue(line, "bad_turn", f"'chat.{key}' is not a turn; keys must be turn_1, turn_2, ..."))
        else:
            numbers.append((int(match.group(1)), key))
    numbers.sort()
    if numbers and [n for n, _ in numbers] != list(range(1, len(numbers) + 1)):
        issues.append(Issue(line, "bad_turn", "'chat' turns must be numbered turn_1, turn_2, ... without gaps"))
    messages = []
    for _, key in numbers:
        turn = chat[key]
        if not isinstance(turn, dict):
            issues.append(Issue(line, "wrong_type", f"'chat.{key}' must be an object with 'Human' and 'MOSS'"))
            continue
        human = _text(turn, "Human", line, issues, where=f"chat.{key}.")
        answer = _text(turn, "MOSS", line, issues, where=f"chat.{key}.")
        messages += [{"role": "user", "content": human}, {"role": "assistant", "content": answer}]
    return (None, issues) if issues else ({"messages": messages}, [])


def check_alpaca(record: dict, line: int) -> tuple[dict | None, list[Issue]]:
    issues: list[Issue] = []
    if "instruction" not in record and "text" in record:
        issues.append(Issue(line, "missing_field", "missing field 'instruction' ({\"text\": ...} records are for "
                                                   "incremental pretraining; fine-tuning needs instruction/output)"))
        return None, issues
    instruction = _text(record, "instruction", line, issues)
    extra = _text(record, "input", line, issues, required=False)
    output = _text(record, "output", line, issues)
    system = _text(record, "system", line, issues, required=False)
    history = record.get("history")
    turns: list[dict] = []
    if history is not None:
        if not isinstance(history, list):
            issues.append(Issue(line, "wrong_type", "'history' must be a list of [instruction, response] pairs"))
        else:
            for i, pair in enumerate(history):
                if (not isinstance(pair, list) or len(pair) != 2
                        or not all(isinstance(p, str) and p.strip() for p in pair)):
                    issues.append(Issue(line, "bad_history",
                                        f"'history[{i}]' must be a pair of two non-empty strings"))
                    continue
                turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    if issues:
        return None, issues
    prompt = instruction if not extra else f"{instruction}\n{extra}"
    messages = ([{"role": "system", "content": system}] if system else []) + turns + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}, []


def check_pretrain_text(record: dict, line: int) -> tuple[dict | None, list[Issue]]:
    issues: list[Issue] = []
    if "text" not in record and "instruction" in record:
        issues.append(Issue(line, "missing_field", "missing field 'text' (incremental pretraining takes "
                                                   "{\"text\": ...} records, not instruction/output)"))
        return None, issues
    text = _text(record, "text", line, issues)
    return (None, issues) if issues else ({"text": text}, [])


SHAREGPT_ODD = ("human", "observation")            # positions 1, 3, 5, ... (the prompt side)
SHAREGPT_EVEN = ("gpt", "function_call", "function")  # positions 2, 4, 6, ... (the model side)
_SHAREGPT_ROLE = {"human": "user", "observation": "user", "gpt": "assistant", "function_call": "assistant",
                  "function": "assistant"}


def check_sharegpt(record: dict, line: int) -> tuple[dict | None, list[Issue]]:
    issues: list[Issue] = []
    conversations = record.get("conversations")
    if conversations is None:
        return None, [Issue(line, "missing_field", "missing field 'conversations'")]
    if not isinstance(conversations, list) or not conversations:
        return None, [Issue(line, "wrong_type", "'conversations' must be a non-empty list of {from, value}")]
    messages: list[dict] = []
    for index, message in enumerate(conversations):
        position = index + 1
        where = f"conversations[{index}]"
        if not isinstance(message, dict):
            issues.append(Issue(line, "wrong_type", f"'{where}' must be an object with 'from' and 'value'"))
            continue
        role = message.get("from")
        if role is None:
            issues.append(Issue(line, "missing_field", f"missing field '{where}.from'"))
        elif role not in _SHAREGPT_ROLE:
            issues.append(Issue(line, "unknown_role", f"'{where}.from' is {role!r}; expected one of "
                                                      f"{', '.join(SHAREGPT_ODD + SHAREGPT_EVEN)}"))
        elif position % 2 == 1 and role not in SHAREGPT_ODD:
            issues.append(Issue(line, "role_order", f"'{where}.from' is '{role}' at position {position}; "
                                                    "odd positions must be human or observation"))
        elif position % 2 == 0 and role not in SHAREGPT_EVEN:
            issues.append(Issue(line, "role_order", f"'{where}.from' is '{role}' at position {position}; "
                                                    "even positions must be gpt or function_call"))
        value = _text(message, "value", line, issues, where=f"{where}.")
        if role in _SHAREGPT_ROLE and value is not None:
            messages.append({"role": _SHAREGPT_ROLE[role], "content": value})
    if len(conversations) % 2 == 1 and not any(i.rule == "role_order" for i in issues):
        issues.append(Issue(line, "role_order", f"'conversations' has {len(conversations)} messages; it must end "
                                                "with a gpt or function_call message (an even count)"))
    system = _text(record, "system", line, issues, required=False)
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, (str, list, dict)):
        issues.append(Issue(line, "wrong_type", "'tools' must be a string (or a JSON list/object)"))
    if issues:
        return None, issues
    prefix = "\n\n".join(p for p in (
        system or "",
        f"Tools:\n{tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False)}" if tools else "") if p)
    return {"messages": ([{"role": "system", "content": prefix}] if prefix else []) + messages}, []


RECORD_CHECKS = {
    (DatasetFormat.moss, False): check_moss,
    (DatasetFormat.alpaca, False): check_alpaca,
    (DatasetFormat.alpaca, True): check_pretrain_text,
    (DatasetFormat.sharegpt, False): check_sharegpt,
}


# ---------------------------------------------------------------------------------------------
# csv / xlsx: conversation_id, human, assistant  ->  MOSS or Alpaca (table 6-2)
# ---------------------------------------------------------------------------------------------

TABLE_COLUMNS = ("conversation_id", "human", "assistant")


def _table_rows(data: bytes, kind: FileKind) -> Iterator[tuple[int, list[Any]]]:
    """(line/row number, cells) for every row, the header included."""
    if kind is FileKind.csv:
        reader = csv.reader(io.StringIO(_decode(data), newline=""))
        start = 1
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1  # a quoted cell may span lines: number rows by where they start
        return
    from openpyxl import load_workbook

    _check_unzipped_size(data)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # not a zip / not a workbook
        raise DatasetRejected(f"dataset_path: not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        sheet = book.worksheets[0]
        for number, cells in enumerate(sheet.iter_rows(values_only=True), 1):
            yield number, list(cells)
    finally:
        book.close()


MAX_XLSX_UNZIPPED_BYTES = 1024 ** 3   # an .xlsx is a zip: what it inflates to, not its size, costs memory


def _check_unzipped_size(data: bytes) -> None:
    """Refuse a workbook that would inflate past the cap (a zip bomb) before anything is inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise DatasetRejected("dataset_path: not a readable .xlsx workbook (not a zip archive)") from None
    if inflated > MAX_XLSX_UNZIPPED_BYTES:
        raise DatasetRejected(f"dataset_path: the workbook unpacks to {inflated} bytes; at most "
                              f"{MAX_XLSX_UNZIPPED_BYTES} bytes (save it as .jsonl or .csv instead)")


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_table(data: bytes, *, kind: FileKind, target: DatasetFormat, pretrain: bool) -> Normalised:
    rows = _table_rows(data, kind)
    issues: list[Issue] = []
    header = next(rows, None)
    if header is None:
        raise DatasetRejected("dataset_path: the file is empty; it needs a header row "
                              "conversation_id, human, assistant")
    header_line, names = header
    columns = [_cell_text(n).strip().lower() for n in names]
    while columns and not columns[-1]:
        columns.pop()
    missing = [c for c in TABLE_COLUMNS if c not in columns]
    if missing:
        raise DatasetInvalid([Issue(header_line, "missing_column",
                                    f"header is missing column(s) {', '.join(missing)}; the table must have "
                                    "exactly conversation_id, human, assistant")])
    extra = [c for c in columns if c not in TABLE_COLUMNS]
    if extra:
        issues.append(Issue(header_line, "unexpected_column",
                            f"unexpected column(s) {', '.join(extra)}; the table has only "
                            "conversation_id, human, assistant"))
    at = {name: columns.index(name) for name in TABLE_COLUMNS}
    conversations: dict[int, list[tuple[str, str]]] = {}
    for line, cells in rows:
        if all(_cell_text(c).strip() == "" for c in cells):
            continue
        value = {name: (cells[i] if i < len(cells) else None) for name, i in at.items()}
        found = []
        cid = _positive_int(value["conversation_id"])
        if _cell_text(value["conversation_id"]).strip() == "":
            found.append(Issue(line, "missing_field", "'conversation_id' is empty; it must be a positive integer"))
        elif cid is None:
            found.append(Issue(line, "non_positive_id",
                               f"'conversation_id' must be a positive integer, got {value['conversation_id']!r}"))
        human, answer = _cell_text(value["human"]), _cell_text(value["assistant"])
        if not human.strip():
            found.append(Issue(line, "empty_field", "'human' must not be empty"))
        if not answer.strip():
            found.append(Issue(line, "empty_field", "'assistant' must not be empty"))
        if found:
            issues.extend(found)
            continue
        conversations.setdefault(cid, []).append((human, answer))
    if issues:
        raise DatasetInvalid(issues)
    if not conversations:
        raise DatasetRejected("dataset_path: the table has no rows below its header")
    convert = _to_moss if target is DatasetFormat.moss else _to_alpaca
    converted = [convert(cid, turns) for cid, turns in conversations.items()]
    check = RECORD_CHECKS[(target, pretrain)]
    for record in converted:
        yield jsonl_line(check(record, 0)[0])
    return ParsedDataset(sample_count=len(converted), dataset_format=target, converted_from=kind,
                         converted=converted)


def _to_moss(cid: int, turns: list[tuple[str, str]]) -> dict:
    return {"conversation_id": cid,
            "chat": {f"turn_{i}": {"Human": h, "MOSS": a} for i, (h, a) in enumerate(turns, 1)}}


def _to_alpaca(cid: int, turns: list[tuple[str, str]]) -> dict:
    *earlier, (human, answer) = turns
    record = {"instruction": human, "input": "", "output": answer}
    if earlier:
        record["history"] = [[h, a] for h, a in earlier]
    return record


def jsonl_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode()


def to_jsonl(records: list[dict]) -> bytes:
    return b"".join(jsonl_line(r) for r in records)
