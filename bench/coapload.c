/*
 * coapload - greencoap's CoAP-over-UDP (RFC 7252) load generator.
 *
 * One thread, N connected UDP sockets (one source port each) driven through
 * epoll; requests leave in sendmmsg batches and responses arrive in recvmmsg
 * batches.  Each socket keeps W requests outstanding; every request carries
 * its own MID (per-socket counter) and its own token, so a response is found
 * by token (a piggybacked ACK or an RST by MID as well).  Nothing is
 * retransmitted: a request left unanswered for --timeout-ms is counted as
 * lost and its place is given to a new request.
 *
 * --port-count N (N > 1) aims at N ports --port .. --port+N-1 of --host (a
 * fleet of devices, a port each): the sockets are then left unconnected,
 * every request names its destination in sendmmsg's msg_name, the next port
 * round-robin over all requests of all sockets, and recvmmsg takes each
 * response's source address (an ACK or RST that coapload sends goes back
 * there).  Matching stays by (socket, token) and (socket, MID); the source
 * address is not checked.  N == 1 keeps the connected sockets.
 *
 * The last line printed is machine-readable (see bench/README.md):
 *   RESULT type=con window=64 sockets=4 rps=... p50_us=... p99_us=... p999_us=...
 *          lost=... errors=... unmatched=... client_cpu=... sent=... p90_us=...
 *          separate=... ports=...
 *
 * Build: cc -O2 -Wall -Wextra -o build/coapload bench/coapload.c   (or `make tools`)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_WINDOW 16384
#define MAX_SOCKETS 1024
#define MAX_QUERIES 32
#define MAX_PAYLOAD 60000
#define BATCH 64                /* datagrams per sendmmsg / recvmmsg call */
#define RX_BUF 2048             /* responses larger than this are truncated (still matched) */

/* CoAP message types */
enum { T_CON = 0, T_NON = 1, T_ACK = 2, T_RST = 3 };

/* ---------------------------------------------------------------- options */
static struct {
    const char *host;
    const char *port;
    long port_count; /* ports port .. port+port_count-1 */
    int type; /* T_CON or T_NON */
    int window;
    int sockets;
    double duration;
    double warmup;
    const char *path;
    long payload;
    int method; /* 1 GET, 2 POST, 3 PUT, 4 DELETE; 0 = not given */
    int token_len;
    long timeout_ms;
    const char *queries[MAX_QUERIES];
    int nqueries;
    double rate; /* requests/s over all sockets; 0 = unlimited */
} opt = {
    .host = "127.0.0.1",
    .port = "5683",
    .port_count = 1,
    .type = T_CON,
    .window = 64,
    .sockets = 4,
    .duration = 5.0,
    .warmup = 0.5,
    .path = "",
    .payload = 0,
    .method = 0,
    .token_len = 4,
    .timeout_ms = 1000,
    .rate = 0,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: coapload [--host H] [--port P] [--port-count N] [--type con|non] [--window W]\n"
            "                [--sockets N] [--duration S] [--warmup S] [--path a/b] [--query k=v]...\n"
            "                [--payload N] [--method get|post|put|delete] [--token-len 0-8]\n"
            "                [--timeout-ms MS] [--rate R]\n"
            "defaults: --host 127.0.0.1 --port 5683 --port-count 1 --type con --window 64\n"
            "          --sockets 4 --duration 5 --warmup 0.5 --token-len 4 --timeout-ms 1000 --rate 0\n"
            "--host takes an IPv4 or IPv6 address (::1) or a name; --rate 0 = unlimited;\n"
            "--port-count N: the N ports P .. P+N-1 of H (1..65535, P+N-1 at most 65535),\n"
            "requests spread round-robin over them; --payload N > 0 makes the method default\n"
            "to POST.\n");
}

static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fputs("coapload: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    exit(2);
}

static long parse_long(const char *name, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die_usage("%s: expected an integer in %ld..%ld, got '%s'", name, lo, hi, s);
    return v;
}

