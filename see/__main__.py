import sys

from see.cli import main

sys.exit(main())
