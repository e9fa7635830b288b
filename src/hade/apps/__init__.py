"""Applications: the command-line parts that sit above the library (docs/heads.md, README "Layout").

Modules here may import any library module (data, models, losses, eval, index, checkpoint, explain,
train); no library module imports them (tests/test_architecture.py checks it).
"""
