"""Search (make bench): Lambent's index (tantivy, Korean bigrams + English stems + prefixes) at
1 M synthetic posts beside SQLite FTS5, the other index that is one file a function could fetch
from S3 and search in process (porter + unicode61 tokenizer, every word a prefix query, ranked
by bm25): same captions, same queries, same page of 20, one thread each, in the same run.

`lambent-search-bench` (release build) builds its index, times its queries and exports both
for the peer. SEARCH_DOCS sets the corpus size (default 1,000,000)."""

import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = int(os.environ.get("SEARCH_DOCS", "1000000"))
QUERIES = int(os.environ.get("SEARCH_QUERIES", "2000"))


def percentile(ordered, p):
    return ordered[round((len(ordered) - 1) * p)]


def fts5_peer(folder, queries):
    db_path = Path(folder) / "peer.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE VIRTUAL TABLE posts USING fts5(caption, tokenize='porter unicode61')")
    started = time.perf_counter()
    with open(Path(folder) / "captions.txt", encoding="utf-8") as captions:
        db.executemany("INSERT INTO posts(caption) VALUES (?)", ((line.rstrip("\n"),) for line in captions))
    db.commit()
    db.execute("INSERT INTO posts(posts) VALUES ('optimize')")
    db.commit()
    build_s = time.perf_counter() - started
    size_mb = db_path.stat().st_size / 1e6
    times, by_kind, with_hits = [], {}, 0
    for query in queries:
        words = [w for w in re.split(r"\W+", query["q"]) if w]
        match = " AND ".join(f'"{w}"*' for w in words)
        started = time.perf_counter()
        rows = db.execute(
            "SELECT rowid FROM posts WHERE posts MATCH ? ORDER BY rank LIMIT 20", (match,)
        ).fetchall()
        db.execute("SELECT count(*) FROM posts WHERE posts MATCH ?", (match,)).fetchone()
        ms = (time.perf_counter() - started) * 1000
        with_hits += bool(rows)
        times.append(ms)
        by_kind.setdefault(query["kind"], []).append(ms)
    db.close()
    return build_s, size_mb, times, by_kind, with_hits


def line(name, summary):
    return f"| {name} | {summary['p50_ms']:.2f} | {summary['p95_ms']:.2f} | {summary['p99_ms']:.2f} |"


def summarize(times):
    ordered = sorted(times)
    return {"n": len(ordered), "p50_ms": percentile(ordered, 0.5), "p95_ms": percentile(ordered, 0.95),
            "p99_ms": percentile(ordered, 0.99)}


def main():
    binary = ROOT / "target" / "release" / "lambent-search-bench"
    with tempfile.TemporaryDirectory(prefix="lambent-search-peer-") as folder:
        out = subprocess.run([str(binary), "--docs", str(DOCS), "--queries", str(QUERIES), "--export", folder],
                             check=True, capture_output=True, text=True).stdout
        ours = json.loads(out.strip().splitlines()[-1])
        queries = json.loads((Path(folder) / "queries.json").read_text(encoding="utf-8"))
        build_s, size_mb, times, by_kind, with_hits = fts5_peer(folder, queries)
    peer = summarize(times)
    print(f"Search, {ours['docs']:,} synthetic posts (half Korean, half English; Zipf-skewed words), "
          f"{ours['queries']:,} queries (words, prefixes as typed, two words), a page of 20 and the match count, "
          "one thread:")
    print()
    print("| engine | build s | index MB | queries with hits | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| Lambent (tantivy 0.25: bigrams, stems, prefix field) | {ours['build_s']:.0f} | {ours['index_mb']:.0f} | "
          f"{ours['queries_with_hits']} | {ours['all']['p50_ms']:.2f} | {ours['all']['p95_ms']:.2f} | {ours['all']['p99_ms']:.2f} |")
    print(f"| SQLite {sqlite3.sqlite_version} FTS5 (porter unicode61, prefix queries), the peer | {build_s:.0f} | {size_mb:.0f} | "
          f"{with_hits} | {peer['p50_ms']:.2f} | {peer['p95_ms']:.2f} | {peer['p99_ms']:.2f} |")
    print(f"| peer / Lambent | | | | {peer['p50_ms'] / ours['all']['p50_ms']:.1f}x | "
          f"{peer['p95_ms'] / ours['all']['p95_ms']:.1f}x | {peer['p99_ms'] / ours['all']['p99_ms']:.1f}x |")
    print()
    print("| query kind | Lambent p50 / p95 ms | FTS5 p50 / p95 ms |")
    print("|---|---:|---:|")
    for kind, summary in ours["by_kind"].items():
        theirs = summarize(by_kind.get(kind, [0.0]))
        print(f"| {kind} | {summary['p50_ms']:.2f} / {summary['p95_ms']:.2f} | "
              f"{theirs['p50_ms']:.2f} / {theirs['p95_ms']:.2f} |")
    print()


if __name__ == "__main__":
    main()
