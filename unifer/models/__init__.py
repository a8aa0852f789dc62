"""What every consumer of a checkpoint shares: checks before loading, families, device/dtype/attention rules and the
one processor loader. Below both ``unifer.infer`` and ``unifer.train``."""
