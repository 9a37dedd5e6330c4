#!/usr/bin/env python3
"""Reference BM25 figures on the man-page quality set, with the bm25s library.

Usage: bm25s_baseline.py OUT_DIR [--no-stem] [--title-repeat N]

Reads OUT_DIR/corpus.jsonl and OUT_DIR/queries.jsonl (written by
build_set.py), indexes every document with bm25s, retrieves the top 10 for
each query and prints one JSON line:

    {"method": "bm25s", "recall@10": .., "mrr@10": .., "recall@1": ..,
     "docs": N, "queries": M, "index_seconds": .., "query_ms_p50": ..}

Each query has exactly one relevant document (its `answer`), so recall@k is
the share of queries whose answer is in the top k, and MRR@10 the mean of
1/rank (0 when the answer is not in the top 10).

Setup (the default; the figures the Rust test and bench compare against):
  * text indexed per document: the title, a newline, then the contents
    (`"ls(1)\\n<contents>"`), as one field;
  * bm25s' own tokenizer: lowercase, tokens are runs of 2+ word characters,
    English stop words removed (bm25s' "en" list), Snowball English stemming
    (PyStemmer) on documents and queries alike;
  * bm25s defaults for scoring: method "lucene", k1 = 1.5, b = 0.75.
Variants for reference: --no-stem (no stemming), --title-repeat 2 (title
written twice before the contents, a crude title boost).

index_seconds covers tokenizing and indexing the corpus; query_ms_p50 is the
median time of one query, tokenizing included, queries run one at a time.

Needs the venv made by install.sh (bm25s, PyStemmer, numpy).
"""

import argparse
import json
import os
import statistics
import sys
import time

import bm25s
import Stemmer

K = 10


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="folder holding corpus.jsonl and queries.jsonl")
    ap.add_argument("--no-stem", action="store_true", help="do not stem (variant)")
    ap.add_argument("--title-repeat", type=int, default=1, metavar="N",
                    help="write the title N times before the contents (default 1)")
    args = ap.parse_args()

    corpus = load_jsonl(os.path.join(args.out_dir, "corpus.jsonl"))
    queries = load_jsonl(os.path.join(args.out_dir, "queries.jsonl"))
    ids = [d["id"] for d in corpus]
    stemmer = None if args.no_stem else Stemmer.Stemmer("english")

    def tokenize(texts):
        # return_ids=False: lists of token strings, so the query side needs no
        # shared vocabulary (tokens unknown to the index are simply ignored)
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer,
                              return_ids=False, show_progress=False)

    # ---- index
    t0 = time.perf_counter()
    texts = [("\n".join([d["title"]] * args.title_repeat)) + "\n" + d["contents"]
             for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(tokenize(texts), show_progress=False)
    index_seconds = time.perf_counter() - t0

    # ---- queries, one at a time
    hits1 = hits10 = 0
    rr = 0.0
    times = []
    for q in queries:
        t = time.perf_counter()
        q_tokens = tokenize([q["query"]])
        results, _scores = retriever.retrieve(q_tokens, k=K, show_progress=False)
        times.append(time.perf_counter() - t)
        ranked = [ids[i] for i in results[0]]
        if q["answer"] in ranked:
            rank = ranked.index(q["answer"]) + 1
            hits10 += 1
            hits1 += rank == 1
            rr += 1.0 / rank

    n = len(queries)
    method = "bm25s"
    if args.no_stem:
        method += "-nostem"
    if args.title_repeat != 1:
        method += f"-title{args.title_repeat}"
    print(json.dumps({
        "method": method,
        "recall@10": round(hits10 / n, 4),
        "mrr@10": round(rr / n, 4),
        "recall@1": round(hits1 / n, 4),
        "docs": len(corpus),
        "queries": n,
        "index_seconds": round(index_seconds, 3),
        "query_ms_p50": round(statistics.median(times) * 1000, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
