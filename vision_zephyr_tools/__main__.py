import sys

from vision_zephyr_tools.cli import main


sys.exit(main())
