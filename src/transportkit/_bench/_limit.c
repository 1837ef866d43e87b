/*
 * The C reference of the bench's `limit` figure: what libzmq alone costs, with no
 * interpreter in the way. Built at bench time against the libzmq pyzmq loaded (its
 * path is given to the linker; see transportkit/_bench/_fig_limit.py) with
 * -O2 -Wall -Werror. No zmq.h is needed: the few prototypes used are declared below
 * (libzmq's ABI is stable across 4.x).
 *
 * Modes (every wait is bounded by TIMEOUT_MS; a peer that dies ends a run with an
 * error, never a hang):
 *
 *   echo ENDPOINT TIMEOUT_MS
 *       A REP echo: binds, prints the resolved endpoint on one line, echoes every
 *       request until stdin closes or the parent process goes away.
 *   rtt ENDPOINT SIZE WARMUP COUNT TIMEOUT_MS
 *       A REQ client: WARMUP untimed, then COUNT timed round trips of SIZE bytes;
 *       prints each timed one in nanoseconds, one a line.
 *   recv ENDPOINT COUNT TIMEOUT_MS
 *       A PULL receiver: binds, prints "ready ENDPOINT"; on the first message (the
 *       sender's one-byte probe) prints "probe"; then receives COUNT messages and
 *       prints "done T_LAST_NS COUNT BYTES" (CLOCK_MONOTONIC of the last receive).
 *   send ENDPOINT COUNT SIZE TIMEOUT_MS
 *       A PUSH sender: connects, sends the one-byte probe, waits for a line on stdin
 *       ("go"), prints "start T0_NS" (CLOCK_MONOTONIC), sends COUNT messages of SIZE
 *       bytes, then waits for a second line on stdin (the receiver is done) before
 *       closing, so that nothing queued is discarded.
 *
 * Exit status: 0 done, 2 usage, 3 a libzmq call failed or timed out.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libzmq's ABI (zmq.h, 4.x). */
typedef struct {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t;

void *zmq_ctx_new(void);
int zmq_ctx_term(void *context);
void *zmq_socket(void *context, int type);
int zmq_close(void *socket);
int zmq_setsockopt(void *socket, int option, const void *value, size_t size);
int zmq_getsockopt(void *socket, int option, void *value, size_t *size);
int zmq_bind(void *socket, const char *endpoint);
int zmq_connect(void *socket, const char *endpoint);
int zmq_send(void *socket, const void *buf, size_t len, int flags);
int zmq_recv(void *socket, void *buf, size_t len, int flags);
int zmq_poll(zmq_pollitem_t *items, int count, long timeout);
int zmq_errno(void);
const char *zmq_strerror(int errnum);

#define ZMQ_REQ 3
#define ZMQ_REP 4
#define ZMQ_PULL 7
#define ZMQ_PUSH 8
#define ZMQ_LINGER 17
#define ZMQ_SNDHWM 23
#define ZMQ_RCVHWM 24
#define ZMQ_RCVTIMEO 27
#define ZMQ_SNDTIMEO 28
#define ZMQ_LAST_ENDPOINT 32
#define ZMQ_POLLIN 1

#define MAX_MESSAGE (1 << 20)
#define ENDPOINT_MAX 1024

static void *context;

static long long
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
fail(const char *what)
{
    int err = zmq_errno();
    fprintf(stderr, "tk-limit: %s: %s\n", what, err == EAGAIN ? "timed out" : zmq_strerror(err));
    return 3;
}

static int
parse_count(const char *text, long long *out)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || *end || value < 0)
        return -1;
    *out = value;
    return 0;
}

static int
set_int(void *sock, int option, int value)
{
    return zmq_setsockopt(sock, option, &value, sizeof value);
}

/* A socket with LINGER 0, both timeouts and no HWM; NULL (errno kept) on failure. */
static void *
make_socket(int type, int timeout_ms)
{
    void *sock = zmq_socket(context, type);
    if (!sock)
        return NULL;
    if (set_int(sock, ZMQ_LINGER, 0) || set_int(sock, ZMQ_RCVTIMEO, timeout_ms) ||
        set_int(sock, ZMQ_SNDTIMEO, timeout_ms) || set_int(sock, ZMQ_SNDHWM, 0) ||
        set_int(sock, ZMQ_RCVHWM, 0)) {
        int err = zmq_errno();
        zmq_close(sock);
        errno = err;
        return NULL;
    }
    return sock;
}

