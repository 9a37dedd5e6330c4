#!/usr/bin/env python3
"""Splits Markdown documents into passages for the rag backend's shipped corpus.

Each passage is a run of paragraphs under one heading, at most about MAX_CHARS characters (a
table or code block is never cut); its title is "<document> > <heading path>", its id
"<document-stem>-<n>". One JSON document a line ({"id", "title", "contents"}), the rag corpus
format.

usage: split_docs.py OUT.jsonl FILE.md [FILE.md ...]
  e.g. python3 backends/rag/corpus/split_docs.py backends/rag/corpus/agentflow-docs.jsonl \
         ../shared/PROTOCOL.md ../shared/BACKENDS.md ../shared/STYLE.md
The crate's test `shipped_corpus_loads_and_answers` keeps the result loadable.
"""
import json, os, re, sys

MAX_CHARS = 900


def blocks(text):
    """Paragraphs, with fenced code blocks and tables kept whole."""
    out, cur, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and not line.strip():
            if cur:
                out.append("\n".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        out.append("\n".join(cur))
    return [piece for block in out for piece in list_items(block)]


def list_items(block):
    """A long list, one block per item."""
    if len(block) <= MAX_CHARS or block.startswith(("```", "|")):
        return [block]
    items, cur = [], []
    for line in block.splitlines():
        if re.match(r"^(-|\*|\d+\.)\s", line) and cur:
            items.append("\n".join(cur))
            cur = []
        cur.append(line)
    items.append("\n".join(cur))
    return items


def passages(name, text):
    path, chunk = [], []

    def flush():
        if chunk:
            yield " > ".join([name] + [h for h in path if h]), "\n\n".join(chunk)
            chunk.clear()

    for block in blocks(text):
        first, _, rest = block.partition("\n")
        m = re.match(r"^(#{1,6})\s+(.*)", first)
        if m:
            yield from flush()
            level = len(m.group(1))
            del path[level - 1:]
            path.extend([""] * (level - 1 - len(path)))
            path.append(m.group(2).strip())
            if not rest.strip():
                continue
            block = rest
        if chunk and sum(len(c) for c in chunk) + len(block) > MAX_CHARS:
            yield from flush()
        chunk.append(block)
    yield from flush()


def main():
    out, files = sys.argv[1], sys.argv[2:]
    n_total = 0
    with open(out, "w", encoding="utf-8") as f:
        for file in files:
            name = os.path.basename(file)
            stem = os.path.splitext(name)[0].lower()
            with open(file, encoding="utf-8") as src:
                text = src.read()
            for n, (title, contents) in enumerate(passages(name, text), 1):
                f.write(json.dumps({"id": f"{stem}-{n}", "title": title, "contents": contents}, ensure_ascii=False) + "\n")
                n_total += 1
    print(f"{n_total} passages -> {out}")


if __name__ == "__main__":
    main()
