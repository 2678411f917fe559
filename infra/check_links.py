#!/usr/bin/env python3
"""Follows every relative link in the project's Markdown (README.md, docs/,
and the READMEs under tests/): the file must exist inside the repository and
an anchor must name a heading of the target as GitHub slugs it. Links to
other sites are not followed (CI has no network). Exits 1 on a broken link."""
import os
import re
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"\s*```")


def markdown_files():
    yield os.path.join(ROOT, "README.md")
    for folder in ("docs", "tests"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d not in ("target", "node_modules")]
            for name in sorted(filenames):
                if name.endswith(".md"):
                    yield os.path.join(dirpath, name)


def lines_outside_code(text):
    """(number, line) of prose: not in fenced blocks, inline code or comments."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    fenced = False
    for number, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", "``", line)


def slug(heading):
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, found, fenced = {}, set(), False
        for line in open(path, encoding="utf-8").read().split("\n"):
            if FENCE.match(line):
                fenced = not fenced
                continue
            match = None if fenced else HEADING.match(line)
            if match:
                base = slug(match.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
        cache[path] = found
    return cache[path]


def broken_links():
    checked = 0
    for source in markdown_files():
        text = open(source, encoding="utf-8").read()
        for number, line in lines_outside_code(text):
            for match in LINK.finditer(line):
                target = match.group(1)
                if re.match(r"[a-z][a-z0-9+.-]*:", target):
                    continue
                checked += 1
                path, _, anchor = target.partition("#")
                resolved = os.path.normpath(os.path.join(os.path.dirname(source), path)) if path else source
                where = f"{os.path.relpath(source, ROOT)}:{number}: {target}"
                if os.path.relpath(resolved, ROOT).startswith(".."):
                    yield where, "leaves the repository"
                elif not os.path.exists(resolved):
                    yield where, "no such file"
                elif anchor and not resolved.endswith(".md"):
                    yield where, "an anchor into a file that is not Markdown"
                elif anchor and anchor not in anchors(resolved):
                    yield where, "no such heading"
    print(f"{checked} relative links followed", file=sys.stderr)


def main():
    broken = list(broken_links())
    for where, why in broken:
        print(f"broken link {where} ({why})")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
