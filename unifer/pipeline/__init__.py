"""Above inference and scoring: a model's answers to FERBench turned into metrics and the table, through the two
packages' library functions (``unifer ferbench run``). Inference never imports scoring, nor scoring inference."""
