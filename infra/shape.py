#!/usr/bin/env python3
"""Checks the shape of the product code, so a remodel stays done.

- no function longer than MAX_FN lines (common, stager, reader, writer and
  the tools in tests/src);
- no product file longer than MAX_FILE lines, its unit tests included;
- no import circle between the modules of a crate (`crate::`, `super::` and
  `self::` paths outside tests).

Prints every finding and exits 1 if there is one. Reads files as text: a
brace or `::` inside a string or comment is skipped, not parsed.
"""

import os
import re
import sys

MAX_FN = 100
MAX_FILE = 700
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = ["common", "stager", "reader", "writer"]
FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def code_of(line):
    """The line without comments, strings and char literals."""
    line = re.sub(r"//.*$", "", line)
    line = re.sub(r"'(\\.|[^'\\])'", "", line)
    return re.sub(r'"(\\.|[^"\\])*"', "", line)


def product_lines(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        if line.startswith("#[cfg(test)]"):
            return lines[:i]
    return lines


def rust_files(folder):
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            if name.endswith(".rs"):
                yield os.path.join(dirpath, name)


def long_functions(path):
    lines = product_lines(path)
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, opened, j = 0, False, i
        while j < len(lines):
            text = code_of(lines[j])
            if not opened and text.rstrip().endswith(";"):
                break
            for ch in text:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                break
            j += 1
        if opened and j - i + 1 > MAX_FN:
            yield i + 1, m.group(6), j - i + 1
        i = j + 1 if opened else i + 1


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def circles(crate):
    src = os.path.join(ROOT, crate, "src")
    texts = {}
    for path in rust_files(src):
        if "bin" in os.path.relpath(path, src).split(os.sep):
            continue
        texts[module_of(src, path)] = "\n".join(code_of(l) for l in product_lines(path))
    modules = set(texts)

    def resolve(path):
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in modules:
                return tuple(path[:n])
        return None

    edges = {m: set() for m in modules}
    for m, text in texts.items():
        for found in re.finditer(r"\bcrate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
            target = resolve(found.group(1).split("::"))
            if target and target != m:
                edges[m].add(target)
        for found in re.finditer(r"\b((?:super::)+)([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)?", text):
            base = list(m[: max(len(m) - found.group(1).count("super::"), 0)])
            tail = found.group(2).split("::") if found.group(2) else []
            target = resolve(base + tail) or tuple(base)
            if target != m:
                edges[m].add(target)
        for found in re.finditer(r"\bself::([a-z_][a-z0-9_]*)", text):
            target = resolve(list(m) + [found.group(1)])
            if target and target != m:
                edges[m].add(target)
    # Tarjan's strongly connected components: a component of two or more is a circle.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted("::".join(c) or "lib" for c in component))

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def main():
    findings = []
    for folder in [os.path.join(ROOT, c, "src") for c in CRATES] + [os.path.join(ROOT, "tests", "src")]:
        for path in rust_files(folder):
            rel = os.path.relpath(path, ROOT)
            for line, name, length in long_functions(path):
                findings.append(f"{rel}:{line}: fn {name} is {length} lines (at most {MAX_FN})")
            if not rel.startswith("tests"):
                n = len(open(path, encoding="utf-8").read().split("\n")) - 1
                if n > MAX_FILE:
                    findings.append(f"{rel}: {n} lines (at most {MAX_FILE})")
    for crate in CRATES:
        for component in circles(crate):
            findings.append(f"{crate}: modules import each other: {' <-> '.join(component)}")
    for f in findings:
        print(f)
    print(f"shape: {len(findings)} findings (functions <= {MAX_FN} lines, files <= {MAX_FILE}, no import circle)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