static double parse_double(const char *name, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        die_usage("%s: expected a number in %g..%g, got '%s'", name, lo, hi, s);
    return v;
}

static int known_option(const char *name)
{
    static const char *names[] = {"--host",    "--port",   "--port-count", "--type",
                                  "--window",  "--sockets", "--duration", "--warmup",
                                  "--path",    "--query",  "--payload",   "--method",
                                  "--token-len", "--timeout-ms", "--rate"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i]))
            return 1;
    return 0;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            die_usage("unexpected argument '%s'", a);
        /* every option takes a value: --name VALUE or --name=VALUE */
        const char *val;
        char name[32];
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t n = (size_t)(eq - a);
            if (n >= sizeof name)
                die_usage("unknown option '%s'", a);
            memcpy(name, a, n);
            name[n] = 0;
            val = eq + 1;
        } else {
            if (strlen(a) >= sizeof name)
                die_usage("unknown option '%s'", a);
            strcpy(name, a);
            if (!known_option(name))
                die_usage("unknown option '%s'", a);
            if (i + 1 >= argc)
                die_usage("%s needs a value", a);
            val = argv[++i];
        }
        if (!strcmp(name, "--host"))
            opt.host = val;
        else if (!strcmp(name, "--port")) {
            parse_long(name, val, 1, 65535);
            opt.port = val;
        } else if (!strcmp(name, "--port-count"))
            opt.port_count = parse_long(name, val, 1, 65535);
        else if (!strcmp(name, "--type")) {
            if (!strcmp(val, "con"))
                opt.type = T_CON;
            else if (!strcmp(val, "non"))
                opt.type = T_NON;
            else
                die_usage("--type: expected con or non, got '%s'", val);
        } else if (!strcmp(name, "--window"))
            opt.window = (int)parse_long(name, val, 1, MAX_WINDOW);
        else if (!strcmp(name, "--sockets"))
            opt.sockets = (int)parse_long(name, val, 1, MAX_SOCKETS);
        else if (!strcmp(name, "--duration"))
            opt.duration = parse_double(name, val, 0.001, 1e6);
        else if (!strcmp(name, "--warmup"))
            opt.warmup = parse_double(name, val, 0, 1e6);
        else if (!strcmp(name, "--path"))
            opt.path = val;
        else if (!strcmp(name, "--query")) {
            if (opt.nqueries >= MAX_QUERIES)
                die_usage("at most %d --query options", MAX_QUERIES);
            opt.queries[opt.nqueries++] = val;
        } else if (!strcmp(name, "--payload"))
            opt.payload = parse_long(name, val, 0, MAX_PAYLOAD);
        else if (!strcmp(name, "--method")) {
            static const char *m[] = {"get", "post", "put", "delete"};
            opt.method = 0;
            for (int k = 0; k < 4; k++)
                if (!strcasecmp(val, m[k]))
                    opt.method = k + 1;
            if (!opt.method)
                die_usage("--method: expected get, post, put or delete, got '%s'", val);
        } else if (!strcmp(name, "--token-len"))
            opt.token_len = (int)parse_long(name, val, 0, 8);
        else if (!strcmp(name, "--timeout-ms"))
            opt.timeout_ms = parse_long(name, val, 1, 3600 * 1000L);
        else if (!strcmp(name, "--rate"))
            opt.rate = parse_double(name, val, 0, 1e9);
        else
            die_usage("unknown option '%s'", name);
    }
    if (!opt.method)
        opt.method = opt.payload > 0 ? 2 : 1;
    if (opt.token_len == 0 && opt.type == T_NON)
        die_usage("--token-len 0 cannot match NON responses; use --type con or a token");
    if (opt.window * opt.sockets > 1 << 20)
        die_usage("--window x --sockets must stay below %d", 1 << 20);
    long port0 = strtol(opt.port, NULL, 10);
    if (port0 + opt.port_count - 1 > 65535)
        die_usage("--port %ld --port-count %ld: the last port, %ld, is past 65535", port0,
                  opt.port_count, port0 + opt.port_count - 1);
}

