"""``python -m git_flor`` is ``git flor``."""

from .cli import main

if __name__ == "__main__":
    main()
