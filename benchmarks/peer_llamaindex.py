"""The peer a user would pick instead: LlamaIndex's IngestionPipeline into Qdrant (local mode),
same model files, same documents. Runs in its own venv (benchmarks/out/peer-venv), one whole
process per ingest, as a user's script would; never imports Tessera.

    peer-venv/bin/python benchmarks/peer_llamaindex.py CORPUS_DIR WORK_DIR MODEL_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(corpus: str, work: str, model: str) -> None:
    """Load the folder, run the pipeline (upserts and deletes against the docstore), persist."""
    start = time.perf_counter()
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient
    from transformers import AutoTokenizer

    root = Path(work)
    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model)
    docs = SimpleDirectoryReader(corpus, filename_as_id=True).load_data()
    client = QdrantClient(path=str(root / "qdrant"))
    store = QdrantVectorStore(client=client, collection_name="peer")
    # The same model's tokenizer and window as Tessera's chunker (256 tokens, 32 overlap).
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=254, chunk_overlap=32,
                                          tokenizer=tokenizer.tokenize),
                         HuggingFaceEmbedding(model_name=model, device="cpu", embed_batch_size=32)],
        docstore=SimpleDocumentStore(), vector_store=store,
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE)
    state = root / "pipeline"
    if state.exists():
        pipeline.load(str(state))
    nodes = pipeline.run(documents=docs)
    pipeline.persist(str(state))
    client.close()
    print(json.dumps({"documents": len(docs), "nodes_embedded": len(nodes),
                      "seconds": round(time.perf_counter() - start, 3)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
