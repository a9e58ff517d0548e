// Package formattest builds the on-disk fixtures of chunks storage for the
// tests of the packages that write or read it: a disk backed up into a
// backup root's chunk store as one leaf's, and the files such a store
// holds. The tests of format, controld and the recovery build them here,
// so a change of the format changes one place.
package formattest
