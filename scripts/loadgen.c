/* Load generator for mlockaudit's benchmarks and live tests (scripts/bench, tests/live).
 * Built with the system compiler: cc -O2 -pthread -o loadgen scripts/loadgen.c
 *
 *   loadgen storm  RATE SECONDS [CALL]   CALL (default mlock2) at RATE calls/s for SECONDS
 *                                        (RATE 0: as fast as possible); prints the count
 *   loadgen count  N [CALL]              exactly N calls, as fast as possible
 *   loadgen mmap   RATE SECONDS          plain mmap/munmap pairs (the look-alikes of
 *                                        mmap(MAP_LOCKED)): prints the pairs done
 *   loadgen burst  N THREADS             N short-lived processes, each renamed to a hostile
 *                                        comm, calling mlock2 once (and, every THREADS-th,
 *                                        from a second thread that renames itself too),
 *                                        exiting at once: prints one JSON line per call
 *                                        {pid, tid, ppid, comm_hex, ret}
 *
 * Calls go through syscall(2) by number (glibc had no mlock2 wrapper before 2.27). One
 * page of its own, locked and unlocked again by the family: nothing else is touched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *page;

static long call(const char *name)
{
	if (!strcmp(name, "mlock2"))
		return syscall(SYS_mlock2, page, 4096, 0);
	if (!strcmp(name, "mlock"))
		return syscall(SYS_mlock, page, 4096);
	if (!strcmp(name, "munlock"))
		return syscall(SYS_munlock, page, 4096);
	fprintf(stderr, "unknown call %s\n", name);
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* RATE calls/s for SECONDS: in slices of 1 ms, each making up what the rate owes by then */
static long storm(double rate, double seconds, const char *name)
{
	long done = 0;
	double start = now(), end = start + seconds;
	for (;;) {
		double t = now();
		if (t >= end)
			break;
		if (rate <= 0) {
			for (int i = 0; i < 1000; i++)
				call(name);
			done += 1000;
			continue;
		}
		long owed = (long)((t - start) * rate) - done;
		for (long i = 0; i < owed; i++)
			call(name);
		done += owed > 0 ? owed : 0;
		struct timespec pause = {0, 200000};
		nanosleep(&pause, NULL);
	}
	return done;
}

static long mmaps(double rate, double seconds)
{
	long done = 0;
	double start = now(), end = start + seconds;
	for (;;) {
		double t = now();
		if (t >= end)
			break;
		long owed = rate <= 0 ? 1000 : (long)((t - start) * rate) - done;
		for (long i = 0; i < owed; i++) {
			void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (p != MAP_FAILED)
				munmap(p, 4096);
		}
		done += owed > 0 ? owed : 0;
		if (rate > 0) {
			struct timespec pause = {0, 200000};
			nanosleep(&pause, NULL);
		}
	}
	return done;
}

/* comms a hostile process may choose (at most 15 bytes, any byte but NUL) */
static const char *hostile[] = {
	"plain", "a b-9 [1] (x)", "evil\nil-1 [000]", "x-1 (1) [000] .", "123456789012345",
	"1234-56789 [00]", "sys_mlock2(", "-", "<...>", "a\"b\\c=d|e]", "\xff\xfe\x80" "bin",
	"\n\n", "trail ", "type=SYSCALL ms", "comm=\"x\" pid=1", "\t\r\x1b[31m",
};
#define HOSTILE (sizeof(hostile) / sizeof(hostile[0]))

static int out_fd;

static void report(const char *comm, long ret)
{
	char line[256], hex[40] = "";
	for (size_t i = 0; comm[i] && i < 15; i++)
		sprintf(hex + 2 * i, "%02x", (unsigned char)comm[i]);
	int n = snprintf(line, sizeof line,
			 "{\"pid\": %d, \"tid\": %ld, \"ppid\": %d, \"comm_hex\": \"%s\", \"ret\": %ld}\n",
			 getpid(), (long)syscall(SYS_gettid), getppid(), hex, ret);
	if (write(out_fd, line, n) != n)
		_exit(3);
}

static void *thread_main(void *arg)
{
	const char *comm = arg;
	prctl(PR_SET_NAME, comm, 0, 0, 0);
	report(comm, call("mlock2"));
	return NULL;
}

static int burst(int n, int threads_every)
{
	int pipefd[2];
	if (pipe(pipefd))
		return 1;
	out_fd = pipefd[1];
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			const char *comm = hostile[i % HOSTILE];
			prctl(PR_SET_NAME, comm, 0, 0, 0);
			report(comm, call("mlock2"));
			if (threads_every && i % threads_every == 0) {
				pthread_t thread;
				const char *other = hostile[(i + 5) % HOSTILE];
				pthread_create(&thread, NULL, thread_main, (void *)other);
				pthread_join(thread, NULL);
			}
			_exit(0);
		}
	}
	close(pipefd[1]);
	while (wait(NULL) > 0)
		;
	char buf[65536];
	ssize_t got;
	while ((got = read(pipefd[0], buf, sizeof buf)) > 0)
		fwrite(buf, 1, got, stdout);
	return 0;
}

int main(int argc, char **argv)
{
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return 1;
	if (argc >= 4 && !strcmp(argv[1], "storm")) {
		printf("%ld\n", storm(atof(argv[2]), atof(argv[3]), argc > 4 ? argv[4] : "mlock2"));
		return 0;
	}
	if (argc >= 3 && !strcmp(argv[1], "count")) {
		long n = atol(argv[2]);
		for (long i = 0; i < n; i++)
			call(argc > 3 ? argv[3] : "mlock2");
		printf("%ld\n", n);
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "mmap")) {
		printf("%ld\n", mmaps(atof(argv[2]), atof(argv[3])));
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "burst"))
		return burst(atoi(argv[2]), atoi(argv[3]));
	fprintf(stderr, "usage: loadgen storm RATE SECONDS [CALL] | count N [CALL] | "
		"mmap RATE SECONDS | burst N THREADS\n");
	return 2;
}
