/* greencoap io_uring core (layer 3, C part of uring_hub.py).
 *
 * One gc_ring per hub.  Python makes one call per loop turn, gc_poll(), which
 *   1. submits every queued SQE (sends, re-armed receives, cancels) and waits
 *      for at least one completion or the timeout, in ONE io_uring_enter;
 *   2. harvests the CQEs in C: receive completions are copied out of the
 *      provided-buffer ring into a caller-owned arena (payload and peer
 *      address) with a metadata record each, the buffer is handed back to the
 *      ring, send completions free their memory, the eventfd read is re-armed;
 *   3. re-arms a multishot recvmsg that ended (no IORING_CQE_F_MORE, e.g. the
 *      buffers ran dry with ENOBUFS).
 * Sends are queued by gc_send_batch(): one call per socket per turn, each
 * datagram becoming one sendmsg SQE whose memory lives until its CQE.
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
 * liburing 2.3 has io_uring_register_buf_ring but not io_uring_setup_buf_ring,
 * so the buffer ring is mmap()ed here.
 */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define GC_MAX_SOCKS 256
#define GC_KIND_SHIFT 56
#define GC_RECV 1ULL
#define GC_SEND 2ULL
#define GC_WAKE 3ULL
#define GC_CANCEL 4ULL
#define GC_META 5 /* int32 fields per received datagram */
#define GC_NAMELEN ((int)sizeof(struct sockaddr_in6))
/* receive control room of a pktinfo socket: IPV6_PKTINFO + IP_PKTINFO (the
 * kernel gives an AF_INET6 socket both for an IPv4-mapped datagram) */
#define GC_CONTROL 72 /* CMSG_SPACE(20) + CMSG_SPACE(12) */
#define GC_PKTINFO_FLAG 0x10000 /* in a record's slot: a local address follows the peer's */
#define GC_LOCAL_REC 20         /* per send on a pktinfo socket: int32 4|6|0 + 16 bytes */

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

struct gc_sock {
    int fd;
    int state;
    int armed;
    int pktinfo;
    struct msghdr msg; /* template for multishot recvmsg: namelen (+ controllen) */
};

struct gc_send {
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
    struct gc_sock socks[GC_MAX_SOCKS];
    /* counters, read by Python */
    uint64_t send_errors, recv_errors, truncated, enobufs, rearms, sends, recvs;
    uint64_t inflight_sends, pktinfo_fallbacks;
} gc_ring;

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
    struct gc_sock *s = &r->socks[slot];
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

/* Create a ring; *flags_used tells which setup flags the kernel accepted.
 * Returns NULL with *err = -errno on failure. */
gc_ring *gc_new(unsigned entries, unsigned nbufs, unsigned bufsize, int wake_fd, int *err)
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
    r->bufsize = bufsize;
    r->max_payload =
        bufsize - (unsigned)sizeof(struct io_uring_recvmsg_out) - GC_NAMELEN - GC_CONTROL;
    r->mask = io_uring_buf_ring_mask(nbufs);
    r->bgid = 1;
    r->br_size = (size_t)nbufs * sizeof(struct io_uring_buf);
    r->br = mmap(NULL, r->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->br == MAP_FAILED) {
        ret = -errno;
        goto fail_ring;
    }
    r->bufs = malloc((size_t)nbufs * bufsize);
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
            io_uring_buf_ring_add(r->br, r->bufs + (size_t)b * bufsize, bufsize, b, r->mask, b);
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

void gc_free(gc_ring *r)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    /* release send memory still owned by the kernel's view; the ring goes away */
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        if ((ud >> GC_KIND_SHIFT) == GC_SEND)
            free((void *)(uintptr_t)(ud & ((1ULL << GC_KIND_SHIFT) - 1)));
        n++;
    }
    io_uring_cq_advance(&r->ring, n);
    io_uring_queue_exit(&r->ring);
    munmap(r->br, r->br_size);
    free(r->bufs);
    free(r);
}

/* Register a socket; returns its slot (>= 0) or -errno.  pktinfo: the socket
 * has IP_PKTINFO / IPV6_RECVPKTINFO on (wildcard-bound); see the top. */
int gc_add_socket(gc_ring *r, int fd, int pktinfo)
{
    int slot;
    for (slot = 0; slot < GC_MAX_SOCKS; slot++)
        if (r->socks[slot].state == SLOT_FREE)
            break;
    if (slot == GC_MAX_SOCKS)
        return -EMFILE;
    memset(&r->socks[slot], 0, sizeof(r->socks[slot]));
    r->socks[slot].fd = fd;
    r->socks[slot].state = SLOT_ACTIVE;
    r->socks[slot].msg.msg_namelen = GC_NAMELEN;
    r->socks[slot].pktinfo = pktinfo != 0;
    r->socks[slot].msg.msg_controllen = pktinfo ? GC_CONTROL : 0;
    if (gc_arm_recv(r, slot) < 0)
        return -EBUSY;
    return slot;
}

/* Stop receiving on a slot: cancel its multishot recv.  The slot is reused
 * only after the final CQE of that recv arrived. */
int gc_remove_socket(gc_ring *r, int slot)
{
    struct io_uring_sqe *sqe;
    if (slot < 0 || slot >= GC_MAX_SOCKS || r->socks[slot].state != SLOT_ACTIVE)
        return -EINVAL;
    if (!r->socks[slot].armed) {
        r->socks[slot].state = SLOT_FREE;
        io_uring_submit(&r->ring); /* queued sends leave before the fd is closed */
        return 0;
    }
    r->socks[slot].state = SLOT_CLOSING;
    sqe = gc_sqe(r);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, (GC_RECV << GC_KIND_SHIFT) | (uint64_t)slot, 0);
    io_uring_sqe_set_data64(sqe, GC_CANCEL << GC_KIND_SHIFT);
    io_uring_submit(&r->ring);
    /* run the deferred task work now, so the cancelled recv drops its file
     * reference before the caller closes the socket (the port is free at once) */
    io_uring_get_events(&r->ring);
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

