"""`densedpo sources`: real video collections -> sources.parquet (the clips `generate` starts from)."""
