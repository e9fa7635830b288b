"""`python -m hade.train` / `torchrun ... -m hade.train`: the door to the training application.

The entry itself (argument parsing, process group) is hade.apps.train: an application above the library
package hade.train, which never imports it (tests/test_architecture.py).
"""
from __future__ import annotations

import sys

from hade.apps.train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
