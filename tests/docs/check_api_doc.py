#!/usr/bin/env python3
"""Checks that docs/api.md names everything in the public icr.v1 protos.

Parses every .proto file under proto/ with regular expressions and collects the
names of services, rpcs, messages, enums and enum values. Each name must appear
in docs/api.md as code: inside an inline `code span` or a fenced code block, as
a whole identifier (so `PATHWAY_1` does not count as a mention of `PATHWAY_10`).
Files whose package is internal (icr.v1.internal, state.proto) are exempt.

Usage: check_api_doc.py [PROJECT_ROOT] [--fields]
  PROJECT_ROOT  the repository root (default: two levels above this script)
  --fields      also require every field name of the public messages

Exit status: 0 when every name is mentioned; 1 when some are missing (they are
listed) or the inputs cannot be read. Standard library only.
"""
import os
import re
import sys

EXEMPT_PACKAGE_SUFFIX = ".internal"
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip_comments(text):
    """Removes // and /* */ comments, keeping string literals intact."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_body(text, open_brace):
    """The text between the brace at `open_brace` and its matching close."""
    depth = 0
    for k in range(open_brace, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1:k]
    raise ValueError("unbalanced braces")


def parse_proto(path):
    """Returns (package, {kind: set(names)}) for one .proto file."""
    with open(path, encoding="utf-8") as f:
        text = strip_comments(f.read())
    m = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
    package = m.group(1) if m else ""
    names = {"service": set(), "rpc": set(), "message": set(), "enum": set(),
             "enum value": set(), "field": set()}
    for m in re.finditer(r"\bservice\s+(\w+)\s*\{", text):
        names["service"].add(m.group(1))
        body = block_body(text, m.end() - 1)
        names["rpc"].update(re.findall(r"\brpc\s+(\w+)\s*\(", body))
    for m in re.finditer(r"\benum\s+(\w+)\s*\{", text):
        names["enum"].add(m.group(1))
        body = block_body(text, m.end() - 1)
        for v in re.finditer(r"(?:^|;|\{)\s*(\w+)\s*=\s*-?(?:0x[0-9A-Fa-f]+|\d+)", body):
            if v.group(1) not in ("option", "reserved"):
                names["enum value"].add(v.group(1))
    for m in re.finditer(r"\bmessage\s+(\w+)\s*\{", text):
        names["message"].add(m.group(1))
        body = block_body(text, m.end() - 1)
        # Drop nested enum/message bodies; keep fields, including oneof members.
        flat = re.sub(r"\b(enum|message)\s+\w+\s*\{[^{}]*\}", "", body)
        for fm in re.finditer(
                r"(?:^|[;{}])\s*(?:repeated\s+|optional\s+)?"
                r"(map\s*<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+", flat):
            if fm.group(1) not in ("option", "reserved", "oneof"):
                names["field"].add(fm.group(2))
    return package, names


def doc_identifiers(doc):
    """Every identifier that appears inside code in the Markdown text."""
    code = []
    # Fenced blocks first, then inline spans in what is left.
    rest = []
    in_fence = False
    for line in doc.splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        (code if in_fence else rest).append(line)
    rest_text = "\n".join(rest)
    code.extend(re.findall(r"`+([^`]+?)`+", rest_text))
    idents = set()
    for chunk in code:
        idents.update(IDENT.findall(chunk))
    return idents


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    check_fields = "--fields" in argv[1:]
    root = os.path.abspath(args[0] if args else
                           os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    proto_dir = os.path.join(root, "proto")
    doc_path = os.path.join(root, "docs", "api.md")
    if not os.path.isdir(proto_dir):
        print(f"check_api_doc: no proto directory at {proto_dir}", file=sys.stderr)
        return 1
    try:
        with open(doc_path, encoding="utf-8") as f:
            doc = f.read()
    except OSError as e:
        print(f"check_api_doc: cannot read {doc_path}: {e}", file=sys.stderr)
        return 1

    wanted = {}  # (kind, name) -> set of files
    protos = []
    for dirpath, _, files in os.walk(proto_dir):
        for name in sorted(files):
            if name.endswith(".proto"):
                protos.append(os.path.join(dirpath, name))
    for path in sorted(protos):
        package, names = parse_proto(path)
        if package.endswith(EXEMPT_PACKAGE_SUFFIX):
            continue
        rel = os.path.relpath(path, root)
        for kind, items in names.items():
            if kind == "field" and not check_fields:
                continue
            for item in items:
                wanted.setdefault((kind, item), set()).add(rel)
    if not wanted:
        print(f"check_api_doc: found no public proto definitions under {proto_dir}",
              file=sys.stderr)
        return 1

    mentioned = doc_identifiers(doc)
    missing = sorted((k, n, sorted(files)) for (k, n), files in wanted.items()
                     if n not in mentioned)
    counts = {}
    for kind, _ in wanted:
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{counts[k]} {k}s" for k in sorted(counts))
    if missing:
        print(f"docs/api.md does not mention {len(missing)} of the names in the public "
              f"protos ({summary}). Add them (as `code`) to docs/api.md:", file=sys.stderr)
        for kind, name, files in missing:
            print(f"  {kind:<10} {name}  ({', '.join(files)})", file=sys.stderr)
        return 1
    print(f"docs/api.md mentions every public proto name ({summary}).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
