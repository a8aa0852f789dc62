"""Label extraction (paper | strict), metrics, per-set and pooled aggregation, tables, figures."""
