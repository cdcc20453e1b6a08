/*
 * linkem: a point-to-point link emulator between two TUN devices.
 *
 * Opens two TUN devices (IFF_TUN | IFF_NO_PI) named by argv, prints "ready"
 * once both exist (the caller then moves each into its own network namespace
 * and addresses it), and carries every IP packet from one to the other
 * through, per direction:
 *
 *   loss     random per packet (xorshift64* seeded with --seed, one stream
 *            per direction), before the queue, as a lossy path would drop;
 *   rate     a serialiser: a packet leaves the queue len*8/rate after the
 *            one ahead of it; the queue is bounded in time (--queue-ms):
 *            a packet that would wait longer is dropped (drop-tail);
 *   delay    one-way propagation delay, plus uniform jitter in
 *            [-jitter, +jitter]; a packet never overtakes the one ahead of
 *            it (FIFO), so jitter does not reorder.
 *
 * Timers are CLOCK_MONOTONIC with ppoll's nanosecond timeout. Stats go to
 * stdout as one JSON line when stdin closes or on SIGTERM/SIGINT; stdin is
 * the lifeline: when the parent dies, the devices vanish with this process.
 *
 *   linkem TUN_A TUN_B [--delay-ms D] [--jitter-ms J] [--loss P]
 *          [--rate-mbit R] [--queue-ms Q] [--seed S] [--mtu M]
 *
 * (A and B get the same shaping; --loss is a fraction, 0.001 = 0.1%.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXPKT 65536

struct pkt {
  struct pkt *next;
  int64_t due_ns;
  int len;
  unsigned char data[];
};

struct dir {
  int in_fd, out_fd;
  struct pkt *head, *tail;
  int64_t tx_free_ns;   /* when the serialiser is next free */
  int64_t last_due_ns;  /* FIFO: nobody leaves before the one ahead */
  uint64_t rng;
  uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes, lost, dropped, queued_max;
  uint64_t queued;
};

static double delay_ms = 0, jitter_ms = 0, loss = 0, rate_mbit = 0, queue_ms = 0;
static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double uniform(uint64_t *s) { return (xorshift(s) >> 11) * (1.0 / 9007199254740992.0); }

static int tun_open(const char *name, int mtu) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    perror("linkem: open /dev/net/tun");
    exit(2);
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "linkem: TUNSETIFF %s: %s\n", name, strerror(errno));
    exit(2);
  }
  if (mtu > 0) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    ifr.ifr_mtu = mtu;
    if (s < 0 || ioctl(s, SIOCSIFMTU, &ifr) < 0) {
      fprintf(stderr, "linkem: set mtu %s: %s\n", name, strerror(errno));
      exit(2);
    }
    close(s);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

/* Reads what is waiting on d->in_fd (bounded per wake-up) into d's queue. */
static void take(struct dir *d, unsigned char *buf) {
  for (int i = 0; i < 256; i++) {
    ssize_t n = read(d->in_fd, buf, MAXPKT);
    if (n <= 0) return;
    int64_t t = now_ns();
    d->rx_pkts++;
    d->rx_bytes += (uint64_t)n;
    if (loss > 0 && uniform(&d->rng) < loss) {
      d->lost++;
      continue;
    }
    int64_t leave = t;
    if (rate_mbit > 0) {
      int64_t start = d->tx_free_ns > t ? d->tx_free_ns : t;
      /* Waiting longer than the queue holds: drop-tail. */
      if (start - t > (int64_t)(queue_ms * 1e6)) {
        d->dropped++;
        continue;
      }
      leave = start + (int64_t)((double)n * 8.0 * 1000.0 / rate_mbit);
      d->tx_free_ns = leave;
    }
    double extra = delay_ms;
    if (jitter_ms > 0) extra += (uniform(&d->rng) * 2.0 - 1.0) * jitter_ms;
    if (extra < 0) extra = 0;
    int64_t due = leave + (int64_t)(extra * 1e6);
    if (due < d->last_due_ns) due = d->last_due_ns;
    d->last_due_ns = due;
    struct pkt *p = malloc(sizeof *p + (size_t)n);
    if (!p) {
      d->dropped++;
      continue;
    }
    p->next = NULL;
    p->due_ns = due;
    p->len = (int)n;
    memcpy(p->data, buf, (size_t)n);
    if (d->tail) d->tail->next = p; else d->head = p;
    d->tail = p;
    if (++d->queued > d->queued_max) d->queued_max = d->queued;
  }
}

