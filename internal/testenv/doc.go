// Package testenv starts the real services stoney conductor talks to, as child
// processes in temporary directories: an OpenLDAP slapd with our schema and the
// syncprov overlay, and a private libvirtd with QEMU in software emulation. Tests,
// benchmarks and the demo use it; production code never does.
//
// A test that needs a directory of its own takes SlapdFor or SlapdStore; what
// a whole package shares (a cold libvirtd costs seconds) its TestMain builds
// once with Main.
package testenv