/* ------------------------------------------------------------------ time */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------- histogram */
/* Log-linear buckets: exact below 2048 us, then 1024 sub-buckets per power of
 * two (about 0.1 % resolution), up to 2^42 us. */
#define SUB_BITS 10
#define HBUCKETS ((42 - SUB_BITS + 1) << SUB_BITS)
static uint64_t hist[HBUCKETS];
static uint64_t hist_count;

static inline unsigned hist_index(uint64_t us)
{
    if (us < (2u << SUB_BITS))
        return (unsigned)us;
    int msb = 63 - __builtin_clzll(us);
    if (msb > 41)
        return HBUCKETS - 1;
    int shift = msb - SUB_BITS;
    return (unsigned)(shift << SUB_BITS) + (unsigned)(us >> shift);
}

static uint64_t hist_value(unsigned i) /* a representative value of bucket i */
{
    if (i < (2u << SUB_BITS))
        return i;
    unsigned shift = (i >> SUB_BITS) - 1;
    uint64_t lo = (uint64_t)(i - (shift << SUB_BITS)) << shift;
    return lo + ((1ull << shift) >> 1);
}

static uint64_t percentile(double p)
{
    if (!hist_count)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)hist_count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return hist_value(HBUCKETS - 1);
}

/* ------------------------------------------------------------ state */
struct slot {
    int64_t sent_ns;   /* 0 = free */
    uint64_t token;    /* token value (token_len bytes, big-endian on the wire) */
    uint32_t gen;      /* bumped on every use of the slot */
    uint16_t mid;
    uint8_t acked;     /* CON: an empty ACK came, a separate response is due */
};

struct sock {
    int fd;
    uint16_t next_mid;
    struct slot *slots;
    int *free_list; /* stack of free slot indices */
    int nfree;
    uint32_t *mid_map; /* MID -> slot index + 1, 0 = none */
};

static struct sock *socks;

/* --port-count > 1: the destinations, one per port; requests take them in turn */
union addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};
static union addr *dests; /* NULL when the sockets are connected (--port-count 1) */
static socklen_t dest_len;
static long next_dest; /* the port the next request goes to, round-robin over all sockets */
static unsigned slot_bits; /* bits of the token that name the slot */
static uint64_t token_mask;

/* the part of every request after the header and token: options, payload */
static uint8_t tail[8192 + MAX_PAYLOAD];
static size_t tail_len;

static volatile sig_atomic_t interrupted;
static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* counters; only events inside the measured window are counted */
static struct {
    uint64_t ok, errors, lost, unmatched, sent, separate, send_errors;
} st;
static int measuring;

/* ---------------------------------------------------------- encoding */
static uint8_t *put_option(uint8_t *p, unsigned *prev, unsigned number, const uint8_t *val,
                           size_t len)
{
    unsigned delta = number - *prev;
    *prev = number;
    uint8_t *hdr = p++;
    unsigned dn, ln;
    if (delta < 13)
        dn = delta;
    else if (delta < 269)
        dn = 13, *p++ = (uint8_t)(delta - 13);
    else
        dn = 14, *p++ = (uint8_t)((delta - 269) >> 8), *p++ = (uint8_t)(delta - 269);
    if (len < 13)
        ln = (unsigned)len;
    else if (len < 269)
        ln = 13, *p++ = (uint8_t)(len - 13);
    else
        ln = 14, *p++ = (uint8_t)((len - 269) >> 8), *p++ = (uint8_t)(len - 269);
    *hdr = (uint8_t)(dn << 4 | ln);
    memcpy(p, val, len);
    return p + len;
}

