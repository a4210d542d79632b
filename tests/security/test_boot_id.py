"""A sandbox's boot id (``sandlot/runtime/boot_id.py``) is a host file bound read-only into it:
root in the sandbox can neither change it nor uncover the host's, and the host file — the
canary — is untouched by every attempt. The feature (its own id, read normally) still works."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from e2b import Sandbox

from tests.e2e.server import Server, data_dir

BOOT_ID = "/proc/sys/kernel/random/boot_id"
ATTACKS = [
    f"echo 00000000-0000-0000-0000-000000000000 > {BOOT_ID}",
    "echo 00000000-0000-0000-0000-000000000000 > /.sandlot-boot/boot_id",
    "rm -f /.sandlot-boot/boot_id",
    "mv /.sandlot-boot/boot_id /tmp/stolen",
    "chmod 666 /.sandlot-boot/boot_id",
    "touch /.sandlot-boot/other",
    f"umount {BOOT_ID}",
    f"umount -l {BOOT_ID}",
    "umount -l /.sandlot-boot",
    f"mount -o remount,rw {BOOT_ID}",
    "mount -o remount,rw /.sandlot-boot",
    f"echo 0 > /tmp/fake && mount --bind /tmp/fake {BOOT_ID}",
    "rmdir /.sandlot-boot",
]


def test_tenant_cannot_change_or_uncover_its_boot_id(server: Server, sandbox: Sandbox) -> None:
    host_file = data_dir() / "runtime" / server.instance / "sandboxes" / sandbox.sandbox_id / "boot" / "boot_id"
    canary = host_file.read_text()
    st = host_file.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o444
    host_boot = Path(BOOT_ID).read_text()
    mine = sandbox.commands.run(f"cat {BOOT_ID}").stdout
    assert mine == canary and mine != host_boot

    for cmd in ATTACKS:
        r = sandbox.commands.run(f"({cmd}) 2>&1; echo rc=$?", user="root")
        assert "rc=0" not in r.stdout, (cmd, r.stdout)
    # a private user+mount namespace (where the kernel allows one) only changes its own view:
    # the locked bind cannot be lifted there to uncover the host's id, and the file stays
    r = sandbox.commands.run(
        f"unshare -Urm sh -c 'umount -l {BOOT_ID} 2>&1; echo x > /.sandlot-boot/boot_id 2>&1; cat {BOOT_ID}'"
        " 2>&1; true", user="root")
    assert host_boot.strip() not in r.stdout

    assert host_file.read_text() == canary and os.stat(host_file).st_ino == st.st_ino
    assert Path(BOOT_ID).read_text() == host_boot
    # the legitimate feature: every process, any user, reads the sandbox's own id
    assert sandbox.commands.run(f"cat {BOOT_ID}").stdout == canary
    assert sandbox.commands.run(f"cat {BOOT_ID}", user="root").stdout == canary
    assert sandbox.files.read(BOOT_ID) == canary
