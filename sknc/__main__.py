"""``python -m sknc``: the ``sknc`` command (see :mod:`sknc.cli`)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
