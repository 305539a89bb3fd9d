"""Stages: one module per stage, registered in ``registry``."""