static void build_tail(void)
{
    uint8_t *p = tail;
    uint8_t *lim = tail + 8192 - 16;
    unsigned prev = 0;
    const char *s = opt.path;
    while (*s) { /* Uri-Path (11): one option per non-empty segment */
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n) {
            if (n > 255 || p + n + 4 > lim)
                die_usage("--path: segments must be at most 255 bytes and the path short");
            p = put_option(p, &prev, 11, (const uint8_t *)s, n);
        }
        s += n;
        if (*s == '/')
            s++;
    }
    for (int i = 0; i < opt.nqueries; i++) { /* Uri-Query (15) */
        size_t n = strlen(opt.queries[i]);
        if (n > 255 || p + n + 4 > lim)
            die_usage("--query: each must be at most 255 bytes");
        p = put_option(p, &prev, 15, (const uint8_t *)opt.queries[i], n);
    }
    if (opt.payload > 0) {
        *p++ = 0xFF;
        for (long i = 0; i < opt.payload; i++)
            *p++ = (uint8_t)('a' + i % 26);
    }
    tail_len = (size_t)(p - tail);
}

static inline void put_token(uint8_t *p, uint64_t t)
{
    for (int i = opt.token_len - 1; i >= 0; i--, t >>= 8)
        p[i] = (uint8_t)t;
}

static inline uint64_t get_token(const uint8_t *p, int len)
{
    uint64_t t = 0;
    for (int i = 0; i < len; i++)
        t = t << 8 | p[i];
    return t;
}

/* ---------------------------------------------------------- requests */
static void release(struct sock *s, int idx)
{
    struct slot *sl = &s->slots[idx];
    if (s->mid_map[sl->mid] == (uint32_t)idx + 1)
        s->mid_map[sl->mid] = 0;
    sl->sent_ns = 0;
    sl->acked = 0;
    s->free_list[s->nfree++] = idx;
}

/* a free slot becomes a request: fresh MID (skipping MIDs still in flight) and token */
static void arm(struct sock *s, int idx, int64_t t)
{
    struct slot *sl = &s->slots[idx];
    uint16_t mid = s->next_mid;
    for (int tries = 0; s->mid_map[mid] && tries < 65536; tries++)
        mid++;
    s->next_mid = (uint16_t)(mid + 1);
    sl->mid = mid;
    s->mid_map[mid] = (uint32_t)idx + 1;
    sl->gen++;
    sl->token = (((uint64_t)sl->gen << slot_bits) | (uint64_t)idx) & token_mask;
    sl->sent_ns = t;
    sl->acked = 0;
}

static struct mmsghdr tx_msgs[BATCH];
static struct iovec tx_iov[BATCH][2];
static uint8_t tx_hdr[BATCH][12];
static int tx_idx[BATCH];
static long tx_dest[BATCH];

/* send up to `budget` new requests on socket s; return how many left */
static long fill(struct sock *s, long budget)
{
    long sent_total = 0;
    while (s->nfree > 0 && budget > 0) {
        int n = 0;
        int64_t t = now_ns();
        while (n < BATCH && s->nfree > 0 && budget > 0) {
            int idx = s->free_list[--s->nfree];
            arm(s, idx, t);
            struct slot *sl = &s->slots[idx];
            uint8_t *h = tx_hdr[n];
            h[0] = (uint8_t)(0x40 | opt.type << 4 | opt.token_len);
            h[1] = (uint8_t)opt.method;
            h[2] = (uint8_t)(sl->mid >> 8);
            h[3] = (uint8_t)sl->mid;
            put_token(h + 4, sl->token);
            tx_iov[n][0] = (struct iovec){h, 4 + (size_t)opt.token_len};
            tx_iov[n][1] = (struct iovec){tail, tail_len};
            memset(&tx_msgs[n], 0, sizeof tx_msgs[n]);
            tx_msgs[n].msg_hdr.msg_iov = tx_iov[n];
            tx_msgs[n].msg_hdr.msg_iovlen = 2;
            if (dests) {
                tx_dest[n] = next_dest;
                tx_msgs[n].msg_hdr.msg_name = &dests[next_dest];
                tx_msgs[n].msg_hdr.msg_namelen = dest_len;
                if (++next_dest == opt.port_count)
                    next_dest = 0;
            }
            tx_idx[n] = idx;
            n++;
            budget--;
        }
        int done = 0, retried = 0;
        while (done < n) {
            int r = sendmmsg(s->fd, tx_msgs + done, (unsigned)(n - done), 0);
            if (r > 0) {
                done += r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == ECONNREFUSED && !retried) {
                retried = 1; /* a pending ICMP error was reported; the send itself can go */
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
                /* not sent: give the slots back and try again later */
                for (int k = n - 1; k >= done; k--)
                    release(s, tx_idx[k]);
                if (dests) /* the unsent ports come first again: the spread stays even */
                    next_dest = tx_dest[done];
                if (measuring)
                    st.send_errors++, st.sent += (uint64_t)done;
                return sent_total + done;
            }
            /* another error: leave the rest in flight; they time out and count as lost */
            if (measuring)
                st.send_errors++;
            break;
        }
        sent_total += n;
        if (measuring)
            st.sent += (uint64_t)n;
    }
    return sent_total;
}

