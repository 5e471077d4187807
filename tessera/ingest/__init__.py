"""The ingest: selection of sources, the source pass over a diff state, batches (check, chunk,
embed, write, delete stale), the points they write, and captions for images."""
