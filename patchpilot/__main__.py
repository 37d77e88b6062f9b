"""python -m patchpilot"""
import sys

from patchpilot.cli import main

sys.exit(main())
