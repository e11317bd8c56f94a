"""Processes and measurements of the scale-out benchmark (``bench/scale.py``)."""
