/* Test probe (integration/environment.rs): calls each named syscall with arguments that make it
 * fail harmlessly, and prints "name errno" (0 when it succeeded). A syscall the seccomp profile
 * denies fails with EPERM before the kernel looks at its arguments; one it allows fails with
 * the kernel's own error (ENOENT, EBADF, ...), so nothing is mounted, swapped or loaded.
 * Built static by the test: `cc -static -o probe syscalls.c`. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long call(const char *name) {
    if (!strcmp(name, "mount"))
        return syscall(SYS_mount, "none", "/nonexistent/dir", "tmpfs", 0UL, NULL);
    if (!strcmp(name, "umount2")) return syscall(SYS_umount2, "/nonexistent/dir", 0);
    if (!strcmp(name, "swapon")) return syscall(SYS_swapon, "/nonexistent/swap", 0);
    if (!strcmp(name, "swapoff")) return syscall(SYS_swapoff, "/nonexistent/swap");
    if (!strcmp(name, "init_module")) return syscall(SYS_init_module, NULL, 0UL, "");
    if (!strcmp(name, "finit_module")) return syscall(SYS_finit_module, -1, "", 0);
    if (!strcmp(name, "mknod")) return syscall(SYS_mknodat, AT_FDCWD, "/nonexistent/dir/node", 0020600, 0);
    /* KEYCTL_GET_KEYRING_ID of a keyring that need not exist: not in containerd's profile. */
    if (!strcmp(name, "keyctl")) return syscall(SYS_keyctl, 0, -1, 0);
    errno = ENOSYS;
    return -2;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        errno = 0;
        long rc = call(argv[i]);
        if (rc == -2) {
            printf("%s unknown\n", argv[i]);
            continue;
        }
        printf("%s %d\n", argv[i], rc < 0 ? errno : 0);
    }
    return 0;
}
