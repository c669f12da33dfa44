import sys

from cxrkit.cli import main

sys.exit(main())
