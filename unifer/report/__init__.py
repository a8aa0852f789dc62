"""The offline HTML report: ``unifer report`` writes one folder (``index.html``, its script, style, data and
thumbnails) that opens from ``file://`` with no network. The page's templates and assets are files in ``assets/``."""
