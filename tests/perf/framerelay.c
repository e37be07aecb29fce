/* framerelay: the guest side of passt's socket, without a virtual machine.
 *
 * A tap device in the current network namespace stands in for the guest's NIC:
 * every frame the namespace's kernel sends on it goes to passt's UNIX socket
 * with QEMU's -netdev stream framing (a 4-byte big-endian length, then the
 * Ethernet frame), and every frame passt writes is handed to the tap.  The
 * namespace's own TCP/IP stack is then the "guest", and what limits a
 * transfer is passt's data path, not an emulated CPU (a TCG guest tops out
 * near 1 Gbit/s for every implementation).
 *
 * usage: framerelay SOCKET IFNAME READY_FILE
 *   connects to SOCKET (retrying for 10 s), creates tap IFNAME, then creates
 *   READY_FILE and relays until either side closes or SIGTERM.
 *
 * Written for tests/perf/test_perf_relay.py, which builds it with gcc.
 * One thread, poll(2): tap reads are batched into one socket write per
 * turn; socket reads are cut into frames, each one tap write.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FRAME_MAX (65535 + 14)
#define SOCK_BUF (4 << 20)        /* socket buffers and our input buffer */
#define OUT_BUF (1 << 20)         /* tap frames collected per socket write */

static char inbuf[SOCK_BUF];
static char outbuf[OUT_BUF];

/* Write all of p[0..n) to a (blocking) descriptor. */
static int put_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int open_tap(const char *name)
{
	struct ifreq ifr;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int open_sock(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int size = SOCK_BUF;
	int s, tries;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (tries = 0; tries < 200; tries++) {
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			return -1;
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			setsockopt(s, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
			setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
			return s;
		}
		close(s);
		usleep(50 * 1000);
	}
	return -1;
}

/* Tap -> socket: every frame queued now, as one framed batch. 0, or -1 on error. */
static int tap_to_sock(int tap, int s)
{
	size_t used = 0;

	for (;;) {
		ssize_t n;

		if (OUT_BUF - used < 4 + FRAME_MAX)
			break;
		n = read(tap, outbuf + used + 4, FRAME_MAX);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return -1;
		}
		if (n == 0)
			break;
		uint32_t len = htonl((uint32_t)n);
		memcpy(outbuf + used, &len, 4);
		used += 4 + (size_t)n;
	}
	return used ? put_all(s, outbuf, used) : 0;
}

/* Socket -> tap: read what is there, write each complete frame. 0, 1 at EOF, -1 on error. */
static int sock_to_tap(int s, int tap, size_t *have)
{
	ssize_t n = read(s, inbuf + *have, sizeof(inbuf) - *have);
	size_t off = 0;

	if (n == 0)
		return 1;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	*have += (size_t)n;
	while (*have - off >= 4) {
		uint32_t len;

		memcpy(&len, inbuf + off, 4);
		len = ntohl(len);
		if (len > FRAME_MAX)
			return -1; /* lost the framing */
		if (*have - off < 4 + len)
			break;
		/* a full tap queue, or the link still down (EIO), drops the frame as a NIC would */
		if (write(tap, inbuf + off + 4, len) < 0 && errno != EAGAIN && errno != EINTR &&
		    errno != EIO)
			return -1;
		off += 4 + len;
	}
	memmove(inbuf, inbuf + off, *have - off);
	*have -= off;
	return 0;
}

int main(int argc, char **argv)
{
	struct pollfd pf[2];
	size_t have = 0;
	int s, tap, fd;

	if (argc != 4) {
		fprintf(stderr, "usage: framerelay SOCKET IFNAME READY_FILE\n");
		return 2;
	}
	s = open_sock(argv[1]);
	if (s < 0) {
		perror("framerelay: connect");
		return 1;
	}
	tap = open_tap(argv[2]);
	if (tap < 0) {
		perror("framerelay: tap");
		return 1;
	}
	fd = open(argv[3], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror("framerelay: ready file");
		return 1;
	}
	close(fd);
	pf[0] = (struct pollfd){ .fd = tap, .events = POLLIN };
	pf[1] = (struct pollfd){ .fd = s, .events = POLLIN };
	for (;;) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("framerelay: poll");
			return 1;
		}
		if (pf[1].revents) {
			int rc = sock_to_tap(s, tap, &have);
			if (rc) {
				if (rc < 0)
					perror("framerelay: socket");
				return rc < 0;
			}
		}
		if ((pf[0].revents & POLLIN) && tap_to_sock(tap, s) < 0) {
			perror("framerelay: relay to socket");
			return 1;
		}
	}
}
