// Package hostio is the one door through which the node daemon changes its
// host. It has three parts:
//
//   - Seam: every file-system and hypervisor operation of a node step is run
//     through Seam.Do with a name. A test arms the seam to end the process
//     just before or just after the Nth operation, or to make the Nth
//     operation fail with EIO or ENOSPC (as SQLite tests its journal).
//   - Path and the file operations: a path is always held together with the
//     configured root it must stay beneath; every open, create, rename,
//     remove, chmod and chown resolves it with openat2(RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS), so a link planted by a group that may write in
//     the retain or backup tree is never followed by the root daemon.
//   - Record: a step's intent record, written and fsynced before the
//     operation it announces, so that a re-run continues from what it says
//     instead of guessing from which files exist.
//
// The main loop of a step, in a few lines:
//
//	rec.Load(&st)                       // where did we stop?
//	if st.Phase < phaseMoved {
//		st.Phase = phaseMoving; rec.Save(st) // announce
//		seam.Do("rename vda", func() error { return Rename(from, to) })
//		st.Phase = phaseMoved; rec.Save(st)  // done
//	}
package hostio
