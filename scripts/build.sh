#!/usr/bin/env bash
# Configure (when needed) and build w4a-httpd in the source tree.
#
# W4A_SANITIZE=1: build instead an ASan + UBSan copy in build-san/ (a copy
# of the sources, configured with --enable-sanitize), leaving the normal
# build alone; the integration harness uses it with W4A_SANITIZE=1 too.
# (A VPATH build is refused by automake once the source tree is configured,
# hence the copy.)
set -euo pipefail
cd "$(dirname "$0")/.."

configure_flags=()
if [ "${W4A_SANITIZE:-0}" = 1 ]; then
    mkdir -p build-san
    # Tracked and new (not ignored) source files; build products stay out.
    git ls-files -z -co --exclude-standard -- . ':!:build-san' \
        | rsync -a --from0 --files-from=- ./ build-san/
    cd build-san
    configure_flags=(--enable-sanitize)
fi

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt configure ]; then
    autoreconf -fi
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
    ./configure "${configure_flags[@]}"
fi
make -j"$(nproc)"
