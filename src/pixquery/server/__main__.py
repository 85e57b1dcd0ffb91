"""`python -m pixquery.server ARGS` is `pixquery serve ARGS` (handy where the script is not on PATH)."""

import sys

from pixquery.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["serve"]
    main()