/* Queue n datagrams on a slot's socket as sendmsg SQEs.  blob holds the
 * payloads back to back (lens[i] bytes each); addrs holds n records of 28
 * bytes each (sockaddr_in padded, or sockaddr_in6), followed on a pktinfo
 * socket by a GC_LOCAL_REC source-address record.  Returns the number
 * queued. */
int gc_send_batch(gc_ring *r, int slot, const char *blob, const uint32_t *lens,
                  const char *addrs, int n)
{
    int i;
    size_t off = 0;
    int fd = r->socks[slot].fd;
    int pktinfo = r->socks[slot].pktinfo;
    size_t stride = GC_NAMELEN + (pktinfo ? GC_LOCAL_REC : 0);
    for (i = 0; i < n; i++) {
        uint32_t len = lens[i];
        struct gc_send *s = malloc(sizeof(*s) + len);
        struct io_uring_sqe *sqe;
        const char *rec = addrs + (size_t)i * stride;
        const struct sockaddr *sa = (const struct sockaddr *)rec;
        if (!s)
            return i;
        sqe = gc_sqe(r);
        if (!sqe) {
            free(s);
            return i;
        }
        memcpy(s->data, blob + off, len);
        off += len;
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
        s->fd = fd;
        if (pktinfo)
            gc_set_source(s, rec + GC_NAMELEN);
        io_uring_prep_sendmsg(sqe, fd, &s->msg, 0);
        io_uring_sqe_set_data64(sqe, (GC_SEND << GC_KIND_SHIFT) | (uint64_t)(uintptr_t)s);
        r->inflight_sends++;
    }
    r->sends += n;
    return n;
}

/* A send with a source address was refused (see the top): send it
 * again without one (the kernel picks).  1 when resubmitted (s lives on). */
static int gc_resend_plain(gc_ring *r, struct gc_send *s)
{
    struct gc_sock *k = &r->socks[s->slot];
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
    unsigned head, seen = 0, returned = 0;
    int nrec = 0, used = 0, slot, ret;

    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
    }
    *more = 0;
    if (timeout_ns == 0 || io_uring_cq_ready(&r->ring)) {
        /* don't block: submit and run deferred task work (one enter, no timer;
         * a zero-timeout wait costs tens of microseconds for the hrtimer) */
        ret = io_uring_submit_and_get_events(&r->ring);
    } else {
        ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, timeout_ns >= 0 ? &ts : NULL,
                                               NULL);
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
        return ret;

    io_uring_for_each_cqe(&r->ring, head, cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        uint64_t kind = ud >> GC_KIND_SHIFT;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        if (kind == GC_RECV) {
            struct gc_sock *s;
            slot = (int)(ud & 0xffff);
            s = &r->socks[slot];
            if (flags & IORING_CQE_F_BUFFER) {
                unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
                char *buf = r->bufs + (size_t)bid * r->bufsize;
                if (res >= 0 && s->state == SLOT_ACTIVE) {
                    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, res, &s->msg);
                    unsigned plen = o ? io_uring_recvmsg_payload_length(o, res, &s->msg) : 0;
                    if (!o || (o->flags & MSG_TRUNC) || plen > r->max_payload) {
                        r->truncated++;
                    } else {
                        unsigned nlen = o->namelen > (unsigned)GC_NAMELEN ? GC_NAMELEN : o->namelen;
                        int rslot = slot;
                        if (nrec >= max_recs || used + (int)plen + GC_NAMELEN + 16 > arena_size) {
                            *more = 1;
                            break; /* leave this CQE (and its buffer) for the next call */
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
                    }
                }
                io_uring_buf_ring_add(r->br, buf, r->bufsize, bid, r->mask, returned++);
            } else if (res < 0) {
                if (res == -ENOBUFS)
                    r->enobufs++;
                else if (res != -ECANCELED)
                    r->recv_errors++;
            }
            if (!(flags & IORING_CQE_F_MORE)) {
                s->armed = 0;
                if (s->state == SLOT_CLOSING)
                    s->state = SLOT_FREE;
            }
        } else if (kind == GC_SEND) {
            struct gc_send *snd = (struct gc_send *)(uintptr_t)(ud & ((1ULL << GC_KIND_SHIFT) - 1));
            if ((res == -EINVAL || res == -EADDRNOTAVAIL || res == -ENETUNREACH) &&
                snd->msg.msg_controllen && gc_resend_plain(r, snd)) {
                /* resent without its source address; its memory lives on */
            } else {
                free(snd);
                r->inflight_sends--;
                if (res < 0)
                    r->send_errors++;
            }
        } else if (kind == GC_WAKE) {
            r->wake_armed = 0;
        }
        seen++;
    }
    if (returned)
        io_uring_buf_ring_advance(r->br, returned);
    io_uring_cq_advance(&r->ring, seen);
    /* re-arm what ended: multishot receives and the wake-up read */
    for (slot = 0; slot < GC_MAX_SOCKS; slot++) {
        if (r->socks[slot].state == SLOT_ACTIVE && !r->socks[slot].armed) {
            gc_arm_recv(r, slot);
            r->rearms++;
        }
    }
    if (!r->wake_armed)
        gc_arm_wake(r);
    *arena_used = used;
    return nrec;
}

unsigned gc_setup_flags(gc_ring *r) { return r->setup_flags; }
