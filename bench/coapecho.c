/*
 * coapecho - greencoap's reference CoAP responder in C: the "machine's limit"
 * row of bench/server.py.
 *
 *   coapecho [-a ADDR] [-p PORT] [-n COUNT] [-b BODY_BYTES] [-t SECONDS]
 *
 * A CON request gets a piggybacked 2.05 ACK (same MID and token), a NON
 * request a NON 2.05 (a MID of our own, same token).  The response echoes the
 * request payload, or carries BODY_BYTES of "Hello, world!..." when the
 * request had none.  An empty CON (CoAP ping) gets an RST; anything malformed
 * or not a request is dropped.  Datagrams are read with recvmmsg and answered
 * with sendmmsg, in batches.  -n COUNT listens on COUNT sockets, ports PORT to
 * PORT+COUNT-1 (epoll over them): the C reference for a device fleet, one
 * socket per device.  -t stops after SECONDS; SIGINT and SIGTERM stop
 * it too; on the way out it prints how many requests it answered.
 *
 * Build: cc -O2 -Wall -Wextra -o build/coapecho bench/coapecho.c   (or `make tools`)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define RX_BUF 65536
#define MAX_BODY 60000

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage_exit(const char *why)
{
    if (why)
        fprintf(stderr, "coapecho: %s\n", why);
    fprintf(why ? stderr : stdout,
            "usage: coapecho [-a ADDR (IPv4 or IPv6, default 127.0.0.1)] [-p PORT (5683)]\n"
            "                [-n COUNT (1 socket; COUNT: ports PORT..PORT+COUNT-1)]\n"
            "                [-b BODY_BYTES (13)] [-t SECONDS (0 = until SIGINT/SIGTERM)]\n");
    exit(why ? 2 : 0);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Walk the options of a request; return the payload offset (len when there is
 * none), or -1 when the message is malformed. */
static long payload_offset(const uint8_t *m, size_t len, size_t pos)
{
    while (pos < len) {
        uint8_t b = m[pos++];
        if (b == 0xFF)
            return pos < len ? (long)pos : -1; /* a marker must be followed by payload */
        unsigned d = b >> 4, l = b & 15;
        if (d == 15 || l == 15)
            return -1;
        if (d == 13)
            pos += 1;
        else if (d == 14)
            pos += 2;
        if (l == 13) {
            if (pos >= len)
                return -1;
            l = 13u + m[pos++];
        } else if (l == 14) {
            if (pos + 1 >= len)
                return -1;
            l = 269u + (unsigned)(m[pos] << 8 | m[pos + 1]);
            pos += 2;
        }
        if (pos > len || len - pos < l)
            return -1;
        pos += l;
    }
    return (long)len;
}

static uint8_t body[MAX_BODY];
static long body_len = 13;
static uint8_t rx[BATCH][RX_BUF];
static struct sockaddr_storage peers[BATCH];
static struct mmsghdr in[BATCH], out[BATCH];
static struct iovec rx_iov[BATCH], tx_iov[BATCH][2];
static uint8_t hdr[BATCH][13]; /* header, token, payload marker */
static uint16_t mid;
static unsigned long long answered, pings, dropped, send_failed;

