"""Applications: the command-line parts that sit above the library (docs/heads.md, README "Layout").

Modules here may import any library module (data, models, losses, eval, index, checkpoint, explain,
train); no library module imports them (tests/test_architecture.py checks it). Each command is one module
with `add_parser(subparsers)` and `run(args) -> exit code`, registered in hade.cli's COMMANDS table.
"""
