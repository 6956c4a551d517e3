"""What :func:`extract_json` does with a text, counted rather than timed: the characters it reads, the calls it makes.

The machines are shared, so a bound on time is either loose or flaky; these counts are the same on any machine,
and a pathological algorithm shows in them as clearly as in a clock. Characters are counted where they are read:
by the text's own methods (the text is a :class:`CountingText`), and by the parse module's regular expressions
and JSON decoder, replaced by counting stand-ins while :func:`work_of` runs. A slice of the text is a plain
string: making it counts its length, reading it again does not (the decoder, which counts, reads it).
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, SupportsIndex

import pytest

from autogen_reliability.validation import _parse
from autogen_reliability.validation._parse import JSONExtractionError, extract_json


@dataclass
class Work:
    characters: int = 0  # read by the text's methods, the module's regular expressions and its JSON decoder
    calls: int = 0  # function calls made, Python and C (these counters' own included: a constant factor)
    reason: str | None = None  # why extraction failed; None when a value was found
    budget: int = sys.maxsize  # of characters and of calls: past it, the work fails at once rather than drag on

    def read(self, count: int) -> None:
        self.characters += max(count, 0)
        if self.characters > self.budget:
            raise AssertionError(f"read more than {self.budget:,} characters: not linear in the text")

    def call(self) -> None:
        self.calls += 1
        if self.calls > self.budget:
            raise AssertionError(f"made more than {self.budget:,} calls: not linear in the text")


def _reads_all(name: str) -> Any:
    """The ``str`` method ``name``, counting the whole text as read."""
    method = getattr(str, name)

    def reads_all(self: CountingText, *args: Any, **kwargs: Any) -> Any:
        self.work.read(len(self))
        return method(self, *args, **kwargs)

    return reads_all


class CountingText(str):
    """A text that adds to ``work.characters`` what each of its own methods reads."""

    work: Work

    def _bounds(self, start: SupportsIndex | None, end: SupportsIndex | None) -> tuple[int, int]:
        first, last, _ = slice(start, end).indices(len(self))
        return first, last

    def find(self, sub: str, start: SupportsIndex | None = None, end: SupportsIndex | None = None) -> int:
        found = str.find(self, sub, start, end)
        first, last = self._bounds(start, end)
        self.work.read((found + len(sub) if found >= 0 else last) - first)
        return found

    def rfind(self, sub: str, start: SupportsIndex | None = None, end: SupportsIndex | None = None) -> int:
        found = str.rfind(self, sub, start, end)
        first, last = self._bounds(start, end)
        self.work.read(last - (found if found >= 0 else first))
        return found

    def count(self, sub: str, start: SupportsIndex | None = None, end: SupportsIndex | None = None) -> int:
        first, last = self._bounds(start, end)
        self.work.read(last - first)
        return str.count(self, sub, start, end)

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        item = str.__getitem__(self, key)
        self.work.read(len(item))
        return item

    def __iter__(self) -> Iterator[str]:
        self.work.read(len(self))
        return str.__iter__(self)

    def __contains__(self, sub: object) -> bool:
        self.work.read(len(self))
        return str.__contains__(self, sub)  # type: ignore[operator]

    # Methods that may read every character (counted whole: a bound, strip reads only the blank ends).
    strip = _reads_all("strip")
    lstrip = _reads_all("lstrip")
    rstrip = _reads_all("rstrip")
    isspace = _reads_all("isspace")
    split = _reads_all("split")
    rsplit = _reads_all("rsplit")
    splitlines = _reads_all("splitlines")
    index = _reads_all("index")
    rindex = _reads_all("rindex")
    startswith = _reads_all("startswith")
    endswith = _reads_all("endswith")
    lower = _reads_all("lower")
    replace = _reads_all("replace")
    partition = _reads_all("partition")


class _CountingPattern:
    """A compiled pattern that adds what each search or match reads (up to where it stopped) to ``work``."""

    def __init__(self, pattern: re.Pattern[str], work: Work) -> None:
        self._pattern = pattern
        self._work = work

    def search(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        found = self._pattern.search(string, pos, endpos)
        self._work.read((found.end() if found is not None else min(endpos, len(string))) - pos)
        return found

    def match(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        found = self._pattern.match(string, pos, endpos)
        self._work.read(found.end() - pos if found is not None else 1)
        return found

    def fullmatch(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> re.Match[str] | None:
        found = self._pattern.fullmatch(string, pos, endpos)
        self._work.read(found.end() - pos if found is not None else 1)
        return found

    def __getattr__(self, name: str) -> Any:
        # A method that is not counted would make the count a lie: fail, and say what to teach this class.
        raise AssertionError(f"the parse module uses Pattern.{name}, which _CountingPattern does not count yet")


class _CountingDecoder:
    """The parse module's JSON decoder, adding what each ``raw_decode`` read to ``work``."""

    def __init__(self, decoder: json.JSONDecoder, work: Work) -> None:
        self._decoder = decoder
        self._work = work

    def raw_decode(self, s: str, idx: int = 0) -> tuple[Any, int]:
        try:
            value, end = self._decoder.raw_decode(s, idx)
        except json.JSONDecodeError as error:
            self._work.read(error.pos - idx)
            raise
        except (ValueError, RecursionError):
            self._work.read(len(s) - idx)  # where it stopped is not known: count all it might have read
            raise
        self._work.read(end - idx)
        return value, end

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the parse module uses JSONDecoder.{name}, which _CountingDecoder does not count yet")


def work_of(text: str, **options: Any) -> Work:
    """The work ``extract_json(text, **options)`` does: characters read and calls made.

    Raises:
        AssertionError: More than 40 characters were read, or 40 calls made, per character of the text (and
            10,000): what is measured at most is a fifth of that, and a quadratic step fails here at once
            instead of running for minutes.
    """
    work = Work(budget=40 * len(text) + 10_000)
    counting = CountingText(text)
    counting.work = work
    with pytest.MonkeyPatch.context() as patch:
        for name, value in vars(_parse).items():
            if isinstance(value, re.Pattern):
                patch.setattr(_parse, name, _CountingPattern(value, work))
            elif isinstance(value, dict) and value and all(isinstance(item, re.Pattern) for item in value.values()):
                patch.setattr(_parse, name, {key: _CountingPattern(item, work) for key, item in value.items()})
            elif isinstance(value, json.JSONDecoder):
                patch.setattr(_parse, name, _CountingDecoder(value, work))

        def profile(_frame: FrameType, event: str, _arg: object) -> None:
            if event in ("call", "c_call"):
                work.call()

        # The garbage collector is held off while counting: a collection inside extract_json runs the finalizers
        # of whatever earlier tests left behind (a client, a connection pool), and their calls, counted here,
        # once made a linear shape look three times as costly at four times the size.
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        sys.setprofile(profile)
        try:
            extract_json(counting, **options)
        except JSONExtractionError as error:
            work.reason = error.reason
        finally:
            sys.setprofile(None)
            if collecting:
                gc.enable()
    return work
