"""The trainer's losses, one per module: DINO (CLS token), iBOT (masked patch
tokens), KoLeo (spread of the CLS features) and the teacher's centering
(Sinkhorn-Knopp or an EMA centre)."""
