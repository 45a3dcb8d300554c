import sys

from sglang_pr.cli import main

if __name__ == "__main__":
    sys.exit(main())
