/*
 * dtlsload - greencoap's CoAP-over-DTLS (RFC 7252 §9, DTLS 1.2 PSK with
 * TLS_PSK_WITH_AES_128_CCM_8) load generator: coapload's counterpart for
 * coaps://, so that a server's coaps:// rate can be measured at saturation
 * and set against its coap:// rate under coapload.
 *
 * One thread, N sessions (one connected UDP socket and one OpenSSL DTLS
 * client each, handshaken before the clock starts), driven through epoll.
 * Each session keeps W requests outstanding; every request carries its own
 * MID (per-session counter) and a 4-byte token naming its window slot and
 * the slot's generation, so a response is found by token.  Nothing is
 * retransmitted: a request left unanswered for --timeout-ms is counted as
 * lost and its slot gets a new request.  One record per datagram each way
 * (OpenSSL's datagram BIO); the records' protection is OpenSSL's.
 *
 * The last line printed is machine-readable, as coapload's:
 *   RESULT type=con window=64 sessions=4 rps=... p50_us=... p90_us=... p99_us=...
 *          p999_us=... lost=... errors=... unmatched=... client_cpu=... sent=...
 *          handshake_ms=...
 *
 * Build: cc -O2 -Wall -Wextra -o build/dtlsload bench/dtlsload.c -lssl -lcrypto
 *        (or `make tools`; needs libssl-dev)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_WINDOW 4096
#define MAX_SESSIONS 64
#define RX_BUF 2048

enum { T_CON = 0, T_NON = 1, T_ACK = 2, T_RST = 3 };

static struct {
    const char *host, *port, *identity, *key, *path;
    int type;
    long window, sessions, timeout_ms;
    double duration, warmup;
} opt = {"127.0.0.1", "5684", "bench", "benchkey", "hello", T_CON, 64, 4, 1000, 5.0, 0.5};

typedef struct {
    int fd;
    SSL *ssl;
    uint16_t mid;
    uint32_t token[MAX_WINDOW]; /* slot | generation << 16; 0: free */
    int64_t sent_at[MAX_WINDOW];
} Session;

static Session sessions[MAX_SESSIONS];
static uint64_t ok, errors, lost, unmatched, sent;
static uint32_t *lat;  /* microseconds, measured phase only */
static size_t nlat, cap_lat;
static int measuring;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "dtlsload: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: dtlsload [--host H] [--port P] [--identity I] [--key K] [--path P]\n"
            "                [--type con|non] [--window W] [--sessions N] [--duration S]\n"
            "                [--warmup S] [--timeout-ms MS]\n"
            "defaults: --host 127.0.0.1 --port 5684 --identity bench --key benchkey --path hello\n"
            "          --type con --window 64 --sessions 4 --duration 5 --warmup 0.5\n"
            "          --timeout-ms 1000\n");
    exit(2);
}

static long parse_long(const char *name, const char *v, long lo, long hi)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "dtlsload: %s wants an integer in %ld..%ld, not '%s'\n", name, lo, hi, v);
        exit(2);
    }
    return x;
}

static double parse_double(const char *name, const char *v, double lo, double hi)
{
    char *end;
    double x = strtod(v, &end);
    if (*v == '\0' || *end != '\0' || !(x >= lo && x <= hi)) {
        fprintf(stderr, "dtlsload: %s wants a number in %g..%g, not '%s'\n", name, lo, hi, v);
        exit(2);
    }
    return x;
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (i + 1 >= argc) {
            fprintf(stderr, "dtlsload: %s needs a value\n", a);
            usage();
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = v;
        else if (!strcmp(a, "--identity")) opt.identity = v;
        else if (!strcmp(a, "--key")) opt.key = v;
        else if (!strcmp(a, "--path")) opt.path = v;
        else if (!strcmp(a, "--type")) {
            if (!strcmp(v, "con")) opt.type = T_CON;
            else if (!strcmp(v, "non")) opt.type = T_NON;
            else usage();
        }
        else if (!strcmp(a, "--window")) opt.window = parse_long(a, v, 1, MAX_WINDOW);
        else if (!strcmp(a, "--sessions")) opt.sessions = parse_long(a, v, 1, MAX_SESSIONS);
        else if (!strcmp(a, "--timeout-ms")) opt.timeout_ms = parse_long(a, v, 1, 3600000);
        else if (!strcmp(a, "--duration")) opt.duration = parse_double(a, v, 0.1, 3600);
        else if (!strcmp(a, "--warmup")) opt.warmup = parse_double(a, v, 0, 3600);
        else {
            fprintf(stderr, "dtlsload: unknown option %s\n", a);
            usage();
        }
    }
}

