package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// harden keeps the process's memory, which holds the key store's
// identity, the kodnyckel's chunks and identity numbers in flight, from
// other processes and from disk: no core file (a crash would write the
// heap beside the data directory), and not dumpable, which also makes
// /proc/PID/mem, environ and the like root's alone and refuses ptrace to
// processes of the same user. run calls it before it reads any key.
func harden() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("process hardening: setrlimit(RLIMIT_CORE, 0): %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("process hardening: prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
