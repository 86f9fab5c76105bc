/* mt_port.h on a POSIX host: the device loop of the generated program as a process, speaking the
 * protocol on a pseudo-terminal (default), on stdin/stdout (--stdio) or on a file descriptor
 * (--fd N). Board port: uses POSIX and stdio (not engine code).
 *
 *   mt_device [--stdio | --fd N] [--storage PATH] [--exit-on-hup] [--board NAME]
 *
 * pty mode: opens a pseudo-terminal (posix_openpt, raw mode), prints "PTY <slave path>" on stdout
 * (one line, flushed) and serves it; a client opens the path like a serial port. --exit-on-hup:
 * exit 0 when the last client closes the terminal after having sent something (the master sees
 * POLLHUP). --stdio: requests on stdin, replies on stdout, exit at end of input. --fd N: both on N,
 * exit at end of input or hang-up.
 * Storage: the file --storage PATH (or $MT_STORAGE), 4096 + MT_PARAMS_BYTES bytes (created on
 * demand; missing bytes read as 0xFF); none when neither is given.
 * Cycles: CLOCK_MONOTONIC in nanoseconds (a 1 GHz time base, wraps every 4.3 s). Stack size and
 * high-water mark: 0 (unknown on a host).
 */
#define _DEFAULT_SOURCE
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mt_device.h"
#include "mt_model.h"
#include "mt_port.h"

#ifndef MT_PORT_STORAGE_SIZE
#define MT_PORT_STORAGE_SIZE (4096u + (uint32_t)MT_PARAMS_BYTES)
#endif

static int in_fd = -1, out_fd = -1;
static int in_eof; /* read() returned 0 (stdio / fd mode) or the pty has no client */
static const char *board_name = "host";
static const char *storage_path;
static int storage_fd = -1;
static uint8_t rx_buf[4096];
static size_t rx_pos, rx_len;
static unsigned long rx_total; /* bytes received since start */

void mt_port_init(void)
{
    (void)signal(SIGPIPE, SIG_IGN);
}

int mt_port_getc(void)
{
    if (rx_pos == rx_len) {
        ssize_t n;
        rx_pos = rx_len = 0u;
        if (in_fd < 0) {
            return -1;
        }
        n = read(in_fd, rx_buf, sizeof(rx_buf));
        if (n == 0) {
            in_eof = 1;
        }
        if (n <= 0) {
            return -1; /* EAGAIN, EIO (pty without client), end of input */
        }
        rx_len = (size_t)n;
        rx_total += (unsigned long)n;
    }
    return rx_buf[rx_pos++];
}

void mt_port_idle(void)
{
    /* main() below waits in poll() instead */
}

void mt_port_send(const uint8_t *p, size_t n)
{
    while (n > 0u && out_fd >= 0) {
        const ssize_t k = write(out_fd, p, n);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && errno == EAGAIN) {
            struct pollfd pf;
            pf.fd = out_fd;
            pf.events = POLLOUT;
            pf.revents = 0;
            if (poll(&pf, 1, 1000) <= 0 || (pf.revents & (POLLERR | POLLHUP)) != 0) {
                return; /* nobody reads: drop the rest, the host retries */
            }
        } else {
            return;
        }
    }
}

void mt_port_putc(uint8_t c)
{
    mt_port_send(&c, 1u);
}

uint32_t mt_port_cycles(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)ts.tv_sec * 1000000000u + (uint32_t)ts.tv_nsec;
}

static int storage_open(void)
{
    if (storage_fd < 0 && storage_path != NULL) {
        storage_fd = open(storage_path, O_RDWR | O_CREAT, 0644);
        if (storage_fd < 0) {
            fprintf(stderr, "mt_device: cannot open storage %s: %s\n", storage_path, strerror(errno));
            storage_path = NULL;
        }
    }
    return storage_fd >= 0;
}

uint32_t mt_port_storage_size(void)
{
    return storage_open() ? (uint32_t)MT_PORT_STORAGE_SIZE : 0u;
}

static int storage_range(uint32_t off, uint32_t n)
{
    return off <= (uint32_t)MT_PORT_STORAGE_SIZE && n <= (uint32_t)MT_PORT_STORAGE_SIZE - off;
}

int mt_port_storage_read(uint32_t off, void *p, uint32_t n)
{
    ssize_t k;
    if (!storage_range(off, n) || !storage_open()) {
        return -1;
    }
    k = pread(storage_fd, p, n, (off_t)off);
    if (k < 0) {
        return -1;
    }
    memset((uint8_t *)p + k, 0xFF, n - (size_t)k);
    return 0;
}

int mt_port_storage_write(uint32_t off, const void *p, uint32_t n)
{
    if (!storage_range(off, n) || !storage_open()) {
        return -1;
    }
    if (pwrite(storage_fd, p, n, (off_t)off) != (ssize_t)n || fsync(storage_fd) != 0) {
        return -1;
    }
    return 0;
}

uint32_t mt_port_stack_size(void)
{
    return 0u;
}

uint32_t mt_port_stack_high_water(void)
{
    return 0u;
}

const char *mt_port_board(void)
{
    return board_name;
}

/* ---- main ---- */
static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--stdio | --fd N] [--storage PATH] [--exit-on-hup] [--board NAME]\n", argv0);
    return 2;
}

static int open_pty(void)
{
    struct termios t;
    const char *name;
    int fd = posix_openpt(O_RDWR | O_NOCTTY);
    int slave;
    if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0 || (name = ptsname(fd)) == NULL) {
        fprintf(stderr, "mt_device: cannot open a pseudo-terminal: %s\n", strerror(errno));
        return -1;
    }
    /* raw mode on the terminal (a client that opens it with pyserial sets it again) */
    slave = open(name, O_RDWR | O_NOCTTY);
    if (slave >= 0) {
        if (tcgetattr(slave, &t) == 0) {
            cfmakeraw(&t);
            (void)tcsetattr(slave, TCSANOW, &t);
        }
        close(slave);
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv)
{
    int i, pty = 1, exit_on_hup = 0;
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--stdio") == 0) {
            pty = 0;
            in_fd = 0;
            out_fd = 1;
        } else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            pty = 0;
            in_fd = out_fd = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--storage") == 0 && i + 1 < argc) {
            storage_path = argv[++i];
        } else if (strcmp(argv[i], "--board") == 0 && i + 1 < argc) {
            board_name = argv[++i];
        } else if (strcmp(argv[i], "--exit-on-hup") == 0) {
            exit_on_hup = 1;
        } else {
            return usage(argv[0]);
        }
    }
    if (storage_path == NULL) {
        const char *env = getenv("MT_STORAGE");
        storage_path = (env != NULL && env[0] != '\0') ? env : NULL;
    }
    if (pty) {
        in_fd = out_fd = open_pty();
        if (in_fd < 0) {
            return 1;
        }
    }
    mt_port_init();
    mt_device_init();
    if (pty) {
        printf("PTY %s\n", ptsname(in_fd));
        fflush(stdout);
    }
    (void)fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
    for (;;) {
        struct pollfd pf;
        pf.fd = in_fd;
        pf.events = POLLIN;
        pf.revents = 0;
        if (poll(&pf, 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return 1;
        }
        if ((pf.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            mt_device_poll(); /* reads until nothing is waiting */
        }
        if (!pty && in_eof) {
            return 0;
        }
        if ((pf.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) {
            if (!pty || (exit_on_hup && rx_total > 0u)) {
                return 0;
            }
            (void)usleep(20000); /* no client on the terminal: wait for one */
        }
    }
}
