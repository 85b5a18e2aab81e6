#!/bin/sh
# Installs what the tests and benchmarks use on Debian 12 (run as root, or with sudo).
#   libcmocka-dev   the test framework
#   libgsl-dev      GSL: reference BLAS (gslcblas), special functions, numerical derivatives
#   libopenblas-dev optional reference and benchmark peer (loaded with dlopen when present)
#   valgrind        `make valgrind`
#   gnuplot-nox     plots in `make bench` and `make sweep` (optional)
#   parallel        GNU parallel: runs the lab's experiment grid (`make sweep`, `make grid-check`)
#   pkg-config      `make install-check` builds programs against the installed headers through it
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends gcc g++ make libc6-dev libcmocka-dev libgsl-dev \
    libopenblas-dev valgrind gnuplot-nox parallel pkg-config
