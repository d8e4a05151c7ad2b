/* greencoap io_uring core (layer 3, C part of uring_hub.py).
 *
 * One gc_ring per hub.  Python makes one call per loop turn, gc_poll(), which
 *   1. submits every queued SQE (sends, re-armed receives, cancels) and waits
 *      for at least one completion or the timeout, in ONE io_uring_enter;
 *   2. harvests the CQEs in C: receive completions are copied out of the
 *      provided-buffer ring into a caller-owned arena (payload and peer
 *      address) with a metadata record each, the buffer is handed back to the
 *      ring, send completions free their memory, the eventfd read is re-armed;
 *   3. re-arms the multishot recvmsgs that ended (no IORING_CQE_F_MORE, e.g.
 *      the buffers ran dry with ENOBUFS): only those, from a list, so a ring
 *      with thousands of sockets pays nothing per idle socket.
 * Sends are queued by gc_send_many(): one call per turn for all sockets, each
 * datagram becoming one sendmsg SQE whose memory lives until its CQE.  Every
 * send in flight is on a list, so gc_free() can reclaim the ones whose CQE
 * never came.
 *
 * Sockets live in slots that grow on demand (no fixed cap; each gc_sock is
 * allocated once and never moves, as an SQE refers to its msghdr).  A slot
 * is reused only after the final CQE of its cancelled recv.
 *
 * A socket added with pktinfo=1 (bound to a wildcard address, with IP_PKTINFO
 * / IPV6_RECVPKTINFO on: see greencoap/pktinfo.py) gets a control buffer in
 * its recvmsg template; the harvest copies each datagram's local address
 * after the peer's (the record's slot carries GC_PKTINFO_FLAG), and its sends
 * take a source-address record each, attached as an IP_PKTINFO or
 * IPV6_PKTINFO cmsg held in the send's own memory.  A send whose source the
 * kernel refuses (the address went away: EINVAL for IPv6, ENETUNREACH for
 * IPv4) is sent again without it.  Other sockets have no control buffer and
 * no cmsg at all.
 *
 * Early shedding (gc_set_limit): a socket may carry a per-source token bucket
 * applied here, at harvest, before a datagram costs Python anything.  It
 * engages only under lasting congestion -- the socket's receive queue
 * holding `trigger` datagrams' worth of bytes (GC_TRUESIZE each, read with
 * SO_MEMINFO, and only after a harvest that took a full multishot round of
 * GC_BUSY_ROUND datagrams from it: the kernel hands out at most 32 per round,
 * so the queue itself is the measure) for `persist` seconds at least without
 * draining to half its depth, or its provided buffers running dry -- and
 * stays engaged while it sheds (and `hold` seconds after).  So a lone fast client on an idle server, a
 * benchmark with a bounded window or a client's burst of a thousand
 * concurrent requests (it drains in milliseconds) is never limited, while a
 * flooding source is held to `rate` datagrams/s
 * (`burst` at most) and the others keep their latency.  Sources are
 * (address, port); their table is bounded (the stalest entry is replaced)
 * and allocated on the first engagement.
 *
 * liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring,
 * so the buffer ring is mmap()ed here.
 *
 * Constants Python needs (GC_META, GC_NAMELEN, GC_CONTROL, GC_PKTINFO_FLAG,
 * GC_LOCAL_REC, GC_HEADROOM, GC_SLOT_STATS) are defined here only and read
 * from the module.
 */
#include <errno.h>
#include <linux/sock_diag.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GC_KIND_SHIFT 56
#define GC_SLOT_MASK 0x3fffffffULL
#define GC_RECV 1ULL
#define GC_SEND 2ULL
#define GC_WAKE 3ULL
#define GC_CANCEL 4ULL
#define GC_META 5 /* int32 fields per received datagram */
#define GC_NAMELEN 28 /* sizeof(struct sockaddr_in6): every address is padded to it */
/* receive control room of a pktinfo socket: IPV6_PKTINFO + IP_PKTINFO (the
 * kernel gives an AF_INET6 socket both for an IPv4-mapped datagram) */
#define GC_CONTROL 72 /* CMSG_SPACE(20) + CMSG_SPACE(12) */
#define GC_PKTINFO_FLAG 0x40000000 /* in a record's slot: a local address follows the peer's */
#define GC_LOCAL_REC 20            /* per send on a pktinfo socket: int32 4|6|0 + 16 bytes */
#define GC_SLOT_STATS 6            /* counters gc_sock_stats() writes */
/* bytes of a receive buffer before the payload's room */
#define GC_HEADROOM ((int)sizeof(struct io_uring_recvmsg_out) + GC_NAMELEN + GC_CONTROL)
#define GC_MAX_SLOTS (1 << 30) /* slot numbers stay below GC_PKTINFO_FLAG */
#define GC_LIMIT_TABLE 1024    /* sources tracked per limited socket */
#define GC_LIMIT_PROBES 8
#define GC_TRUESIZE 1024 /* bytes a small datagram takes in a receive queue (loopback: 832) */
#define GC_BUSY_ROUND 16 /* datagrams from one socket in one harvest that make us look at its queue */
#define GC_CHECK_GAP 20000000ULL /* ns: looks further apart than this start a new congestion */

