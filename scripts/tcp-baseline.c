/*
 * The cost of bare TCP on this machine, as a yardstick for kmsd's per-activation CPU
 * (docs/performance.md, "Yardstick"). Not part of kmsd; scripts/bench-host.sh builds and runs
 * it when BASELINE=1.
 *
 * The server is what any KMS host must at least do, and nothing more: one thread, epoll,
 * accept, and for each request read it and write a fixed reply of a KMS reply's size; it
 * closes a connection when the client does. The client runs CONCURRENCY threads. In
 * "per-connection" mode each connects, makes ROUNDS request/reply exchanges (2 = a KMS
 * client's BIND and REQUEST) and closes; in "keepalive" mode each keeps one connection and
 * makes one exchange per request. It runs for SECONDS seconds and prints how many
 * connections (per-connection) or requests (keepalive) completed; server CPU comes from /proc,
 * read by the caller.
 *
 *   tcp-baseline server PORT
 *   tcp-baseline client PORT per-connection|keepalive ROUNDS CONCURRENCY SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_BYTES 260 /* a v6 REQUEST PDU is 260-ish bytes */
#define REPLY_BYTES 300   /* a v6 RESPONSE PDU is 300-ish bytes */
#define MAX_FDS 65536

static int keepalive, rounds, port;
static atomic_long completed;
static double deadline;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static _Noreturn void server(void) {
    char buf[4096], reply[REPLY_BYTES];
    memset(reply, 0x5a, sizeof reply);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(l, 1024) < 0) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= MAX_FDS) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd);
                continue;
            }
            if (write(fd, reply, sizeof reply) != (ssize_t)sizeof reply) close(fd);
        }
    }
}

/* Read exactly len bytes; 0 on success. */
static int read_all(int fd, char *buf, size_t len) {
    while (len > 0) {
        ssize_t r = read(fd, buf, len);
        if (r <= 0) return -1;
        buf += r;
        len -= (size_t)r;
    }
    return 0;
}

static int dial(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -1;
    }
    return s;
}

static void *client(void *arg) {
    (void)arg;
    char req[REQUEST_BYTES], reply[REPLY_BYTES];
    memset(req, 0xa5, sizeof req);
    int s = -1;
    while (now() < deadline) {
        if (s < 0 && (s = dial()) < 0) continue;
        int ok = 1;
        int n = keepalive ? 1 : rounds;
        for (int i = 0; i < n && ok; i++)
            ok = write(s, req, sizeof req) == (ssize_t)sizeof req &&
                 read_all(s, reply, sizeof reply) == 0;
        if (ok) atomic_fetch_add(&completed, 1);
        if (!keepalive || !ok) {
            close(s);
            s = -1;
        }
    }
    if (s >= 0) close(s);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "server") == 0) {
        port = atoi(argv[2]);
        server();
    }
    if (argc != 7 || strcmp(argv[1], "client") != 0) {
        fprintf(stderr,
                "usage: %s server PORT\n"
                "       %s client PORT per-connection|keepalive ROUNDS CONCURRENCY SECONDS\n",
                argv[0], argv[0]);
        return 2;
    }
    port = atoi(argv[2]);
    keepalive = strcmp(argv[3], "keepalive") == 0;
    rounds = atoi(argv[4]);
    if (rounds < 1) rounds = 1;
    int concurrency = atoi(argv[5]);
    double seconds = atof(argv[6]);
    double start = now();
    deadline = start + seconds;
    pthread_t t[1024];
    if (concurrency > 1024) concurrency = 1024;
    for (int i = 0; i < concurrency; i++) pthread_create(&t[i], NULL, client, NULL);
    for (int i = 0; i < concurrency; i++) pthread_join(t[i], NULL);
    /* one line: requests (keepalive) or connections (per-connection) completed, and seconds */
    printf("%ld %.3f\n", atomic_load(&completed), now() - start);
    return 0;
}