static void complete(struct sock *s, int idx, uint8_t code, int64_t rx_ns)
{
    if (measuring) {
        if (code >> 5 == 2) {
            int64_t us = (rx_ns - s->slots[idx].sent_ns) / 1000;
            hist[hist_index(us < 0 ? 0 : (uint64_t)us)]++;
            hist_count++;
            st.ok++;
        } else {
            st.errors++;
        }
    }
    release(s, idx);
}

/* an empty ACK or RST; `to` is the datagram's source (unconnected sockets), NULL when connected */
static void send_empty(struct sock *s, int type, uint16_t mid, const struct msghdr *to)
{
    uint8_t m[4] = {(uint8_t)(0x40 | type << 4), 0, (uint8_t)(mid >> 8), (uint8_t)mid};
    if (to) {
        if (to->msg_namelen > 0)
            (void)sendto(s->fd, m, sizeof m, MSG_DONTWAIT, (const struct sockaddr *)to->msg_name,
                         to->msg_namelen);
        return;
    }
    if (send(s->fd, m, sizeof m, MSG_DONTWAIT) < 0 && errno == ECONNREFUSED)
        (void)send(s->fd, m, sizeof m, MSG_DONTWAIT);
}

static int by_token(struct sock *s, const uint8_t *tok, int tkl)
{
    if (tkl != opt.token_len || tkl == 0)
        return -1;
    uint64_t t = get_token(tok, tkl);
    uint64_t idx = t & ((1ull << slot_bits) - 1);
    if (idx >= (uint64_t)opt.window)
        return -1;
    struct slot *sl = &s->slots[idx];
    return sl->sent_ns && sl->token == t ? (int)idx : -1;
}

static void on_datagram(struct sock *s, const uint8_t *m, size_t len, int64_t rx_ns,
                        const struct msghdr *from)
{
    if (len < 4 || m[0] >> 6 != 1 || (m[0] & 15) > 8 || len < 4u + (m[0] & 15u)) {
        if (measuring)
            st.unmatched++;
        return;
    }
    int type = m[0] >> 4 & 3, tkl = m[0] & 15;
    uint8_t code = m[1];
    uint16_t mid = (uint16_t)(m[2] << 8 | m[3]);
    const uint8_t *tok = m + 4;

    if (type == T_ACK || type == T_RST) {
        uint32_t ref = s->mid_map[mid];
        int idx = ref ? (int)ref - 1 : -1;
        if (idx >= 0 && !s->slots[idx].sent_ns)
            idx = -1;
        if (idx >= 0 && type == T_RST) { /* rejected: a response, not a 2.xx */
            complete(s, idx, 0, rx_ns);
            return;
        }
        if (idx >= 0 && opt.type == T_CON) {
            if (code == 0) { /* empty ACK: the response follows separately */
                s->slots[idx].acked = 1;
                return;
            }
            if (opt.token_len == 0 || by_token(s, tok, tkl) == idx) {
                complete(s, idx, code, rx_ns);
                return;
            }
        }
        if (measuring)
            st.unmatched++;
        return;
    }

    /* CON or NON: a response of its own, found by token */
    if (code == 0 || code >> 5 == 0) { /* a ping or a request from the server */
        if (type == T_CON)
            send_empty(s, T_RST, mid, from);
        if (measuring)
            st.unmatched++;
        return;
    }
    int idx = by_token(s, tok, tkl);
    if (type == T_CON)
        send_empty(s, idx >= 0 ? T_ACK : T_RST, mid, from);
    if (idx < 0) {
        if (measuring)
            st.unmatched++;
        return;
    }
    if (opt.type == T_CON && measuring)
        st.separate++;
    complete(s, idx, code, rx_ns);
}

