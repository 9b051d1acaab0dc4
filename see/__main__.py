import sys

from see.cli import main

if __name__ == "__main__":  # vLLM's engine starts in a spawned process that re-imports this module as __mp_main__
    sys.exit(main())