/* Wait up to timeout_ms for a line on stdin: 1 a line, 0 end of file, -1 timeout. */
static int
read_line(int timeout_ms)
{
    struct pollfd item = {.fd = 0, .events = POLLIN};
    long long deadline = now_ns() + (long long)timeout_ms * 1000000LL;
    for (;;) {
        long long left_ms = (deadline - now_ns()) / 1000000LL;
        if (left_ms < 0)
            return -1;
        int ready = poll(&item, 1, (int)left_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return -1;
        char c;
        ssize_t got;
        while ((got = read(0, &c, 1)) == 1)
            if (c == '\n')
                return 1;
        if (got == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

static int
bind_and_print(void *sock, const char *endpoint, const char *prefix)
{
    char resolved[ENDPOINT_MAX];
    size_t size = sizeof resolved;
    if (zmq_bind(sock, endpoint))
        return fail("bind");
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, resolved, &size))
        return fail("getsockopt(LAST_ENDPOINT)");
    printf("%s%s\n", prefix, resolved);
    fflush(stdout);
    return 0;
}

static int
run_echo(const char *endpoint, int timeout_ms)
{
    static char buffer[MAX_MESSAGE];
    pid_t parent = getppid();
    void *sock = make_socket(ZMQ_REP, timeout_ms);
    if (!sock)
        return fail("socket");
    int status = bind_and_print(sock, endpoint, "");
    while (status == 0) {
        zmq_pollitem_t items[2] = {
            {.socket = sock, .events = ZMQ_POLLIN},
            {.socket = NULL, .fd = 0, .events = ZMQ_POLLIN},
        };
        int ready = zmq_poll(items, 2, 200);
        if (ready < 0) {
            if (zmq_errno() == EINTR)
                continue;
            status = fail("poll");
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            int size = zmq_recv(sock, buffer, sizeof buffer, 0);
            if (size < 0) {
                status = fail("echo recv");
                break;
            }
            if (zmq_send(sock, buffer, (size_t)size, 0) < 0) {
                status = fail("echo send");
                break;
            }
        }
        if (items[1].revents) {
            char c;
            ssize_t got = read(0, &c, 1);
            if (got == 0 || (got < 0 && errno != EINTR))
                break; /* stdin closed: the parent is done */
        }
        if (getppid() != parent)
            break;
    }
    zmq_close(sock);
    return status;
}

static int
run_rtt(const char *endpoint, long long size, long long warmup, long long count, int timeout_ms)
{
    static char buffer[MAX_MESSAGE];
    if (size > MAX_MESSAGE) {
        fprintf(stderr, "tk-limit: SIZE is at most %d\n", MAX_MESSAGE);
        return 2;
    }
    long long *samples = malloc(sizeof *samples * (size_t)(count ? count : 1));
    char *payload = malloc((size_t)(size ? size : 1));
    if (!samples || !payload) {
        free(samples);
        free(payload);
        fprintf(stderr, "tk-limit: out of memory\n");
        return 3;
    }
    memset(payload, 'x', (size_t)size);
    int status = 0;
    void *sock = make_socket(ZMQ_REQ, timeout_ms);
    if (!sock)
        status = fail("socket");
    else if (zmq_connect(sock, endpoint))
        status = fail("connect");
    for (long long i = 0; status == 0 && i < warmup + count; i++) {
        long long t0 = now_ns();
        if (zmq_send(sock, payload, (size_t)size, 0) < 0) {
            status = fail("send");
            break;
        }
        int got = zmq_recv(sock, buffer, sizeof buffer, 0);
        if (got < 0) {
            status = fail("recv");
            break;
        }
        if (got != size) {
            fprintf(stderr, "tk-limit: reply of %d bytes, sent %lld\n", got, size);
            status = 3;
            break;
        }
        if (i >= warmup)
            samples[i - warmup] = now_ns() - t0;
    }
    for (long long i = 0; status == 0 && i < count; i++)
        printf("%lld\n", samples[i]);
    fflush(stdout);
    if (sock)
        zmq_close(sock);
    free(samples);
    free(payload);
    return status;
}

static int
run_recv(const char *endpoint, long long count, int timeout_ms)
{
    static char buffer[MAX_MESSAGE];
    void *sock = make_socket(ZMQ_PULL, timeout_ms);
    if (!sock)
        return fail("socket");
    int status = bind_and_print(sock, endpoint, "ready ");
    if (status == 0 && zmq_recv(sock, buffer, sizeof buffer, 0) < 0)
        status = fail("probe recv");
    if (status == 0) {
        printf("probe\n");
        fflush(stdout);
    }
    long long got = 0, bytes = 0, last = 0;
    while (status == 0 && got < count) {
        int size = zmq_recv(sock, buffer, sizeof buffer, 0);
        if (size < 0) {
            status = fail("recv");
            break;
        }
        got++;
        bytes += size;
        last = now_ns();
    }
    if (status == 0) {
        printf("done %lld %lld %lld\n", last, got, bytes);
        fflush(stdout);
    }
    zmq_close(sock);
    return status;
}

static int
run_send(const char *endpoint, long long count, long long size, int timeout_ms)
{
    if (size > MAX_MESSAGE) {
        fprintf(stderr, "tk-limit: SIZE is at most %d\n", MAX_MESSAGE);
        return 2;
    }
    char *payload = malloc((size_t)(size ? size : 1));
    if (!payload) {
        fprintf(stderr, "tk-limit: out of memory\n");
        return 3;
    }
    memset(payload, 'D', (size_t)size);
    int status = 0;
    void *sock = make_socket(ZMQ_PUSH, timeout_ms);
    if (!sock)
        status = fail("socket");
    else if (zmq_connect(sock, endpoint))
        status = fail("connect");
    else if (zmq_send(sock, "P", 1, 0) < 0)
        status = fail("probe send");
    if (status == 0 && read_line(timeout_ms) != 1) {
        fprintf(stderr, "tk-limit: no go on stdin\n");
        status = 3;
    }
    if (status == 0) {
        printf("start %lld\n", now_ns());
        fflush(stdout);
    }
    for (long long i = 0; status == 0 && i < count; i++)
        if (zmq_send(sock, payload, (size_t)size, 0) < 0)
            status = fail("send");
    if (status == 0)
        read_line(timeout_ms); /* the receiver is done (or gone): close */
    if (sock)
        zmq_close(sock);
    free(payload);
    return status;
}

int
main(int argc, char **argv)
{
    long long a = 0, b = 0, c = 0, timeout = 0;
    const char *mode = argc > 1 ? argv[1] : "";
    int usage = 1;
    if (!strcmp(mode, "echo") && argc == 4)
        usage = parse_count(argv[3], &timeout);
    else if (!strcmp(mode, "rtt") && argc == 7)
        usage = parse_count(argv[3], &a) || parse_count(argv[4], &b) ||
                parse_count(argv[5], &c) || parse_count(argv[6], &timeout);
    else if (!strcmp(mode, "recv") && argc == 5)
        usage = parse_count(argv[3], &a) || parse_count(argv[4], &timeout);
    else if (!strcmp(mode, "send") && argc == 6)
        usage = parse_count(argv[3], &a) || parse_count(argv[4], &b) ||
                parse_count(argv[5], &timeout);
    if (usage || timeout > 3600000 || strlen(argv[2]) >= ENDPOINT_MAX) {
        fprintf(stderr,
                "usage: tk-limit echo ENDPOINT TIMEOUT_MS | rtt ENDPOINT SIZE WARMUP COUNT "
                "TIMEOUT_MS | recv ENDPOINT COUNT TIMEOUT_MS | send ENDPOINT COUNT SIZE "
                "TIMEOUT_MS\n");
        return 2;
    }
    context = zmq_ctx_new();
    if (!context)
        return fail("zmq_ctx_new");
    int status;
    if (!strcmp(mode, "echo"))
        status = run_echo(argv[2], (int)timeout);
    else if (!strcmp(mode, "rtt"))
        status = run_rtt(argv[2], a, b, c, (int)timeout);
    else if (!strcmp(mode, "recv"))
        status = run_recv(argv[2], a, (int)timeout);
    else
        status = run_send(argv[2], a, b, (int)timeout);
    zmq_ctx_term(context);
    return status;
}
