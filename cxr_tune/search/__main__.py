import sys

from cxr_tune.search.cli import main

sys.exit(main())
