#!/usr/bin/env python3
"""The baseline beside `benches/rag.rs`'s "passages/s embedded": how many passages per second
sentence-transformers (PyTorch) embeds with the same model (all-MiniLM-L6-v2 from
tests/rag/install_model.sh), the same passages (the first --passages of the generated corpus),
batch size, token limit and threads, on the CPU, offline.

Not run by CI (PyTorch is gigabytes). Set up once and run:
    python3 -m venv target/st-venv && target/st-venv/bin/pip install torch sentence-transformers
    target/st-venv/bin/python benches/embed_baseline.py [--passages 256 --batch 32 --threads 2]
The passages come from the contract's generator, ../shared/bench/gen_corpus.py (--generator).
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = os.path.join(os.path.dirname(REPO), "shared", "bench", "gen_corpus.py")
MODEL = os.path.join(REPO, "target", "models", "all-MiniLM-L6-v2")


def passages_from_gen_corpus(n, gen):
    # The doc PRNG (seed 42) is sequential, so the first n docs of a corpus of n docs are the
    # first n docs of the default 100k corpus too, as agentflow_rag::synthetic generates them.
    with tempfile.TemporaryDirectory(prefix="embed_baseline_") as d:
        subprocess.run([sys.executable, gen, d, str(n), "1"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "corpus.jsonl")) as f:
            out = [json.loads(line)["contents"] for line in f]
    return out[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passages", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--generator", default=GEN)
    a = ap.parse_args()

    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}  sentence-transformers {sentence_transformers.__version__}  "
          f"threads {torch.get_num_threads()}  python {sys.version.split()[0]}")

    passages = passages_from_gen_corpus(a.passages, a.generator)
    model = SentenceTransformer(a.model, device="cpu")
    model.max_seq_length = a.max_seq
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = dim_fn()
    print(f"model {a.model}  device {model.device}  dim {dim}  "
          f"max_seq {model.max_seq_length}  passages {len(passages)}  batch {a.batch}")

    # mean tokens per passage, as the model sees them (incl. [CLS]/[SEP]), truncated at max_seq
    ids = model.tokenizer(passages, truncation=True, max_length=a.max_seq)["input_ids"]
    mean_tok = sum(len(x) for x in ids) / len(ids)

    kw = dict(batch_size=a.batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    model.encode(passages[:64], **kw)  # warm-up

    rates = []
    for i in range(3):
        t0 = time.perf_counter()
        emb = model.encode(passages, **kw)
        dt = time.perf_counter() - t0
        rates.append(len(passages) / dt)
        print(f"st run {i + 1}: {len(passages)} passages in {dt:.3f} s = {rates[-1]:.1f} passages/s  "
              f"(shape {emb.shape})")
    print(f"st summary: median {statistics.median(rates):.1f} passages/s "
          f"(runs: {', '.join(f'{r:.1f}' for r in rates)}), mean tokens per passage {mean_tok:.1f}")


if __name__ == "__main__":
    main()
