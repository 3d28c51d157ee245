"""The judges: each reads labels (and, where it needs them, images or predictions) and writes
per-label scores registered in :mod:`grader.scores`.

``cleanlab`` (ObjectLab from GT + predictions), ``clipgrader`` (a box grader), ``vlm`` (a
vision-language model's verdict).
"""