static unsigned int psk_cb(SSL *ssl, const char *hint, char *identity, unsigned int max_identity,
                           unsigned char *psk, unsigned int max_psk)
{
    size_t ni = strlen(opt.identity), nk = strlen(opt.key);
    (void)ssl;
    (void)hint;
    if (ni + 1 > max_identity || nk > max_psk)
        return 0;
    memcpy(identity, opt.identity, ni + 1);
    memcpy(psk, opt.key, nk);
    return (unsigned int)nk;
}

/* GET opt.path as a CoAP message (4-byte token) into buf; its length. */
static size_t encode_get(unsigned char *buf, uint16_t mid, uint32_t token)
{
    size_t n = 0;
    unsigned last = 0;
    buf[n++] = (unsigned char)(0x40 | opt.type << 4 | 4);
    buf[n++] = 1; /* GET */
    buf[n++] = (unsigned char)(mid >> 8);
    buf[n++] = (unsigned char)mid;
    memcpy(buf + n, &token, 4);
    n += 4;
    for (const char *p = opt.path; *p;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        unsigned delta = 11 - last; /* Uri-Path */
        last = 11;
        if (len < 13) {
            buf[n++] = (unsigned char)(delta << 4 | len);
        } else {
            buf[n++] = (unsigned char)(delta << 4 | 13);
            buf[n++] = (unsigned char)(len - 13);
        }
        memcpy(buf + n, p, len);
        n += len;
        p += len + (e != NULL);
    }
    return n;
}

static void send_request(Session *s, long slot, int64_t t)
{
    unsigned char buf[300];
    uint32_t gen = (s->token[slot] >> 16) + 1;
    uint32_t token = (uint32_t)slot | (gen & 0xFFFF) << 16;
    if (token == 0)
        token = (uint32_t)slot | 1u << 16;
    size_t n = encode_get(buf, s->mid++, token);
    s->token[slot] = token;
    s->sent_at[slot] = t;
    if (SSL_write(s->ssl, buf, (int)n) <= 0) {
        ERR_clear_error();
        errors++; /* left in flight: it times out */
    }
    if (measuring)
        sent++;
}

static void on_reply(Session *s, const unsigned char *m, int n, int64_t t)
{
    uint32_t token;
    if (n < 8 || (m[0] & 0x0F) != 4) {
        unmatched++;
        return;
    }
    int type = m[0] >> 4 & 3;
    if (m[1] == 0) { /* an empty ACK (a separate response follows) or an RST */
        if (type == T_RST)
            errors++;
        return;
    }
    memcpy(&token, m + 4, 4);
    long slot = token & 0xFFFF;
    if (slot >= opt.window || s->token[slot] != token) {
        unmatched++;
        return;
    }
    if (type == T_CON) { /* a separate response: acknowledge it */
        unsigned char ack[4] = {0x60, 0, m[2], m[3]};
        if (SSL_write(s->ssl, ack, 4) <= 0)
            ERR_clear_error();
    }
    if (measuring) {
        if (m[1] >> 5 == 2)
            ok++;
        else
            errors++;
        if (nlat < cap_lat)
            lat[nlat++] = (uint32_t)((t - s->sent_at[slot]) / 1000);
    }
    send_request(s, slot, t);
}

static void handshake(Session *s, SSL_CTX *ctx, const struct addrinfo *ai)
{
    struct timeval tv = {1, 0};
    s->fd = socket(ai->ai_family, SOCK_DGRAM, 0);
    if (s->fd < 0 || connect(s->fd, ai->ai_addr, ai->ai_addrlen) < 0)
        die("cannot open a socket to the server");
    s->ssl = SSL_new(ctx);
    BIO *bio = BIO_new_dgram(s->fd, BIO_NOCLOSE);
    if (!s->ssl || !bio)
        die("cannot set up a DTLS session");
    BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, (void *)ai->ai_addr);
    BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_RECV_TIMEOUT, 0, &tv);
    SSL_set_bio(s->ssl, bio, bio);
    if (SSL_connect(s->ssl) != 1)
        die("the DTLS handshake failed");
    fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t pct(double p)
{
    if (!nlat)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1));
    return lat[i];
}

