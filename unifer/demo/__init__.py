"""The tiny model, the packaged photos and the end-to-end demo."""
