"""Feature store: manifests, fingerprinted sharded stores, readers and the shared cache root.

The ground floor of the pipeline: ``extract`` and ``heads`` import it; it imports neither.
"""