static struct mmsghdr rx_msgs[BATCH];
static struct iovec rx_iov[BATCH];
static uint8_t rx_buf[BATCH][RX_BUF];
static struct sockaddr_storage rx_addr[BATCH]; /* sources, when the sockets are unconnected */

static void drain(struct sock *s)
{
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            rx_iov[i] = (struct iovec){rx_buf[i], RX_BUF};
            memset(&rx_msgs[i].msg_hdr, 0, sizeof rx_msgs[i].msg_hdr);
            rx_msgs[i].msg_hdr.msg_iov = &rx_iov[i];
            rx_msgs[i].msg_hdr.msg_iovlen = 1;
            if (dests) {
                rx_msgs[i].msg_hdr.msg_name = &rx_addr[i];
                rx_msgs[i].msg_hdr.msg_namelen = sizeof rx_addr[i];
            }
        }
        int n = recvmmsg(s->fd, rx_msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED)
                continue; /* ECONNREFUSED: an ICMP error from an earlier send, consumed */
            return;       /* EAGAIN: empty */
        }
        int64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            size_t len = rx_msgs[i].msg_len;
            on_datagram(s, rx_buf[i], len > RX_BUF ? RX_BUF : len, t,
                        dests ? &rx_msgs[i].msg_hdr : NULL);
        }
        if (n < BATCH || s->nfree == opt.window) /* short batch, or nothing left in flight */
            return;
    }
}

static void expire(int64_t t)
{
    int64_t limit = opt.timeout_ms * 1000000LL;
    for (int k = 0; k < opt.sockets; k++) {
        struct sock *s = &socks[k];
        for (int i = 0; i < opt.window; i++) {
            struct slot *sl = &s->slots[i];
            if (sl->sent_ns && t - sl->sent_ns >= limit) {
                if (measuring)
                    st.lost++;
                release(s, i);
            }
        }
    }
}

/* ---------------------------------------------------------- setup */
static void set_buf(int fd, int opt_force, int opt_plain, int bytes)
{
    if (setsockopt(fd, SOL_SOCKET, opt_force, &bytes, sizeof bytes) < 0)
        (void)setsockopt(fd, SOL_SOCKET, opt_plain, &bytes, sizeof bytes);
}

