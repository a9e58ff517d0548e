// Package testenv starts the real services stoney conductor talks to, as child
// processes in temporary directories: an OpenLDAP slapd with our schema and the
// syncprov overlay, and a private libvirtd with QEMU in software emulation. Tests,
// benchmarks and the demo use it; production code never does.
//
// Start one of each per test binary, in TestMain: a cold libvirtd costs seconds.
//
//	dir, _ := testenv.Start...   // see slapd.go and libvirtd.go
package testenv
