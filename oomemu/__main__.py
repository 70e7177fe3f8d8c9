"""python -m oomemu"""
import sys

from oomemu.cli import main

sys.exit(main())
