// Package crashtest holds the crash harness behind `make crashtest`.
//
// TestCrashPoints builds controld and nodebackupd, starts one private slapd
// and one private libvirtd, and runs the daemons as child processes with the
// YAML configuration an operator would write. At every step boundary of a
// backup and of a restore it SIGKILLs nodebackupd or controld, and once or
// twice mid-workflow slapd and libvirtd, then restarts the victim. After each
// crash point it checks what must hold after any crash:
//
//   - the leaf ends finished, with return value 0 (or, where the point
//     expects it, a failure code), never stuck;
//   - a VM that was running runs again, on its configured images, with no
//     backing file left, without a reboot, and the guest reads its data
//     through its own block device;
//   - a successful backup left every file in the backup directory, and the
//     backed-up images equal the disks as they were;
//   - a scan of the configured retain, RAM disk, image and backup
//     directories finds nothing left behind: no retain leaf directory, no
//     state file, no *.pre-restore, *.partial or *.tmp, no stray overlay.
//
// It prints one line per crash point with its outcome, and the run's total
// time. A point whose kill landed after the step had already finished says
// so instead of counting as a hit.
package crashtest
