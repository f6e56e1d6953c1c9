// zlib from Debian's zlib1g-dev: PNG compression and checksums for the plots.
#include <zlib.h>
