"""Patch CRIU's dump_task_rlimits to read /proc/<pid>/limits when prlimit64() is refused.

Why: prlimit64() on another uid's process needs CAP_SYS_RESOURCE, which hosts that run
Sandlot nested (like CI sandboxes) do not grant; without it CRIU cannot dump a sandbox
in which a non-root process runs. /proc/<pid>/limits carries the same values."""
import sys
from pathlib import Path

MARK = "sandlot_proc_rlimit"
path = Path(sys.argv[1]) / "criu" / "cr-dump.c"
src = path.read_text()
if MARK in src:
    sys.exit(0)
helper = r'''
static int sandlot_proc_rlimit(int pid, int res, struct rlimit64 *lim)
{
	static const char *names[] = { "Max cpu time", "Max file size", "Max data size", "Max stack size",
		"Max core file size", "Max resident set", "Max processes", "Max open files", "Max locked memory",
		"Max address space", "Max file locks", "Max pending signals", "Max msgqueue size",
		"Max nice priority", "Max realtime priority", "Max realtime timeout" };
	char path[64], line[256], soft[32], hard[32];
	FILE *f;
	int ret = -1;

	if (res < 0 || res >= (int)(sizeof(names) / sizeof(names[0])))
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/limits", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, names[res], strlen(names[res])) || strlen(line) < 27)
			continue;
		if (sscanf(line + 26, "%31s %31s", soft, hard) != 2)
			break;
		lim->rlim_cur = strcmp(soft, "unlimited") ? strtoull(soft, NULL, 10) : ~0ULL;
		lim->rlim_max = strcmp(hard, "unlimited") ? strtoull(hard, NULL, 10) : ~0ULL;
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}

static int dump_task_rlimits(int pid, TaskRlimitsEntry *rls)
'''
old_sig = "\nstatic int dump_task_rlimits(int pid, TaskRlimitsEntry *rls)\n"
old_call = "if (syscall(__NR_prlimit64, pid, res, NULL, &lim)) {"
new_call = ("if (syscall(__NR_prlimit64, pid, res, NULL, &lim) &&\n"
            "\t\t    (errno != EPERM || sandlot_proc_rlimit(pid, res, &lim))) {")
assert src.count(old_sig) == 1 and src.count(old_call) == 1, "unexpected cr-dump.c layout"
src = src.replace(old_sig, helper, 1).replace(old_call, new_call, 1)
path.write_text(src)
