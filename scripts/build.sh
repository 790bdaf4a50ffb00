#!/usr/bin/env bash
# Configure (when needed) and build w4a-httpd in the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
    ./configure
fi
make -j"$(nproc)"
