import sys

from mcf_rotator.cli import main

sys.exit(main())
