#!/usr/bin/env python3
"""Validates an OpenAPI document with openapi-spec-validator and lists every error.

    validate_spec.py FILE

openapi-spec-validator's command line prints the whole document with the first reference it
cannot resolve and stops there; this uses the same validator (the version the document
declares: 3.0 or 3.1) through its Python API, prints each error on a few lines (where, what,
which rule), then lists every `$ref` that points nowhere, since the validator stops at the
first. Exit status 1 when anything was found.
"""

import json
import sys

from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator
from openapi_spec_validator.readers import read_from_filename


def where(path) -> str:
    return " > ".join(str(p) for p in path) or "(document)"


def dangling_refs(document) -> list[tuple[str, str]]:
    """Every local `$ref` whose JSON pointer names nothing in the document."""
    found = []

    def resolve(pointer: str) -> bool:
        node = document
        for raw in pointer.lstrip("#").split("/")[1:]:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return False
        return True

    def walk(node, path):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#") and not resolve(ref):
                found.append((where(path), ref))
            for key, value in node.items():
                walk(value, path + [key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, path + [i])

    walk(document, [])
    return found


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec, base_uri = read_from_filename(sys.argv[1])
    version = str(spec.get("openapi", ""))
    validator_cls = OpenAPIV31SpecValidator if version.startswith("3.1") else OpenAPIV30SpecValidator
    errors = 0
    stopped = False
    try:
        for error in validator_cls(spec, base_uri=base_uri).iter_errors():
            errors += 1
            message = str(getattr(error, "message", error)).splitlines()[0][:300]
            print(f"error {errors}: at {where(getattr(error, 'path', []) or [])}: {message}")
            schema_path = list(getattr(error, "schema_path", []) or [])
            if schema_path:
                print(f"    rule: {where(schema_path)}")
    except Exception as error:  # at a reference it cannot resolve, or at `parameters: null`
        errors += 1
        stopped = True
        print(f"error {errors}: the validator stopped: {type(error).__name__}: {str(error).split(' within ')[0][:200]}")
    dangling = dangling_refs(spec)
    for path, ref in dangling:
        errors += 1
        print(f"error {errors}: at {path}: $ref {ref} points to nothing in the document")
    if dangling or stopped:
        # What the validator would have found past the first dangling reference: validate a
        # copy in which each one points to an empty schema (and without `parameters: null`,
        # which its later checks trip on), and report what is new.
        patched = json.loads(json.dumps(spec))
        for _, ref in dangling:
            node = patched
            tokens = [t.replace("~1", "/").replace("~0", "~") for t in ref.lstrip("#").split("/")[1:]]
            for token in tokens[:-1]:
                node = node.setdefault(token, {})
            node[tokens[-1]] = {}
        for item in patched.get("paths", {}).values():
            for operation in item.values() if isinstance(item, dict) else []:
                if isinstance(operation, dict) and operation.get("parameters", []) is None:
                    del operation["parameters"]  # reported above; the validator trips on it
        try:
            for error in validator_cls(patched, base_uri=base_uri).iter_errors():
                message = str(getattr(error, "message", error)).splitlines()[0][:300]
                if getattr(error, "path", None):
                    continue  # a schema error: the first pass reported it
                errors += 1
                print(f"error {errors}: (past where the validator stopped) {message}")
        except Exception as error:
            errors += 1
            print(f"error {errors}: the validator stopped again: {type(error).__name__}: {str(error).split(' within ')[0][:200]}")
    if errors:
        print(f"{sys.argv[1]}: {errors} errors (OpenAPI {version})")
        return 1
    print(f"{sys.argv[1]}: OK, 0 errors (OpenAPI {version}, {validator_cls.__name__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
