"""A sanitised copy of a parsed JSON value: every string in it, leaf or key, through lists, dicts and tuples.

Used by :meth:`Sanitizer.value <._sanitizer.Sanitizer.value>`, which says what the copy is; this module walks
the value without recursion, so that one as deep as ``json.loads`` accepts cannot exhaust the interpreter's
stack, and copies a list or dict met twice (shared or cyclic) once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

__all__ = ["Sanitize", "map_strings"]

# What a string becomes: sanitize(string, counts, markers), adding what it changed and found to the last two.
Sanitize = Callable[[str, dict[str, int], list[str]], str]
# A container of the copy that Sanitizer.value builds, and a slot in it: an index or a key.
_Parent = list[object] | dict[object, object]


def map_strings(root: object, sanitize: Sanitize, counts: dict[str, int], markers: list[str]) -> object:
    """A copy of ``root`` with each string ``s`` replaced by ``sanitize(s, counts, markers)``, in the order met.

    ``root`` is not touched. When two keys of a dict become equal once sanitised, the one that needed no
    sanitising wins, otherwise the first. (``counts`` and ``markers`` are handed through rather than bound
    to ``sanitize`` beforehand: a call through ``functools.partial`` made ``Sanitizer.value`` 15% slower.)
    """
    holder: list[object] = [None]
    # Iterative, so that a value as deep as json.loads accepts cannot exhaust the interpreter's stack. Only
    # containers go on the stack; strings and other leaves are done where they are met.
    work: list[tuple[dict[object, object] | list[object] | tuple[object, ...], _Parent, object]] = []
    copies: dict[int, object] = {}  # id of a dict or list already copied -> its copy (shared or cyclic values)
    tuples: list[tuple[list[object], _Parent, object]] = []

    def place(value: object, parent: _Parent, slot: object) -> None:
        if isinstance(value, str):
            _put(parent, slot, sanitize(value, counts, markers))
        elif isinstance(value, dict | list | tuple):
            _put(parent, slot, None)
            work.append((value, parent, slot))
        else:
            _put(parent, slot, value)

    place(root, holder, 0)
    while work:
        item, parent, slot = work.pop()
        copy: object
        if not isinstance(item, tuple) and id(item) in copies:
            copy = copies[id(item)]
        elif isinstance(item, dict):
            new_dict: dict[object, object] = {}
            copies[id(item)] = copy = new_dict
            for key, child in _dict_entries(item, sanitize, counts, markers):
                place(child, new_dict, key)
        else:
            new_list: list[object] = [None] * len(item)
            copy = new_list
            if isinstance(item, list):
                copies[id(item)] = new_list
            else:
                # Made a tuple once its items are done: tuples are finished innermost first, below.
                tuples.append((new_list, parent, slot))
            for index, child in enumerate(item):
                place(child, new_list, index)
        _put(parent, slot, copy)
    for items, parent, slot in reversed(tuples):
        _put(parent, slot, tuple(items))
    return holder[0]


def _dict_entries(
    item: dict[object, object], sanitize: Sanitize, counts: dict[str, int], markers: list[str]
) -> list[tuple[object, object]]:
    entries: dict[object, tuple[bool, object]] = {}
    for key, child in item.items():
        new_key: object = key
        if isinstance(key, str):
            new_key = sanitize(key, counts, markers)
        clean = new_key == key
        previous = entries.get(new_key)
        if previous is None or (clean and not previous[0]):
            entries[new_key] = (clean, child)
    return [(key, child) for key, (_, child) in entries.items()]


def _put(parent: _Parent, slot: object, value: object) -> None:
    if isinstance(parent, list):
        parent[cast(int, slot)] = value
    else:
        parent[slot] = value
