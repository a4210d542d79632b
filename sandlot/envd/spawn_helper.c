/*
 * envd's exec helper: the per-process setup envd used to do in a forked copy of itself.
 *
 * envd starts this with posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), no copy of envd's
 * page tables), and it does, in order, what every child of envd must have done before it
 * runs a single instruction of tenant code, then execs the command:
 *
 *   new session (setsid), the pty as controlling terminal (flag 't'), oom_score_adj 1000 (the
 *   OOM killer's first choice, far above envd), the working directory, then — only when
 *   running as root — the user's supplementary groups, gid and uid, each checked: a failed
 *   drop never execs. Nothing it does is a privilege: run by anyone else it can only do to
 *   itself what that caller could already do.
 *
 * usage: spawnhelper FLAGS UID GID GROUPS CWD EXE ARGV0 [ARGS...]
 *   FLAGS  "-" or "t" (TIOCSCTTY on fd 0);  GROUPS  comma-separated gids ("" = none)
 * fd 3 is the error pipe: on failure it gets "<stage> <errno>\n" (stage: chdir, exec,
 * setup) and the helper exits 127; on success the exec closes it (close-on-exec).
 * Everything above fd 3 is closed. The environment is passed through unchanged.
 *
 * Built statically at envd runtime install (sandlot/runtime/envd_bundle.py), so it needs no
 * loader or library from the sandbox.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#define ERR_FD 3
#define MAX_GROUPS 256
#define OOM_SCORE_ADJ "1000"

static void fail(const char *stage, int err) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s %d\n", stage, err);
    if (n > 0) {
        ssize_t w = write(ERR_FD, buf, (size_t)n);
        (void)w;
    }
    _exit(127);
}

static long parse_id(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 0x7fffffffL) fail("setup", EINVAL);
    return v;
}

int main(int argc, char **argv, char **envp) {
    if (argc < 8) fail("setup", EINVAL);
    const char *flags = argv[1];
    uid_t uid = (uid_t)parse_id(argv[2]);
    gid_t gid = (gid_t)parse_id(argv[3]);
    const char *cwd = argv[5];
    const char *exe = argv[6];

    gid_t groups[MAX_GROUPS];
    size_t ngroups = 0;
    char *list = argv[4];
    while (*list) {
        char *comma = strchr(list, ',');
        if (comma) *comma = '\0';
        if (ngroups == MAX_GROUPS) fail("setup", E2BIG);
        groups[ngroups++] = (gid_t)parse_id(list);
        if (!comma) break;
        list = comma + 1;
    }

    if (fcntl(ERR_FD, F_SETFD, FD_CLOEXEC) < 0) _exit(127);
    syscall(SYS_close_range, ERR_FD + 1, ~0U, 0);  /* envd's own fds are close-on-exec too */

    /* glibc's posix_spawn leaves its internal signals (32, 33) ignored, and dispositions of
     * ignored signals survive exec; glibc's own sigaction won't touch them, so reset them (and
     * clear the mask) with the raw syscalls: the command starts as a fork child would. */
    struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } dfl = {0};
    for (int sig = 32; sig <= 33; sig++)
        if (syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask) < 0) fail("setup", errno);
    unsigned long empty_mask = 0;
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty_mask, NULL, sizeof empty_mask) < 0)
        fail("setup", errno);
    if (setsid() < 0) fail("setup", errno);
    if (strchr(flags, 't') && ioctl(0, TIOCSCTTY, 0) < 0) fail("setup", errno);
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom >= 0) {  /* raising needs no privilege; no /proc (dev) leaves it as it was */
        ssize_t w = write(oom, OOM_SCORE_ADJ, sizeof OOM_SCORE_ADJ - 1);
        (void)w;
        close(oom);
    }
    if (chdir(cwd) < 0) fail("chdir", errno);
    if (geteuid() == 0) {
        if (setgroups(ngroups, groups) < 0) fail("setup", errno);
        if (setgid(gid) < 0) fail("setup", errno);
        if (setuid(uid) < 0) fail("setup", errno);
        if (uid != 0 && (geteuid() == 0 || getuid() == 0)) fail("setup", EPERM);
    }
    execve(exe, argv + 7, envp);
    fail("exec", errno);
    return 127;
}
