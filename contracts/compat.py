"""Backward-compatibility rules for event schemas (checked by the test suite).

A new schema is compatible with the checked-in one when every existing property is still there with
the same type, and no property became required that was not required before. Consumers on the old
version can then read new events and vice versa (pydantic models ignore unknown fields).
"""
from __future__ import annotations


def _resolve(schema: dict, node: dict) -> dict:
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return schema.get("$defs", {}).get(name, {})
    return node


def _type_signature(schema: dict, node: dict) -> object:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return sorted(str(_type_signature(schema, n)) for n in node["anyOf"])
    if node.get("type") == "array":
        return ("array", _type_signature(schema, node.get("items", {})))
    if "properties" in node:
        return ("object", tuple(sorted(node["properties"])))
    return node.get("type"), tuple(node.get("enum", ())) or node.get("const")


def incompatibilities(old: dict, new: dict, *, path: str = "") -> list[str]:
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, old_node in old_props.items():
        where = f"{path}{name}"
        if name not in new_props:
            problems.append(f"{where}: property removed")
            continue
        old_r, new_r = _resolve(old, old_node), _resolve(new, new_props[name])
        if "properties" in old_r:
            problems += incompatibilities({**old_r, "$defs": old.get("$defs", {})},
                                          {**new_r, "$defs": new.get("$defs", {})}, path=f"{where}.")
            continue
        old_sig, new_sig = _type_signature(old, old_node), _type_signature(new, new_props[name])
        if old_sig != new_sig and not _widened(old_sig, new_sig):
            problems.append(f"{where}: type changed from {old_sig} to {new_sig}")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{path}{name}: became required")
    return problems


def _widened(old_sig: object, new_sig: object) -> bool:
    """An enum that gained members, or a type that became optional, stays readable by old data."""
    if isinstance(old_sig, tuple) and isinstance(new_sig, tuple) and len(old_sig) == 2 == len(new_sig):
        if old_sig[0] == new_sig[0] and isinstance(old_sig[1], tuple) and isinstance(new_sig[1], tuple):
            return set(old_sig[1]) <= set(new_sig[1])
    if isinstance(new_sig, list):
        return str(old_sig) in new_sig
    return False