static void open_sockets(int ep)
{
    char host[256];
    const char *h = opt.host;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1] */
        if (hl - 2 >= sizeof host)
            die_usage("--host too long");
        memcpy(host, h + 1, hl - 2);
        host[hl - 2] = 0;
    } else {
        if (hl >= sizeof host)
            die_usage("--host too long");
        strcpy(host, h);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, opt.port, &hints, &ai);
    if (rc)
        die_usage("--host %s --port %s: %s", opt.host, opt.port, gai_strerror(rc));

    if (opt.port_count > 1) {
        if (ai->ai_addrlen > sizeof *dests)
            die_usage("--host %s: unsupported address family", opt.host);
        dests = calloc((size_t)opt.port_count, sizeof *dests);
        if (!dests)
            perror("calloc"), exit(1);
        dest_len = ai->ai_addrlen;
        long port0 = strtol(opt.port, NULL, 10);
        for (long k = 0; k < opt.port_count; k++) {
            memcpy(&dests[k], ai->ai_addr, ai->ai_addrlen);
            uint16_t p = htons((uint16_t)(port0 + k));
            if (ai->ai_family == AF_INET6)
                dests[k].in6.sin6_port = p;
            else if (ai->ai_family == AF_INET)
                dests[k].in4.sin_port = p;
            else
                die_usage("--host %s: unsupported address family", opt.host);
        }
    }

    socks = calloc((size_t)opt.sockets, sizeof *socks);
    if (!socks)
        perror("calloc"), exit(1);
    for (int k = 0; k < opt.sockets; k++) {
        struct sock *s = &socks[k];
        s->fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0)
            perror("socket"), exit(1);
        set_buf(s->fd, SO_RCVBUFFORCE, SO_RCVBUF, 4 << 20);
        set_buf(s->fd, SO_SNDBUFFORCE, SO_SNDBUF, 4 << 20);
        if (!dests && connect(s->fd, ai->ai_addr, ai->ai_addrlen) < 0)
            fprintf(stderr, "coapload: connect %s: %s\n", opt.host, strerror(errno)), exit(1);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) < 0)
            perror("epoll_ctl"), exit(1);
        s->slots = calloc((size_t)opt.window, sizeof *s->slots);
        s->free_list = malloc((size_t)opt.window * sizeof *s->free_list);
        s->mid_map = calloc(65536, sizeof *s->mid_map);
        if (!s->slots || !s->free_list || !s->mid_map)
            perror("malloc"), exit(1);
        uint32_t rnd[2] = {0, 0};
        if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
            rnd[0] = (uint32_t)now_ns() ^ (uint32_t)getpid() * 2654435761u, rnd[1] = rnd[0] >> 7;
        s->next_mid = (uint16_t)rnd[0];
        for (int i = 0; i < opt.window; i++) {
            s->slots[i].gen = rnd[1] + (uint32_t)i * 977u; /* tokens differ from run to run */
            s->free_list[i] = opt.window - 1 - i;
        }
        s->nfree = opt.window;
    }
    freeaddrinfo(ai);
}

