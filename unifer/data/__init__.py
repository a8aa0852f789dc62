"""The four sets as data, record schemas and loaders, checks, raw dataset layouts, the FERBench build, images, JSON."""
