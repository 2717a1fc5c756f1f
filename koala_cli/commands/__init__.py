"""The ``koala`` subcommands, one module each; ``_shared`` holds what they have in common."""
