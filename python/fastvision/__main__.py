import sys

from fastvision.cli import main

sys.exit(main())
