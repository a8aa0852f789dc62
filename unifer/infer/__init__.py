"""FERBench inference: engines, model checks, the runner, progress files with resume and shards."""