/* ---------------------------------------------------------- main */
int main(int argc, char **argv)
{
    parse_args(argc, argv);
    slot_bits = 0;
    while ((1u << slot_bits) < (unsigned)opt.window)
        slot_bits++;
    if (opt.token_len > 0 && (unsigned)opt.token_len * 8 < slot_bits + 4)
        die_usage("--token-len %d is too short for --window %d", opt.token_len, opt.window);
    token_mask = opt.token_len >= 8 ? ~0ull : (1ull << (opt.token_len * 8)) - 1;
    build_tail();

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        perror("epoll_create1"), exit(1);
    open_sockets(ep);

    const int64_t start = now_ns();
    const int64_t t_measure = start + (int64_t)(opt.warmup * 1e9);
    const int64_t t_end = t_measure + (int64_t)(opt.duration * 1e9);
    const int64_t scan_every = (opt.timeout_ms >= 100 ? 10 : opt.timeout_ms / 10 + 1) * 1000000LL;
    int64_t next_scan = start + scan_every;
    int64_t measured_from = 0, measured_to = 0;
    double cpu0 = 0, cpu1 = 0;

    /* pacing: a token bucket of at most ~10 ms of requests (at least 1) */
    const double burst = opt.rate > 0 ? (opt.rate / 100 > 1 ? opt.rate / 100 : 1) : 0;
    double tokens = burst > 0 ? 1 : 0;
    int64_t last_refill = start;
    int rr = 0; /* the socket that fills first, rotating */

    struct epoll_event evs[MAX_SOCKETS];
    for (;;) {
        int64_t t = now_ns();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            measured_from = t;
            cpu0 = cpu_seconds();
        }
        if (interrupted || t >= t_end)
            break;
        if (t >= next_scan) {
            expire(t);
            next_scan = t + scan_every;
        }

        long budget = 1L << 30;
        if (opt.rate > 0) {
            tokens += (double)(t - last_refill) * 1e-9 * opt.rate;
            last_refill = t;
            if (tokens > burst)
                tokens = burst;
            budget = (long)tokens;
        }
        long used = 0;
        for (int j = 0; j < opt.sockets && budget > used; j++) {
            struct sock *s = &socks[(rr + j) % opt.sockets];
            used += fill(s, budget - used);
        }
        rr = (rr + 1) % opt.sockets;
        if (opt.rate > 0)
            tokens -= (double)used;

        /* sleep until a response, the next timeout scan, the next pacing token or a phase edge */
        int64_t wake = next_scan;
        if (!measuring && t_measure < wake)
            wake = t_measure;
        if (t_end < wake)
            wake = t_end;
        if (opt.rate > 0 && tokens < 1) {
            int any_free = 0;
            for (int k = 0; k < opt.sockets && !any_free; k++)
                any_free = socks[k].nfree > 0;
            if (any_free) {
                int64_t tok_at = t + (int64_t)((1 - tokens) / opt.rate * 1e9);
                if (tok_at < wake)
                    wake = tok_at;
            }
        }
        t = now_ns();
        int timeout_ms = wake <= t ? 0 : (int)((wake - t + 999999) / 1000000);
        int n = epoll_wait(ep, evs, opt.sockets, timeout_ms);
        if (n < 0 && errno != EINTR)
            perror("epoll_wait"), exit(1);
        for (int i = 0; i < n; i++)
            drain(&socks[evs[i].data.u32]);
    }
    if (measuring) {
        measured_to = now_ns();
        cpu1 = cpu_seconds();
    }

    double secs = measuring ? (double)(measured_to - measured_from) / 1e9 : 0;
    double rps = secs > 0 ? (double)st.ok / secs : 0;
    double cpu = secs > 0 ? (cpu1 - cpu0) / secs : 0;
    const char *tname = opt.type == T_CON ? "con" : "non";
    static const char *mname[] = {"?", "GET", "POST", "PUT", "DELETE"};

    char ports[48];
    if (opt.port_count > 1)
        snprintf(ports, sizeof ports, "ports %s..%ld", opt.port,
                 strtol(opt.port, NULL, 10) + opt.port_count - 1);
    else
        snprintf(ports, sizeof ports, "port %s", opt.port);
    printf("coapload: %s %s to %s %s /%s, window %d x %d sockets, %.2f s measured%s\n", tname,
           mname[opt.method], opt.host, ports, opt.path + (opt.path[0] == '/'), opt.window,
           opt.sockets, secs, interrupted ? " (interrupted)" : "");
    printf("coapload: sent %llu, ok %llu, errors %llu, lost %llu, unmatched %llu, separate %llu, "
           "send errors %llu\n",
           (unsigned long long)st.sent, (unsigned long long)st.ok,
           (unsigned long long)st.errors, (unsigned long long)st.lost,
           (unsigned long long)st.unmatched, (unsigned long long)st.separate,
           (unsigned long long)st.send_errors);
    printf("RESULT type=%s window=%d sockets=%d rps=%.0f p50_us=%llu p99_us=%llu p999_us=%llu "
           "lost=%llu errors=%llu unmatched=%llu client_cpu=%.2f sent=%llu p90_us=%llu "
           "separate=%llu ports=%ld\n",
           tname, opt.window, opt.sockets, rps, (unsigned long long)percentile(0.50),
           (unsigned long long)percentile(0.99), (unsigned long long)percentile(0.999),
           (unsigned long long)st.lost, (unsigned long long)st.errors,
           (unsigned long long)st.unmatched, cpu, (unsigned long long)st.sent,
           (unsigned long long)percentile(0.90), (unsigned long long)st.separate,
           opt.port_count);
    fflush(stdout);
    return st.ok + st.errors > 0 ? 0 : 1;
}
