// Package libvirt is the hypervisor adapter of the node daemon: it does the
// VM side of a backup on one KVM/libvirt host and knows nothing of LDAP.
// Callers hand it what the directory says (domain name, disks, paths,
// ownership) and map its error classes to return codes.
//
//	h, err := libvirt.Open("qemu:///system")
//	h.SetSeam(seam) // every change to a domain or a file passes it
//	res, err := h.Snapshot(ctx, libvirt.SnapshotRequest{Domain: "vm-001",
//		Disks: disks, RAMDisk: hostio.In("/mnt/ramdisk"), RetainDir: retain,
//		StateName: "vm-001.state", XMLName: "vm-001.xml", Ownership: own,
//		Record: record})
//	// the VM runs again on empty overlays; res.Disks name the retained images
//	_, err = h.Merge(ctx, libvirt.MergeRequest{Domain: "vm-001", Disks: res.Disks})
//	// the overlays are standalone again; the retain step may move the files
//
// Snapshot, for a running VM, in this order:
//  1. Check everything that can be checked: the domain, its disks against
//     the directory's, each image (a regular file, reached without a link,
//     its name not one of the backup's own files), the retain directory on
//     the images' filesystem, room for the state file.
//  2. Write the plan into the intent record (disks, where the state goes,
//     the save XML: the live XML minus every disk's <backingStore/>,
//     whether the VM ran). Then save the state (RAM disk if it has room,
//     else the retain directory) with that XML. A failed save leaves the
//     VM running: stop there.
//  3. Rename each image into the retain directory and create an empty qcow2
//     overlay backed by it at the image's path; set ownership.
//  4. Write the domain XML into the retain directory (never world-readable).
//  5. Restore from the state with the recorded XML, then check that libvirt
//     shows each disk backed by its retained image. The XML must not say
//     <backingStore/>: libvirt would open the overlay alone and the guest
//     would read zeros, and a later pull would make that permanent.
//  6. Move the state file (mode 0600: the guest's RAM) into the retain
//     directory, and remove the record.
//
// With SnapshotRequest.Live the guest never stops: step 2 is an external
// snapshot with --live, no snapshot metadata, of the memory (written while
// the guest runs, a save image like step 2's) and of every disk onto an
// interim overlay beside it, at one instant; the guest is paused only for
// the last pass and the disk switch. Step 3 follows while it runs (QEMU
// keeps the renamed image open), then a shallow block copy moves the
// interim's writes onto the overlay at the disk's path and pivots, and
// step 5 is only the check: the files are the same as without Live
// (docs/live-snapshots.md). Past SnapshotRequest.Bound the guest is paused
// and the copy ends as a plain save's. A failure before the switch commits
// the interims back, the guest still running; a guest the failure left
// paused is resumed. A copy run again after an interruption, and every
// rollback, first remove the block nodes QEMU holds for the snapshot's
// files that libvirt does not know (strays.go: a libvirtd killed inside the
// copy call leaves one). The downtime is measured from libvirt's lifecycle
// events, suspended to resumed.
//
// Every phase, and each disk's rename and overlay, is announced in the
// record (written and fsynced) before it runs, and every operation that
// changes a domain or a file passes the seam, beneath its root, never
// following a link. Run again after a crash, Snapshot decides from the
// record and the domain's state alone, never from which files exist: a
// state file no record names is never resumed; a record that says saved
// and a domain shut off by that save resume from the recorded state with
// the recorded XML (never the XML inside the image); a domain shut off
// after our restore was shut down by its owner and is never resumed. A
// failure after the save is rolled back, following the record too
// (overlays removed, images renamed back, state restored), so that the VM
// runs on its own disks. A shut-off VM gets a placeholder state file and is
// never started. SettleOnly finishes what a record started and starts
// nothing new (a tidy of a finished leaf).
//
// Merge pulls the retained data into each overlay: with the BlockPull API
// for a running VM (HMP block_stream fails while reporting success), with
// `qemu-img rebase -b ""` for a shut-off one, which is not started.
//
// Restore puts a backup back: the backed-up images over the live ones (kept
// as .pre-restore until the VM is back) and the VM restored from the saved
// state with the saved XML, minus <backingStore/>. The saved XML is checked
// first (its disks exactly the directory's, no device or host path outside
// the VM's storage directory); then every phase is announced in the intent
// record (RestoreRequest.Record) before it happens, files move with
// no-replace renames beneath their roots, and a re-run goes on from the
// record and the domain's state: forward until the restored VM is resumed
// (the point of no return), after it only the cleanup. A failure before it
// puts back what the record says was moved and resumes the parked state,
// which is removed only once a VM runs from it.
//
// Test VMs for this package boot from a read-only floppy (see
// internal/testenv): only device='disk' disks backed by files are backed up.
//
// Errors carry sentinels (ErrNoSpace, ErrSaveFailed, ...) for errors.Is, and
// IsTransient tells a lost libvirt connection, worth retrying, from a
// permanent failure. A Hypervisor is safe for concurrent use; operations on
// one domain are serialized.
package libvirt
