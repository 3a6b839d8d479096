"""The benchmark entry point (same as `dsconv-ext bench`): dsconv_ext's ops against
F.conv2d(groups=C), forward and forward+backward, saved under benchmarks/results/.

    python benchmarks/bench.py [--quick] [--repeats 5] [--out benchmarks/results]
"""

import sys

from dsconv_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