/* Writes every packet whose time has come. */
static void deliver(struct dir *d, int64_t t) {
  while (d->head && d->head->due_ns <= t) {
    struct pkt *p = d->head;
    d->head = p->next;
    if (!d->head) d->tail = NULL;
    d->queued--;
    /* A full device queue on the far side drops the packet, as a real link would. */
    if (write(d->out_fd, p->data, (size_t)p->len) == p->len) {
      d->tx_pkts++;
      d->tx_bytes += (uint64_t)p->len;
    } else {
      d->dropped++;
    }
    free(p);
  }
}

static void stats(struct dir *d, const char *name, int last) {
  printf("\"%s\":{\"rx_packets\":%llu,\"rx_bytes\":%llu,\"tx_packets\":%llu,\"tx_bytes\":%llu,"
         "\"lost\":%llu,\"dropped\":%llu,\"queued_max\":%llu}%s",
         name, (unsigned long long)d->rx_pkts, (unsigned long long)d->rx_bytes,
         (unsigned long long)d->tx_pkts, (unsigned long long)d->tx_bytes,
         (unsigned long long)d->lost, (unsigned long long)d->dropped,
         (unsigned long long)d->queued_max, last ? "" : ",");
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: linkem TUN_A TUN_B [--delay-ms D] [--jitter-ms J] [--loss P] "
                    "[--rate-mbit R] [--queue-ms Q] [--seed S] [--mtu M]\n");
    return 2;
  }
  uint64_t seed = 1;
  int mtu = 0;
  for (int i = 3; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--delay-ms")) delay_ms = atof(v);
    else if (!strcmp(k, "--jitter-ms")) jitter_ms = atof(v);
    else if (!strcmp(k, "--loss")) loss = atof(v);
    else if (!strcmp(k, "--rate-mbit")) rate_mbit = atof(v);
    else if (!strcmp(k, "--queue-ms")) queue_ms = atof(v);
    else if (!strcmp(k, "--seed")) seed = strtoull(v, NULL, 10);
    else if (!strcmp(k, "--mtu")) mtu = atoi(v);
    else {
      fprintf(stderr, "linkem: unknown option %s\n", k);
      return 2;
    }
  }
  prctl(PR_SET_TIMERSLACK, 1UL);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  int a = tun_open(argv[1], mtu), b = tun_open(argv[2], mtu);
  struct dir ab = {.in_fd = a, .out_fd = b, .rng = seed * 2 + 0x9E3779B97F4A7C15ULL};
  struct dir ba = {.in_fd = b, .out_fd = a, .rng = seed * 2 + 1 + 0x9E3779B97F4A7C15ULL};
  printf("ready\n");
  fflush(stdout);
  unsigned char *buf = malloc(MAXPKT);
  struct pollfd fds[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {0, POLLIN, 0}};
  sigset_t none;
  sigemptyset(&none);
  while (!stop) {
    int64_t t = now_ns();
    int64_t next = -1;
    if (ab.head) next = ab.head->due_ns;
    if (ba.head && (next < 0 || ba.head->due_ns < next)) next = ba.head->due_ns;
    struct timespec ts, *tsp = NULL;
    if (next >= 0) {
      int64_t wait = next > t ? next - t : 0;
      ts.tv_sec = wait / 1000000000LL;
      ts.tv_nsec = wait % 1000000000LL;
      tsp = &ts;
    }
    int r = ppoll(fds, 3, tsp, &none);
    if (r < 0 && errno != EINTR) break;
    if (r > 0) {
      if (fds[2].revents) {
        char c[64];
        if (read(0, c, sizeof c) <= 0) break; /* the lifeline: parent gone */
      }
      if (fds[0].revents & POLLIN) take(&ab, buf);
      if (fds[1].revents & POLLIN) take(&ba, buf);
      if ((fds[0].revents | fds[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) break;
    }
    t = now_ns();
    deliver(&ab, t);
    deliver(&ba, t);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{");
  stats(&ab, "a_to_b", 0);
  stats(&ba, "b_to_a", 0);
  printf("\"cpu_s\":%.3f}\n", ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                                     (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  fflush(stdout);
  return 0;
}
