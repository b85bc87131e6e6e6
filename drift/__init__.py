"""``python -m drift``: the workers that read the prediction log. ``archive`` moves the shared
log (Redis Streams, or local segment files) into the Parquet archive the readers use."""
