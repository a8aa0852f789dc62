"""Side-by-side measurements: this repository against the paper's code (CPU) and the GPU benchmark."""
