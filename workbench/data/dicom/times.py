"""When a DICOM image was taken: the acquisition date and time read from the header fields, in the
order of the sources that state it (used to put a case's two files in pre/post order).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


_TIME_SOURCES = (
    ("AcquisitionDateTime", None, None),
    ("AcquisitionDate+AcquisitionTime", "AcquisitionDate", "AcquisitionTime"),
    ("ContentDate+ContentTime", "ContentDate", "ContentTime"),
)


def _times(ds: Any) -> tuple[tuple[str, datetime], ...]:
    fallback_date = _parse_date(ds.get("SeriesDate", "")) or _parse_date(ds.get("StudyDate", ""))
    out: list[tuple[str, datetime]] = []
    for source, date_tag, time_tag in _TIME_SOURCES:
        if date_tag is None:
            value = _parse_datetime(ds.get(source, ""))
        else:
            day = _parse_date(ds.get(date_tag, "")) or fallback_date or date(1900, 1, 1)
            clock = _parse_time(ds.get(time_tag, ""))
            value = datetime.combine(day, clock) if clock is not None else None
        if value is not None:
            out.append((source, value))
    return tuple(out)


def _parse_date(value: object) -> date | None:
    text = str(value or "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _parse_time(value: object) -> time | None:
    text = str(value or "").strip().replace(":", "")
    found = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?", text)
    if not found:
        return None
    hh, mm, ss, frac = found.groups()
    try:
        return time(int(hh), int(mm or 0), min(int(ss or 0), 59), int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None


def _parse_datetime(value: object) -> datetime | None:
    text = str(value or "").strip()
    found = re.fullmatch(r"(\d{8})(\d{2,6}(?:\.\d{1,6})?)?([+-]\d{4})?", text)
    if not found:
        return None
    day = _parse_date(found.group(1))
    clock = _parse_time(found.group(2) or "00")
    if day is None or clock is None:
        return None
    out = datetime.combine(day, clock)
    if found.group(3):
        sign = 1 if found.group(3)[0] == "+" else -1
        hours, minutes = int(found.group(3)[1:3]), int(found.group(3)[3:])
        out = out.replace(tzinfo=UTC) - sign * timedelta(hours=hours, minutes=minutes)
    return out
