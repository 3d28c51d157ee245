"""The judges: each reads labels (and, where it needs them, images or predictions) and writes
per-label scores registered in :mod:`grader.scores`.

``cleanlab`` (ObjectLab from GT + predictions), ``clipgrader`` (CLIP grading every box),
``boxgrader`` (the same recipe on a frozen detector's features), ``vlm`` (a vision-language
model's verdict), and the flat judges ``consistency``, ``overlooked``, ``zoom``.
"""
