"""Models: the package's Vision Transformer (``vit``, ``layers``), its checkpoint
loaders (``checkpoints``, ``convert``) and the other networks of the pipeline.
Import the submodules directly; this package imports nothing heavy so that the
command line stays fast."""
