//go:build !linux

package main

// harden does nothing outside Linux: lopnrd's hardening (no core file,
// not dumpable) is Linux's prctl; run production on Linux.
func harden() error { return nil }
