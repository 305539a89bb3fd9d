"""The download stage: its steps and registration in ``stage.py``, its config and parts beside it."""
