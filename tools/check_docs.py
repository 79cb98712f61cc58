"""Keeps the code shown in the docs equal to code that is built and tested. A code block in a
doc under docs/ that follows a line

    <!-- example: objects/examples/counter.h#counter -->

must be, line for line, the region `counter` of that file: the lines between `// [doc:counter]`
and `// [/doc:counter]`, without their common indentation (no `#region`: the whole file). In
docs/api.md every C++ block must be such an example, so no example there is left unbuilt.

Run as a meson test (prints doctest's summary line); `--write` rewrites the blocks from the
files instead of checking them."""
import os
import re
import sys

MARKER = re.compile(r"^\s*<!--\s*example:\s*(\S+?)(?:#(\S+))?\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
ALL_CPP_IS_EXAMPLES = ("docs/api.md",)


def region(root, path, name):
    """The lines of `name` in `path` (all of it if name is None), dedented."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if name is not None:
        begin, end = f"// [doc:{name}]", f"// [/doc:{name}]"
        starts = [i for i, line in enumerate(lines) if line.strip() == begin]
        ends = [i for i, line in enumerate(lines) if line.strip() == end]
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            raise ValueError(f"{path} has no single region {name!r} ({begin} ... {end})")
        lines = lines[starts[0] + 1:ends[0]]
    indent = min((len(line) - len(line.lstrip(" ")) for line in lines if line.strip()), default=0)
    return [line[indent:] for line in lines]


def blocks(text):
    """(marker or None, fence line index, end fence index, indent, language) per code block."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        marker = None
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        if k >= 0 and MARKER.match(lines[k]):
            marker = MARKER.match(lines[k]).groups()
        out.append((marker, i, j, indent, lang))
        i = j + 1
    return lines, out


def check(root, doc, write):
    """Problems in `doc` (relative to root); with write, the doc is rewritten first."""
    path = os.path.join(root, doc)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines, found = blocks(text)
    problems, replaced = [], []
    for marker, start, end, indent, lang in found:
        if marker is None:
            if doc in ALL_CPP_IS_EXAMPLES and lang == "cpp":
                problems.append(f"{doc}:{start + 1}: a C++ block that is not an example file")
            continue
        try:
            want = region(root, *marker)
        except (OSError, ValueError) as e:
            problems.append(f"{doc}:{start + 1}: {e}")
            continue
        want = [indent + line if line else "" for line in want]
        have = lines[start + 1:end]
        if have != want:
            where = next((n for n, (a, b) in enumerate(zip(have, want)) if a != b),
                         min(len(have), len(want)))
            problems.append(f"{doc}:{start + 2 + where}: differs from {marker[0]}"
                            f"{'#' + marker[1] if marker[1] else ''} (run tools/check_docs.py --write)")
            replaced.append((start + 1, end, want))
    if write and replaced:
        for start, end, want in reversed(replaced):
            lines[start:end] = want
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        problems = [p for p in problems if "differs from" not in p]
    return problems, sum(1 for b in found if b[0] is not None)


def main():
    args = [a for a in sys.argv[1:] if a != "--write"]
    write = "--write" in sys.argv[1:]
    root = args[0] if args else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docs = sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(root, "docs"))
                  if f.endswith(".md"))
    failed = 0
    for doc in docs:
        problems, examples = check(root, doc, write)
        print(f"{'ok' if not problems else 'FAILED'}: {doc} ({examples} examples from files)")
        for p in problems:
            print(f"    {p}")
        failed += bool(problems)
    print(f"[doctest] test cases: {len(docs)} | {len(docs) - failed} passed | {failed} failed | "
          "0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
