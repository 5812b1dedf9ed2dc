"""contracts/timestamps.py: one RFC 3339 form (UTC, milliseconds, Z) whatever the datetime, so strings of
one list sort as their instants do."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pydantic import BaseModel

from contracts.timestamps import RFC3339_MS, Timestamp, instants, rfc3339, to_millis


class View(BaseModel):
    at: Timestamp
    maybe: Timestamp | None = None


def test_every_datetime_gets_the_one_form():
    whole = datetime(2026, 12, 7, 3, 4, 36, tzinfo=UTC)           # pydantic alone: "...:36Z"
    fraction = datetime(2026, 12, 7, 3, 4, 36, 299_999, tzinfo=UTC)  # pydantic alone: "...:36.299999Z"
    naive = datetime(2026, 12, 7, 3, 4, 36, 5_000)                   # as MongoDB returns without tz_aware
    eight = datetime(2026, 12, 7, 11, 4, 36, tzinfo=timezone(timedelta(hours=8)))
    assert [rfc3339(v) for v in (whole, fraction, naive, eight)] == [
        "2026-12-07T03:04:36.000Z", "2026-12-07T03:04:36.299Z", "2026-12-07T03:04:36.005Z", "2026-12-07T03:04:36.000Z"]
    assert all(RFC3339_MS.match(rfc3339(v)) for v in (whole, fraction, naive, eight))


def test_strings_sort_as_the_instants():
    base = datetime(2026, 12, 7, 3, 4, 36, tzinfo=UTC)
    moments = [base + timedelta(microseconds=us) for us in (999_000, 0, 299_000, 1_000_000)]
    assert sorted(rfc3339(m) for m in moments) == [rfc3339(m) for m in sorted(moments)]


def test_models_and_views_answer_it_and_python_keeps_datetimes():
    at = datetime(2026, 12, 7, 3, 4, 36, tzinfo=UTC)
    view = View(at=at)
    assert view.model_dump(mode="json") == {"at": "2026-12-07T03:04:36.000Z", "maybe": None}
    assert view.model_dump()["at"] == at
    schema = View.model_json_schema(mode="serialization")["properties"]["at"]
    assert (schema["type"], schema["format"]) == ("string", "date-time")
    assert instants({"a": [at, {"b": at}], "c": 1, "d": "text"}) == {
        "a": ["2026-12-07T03:04:36.000Z", {"b": "2026-12-07T03:04:36.000Z"}], "c": 1, "d": "text"}


def test_an_answer_parses_back_to_the_instant_mongodb_keeps():
    moment = datetime(2026, 12, 7, 3, 4, 36, 299_123, tzinfo=UTC)
    assert datetime.fromisoformat(rfc3339(moment)) == to_millis(moment)
