"""``python -m billing [replay]``."""

import logging
import os
import sys

from .service import main

logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
main(sys.argv[1:])
