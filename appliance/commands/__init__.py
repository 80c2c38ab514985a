"""One module per ``solargw`` sub-command; each defines ``register(subparsers)``."""