/* Read what socket fd holds and answer it, a batch at a time. */
static void serve(int fd)
{
    for (;;) { /* drain the socket, one batch at a time */
        for (int i = 0; i < BATCH; i++) {
            rx_iov[i] = (struct iovec){rx[i], RX_BUF};
            memset(&in[i].msg_hdr, 0, sizeof in[i].msg_hdr);
            in[i].msg_hdr.msg_name = &peers[i];
            in[i].msg_hdr.msg_namelen = sizeof peers[i];
            in[i].msg_hdr.msg_iov = &rx_iov[i];
            in[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR && !stop)
                continue;
            break; /* EAGAIN: drained */
        }
        int nout = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *m = rx[i];
            size_t len = in[i].msg_len;
            unsigned tkl = len ? m[0] & 15u : 0;
            if (len < 4 || m[0] >> 6 != 1 || tkl > 8 || len < 4 + tkl ||
                (in[i].msg_hdr.msg_flags & MSG_TRUNC)) {
                dropped++;
                continue;
            }
            unsigned type = m[0] >> 4 & 3u;
            uint8_t code = m[1];
            uint8_t *h = hdr[nout];
            size_t hlen;
            const uint8_t *pl = NULL;
            size_t pllen = 0;
            if (code == 0) { /* empty message: a ping (CON) gets an RST */
                if (type != 0 || len != 4) {
                    dropped++;
                    continue;
                }
                h[0] = 0x70; /* ver 1, RST, no token */
                h[1] = 0;
                h[2] = m[2];
                h[3] = m[3];
                hlen = 4;
                pings++;
            } else {
                long off;
                if (code >> 5 != 0 || type > 1 ||
                    (off = payload_offset(m, len, 4 + tkl)) < 0) {
                    dropped++; /* not a request (or an ACK/RST carrying one), or malformed */
                    continue;
                }
                if ((size_t)off < len) {
                    pl = m + off;
                    pllen = len - (size_t)off;
                } else if (body_len > 0) {
                    pl = body;
                    pllen = (size_t)body_len;
                }
                if (type == 0) { /* CON -> piggybacked ACK */
                    h[0] = (uint8_t)(0x60 | tkl);
                    h[2] = m[2];
                    h[3] = m[3];
                } else { /* NON -> NON with a MID of our own */
                    h[0] = (uint8_t)(0x50 | tkl);
                    h[2] = (uint8_t)(mid >> 8);
                    h[3] = (uint8_t)mid;
                    mid++;
                }
                h[1] = 0x45; /* 2.05 Content */
                memcpy(h + 4, m + 4, tkl);
                hlen = 4 + tkl;
                if (pllen)
                    h[hlen++] = 0xFF;
                answered++;
            }
            tx_iov[nout][0] = (struct iovec){h, hlen};
            tx_iov[nout][1] = (struct iovec){(void *)pl, pllen};
            memset(&out[nout].msg_hdr, 0, sizeof out[nout].msg_hdr);
            out[nout].msg_hdr.msg_name = &peers[i];
            out[nout].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
            out[nout].msg_hdr.msg_iov = tx_iov[nout];
            out[nout].msg_hdr.msg_iovlen = pllen ? 2 : 1;
            nout++;
        }
        int done = 0;
        while (done < nout) {
            int r = sendmmsg(fd, out + done, (unsigned)(nout - done), 0);
            if (r > 0) {
                done += r;
            } else if (r < 0 && errno == EINTR) {
                continue;
            } else {
                done++; /* skip the datagram that failed (peer gone, buffer full) */
                send_failed++;
            }
        }
        if (n < BATCH)
            break;
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    long port = 5683, count = 1;
    double seconds = 0;
    int c;
    char *end;
    while ((c = getopt(argc, argv, "a:p:n:b:t:h")) != -1) {
        switch (c) {
        case 'a':
            addr = optarg;
            break;
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*end || end == optarg || port < 0 || port > 65535)
                usage_exit("-p: expected a port number 0..65535");
            break;
        case 'n':
            count = strtol(optarg, &end, 10);
            if (*end || end == optarg || count < 1 || count > 65536)
                usage_exit("-n: expected a socket count 1..65536");
            break;
        case 'b':
            body_len = strtol(optarg, &end, 10);
            if (*end || end == optarg || body_len < 0 || body_len > MAX_BODY)
                usage_exit("-b: expected a byte count 0..60000");
            break;
        case 't':
            seconds = strtod(optarg, &end);
            if (*end || end == optarg || !(seconds >= 0))
                usage_exit("-t: expected a number of seconds");
            break;
        case 'h':
            usage_exit(NULL);
            break;
        default:
            usage_exit("unknown option");
        }
    }
    if (optind < argc)
        usage_exit("unexpected argument");
    if (port + count - 1 > 65535)
        usage_exit("-p/-n: the ports run past 65535");

    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sslen = sizeof *s4;
    } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sslen = sizeof *s6;
    } else {
        usage_exit("-a: expected an IPv4 or IPv6 address");
        return 2;
    }

    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < (rlim_t)count + 64) {
        nofile.rlim_cur = (rlim_t)count + 64;
        if (nofile.rlim_max < nofile.rlim_cur)
            nofile.rlim_max = nofile.rlim_cur;
        (void)setrlimit(RLIMIT_NOFILE, &nofile);
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return perror("epoll_create1"), 1;
    /* one socket: big buffers; many (a fleet's worth): 256 KiB each, as the fleet's */
    int big = count == 1 ? 4 << 20 : 256 << 10;
    for (long k = 0; k < count; k++) {
        int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return perror("socket"), 1;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big) < 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) < 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        if (ss.ss_family == AF_INET)
            s4->sin_port = htons((uint16_t)(port + k));
        else
            s6->sin6_port = htons((uint16_t)(port + k));
        if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) {
            fprintf(stderr, "coapecho: bind %s port %ld: %s\n", addr, port + k, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            return perror("epoll_ctl"), 1;
    }

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: epoll_wait returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    static const char hello[] = "Hello, world!";
    for (long i = 0; i < body_len; i++)
        body[i] = (uint8_t)hello[i % (sizeof hello - 1)];

    mid = (uint16_t)(now_ns() ^ getpid());
    const int64_t deadline = seconds > 0 ? now_ns() + (int64_t)(seconds * 1e9) : 0;

    if (count == 1)
        printf("coapecho: listening on %s port %ld, body %ld bytes%s\n", addr, port, body_len,
               seconds > 0 ? "" : ", until SIGINT/SIGTERM");
    else
        printf("coapecho: listening on %s ports %ld-%ld, body %ld bytes%s\n", addr, port,
               port + count - 1, body_len, seconds > 0 ? "" : ", until SIGINT/SIGTERM");
    fflush(stdout);

    while (!stop) {
        int wait_ms = -1;
        if (deadline) {
            int64_t left = deadline - now_ns();
            if (left <= 0)
                break;
            wait_ms = (int)((left + 999999) / 1000000);
        }
        struct epoll_event ready[BATCH];
        int pr = epoll_wait(ep, ready, BATCH, wait_ms);
        if (pr < 0 && errno != EINTR)
            return perror("epoll_wait"), 1;
        for (int k = 0; k < pr; k++)
            serve(ready[k].data.fd);
    }

    printf("coapecho: answered %llu requests (%llu pings, %llu dropped, %llu sends failed)\n",
           answered, pings, dropped, send_failed);
    fflush(stdout);
    close(ep); /* the sockets close with the process */
    return 0;
}
