import sys

from miniray.cli.main import main

sys.exit(main())
