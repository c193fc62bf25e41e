"""adaglimpse-env: Gymnasium environments for active visual exploration with arbitrary glimpse position and
scale, after AdaGlimpse (Pardyl et al., ECCV 2024)."""

__version__ = "0.1.0"
