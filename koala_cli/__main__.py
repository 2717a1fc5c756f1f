"""``python -m koala_cli``: the same as the ``koala`` command."""

from .cli import main

if __name__ == "__main__":
    main()