_Static_assert(GC_NAMELEN == sizeof(struct sockaddr_in6), "GC_NAMELEN");

/* the kernel's struct in_pktinfo / in6_pktinfo (not all libc headers expose them) */
struct gc_in_pktinfo {
    int ifindex;
    struct in_addr spec_dst, addr;
};
struct gc_in6_pktinfo {
    struct in6_addr addr;
    unsigned ifindex;
};

enum { SLOT_FREE = 0, SLOT_ACTIVE = 1, SLOT_CLOSING = 2 };

/* one source's token bucket (early shedding) */
struct gc_bucket {
    uint64_t last_ns; /* 0: unused */
    double tokens;
    uint8_t key[18]; /* port (2) + IPv4 (4) or IPv6 (16) address */
    uint8_t keylen;
};

struct gc_limit {
    double rate, burst; /* tokens per second, bucket size */
    unsigned trigger;   /* datagrams' worth of queued bytes (GC_TRUESIZE each): congestion */
    uint64_t persist_ns; /* how long congestion must last before it engages */
    uint64_t hold_ns;   /* how long it stays engaged after the last trigger or shed */
    uint64_t congested_since, last_check; /* 0: not congested at the last look */
    uint32_t congested_depth; /* queued bytes when this congestion began */
    uint64_t engaged_until;
    struct gc_bucket *table; /* GC_LIMIT_TABLE entries, allocated on first engagement */
};

struct gc_sock {
    int fd;
    int state;
    int armed;
    int pktinfo;
    int queued_rearm; /* on the ring's re-arm list */
    int dead;         /* its recv failed for good (not a socket, closed): never re-armed */
    unsigned turn;    /* harvest in which turn_recvs was counted */
    unsigned turn_recvs;
    struct msghdr msg; /* template for multishot recvmsg: namelen (+ controllen) */
    struct gc_limit *limit;
    /* counters, read by Python (gc_sock_stats) */
    uint64_t recvs, shed, engagements, truncated;
};

struct gc_send {
    struct gc_send *prev, *next; /* the ring's list of sends in flight */
    struct msghdr msg;
    struct iovec iov;
    struct sockaddr_in6 addr;
    int slot, fd;
    union { /* the source-address cmsg, if any (aligned for CMSG_*) */
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct gc_in6_pktinfo))];
    } control;
    char data[];
};

typedef struct gc_ring {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    size_t br_size;
    char *bufs;
    unsigned nbufs, bufsize, mask;
    unsigned max_payload; /* larger datagrams count as truncated */
    int bgid;
    int wake_fd;
    int wake_armed;
    uint64_t wake_val;
    unsigned setup_flags;
    struct gc_sock **socks; /* slots; each gc_sock allocated once, never moved */
    int nslots, cap;
    int *free_slots; /* slots free for reuse (a stack) */
    int nfree;
    int *rearm; /* ACTIVE slots whose multishot recv ended */
    int nrearm;
    int *busy; /* limited slots that had GC_BUSY_ROUND datagrams in this harvest */
    int nbusy;
    unsigned turn;
    struct gc_send sends; /* sentinel of the in-flight list */
    /* counters, read by Python */
    uint64_t send_errors, recv_errors, truncated, enobufs, rearms, sends_total, recvs;
    uint64_t inflight_sends, pktinfo_fallbacks, shed;
} gc_ring;

static uint64_t gc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct io_uring_sqe *gc_sqe(gc_ring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) {
        io_uring_submit(&r->ring); /* SQ full: push what we have, then retry */
        sqe = io_uring_get_sqe(&r->ring);
    }
    return sqe;
}

static int gc_arm_wake(gc_ring *r)
{
    struct io_uring_sqe *sqe = gc_sqe(r);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_read(sqe, r->wake_fd, &r->wake_val, sizeof(r->wake_val), 0);
    io_uring_sqe_set_data64(sqe, GC_WAKE << GC_KIND_SHIFT);
    r->wake_armed = 1;
    return 0;
}

