"""cffi builder for ``greencoap._uring``, the io_uring core (layer 3, build time).

Run at ``pip install`` time by setup.py (out-of-line API mode, linked against
liburing).  The C code lives in ``uring_core.h``; this file only declares
what Python may call.
"""

from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
#define GC_META ...
#define GC_NAMELEN ...
#define GC_CONTROL ...
#define GC_HEADROOM ...
#define GC_PKTINFO_FLAG ...
#define GC_LOCAL_REC ...
#define GC_SLOT_STATS ...
typedef struct gc_ring {
    uint64_t send_errors, recv_errors, truncated, enobufs, rearms, sends_total, recvs;
    uint64_t inflight_sends, pktinfo_fallbacks, shed;
    int nslots, nfree;
    ...;
} gc_ring;
gc_ring *gc_new(unsigned entries, unsigned nbufs, unsigned max_payload, int wake_fd, int *err);
void gc_free(gc_ring *r);
int gc_add_socket(gc_ring *r, int fd, int pktinfo);
int gc_remove_socket(gc_ring *r, int slot);
int gc_set_limit(gc_ring *r, int slot, double rate, double burst, unsigned trigger, double persist,
                 double hold);
int gc_send_many(gc_ring *r, const int32_t *slots, const char *blob, const uint32_t *lens,
                 const char *addrs, int n, uint8_t *failed);
int gc_poll(gc_ring *r, long long timeout_ns, int32_t *meta, int max_recs, char *arena,
            int arena_size, int *arena_used, int *more);
unsigned gc_setup_flags(gc_ring *r);
void gc_sock_stats(gc_ring *r, int slot, uint64_t *out);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "greencoap._uring",
    '#include "uring_core.h"',
    libraries=["uring"],
    include_dirs=[HERE],
    depends=[os.path.join(HERE, "uring_core.h")],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(HERE, "..", "build", "cffi"), verbose=True)
