// Package lockedmem holds the test of the process's locked-memory budget against the kernel's real
// RLIMIT_MEMLOCK (region/DESIGN.md, "Locked memory"; issue 14, finding 7): a region node in a child
// process started under `prlimit --memlock` with CAP_IPC_LOCK dropped (`setpriv`, both from
// Debian's util-linux), pushed past the limit. It has no non-test code.
package lockedmem