static int gc_arm_recv(gc_ring *r, int slot)
{
    struct gc_sock *s = r->socks[slot];
    struct io_uring_sqe *sqe = gc_sqe(r);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_recvmsg_multishot(sqe, s->fd, &s->msg, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = r->bgid;
    io_uring_sqe_set_data64(sqe, (GC_RECV << GC_KIND_SHIFT) | (uint64_t)slot);
    s->armed = 1;
    return 0;
}

static void gc_queue_rearm(gc_ring *r, int slot)
{
    struct gc_sock *s = r->socks[slot];
    if (!s->queued_rearm) {
        s->queued_rearm = 1;
        r->rearm[r->nrearm++] = slot; /* room: rearm has cap entries */
    }
}

static void gc_release_slot(gc_ring *r, int slot)
{
    struct gc_sock *s = r->socks[slot];
    s->state = SLOT_FREE;
    r->free_slots[r->nfree++] = slot; /* room: free_slots has cap entries */
}

/* Create a ring whose receive buffers hold datagrams of up to max_payload
 * bytes.  Returns NULL with *err = -errno on failure. */
gc_ring *gc_new(unsigned entries, unsigned nbufs, unsigned max_payload, int wake_fd, int *err)
{
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    gc_ring *r = calloc(1, sizeof(*r));
    int ret = -EINVAL;
    size_t i;
    if (!r) {
        *err = -ENOMEM;
        return NULL;
    }
    r->sends.next = r->sends.prev = &r->sends;
    for (i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
        p.cq_entries = entries * 4;
        ret = io_uring_queue_init_params(entries, &r->ring, &p);
        if (ret == 0) {
            r->setup_flags = p.flags;
            break;
        }
        if (ret != -EINVAL)
            break; /* ENOSYS, EPERM, ENOMEM: no point trying other flags */
    }
    if (ret < 0) {
        free(r);
        *err = ret;
        return NULL;
    }
    r->nbufs = nbufs;
    r->bufsize = GC_HEADROOM + max_payload;
    r->max_payload = max_payload;
    r->mask = io_uring_buf_ring_mask(nbufs);
    r->bgid = 1;
    r->br_size = (size_t)nbufs * sizeof(struct io_uring_buf);
    r->br = mmap(NULL, r->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->br == MAP_FAILED) {
        ret = -errno;
        goto fail_ring;
    }
    r->bufs = malloc((size_t)nbufs * r->bufsize);
    if (!r->bufs) {
        ret = -ENOMEM;
        goto fail_map;
    }
    {
        struct io_uring_buf_reg reg;
        unsigned b;
        memset(&reg, 0, sizeof(reg));
        reg.ring_addr = (unsigned long)r->br;
        reg.ring_entries = nbufs;
        reg.bgid = r->bgid;
        ret = io_uring_register_buf_ring(&r->ring, &reg, 0);
        if (ret < 0)
            goto fail_bufs;
        io_uring_buf_ring_init(r->br);
        for (b = 0; b < nbufs; b++)
            io_uring_buf_ring_add(r->br, r->bufs + (size_t)b * r->bufsize, r->bufsize, b,
                                  r->mask, b);
        io_uring_buf_ring_advance(r->br, nbufs);
    }
    r->wake_fd = wake_fd;
    gc_arm_wake(r);
    io_uring_submit(&r->ring);
    *err = 0;
    return r;
fail_bufs:
    free(r->bufs);
fail_map:
    munmap(r->br, r->br_size);
fail_ring:
    io_uring_queue_exit(&r->ring);
    free(r);
    *err = ret;
    return NULL;
}

static void gc_unlink_send(gc_ring *r, struct gc_send *s)
{
    s->prev->next = s->next;
    s->next->prev = s->prev;
    r->inflight_sends--;
}

void gc_free(gc_ring *r)
{
    struct io_uring_cqe *cqe;
    struct gc_send *s, *next;
    int i;
    /* sends still in flight: ask the kernel to cancel them, give it a moment
     * to post their CQEs (each frees its memory), then free what is left */
    if (r->inflight_sends) {
        struct io_uring_sqe *sqe = gc_sqe(r);
        uint64_t deadline = gc_now_ns() + 200000000ULL;
        if (sqe) {
            io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(sqe, GC_CANCEL << GC_KIND_SHIFT);
        }
        io_uring_submit(&r->ring);
        while (r->inflight_sends && gc_now_ns() < deadline) {
            struct __kernel_timespec ts = {0, 10000000};
            unsigned head, n = 0;
            io_uring_wait_cqe_timeout(&r->ring, &cqe, &ts);
            io_uring_for_each_cqe(&r->ring, head, cqe) {
                uint64_t ud = io_uring_cqe_get_data64(cqe);
                if ((ud >> GC_KIND_SHIFT) == GC_SEND) {
                    s = (struct gc_send *)(uintptr_t)(ud & ((1ULL << GC_KIND_SHIFT) - 1));
                    gc_unlink_send(r, s);
                    free(s);
                }
                n++;
            }
            io_uring_cq_advance(&r->ring, n);
        }
    }
    io_uring_queue_exit(&r->ring);
    for (s = r->sends.next; s != &r->sends; s = next) {
        next = s->next;
        free(s);
    }
    for (i = 0; i < r->nslots; i++) {
        if (r->socks[i]->limit) {
            free(r->socks[i]->limit->table);
            free(r->socks[i]->limit);
        }
        free(r->socks[i]);
    }
    free(r->socks);
    free(r->free_slots);
    free(r->rearm);
    free(r->busy);
    munmap(r->br, r->br_size);
    free(r->bufs);
    free(r);
}

/* Room for one more slot: grow the slot tables (doubling). */
static int gc_grow(gc_ring *r)
{
    int cap = r->cap ? r->cap * 2 : 64;
    struct gc_sock **socks;
    int *free_slots, *rearm;
    if (cap > GC_MAX_SLOTS)
        return -EMFILE;
    socks = realloc(r->socks, (size_t)cap * sizeof(*socks));
    if (!socks)
        return -ENOMEM;
    r->socks = socks;
    free_slots = realloc(r->free_slots, (size_t)cap * sizeof(int));
    if (!free_slots)
        return -ENOMEM;
    r->free_slots = free_slots;
    rearm = realloc(r->rearm, (size_t)cap * sizeof(int));
    if (!rearm)
        return -ENOMEM;
    r->rearm = rearm;
    rearm = realloc(r->busy, (size_t)cap * sizeof(int));
    if (!rearm)
        return -ENOMEM;
    r->busy = rearm;
    r->cap = cap;
    return 0;
}

/* Register a socket; returns its slot (>= 0) or -errno, in which case
 * nothing is left registered.  pktinfo: the socket has IP_PKTINFO /
 * IPV6_RECVPKTINFO on (wildcard-bound); see the top. */
int gc_add_socket(gc_ring *r, int fd, int pktinfo)
{
    struct gc_sock *s;
    int slot, ret;
    if (r->nfree) {
        slot = r->free_slots[--r->nfree];
    } else {
        if (r->nslots == r->cap && (ret = gc_grow(r)) < 0)
            return ret;
        s = calloc(1, sizeof(*s));
        if (!s)
            return -ENOMEM;
        slot = r->nslots++;
        r->socks[slot] = s;
    }
    s = r->socks[slot];
    if (s->limit) {
        free(s->limit->table);
        free(s->limit);
    }
    ret = s->queued_rearm; /* a stale entry may still sit on the re-arm list */
    memset(s, 0, sizeof(*s));
    s->queued_rearm = ret;
    s->fd = fd;
    s->state = SLOT_ACTIVE;
    s->msg.msg_namelen = GC_NAMELEN;
    s->pktinfo = pktinfo != 0;
    s->msg.msg_controllen = pktinfo ? GC_CONTROL : 0;
    if ((ret = gc_arm_recv(r, slot)) < 0) {
        gc_release_slot(r, slot);
        return ret;
    }
    return slot;
}

/* Stop receiving on a slot: cancel its multishot recv.  The slot is reused
 * only after the final CQE of that recv arrived. */
int gc_remove_socket(gc_ring *r, int slot)
{
    struct io_uring_sqe *sqe;
    struct gc_sock *s;
    if (slot < 0 || slot >= r->nslots || r->socks[slot]->state != SLOT_ACTIVE)
        return -EINVAL;
    s = r->socks[slot];
    if (!s->armed) {
        gc_release_slot(r, slot); /* a queued re-arm skips it: it is not ACTIVE */
        io_uring_submit(&r->ring); /* queued sends leave before the fd is closed */
        return 0;
    }
    s->state = SLOT_CLOSING;
    sqe = gc_sqe(r);
    if (sqe) {
        io_uring_prep_cancel64(sqe, (GC_RECV << GC_KIND_SHIFT) | (uint64_t)slot, 0);
        io_uring_sqe_set_data64(sqe, GC_CANCEL << GC_KIND_SHIFT);
    }
    io_uring_submit(&r->ring);
    /* run the deferred task work now, so the cancelled recv drops its file
     * reference before the caller closes the socket (the port is free at once) */
    io_uring_get_events(&r->ring);
    return sqe ? 0 : -EBUSY;
}

/* Early shedding for a slot (see the top); rate <= 0 turns it off. */
int gc_set_limit(gc_ring *r, int slot, double rate, double burst, unsigned trigger, double persist,
                 double hold)
{
    struct gc_sock *s;
    if (slot < 0 || slot >= r->nslots || r->socks[slot]->state != SLOT_ACTIVE)
        return -EINVAL;
    s = r->socks[slot];
    if (rate <= 0) {
        if (s->limit) {
            free(s->limit->table);
            free(s->limit);
            s->limit = NULL;
        }
        return 0;
    }
    if (!s->limit) {
        s->limit = calloc(1, sizeof(*s->limit));
        if (!s->limit)
            return -ENOMEM;
    }
    s->limit->rate = rate;
    s->limit->burst = burst < 1 ? 1 : burst;
    s->limit->trigger = trigger ? trigger : 1;
    s->limit->hold_ns = (uint64_t)(hold * 1e9);
    s->limit->persist_ns = (uint64_t)(persist * 1e9);
    return 0;
}

static uint32_t gc_hash(const uint8_t *key, int n)
{
    uint32_t h = 2166136261u;
    int i;
    for (i = 0; i < n; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* Does the limiter of a congested socket let this datagram through?  Takes
 * one token from its source's bucket (creating a full one for a new source,
 * in place of the stalest entry among its probes when the table is full). */
static int gc_admit(struct gc_limit *l, const struct sockaddr *sa, uint64_t now)
{
    uint8_t key[18];
    int n, i;
    uint32_t h;
    struct gc_bucket *b = NULL, *stalest = NULL;
    if (!l->table) {
        l->table = calloc(GC_LIMIT_TABLE, sizeof(*l->table));
        if (!l->table)
            return 1; /* no memory to limit with: let it through */
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        memcpy(key, &a->sin_port, 2);
        memcpy(key + 2, &a->sin_addr, 4);
        n = 6;
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        memcpy(key, &a->sin6_port, 2);
        memcpy(key + 2, &a->sin6_addr, 16);
        n = 18;
    }
    h = gc_hash(key, n);
    for (i = 0; i < GC_LIMIT_PROBES; i++) {
        struct gc_bucket *e = &l->table[(h + (uint32_t)i) & (GC_LIMIT_TABLE - 1)];
        if (e->last_ns && e->keylen == n && memcmp(e->key, key, (size_t)n) == 0) {
            b = e;
            break;
        }
        if (!stalest || e->last_ns < stalest->last_ns)
            stalest = e;
    }
    if (!b) {
        b = stalest;
        memcpy(b->key, key, (size_t)n);
        b->keylen = (uint8_t)n;
        b->tokens = l->burst;
    } else {
        b->tokens += (double)(now - b->last_ns) * 1e-9 * l->rate;
        if (b->tokens > l->burst)
            b->tokens = l->burst;
    }
    b->last_ns = now ? now : 1;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 1;
    }
    return 0;
}

/* Attach the source-address record rec (int32 4, 6 or 0, then 16 bytes of
 * address) to a send as an IP_PKTINFO / IPV6_PKTINFO cmsg. */
static void gc_put_cmsg(struct gc_send *s, int level, int type, const void *data, size_t len)
{
    struct cmsghdr *c;
    s->msg.msg_controllen = CMSG_SPACE(len);
    c = CMSG_FIRSTHDR(&s->msg);
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(len);
    memcpy(CMSG_DATA(c), data, len);
}

static void gc_set_source(struct gc_send *s, const char *rec)
{
    int32_t kind;
    memcpy(&kind, rec, sizeof(kind));
    if (kind != 4 && kind != 6)
        return;
    memset(&s->control, 0, sizeof(s->control));
    s->msg.msg_control = s->control.buf;
    if (kind == 4) {
        struct gc_in_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        memcpy(&pi.spec_dst, rec + 4, 4);
        gc_put_cmsg(s, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
    } else {
        struct gc_in6_pktinfo pi;
        memset(&pi, 0, sizeof(pi));
        memcpy(&pi.addr, rec + 4, 16);
        gc_put_cmsg(s, IPPROTO_IPV6, IPV6_PKTINFO, &pi, sizeof(pi));
    }
}

/* Queue one datagram on the (active) socket in `slot` as a sendmsg SQE:
 * `rec` is its address record (see gc_send_many).  0 when queued, -ENOMEM
 * or -EBUSY (no SQE even after a submit) when not. */
static int gc_queue_send(gc_ring *r, int slot, const char *data, uint32_t len, const char *rec)
{
    struct gc_sock *k = r->socks[slot];
    const struct sockaddr *sa = (const struct sockaddr *)rec;
    struct gc_send *s = malloc(sizeof(*s) + len);
    struct io_uring_sqe *sqe;
    if (!s)
        return -ENOMEM;
    sqe = gc_sqe(r); /* taken last: a taken SQE must be filled */
    if (!sqe) {
        free(s);
        return -EBUSY;
    }
    memcpy(s->data, data, len);
    memcpy(&s->addr, sa, GC_NAMELEN);
    s->iov.iov_base = s->data;
    s->iov.iov_len = len;
    memset(&s->msg, 0, sizeof(s->msg));
    s->msg.msg_name = &s->addr;
    s->msg.msg_namelen =
        sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    s->msg.msg_iov = &s->iov;
    s->msg.msg_iovlen = 1;
    s->slot = slot;
    s->fd = k->fd;
    if (k->pktinfo)
        gc_set_source(s, rec + GC_NAMELEN);
    io_uring_prep_sendmsg(sqe, k->fd, &s->msg, 0);
    io_uring_sqe_set_data64(sqe, (GC_SEND << GC_KIND_SHIFT) | (uint64_t)(uintptr_t)s);
    s->next = &r->sends;
    s->prev = r->sends.prev;
    r->sends.prev->next = s;
    r->sends.prev = s;
    r->inflight_sends++;
    r->sends_total++;
    return 0;
}

/* Queue n datagrams, on any of the ring's sockets, as sendmsg SQEs: one call
 * per loop turn for every socket (a device fleet sends one datagram on each
 * of thousands).  Datagram i goes out on slots[i]; blob holds the payloads
 * back to back (lens[i] bytes each); addrs holds the address records back to
 * back: GC_NAMELEN bytes (sockaddr_in padded, or sockaddr_in6), followed for
 * a pktinfo socket's datagram by a GC_LOCAL_REC source-address record.
 * Returns how many were not queued, each marked failed[i] = 1: those on a
 * slot that is not active, and once memory or SQEs run out, all the rest. */
int gc_send_many(gc_ring *r, const int32_t *slots, const char *blob, const uint32_t *lens,
                 const char *addrs, int n, uint8_t *failed)
{
    int i, bad = 0;
    size_t off = 0, roff = 0;
    for (i = 0; i < n; i++) {
        int slot = slots[i];
        uint32_t len = lens[i];
        struct gc_sock *k;
        failed[i] = 0;
        if (slot < 0 || slot >= r->nslots) { /* its record's size is unknown: stop here */
            for (; i < n; i++, bad++)
                failed[i] = 1;
            break;
        }
        k = r->socks[slot];
        if (k->state != SLOT_ACTIVE || gc_queue_send(r, slot, blob + off, len, addrs + roff) < 0) {
            failed[i] = 1;
            bad++;
        }
        off += len;
        roff += GC_NAMELEN + (k->pktinfo ? GC_LOCAL_REC : 0);
    }
    return bad;
}

/* A send with a source address was refused (see the top): send it
 * again without one (the kernel picks).  1 when resubmitted (s lives on). */
static int gc_resend_plain(gc_ring *r, struct gc_send *s)
{
    struct gc_sock *k = r->socks[s->slot];
    struct io_uring_sqe *sqe;
    if (k->state != SLOT_ACTIVE || k->fd != s->fd)
        return 0;
    sqe = gc_sqe(r);
    if (!sqe)
        return 0;
    s->msg.msg_control = NULL;
    s->msg.msg_controllen = 0;
    io_uring_prep_sendmsg(sqe, s->fd, &s->msg, 0);
    io_uring_sqe_set_data64(sqe, (GC_SEND << GC_KIND_SHIFT) | (uint64_t)(uintptr_t)s);
    r->pktinfo_fallbacks++;
    return 1;
}

/* The local address a datagram was sent to, from its control messages:
 * IP_PKTINFO's ipi_spec_dst (4 bytes) when present, else IPV6_PKTINFO's
 * address (16 bytes, or 4 when IPv4-mapped).  Returns the length written to
 * out, 0 when there is none.  The control area follows a 28-byte name, so it
 * is read with memcpy (not 8-byte aligned). */
static int gc_local_addr(struct io_uring_recvmsg_out *o, struct msghdr *m, unsigned char *out)
{
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *p = (const unsigned char *)io_uring_recvmsg_name(o) + m->msg_namelen;
    size_t left = o->controllen;
    int n = 0;
    if (left > m->msg_controllen)
        left = m->msg_controllen;
    while (left >= sizeof(struct cmsghdr)) {
        struct cmsghdr c;
        size_t dlen, step;
        memcpy(&c, p, sizeof(c));
        if (c.cmsg_len < CMSG_LEN(0) || c.cmsg_len > left)
            break;
        dlen = c.cmsg_len - CMSG_LEN(0);
        if (c.cmsg_level == IPPROTO_IP && c.cmsg_type == IP_PKTINFO &&
            dlen >= sizeof(struct gc_in_pktinfo)) {
            memcpy(out, p + CMSG_LEN(0) + offsetof(struct gc_in_pktinfo, spec_dst), 4);
            return 4;
        }
        if (c.cmsg_level == IPPROTO_IPV6 && c.cmsg_type == IPV6_PKTINFO &&
            dlen >= sizeof(struct gc_in6_pktinfo)) {
            memcpy(out, p + CMSG_LEN(0), 16);
            n = 16;
        }
        step = CMSG_ALIGN(c.cmsg_len);
        if (step >= left)
            break;
        p += step;
        left -= step;
    }
    if (n == 16 && memcmp(out, v4mapped, 12) == 0) {
        memmove(out, out + 12, 4);
        n = 4;
    }
    return n;
}

/* Congestion seen on a limited socket: engage (or extend) its limiter. */
static void gc_engage(struct gc_sock *s, uint64_t now)
{
    struct gc_limit *l = s->limit;
    if (now >= l->engaged_until)
        s->engagements++;
    l->engaged_until = now + l->hold_ns;
}

/* Submit everything queued and wait for a completion or the timeout
 * (timeout_ns < 0: no timeout; 0: don't block), then harvest up to max_recs
 * received datagrams into meta/arena.  Each record is GC_META int32s:
 * slot, payload offset, payload length, address offset, address length.
 * On a pktinfo socket whose datagram told its local address, the slot has
 * GC_PKTINFO_FLAG set and the address is the peer's padded to GC_NAMELEN,
 * then the local one (4 or 16 bytes).
 * Returns the number of records; *more is set when CQEs were left behind
 * because meta or arena was full. */
int gc_poll(gc_ring *r, long long timeout_ns, int32_t *meta, int max_recs, char *arena,
            int arena_size, int *arena_used, int *more)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts;
    unsigned head, seen, returned;
    int nrec = 0, used = 0, slot, ret, i, left, woke, waited;
    uint64_t now, deadline = 0;

    *more = 0;
    if (timeout_ns > 0)
        deadline = gc_now_ns() + (uint64_t)timeout_ns;
again:
    seen = returned = 0;
    woke = waited = 0;
    now = 0;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
    }
    if (timeout_ns == 0 || io_uring_cq_ready(&r->ring)) {
        /* don't block: submit and run deferred task work (one enter, no timer;
         * a zero-timeout wait costs tens of microseconds for the hrtimer) */
        ret = io_uring_submit_and_get_events(&r->ring);
    } else {
        ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, timeout_ns >= 0 ? &ts : NULL,
                                               NULL);
        waited = ret >= 0; /* not on a timeout, a signal or a refusal (-EBUSY, -EAGAIN) */
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        return ret;
    r->turn++;

    io_uring_for_each_cqe(&r->ring, head, cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        uint64_t kind = ud >> GC_KIND_SHIFT;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        if (kind == GC_RECV) {
            struct gc_sock *s;
            slot = (int)(ud & GC_SLOT_MASK);
            s = r->socks[slot];
            if (flags & IORING_CQE_F_BUFFER) {
                unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
                char *buf = r->bufs + (size_t)bid * r->bufsize;
                if (res >= 0 && s->state == SLOT_ACTIVE) {
                    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, res, &s->msg);
                    unsigned plen = o ? io_uring_recvmsg_payload_length(o, res, &s->msg) : 0;
                    if (!o || (o->flags & MSG_TRUNC) || plen > r->max_payload) {
                        r->truncated++;
                        s->truncated++;
                    } else {
                        unsigned nlen = o->namelen > (unsigned)GC_NAMELEN ? GC_NAMELEN : o->namelen;
                        int rslot = slot;
                        if (nrec >= max_recs || used + (int)plen + GC_NAMELEN + 16 > arena_size) {
                            *more = 1;
                            break; /* leave this CQE (and its buffer) for the next call */
                        }
                        if (s->limit) {
                            if (!now)
                                now = gc_now_ns();
                            if (s->turn != r->turn) {
                                s->turn = r->turn;
                                s->turn_recvs = 0;
                            }
                            if (++s->turn_recvs == GC_BUSY_ROUND)
                                r->busy[r->nbusy++] = slot; /* look at its queue below */
                            if (now < s->limit->engaged_until &&
                                !gc_admit(s->limit, io_uring_recvmsg_name(o), now)) {
                                s->shed++;
                                r->shed++;
                                s->limit->engaged_until = now + s->limit->hold_ns;
                                goto recycle;
                            }
                        }
                        memcpy(arena + used, io_uring_recvmsg_payload(o, &s->msg), plen);
                        memcpy(arena + used + plen, io_uring_recvmsg_name(o), nlen);
                        if (s->pktinfo) {
                            unsigned char local[16];
                            int llen = gc_local_addr(o, &s->msg, local);
                            if (llen) {
                                memset(arena + used + plen + nlen, 0, GC_NAMELEN - nlen);
                                memcpy(arena + used + plen + GC_NAMELEN, local, llen);
                                nlen = GC_NAMELEN + llen;
                                rslot |= GC_PKTINFO_FLAG;
                            }
                        }
                        meta[nrec * GC_META + 0] = rslot;
                        meta[nrec * GC_META + 1] = used;
                        meta[nrec * GC_META + 2] = (int32_t)plen;
                        meta[nrec * GC_META + 3] = used + (int)plen;
                        meta[nrec * GC_META + 4] = (int32_t)nlen;
                        used += (int)plen + (int)nlen;
                        nrec++;
                        r->recvs++;
                        s->recvs++;
                    }
                }
            recycle:
                io_uring_buf_ring_add(r->br, buf, r->bufsize, bid, r->mask, returned++);
            } else if (res < 0) {
                if (res == -ENOBUFS) {
                    r->enobufs++;
                    if (s->limit && s->state == SLOT_ACTIVE) /* the buffers ran dry */
                        gc_engage(s, now ? now : (now = gc_now_ns()));
                } else if (res != -ECANCELED) {
                    r->recv_errors++;
                    if (res == -EBADF || res == -ENOTSOCK || res == -EINVAL || res == -EOPNOTSUPP ||
                        res == -EFAULT)
                        s->dead = 1; /* re-arming would fail the same way, every turn */
                }
            }
            if (!(flags & IORING_CQE_F_MORE)) {
                s->armed = 0;
                if (s->state == SLOT_CLOSING)
                    gc_release_slot(r, slot);
                else if (s->state == SLOT_ACTIVE && !s->dead)
                    gc_queue_rearm(r, slot);
            }
        } else if (kind == GC_SEND) {
            struct gc_send *snd = (struct gc_send *)(uintptr_t)(ud & ((1ULL << GC_KIND_SHIFT) - 1));
            if ((res == -EINVAL || res == -EADDRNOTAVAIL || res == -ENETUNREACH) &&
                snd->msg.msg_controllen && gc_resend_plain(r, snd)) {
                /* resent without its source address; its memory lives on */
            } else {
                gc_unlink_send(r, snd);
                free(snd);
                if (res < 0)
                    r->send_errors++;
            }
        } else if (kind == GC_WAKE) {
            r->wake_armed = 0;
            woke = 1;
        }
        seen++;
    }
    if (returned)
        io_uring_buf_ring_advance(r->br, returned);
    io_uring_cq_advance(&r->ring, seen);
    /* limited sockets that were busy: is their receive queue deep (congestion)? */
    for (i = 0; i < r->nbusy; i++) {
        struct gc_sock *s = r->socks[r->busy[i]];
        uint32_t mem[SK_MEMINFO_VARS];
        socklen_t len = sizeof(mem);
        struct gc_limit *l = s->limit;
        if (s->state != SLOT_ACTIVE || !l || getsockopt(s->fd, SOL_SOCKET, SO_MEMINFO, mem, &len))
            continue;
        if (mem[SK_MEMINFO_RMEM_ALLOC] < (uint64_t)l->trigger * GC_TRUESIZE) {
            l->congested_since = 0;
            continue;
        }
        /* deep: a burst drains (each look finds it shallower), a flood keeps
         * it deep; a queue down to half its depth starts a new episode */
        if (!l->congested_since || now - l->last_check > GC_CHECK_GAP ||
            mem[SK_MEMINFO_RMEM_ALLOC] < l->congested_depth / 2) {
            l->congested_since = now;
            l->congested_depth = mem[SK_MEMINFO_RMEM_ALLOC];
        }
        l->last_check = now;
        if (now - l->congested_since >= l->persist_ns)
            gc_engage(s, now);
    }
    r->nbusy = 0;
    /* re-arm what ended: multishot receives (from the list) and the wake-up read */
    left = 0;
    for (i = 0; i < r->nrearm; i++) {
        int sl = r->rearm[i];
        struct gc_sock *s = r->socks[sl];
        if (s->state != SLOT_ACTIVE || s->armed) {
            s->queued_rearm = 0;
        } else if (gc_arm_recv(r, sl) == 0) {
            s->queued_rearm = 0;
            r->rearms++;
        } else {
            r->rearm[left++] = sl; /* no SQE now: next turn */
        }
    }
    r->nrearm = left;
    if (!r->wake_armed)
        gc_arm_wake(r);
    if (waited && !nrec && !woke && !*more) {
        /* a blocking wait woken by nothing Python acts on (the completion of
         * the send submitted with it, a datagram shed or truncated): wait on
         * for what is left of the timeout, rather than return a turn to the
         * hub that costs a second enter for the reply it waits for */
        if (timeout_ns < 0)
            goto again;
        now = gc_now_ns();
        if (now < deadline) {
            timeout_ns = (long long)(deadline - now);
            goto again;
        }
    }
    *arena_used = used;
    return nrec;
}

unsigned gc_setup_flags(gc_ring *r) { return r->setup_flags; }

/* A slot's counters (GC_SLOT_STATS of them): received, shed early, limiter
 * engagements, whether the limiter is engaged now (0/1), whether its recv
 * died (0/1), datagrams too large (truncated). */
void gc_sock_stats(gc_ring *r, int slot, uint64_t *out)
{
    struct gc_sock *s;
    memset(out, 0, GC_SLOT_STATS * sizeof(*out));
    if (slot < 0 || slot >= r->nslots)
        return;
    s = r->socks[slot];
    out[0] = s->recvs;
    out[1] = s->shed;
    out[2] = s->engagements;
    out[3] = s->limit && gc_now_ns() < s->limit->engaged_until;
    out[4] = (uint64_t)s->dead;
    out[5] = s->truncated;
}
