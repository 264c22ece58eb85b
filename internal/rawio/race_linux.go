//go:build linux && (race || msan || asan)

package rawio

import (
	"errors"
	"syscall"
)

// sysRead and sysWrite go through syscall.Read and syscall.Write in race-detector (and msan,
// asan) builds: those mark the buffer read or written by the kernel and order a write before the
// reads that see its bytes, which raw system calls do not. rawIO's logic is the same either way.
func sysRead(fd int, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(fd, p)
	return max(n, 0), errnoOf(err)
}

func sysWrite(fd int, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(fd, p)
	return max(n, 0), errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil || !errors.As(err, &e) {
		return 0
	}
	return e
}