int main(int argc, char **argv)
{
    struct addrinfo hints = {0}, *ai;
    struct epoll_event ev, evs[MAX_SESSIONS];
    unsigned char buf[RX_BUF];
    parse_args(argc, argv);
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(opt.host, opt.port, &hints, &ai) != 0)
        die("cannot resolve the server's address");

    SSL_CTX *ctx = SSL_CTX_new(DTLS_client_method());
    if (!ctx || SSL_CTX_set_max_proto_version(ctx, DTLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, "PSK-AES128-CCM8:@SECLEVEL=0") != 1)
        die("OpenSSL has no DTLS 1.2 with PSK-AES128-CCM8");
    SSL_CTX_set_psk_client_callback(ctx, psk_cb);

    int ep = epoll_create1(0);
    int64_t t0 = now_ns();
    for (long i = 0; i < opt.sessions; i++) {
        handshake(&sessions[i], ctx, ai);
        ev.events = EPOLLIN;
        ev.data.ptr = &sessions[i];
        epoll_ctl(ep, EPOLL_CTL_ADD, sessions[i].fd, &ev);
    }
    double handshake_ms = (double)(now_ns() - t0) / 1e6;

    cap_lat = 20000000;
    lat = malloc(cap_lat * sizeof *lat);
    if (!lat)
        die("out of memory");
    int64_t start = now_ns();
    int64_t measure_at = start + (int64_t)(opt.warmup * 1e9);
    int64_t end = measure_at + (int64_t)(opt.duration * 1e9);
    int64_t timeout = opt.timeout_ms * 1000000LL, next_scan = start + 10000000LL;
    for (long i = 0; i < opt.sessions; i++)
        for (long k = 0; k < opt.window; k++)
            send_request(&sessions[i], k, start);
    struct rusage r0, r1;
    int64_t t = start;
    while (t < end) {
        if (!measuring && t >= measure_at) {
            measuring = 1;
            getrusage(RUSAGE_SELF, &r0);
            measure_at = t; /* the measured phase starts now */
        }
        int n = epoll_wait(ep, evs, MAX_SESSIONS, 1);
        t = now_ns();
        for (int i = 0; i < n; i++) {
            Session *s = evs[i].data.ptr;
            for (;;) {
                int got = SSL_read(s->ssl, buf, sizeof buf);
                if (got <= 0) {
                    int e = SSL_get_error(s->ssl, got);
                    ERR_clear_error();
                    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                        break;
                    die("the DTLS session failed");
                }
                on_reply(s, buf, got, t);
            }
        }
        if (t >= next_scan) {
            next_scan = t + 10000000LL;
            for (long i = 0; i < opt.sessions; i++)
                for (long k = 0; k < opt.window; k++)
                    if (t - sessions[i].sent_at[k] > timeout) {
                        if (measuring)
                            lost++;
                        send_request(&sessions[i], k, t);
                    }
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    double elapsed = (double)(t - measure_at) / 1e9;
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec -
                          r0.ru_stime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec -
                          r0.ru_stime.tv_usec) / 1e6;
    qsort(lat, nlat, sizeof *lat, cmp_u32);
    for (long i = 0; i < opt.sessions; i++) {
        SSL_shutdown(sessions[i].ssl); /* close_notify: the server forgets the session */
        SSL_free(sessions[i].ssl);
        close(sessions[i].fd);
    }
    printf("dtlsload: sent %llu, ok %llu, errors %llu, lost %llu, unmatched %llu in %.2f s\n",
           (unsigned long long)sent, (unsigned long long)ok, (unsigned long long)errors,
           (unsigned long long)lost, (unsigned long long)unmatched, elapsed);
    printf("RESULT type=%s window=%ld sessions=%ld rps=%.0f p50_us=%u p90_us=%u p99_us=%u "
           "p999_us=%u lost=%llu errors=%llu unmatched=%llu client_cpu=%.2f sent=%llu "
           "handshake_ms=%.1f\n",
           opt.type == T_CON ? "con" : "non", opt.window, opt.sessions, (double)ok / elapsed,
           pct(0.5), pct(0.9), pct(0.99), pct(0.999), (unsigned long long)lost,
           (unsigned long long)errors, (unsigned long long)unmatched, cpu / elapsed,
           (unsigned long long)sent, handshake_ms);
    freeaddrinfo(ai);
    SSL_CTX_free(ctx);
    return 0;
}
