"""Cut OpenAI's published OpenAPI document down to the operations OpenClaw serves, with
every component they reference, into ``tests/openapi/openai.json`` (the fuzz test's
spec). Run it on a newer ``openapi.json`` from github.com/openai/openai-openapi:

    python tests/openapi/prune_spec.py path/to/openapi.json COMMIT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = {
    "/chat/completions": ["post"],
    "/completions": ["post"],
    "/embeddings": ["post"],
    "/models": ["get"],
    "/models/{model}": ["get"],
    "/responses": ["post"],
    "/responses/{response_id}": ["get", "delete"],
    "/responses/{response_id}/input_items": ["get"],
}
OUT = Path(__file__).with_name("openai.json")


def references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(references(item) for item in node))
    return set()


def prune(spec: dict[str, Any], commit: str) -> dict[str, Any]:
    paths = {path: {method: spec["paths"][path][method] for method in methods}
             for path, methods in OPERATIONS.items()}
    kept: dict[str, dict[str, Any]] = {}
    todo = references(paths)
    while todo:
        ref = todo.pop()
        _hash, _components, section, name = ref.split("/", 3)
        if name in kept.setdefault(section, {}):
            continue
        kept[section][name] = spec["components"][section][name]
        todo |= references(kept[section][name])
    security = spec["components"].get("securitySchemes", {})
    return {"openapi": spec["openapi"],
            "info": {**spec["info"], "x-pruned-from": f"openai/openai-openapi@{commit}"},
            "servers": spec.get("servers", []), "security": spec.get("security", []),
            "paths": paths,
            "components": {**{section: dict(sorted(items.items()))
                              for section, items in sorted(kept.items())},
                           "securitySchemes": security}}


if __name__ == "__main__":
    source, commit = Path(sys.argv[1]), sys.argv[2]
    pruned = prune(json.loads(source.read_text()), commit)
    OUT.write_text(json.dumps(pruned, indent=1, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(pruned['paths'])} paths, "
          f"{sum(len(v) for v in pruned['components'].values())} components")
