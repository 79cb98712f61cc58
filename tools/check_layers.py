"""Checks the include rules of docs/architecture.md: each layer includes only what its row
allows. Run as a meson test; prints doctest's summary line (one case per rule).

Two kinds of rule: RULES forbid some includes in a folder (any include form); ALLOWED lists,
for the author's API, the objects and each tool, the only quoted includes it may have, so a
new dependency on the runtime's internals has to be written down here first."""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


QUOTED = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def sources(folder, pattern=INCLUDE):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            if f.endswith((".h", ".cc")):
                path = os.path.join(base, f)
                with open(path, encoding="utf-8") as fh:
                    yield os.path.relpath(path, ROOT), pattern.findall(fh.read())


# The author's API: what runtime/include/dohost/ and storage's shared vocabulary install.
PUBLIC = {"dohost/" + f for f in os.listdir(os.path.join(ROOT, "runtime", "include", "dohost"))
          if f.endswith(".h")} | {"dohost/status.h", "dohost/sql_value.h"}
RUNTIME_PRIVATE = {f for base, _, files in os.walk(os.path.join(ROOT, "runtime", "src"))
                   for f in files if f.endswith(".h")}


def beside(path, inc):
    """A header next to the including file (a tool's own files)."""
    return "/" not in inc and os.path.isfile(os.path.join(ROOT, os.path.dirname(path), inc))


# (name, folder, predicate on (including file, quoted include) that says it is allowed there)
ALLOWED = [
    ("the author's API (runtime/include) includes only itself", "runtime/include",
     lambda path, inc: inc in PUBLIC),
    ("objects/ include only the author's API and each other", "objects",
     lambda path, inc: inc in PUBLIC or inc.startswith("objects/")),
    ("tools/dohost includes only the author's API and the bundled objects' registration",
     "tools/dohost", lambda path, inc: inc in PUBLIC or inc == "objects/register_all.h"),
    ("tools/doctl includes the author's API, storage and its own files, not the runtime's internals",
     "tools/doctl",
     lambda path, inc: inc in PUBLIC or inc.startswith("dohost/storage/") or beside(path, inc)),
    ("tools/bench includes the API, storage, the runtime's headers (it measures them), objects/",
     "tools/bench",
     lambda path, inc: inc in PUBLIC or inc.startswith(("dohost/storage/", "objects/"))
     or inc in RUNTIME_PRIVATE or beside(path, inc)),
]


# (name, folder, predicate on an included path that says it is forbidden there)
RULES = [
    ("storage/ uses no network, crypto or runtime headers", "storage",
     lambda inc: inc == "libwebsockets.h" or inc.startswith(("openssl/", "runtime/", "objects/", "libpq"))
     or inc.startswith("dohost/") and not inc.startswith(("dohost/storage/", "dohost/status.h",
                                                          "dohost/sql_value.h"))),
    ("the author's API (runtime/include) exposes no SQLite, lws or storage internals", "runtime/include",
     lambda inc: inc in ("sqlite3.h", "libwebsockets.h") or inc.startswith("dohost/storage/")),
    ("only server.cc includes libwebsockets in the runtime", "runtime/src",
     lambda inc: inc == "libwebsockets.h"),
    ("only the page store (runtime/src/store/) includes libpq", "runtime",
     lambda inc: inc.startswith("libpq")),
    ("objects/ use only the author's API", "objects",
     lambda inc: inc in ("sqlite3.h", "libwebsockets.h") or inc.startswith(("dohost/storage/", "libpq"))
     or inc.endswith(("runtime.h", "object_slot.h", "internal.h", "server.h"))),
]

# The files a rule leaves out, by the rule's name.
EXEMPT = {
    "only server.cc includes libwebsockets in the runtime": lambda path: path.endswith("server.cc"),
    "only the page store (runtime/src/store/) includes libpq":
        lambda path: path.startswith("runtime/src/store/"),
}


# Outside bytes reach nlohmann's parser only through dohost::parseJson, which bounds nesting
# (docs/operations.md, "JSON from outside"); a direct parse would let a deep value in.
DIRECT_PARSE = re.compile(r"\b(?:json|Json|ordered_json|basic_json<[^>]*>)::parse\s*\(")
PARSE_FOLDERS = ("runtime", "objects", "tools/dohost", "tools/doctl")


def direct_json_parses():
    bad = []
    for folder in PARSE_FOLDERS:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if not f.endswith((".h", ".cc")):
                    continue
                path = os.path.join(base, f)
                with open(path, encoding="utf-8") as fh:
                    for n, line in enumerate(fh, 1):
                        if DIRECT_PARSE.search(line):
                            bad.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    return bad


def main():
    failed = 0
    bad = direct_json_parses()
    print(f"{'ok' if not bad else 'FAILED'}: JSON is parsed with dohost::parseJson (bounded depth)")
    for b in bad:
        print(f"    {b}")
    failed += bool(bad)
    for name, folder, forbidden in RULES:
        bad = []
        for path, includes in sources(folder):
            for inc in includes:
                if forbidden(inc) and not EXEMPT.get(name, lambda p: False)(path):
                    bad.append(f"{path}: #include {inc}")
        status = "ok" if not bad else "FAILED"
        print(f"{status}: {name}")
        for b in bad:
            print(f"    {b}")
        failed += bool(bad)
    for name, folder, allowed in ALLOWED:
        bad = [f"{path}: #include \"{inc}\"" for path, includes in sources(folder, QUOTED)
               for inc in includes if not allowed(path, inc)]
        print(f"{'ok' if not bad else 'FAILED'}: {name}")
        for b in bad:
            print(f"    {b}")
        failed += bool(bad)
    total = len(RULES) + len(ALLOWED) + 1
    print(f"[doctest] test cases: {total} | {total - failed} passed | {failed} failed | 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
