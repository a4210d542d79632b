"""Patch CRIU so a container with its own user namespace can sit in a network namespace
that the *init* user namespace owns (Sandlot's pooled netns, joined by path).

Why: Sandlot sandboxes run in a user namespace (docs/security/userns.md) but join a
pre-made netns, which runc hands to CRIU as external (``--external net[…]``). Stock CRIU
4.2 refuses the dump ("One or more namespaces doesn't belong to the target user
namespace": it checks that the target userns can setns into every namespace, the
external netns included) and, at restore, makes the restored tasks join the external
netns from inside their new user namespace, which the kernel refuses (no CAP_SYS_ADMIN
over the netns's owner). This patch
  * skips the external netns in that dump check;
  * at restore joins the external netns in CRIU itself *before* the root task is cloned
    into its new user namespace, so the task inherits it;
  * makes a setns() into the netns a task is already in a no-op (it would change nothing,
    and the kernel refuses it inside the new userns)."""
import sys
from pathlib import Path

MARK = "sandlot_ext_netns"
root = Path(sys.argv[1]) / "criu"


def patch(path: Path, edits: list[tuple[str, str, int]], mark: str = MARK) -> None:
    src = path.read_text()
    if mark in src:
        return
    for old, new, count in edits:
        assert src.count(old) == count, f"unexpected {path.name} layout: {old[:60]!r}"
        src = src.replace(old, new)
    path.write_text(src)


patch(root / "namespaces.c", [
    ("\nstatic int check_user_ns(int pid)\n", r'''
/* sandlot_ext_netns: the task's netns was declared external (--external net[ino]:key) */
static int sandlot_ext_netns(int pid)
{
	char path[64], key[64];
	struct stat st;
	char *val;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
	if (stat(path, &st))
		return 0;
	snprintf(key, sizeof(key), "net[%u]", (unsigned int)st.st_ino);
	val = external_lookup_by_key(key);
	return !IS_ERR_OR_NULL(val);
}

static int check_user_ns(int pid)
''', 1),
    ("\t\tif ((root_ns_mask & CLONE_NEWNET) && switch_ns(pid, &net_ns_desc, NULL))\n",
     "\t\tif ((root_ns_mask & CLONE_NEWNET) && !sandlot_ext_netns(pid) && switch_ns(pid, &net_ns_desc, NULL))\n", 1),
    ("\nint switch_ns_by_fd(int nsfd, struct ns_desc *nd, int *rst)\n", r'''
/* sandlot_ext_netns: true if fd is the netns this task is already in */
int sandlot_in_netns(int fd)
{
	struct stat a, b;
	int self = open_proc(PROC_SELF, "ns/net");
	int same;

	if (self < 0)
		return 0;
	same = !fstat(fd, &a) && !fstat(self, &b) && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
	close(self);
	return same;
}

int switch_ns_by_fd(int nsfd, struct ns_desc *nd, int *rst)
''', 1),
    ("\tret = setns(nsfd, nd->cflag);\n\tif (ret < 0) {\n\t\tpr_perror(\"Can't setns %d/%s\", nsfd, nd->str);\n",
     "\tret = (nd == &net_ns_desc && sandlot_in_netns(nsfd)) ? 0 : setns(nsfd, nd->cflag);\n"
     "\tif (ret < 0) {\n\t\tpr_perror(\"Can't setns %d/%s\", nsfd, nd->str);\n", 1),
    ("\tret = setns(rst, nd->cflag);\n",
     "\tret = (nd == &net_ns_desc && sandlot_in_netns(rst)) ? 0 : setns(rst, nd->cflag);\n", 1),
])
src = (root / "namespaces.c").read_text()
if '#include "external.h"' not in src:
    (root / "namespaces.c").write_text(src.replace('#include "namespaces.h"', '#include "namespaces.h"\n#include "external.h"', 1))

patch(root / "net.c", [
    ("\nstatic int do_restore_task_net_ns(struct ns_id *nsid, struct pstree_item *current)\n",
     "\nint sandlot_in_netns(int fd); /* sandlot_ext_netns */\n"
     "\nstatic int do_restore_task_net_ns(struct ns_id *nsid, struct pstree_item *current)\n", 1),
    ("\tif (setns(fd, CLONE_NEWNET)) {\n\t\tpr_perror(\"Can't restore netns\");\n",
     "\tif (!sandlot_in_netns(fd) && setns(fd, CLONE_NEWNET)) {\n\t\tpr_perror(\"Can't restore netns\");\n", 1),
])

patch(root / "sockets.c", [
    ("\nint set_netns(uint32_t ns_id)\n", "\nint sandlot_in_netns(int fd); /* sandlot_ext_netns */\n\nint set_netns(uint32_t ns_id)\n", 1),
    ("\tif (setns(nsfd, CLONE_NEWNET)) {\n\t\tpr_perror(\"Unable to switch a network namespace\");\n",
     "\tif (!sandlot_in_netns(nsfd) && setns(nsfd, CLONE_NEWNET)) {\n\t\tpr_perror(\"Unable to switch a network namespace\");\n", 1),
])

