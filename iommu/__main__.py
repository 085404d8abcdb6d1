"""`python -m iommu` runs the command line."""
import sys

from iommu.cli import main

sys.exit(main())
