"""`make demo`: ingest the sample corpus on the embedded defaults, search it, print a summary."""

from __future__ import annotations

from typing import Any

from tessera.core.settings import Settings

QUERIES = [
    "how do plants make oxygen from sunlight",
    "why does magma come out of a mountain",
    "cold tomato soup",
    "nearest neighbour search over embeddings",
]


def run_demo(settings: Settings) -> dict[str, Any]:
    """Ingest twice (the second run must embed nothing), then answer the sample queries."""
    from models import make_backend
    from tessera.ingest.run import run_ingest
    from tessera.service.search import readable_score, search

    first = run_ingest(settings)
    second = run_ingest(settings)
    print(f"\nfirst ingest:  {_line(first)}")
    print(f"second ingest: {_line(second)}  (unchanged documents are not embedded again)")
    backend = make_backend(settings)
    answers = {}
    for query in QUERIES:
        hits = search(settings, query=query, k=1, backend=backend)
        top = hits[0] if hits else {}
        answers[query] = top.get("doc_id")
        print(f"  search {query!r:48} -> {top.get('doc_id')} ({readable_score(top)})")
    print(f"\nstate is in {settings.home}; try `tessera search \"your question\"`")
    return {"first": first, "second": second, "answers": answers}


def _line(s: dict[str, Any]) -> str:
    return (f"seen {s['seen']}, indexed {s['indexed']}, unchanged {s['unchanged']}, "
            f"quarantined {s['quarantined']}, chunks embedded {s['chunks_embedded']}, "
            f"{s['seconds']:.1f} s")