patch(root / "cr-restore.c", [
    ('\n#include "restorer.h"\n', '\n#include "restorer.h"\n\nstatic int sandlot_ext_netns_joined; /* sandlot_ext_netns */\n', 1),
    ("\t\t\tif (ns->ext_key)\n\t\t\t\tret = net_set_ext(ns);\n",
     "\t\t\tif (ns->ext_key && sandlot_ext_netns_joined)\n"
     "\t\t\t\tret = 0; /* inherited from criu, joined before the new userns */\n"
     "\t\t\telse if (ns->ext_key)\n\t\t\t\tret = net_set_ext(ns);\n", 1),
    ("\t__restore_switch_stage_nw(CR_STATE_ROOT_TASK);\n\n\tret = fork_with_pid(init);\n",
     "\tif ((root_ns_mask & CLONE_NEWUSER) && (root_ns_mask & CLONE_NEWNET) && net_get_root_ns() &&\n"
     "\t    net_get_root_ns()->ext_key) {\n"
     "\t\t/* an external netns owned by an outer userns: only we may join it */\n"
     "\t\tif (net_set_ext(net_get_root_ns()))\n\t\t\treturn -1;\n"
     "\t\tsandlot_ext_netns_joined = 1;\n\t}\n\n"
     "\t__restore_switch_stage_nw(CR_STATE_ROOT_TASK);\n\n\tret = fork_with_pid(init);\n", 1),
])

# Established TCP connections: TCP_REPAIR needs CAP_NET_ADMIN over the netns's owner (the
# init userns), which the restored tasks lack. Repair mode is switched on for them by
# usernsd (CRIU's helper that keeps the init userns's credentials), which keeps a dup of
# each socket and switches repair off again once every task has restored its sockets,
# where the restorer would have (its own attempt then fails harmlessly).
patch(root.parent / "soccr" / "soccr.c", [
    ("\nstatic int tcp_repair_on(int fd)\n{\n\tint ret, aux = 1;\n\n\tret = setsockopt(fd, SOL_TCP, TCP_REPAIR, &aux, sizeof(aux));\n",
     "\nint soccr_repair_hook(int fd, int on) __attribute__((weak)); /* sandlot_ext_netns */\n"
     "\nstatic int tcp_repair_on(int fd)\n{\n\tint ret, aux = 1;\n\n\tret = setsockopt(fd, SOL_TCP, TCP_REPAIR, &aux, sizeof(aux));\n"
     "\tif (ret < 0 && errno == EPERM && soccr_repair_hook)\n\t\tret = soccr_repair_hook(fd, 1);\n", 1),
    ("\tret = setsockopt(fd, SOL_TCP, TCP_REPAIR, &aux, sizeof(aux));\n\tif (ret < 0)\n\t\tlogerr(\"Failed to turn off repair mode on socket\");\n",
     "\tret = setsockopt(fd, SOL_TCP, TCP_REPAIR, &aux, sizeof(aux));\n"
     "\tif (ret < 0 && errno == EPERM && soccr_repair_hook)\n\t\tret = soccr_repair_hook(fd, 0);\n"
     "\tif (ret < 0)\n\t\tlogerr(\"Failed to turn off repair mode on socket\");\n", 1),
])

patch(root / "sk-tcp.c", [
    ("\nint restore_one_tcp(int fd, struct inet_sk_info *ii)\n", r'''
/* sandlot_ext_netns: TCP repair through usernsd (see criu-userns-netns.py) */
#define SANDLOT_MAX_REPAIR 4096
static int sandlot_repair_fds[SANDLOT_MAX_REPAIR];
static int sandlot_repair_nr;

static int sandlot_repair_cb(void *arg, int fd, pid_t pid)
{
	int aux = *(int *)arg;

	if (setsockopt(fd, SOL_TCP, TCP_REPAIR, &aux, sizeof(aux))) {
		pr_perror("sandlot: usernsd can't set TCP repair %d", aux);
		return -1;
	}
	if (aux && sandlot_repair_nr < SANDLOT_MAX_REPAIR) {
		int keep = dup(fd);

		if (keep >= 0)
			sandlot_repair_fds[sandlot_repair_nr++] = keep;
	}
	return 0;
}

int soccr_repair_hook(int fd, int on)
{
	if (!(root_ns_mask & CLONE_NEWUSER)) {
		errno = EPERM;
		return -1;
	}
	if (userns_call(sandlot_repair_cb, 0, &on, sizeof(on), fd)) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

static int sandlot_repair_off_cb(void *arg, int fd, pid_t pid)
{
	int i, aux = 0;

	for (i = 0; i < sandlot_repair_nr; i++) {
		if (setsockopt(sandlot_repair_fds[i], SOL_TCP, TCP_REPAIR, &aux, sizeof(aux)))
			pr_perror("sandlot: usernsd can't turn TCP repair off");
		close(sandlot_repair_fds[i]);
	}
	sandlot_repair_nr = 0;
	return 0;
}

int sandlot_repair_off_all(void)
{
	int dummy = 0;

	if (!(root_ns_mask & CLONE_NEWUSER) || opts.tcp_close)
		return 0;
	return userns_call(sandlot_repair_off_cb, 0, &dummy, sizeof(dummy), -1);
}

int restore_one_tcp(int fd, struct inet_sk_info *ii)
''', 1),
])

patch(root / "cr-restore.c", [
    ("\tret = restore_switch_stage(CR_STATE_RESTORE_SIGCHLD);\n\tif (ret < 0)\n\t\tgoto out_kill;\n\n\tret = stop_usernsd();\n",
     "\tret = restore_switch_stage(CR_STATE_RESTORE_SIGCHLD);\n\tif (ret < 0)\n\t\tgoto out_kill;\n\n"
     "\t/* sandlot_ext_netns: every socket is restored; usernsd ends their repair mode */\n"
     "\tif (sandlot_repair_off_all() < 0)\n\t\tgoto out_kill;\n\n"
     "\tret = stop_usernsd();\n", 1),
    ('\n#include "restorer.h"\n', '\n#include "restorer.h"\n\nint sandlot_repair_off_all(void); /* sandlot_ext_netns */\n', 1),
], mark="sandlot_repair_off_all")
