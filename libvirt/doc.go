// Package libvirt is the hypervisor adapter of the node daemon: it does the
// VM side of a backup on one KVM/libvirt host and knows nothing of LDAP.
// Callers hand it what the directory says (domain name, disks, paths,
// ownership) and map its error classes to return codes.
//
//	h, err := libvirt.Open("qemu:///system")
//	res, err := h.Snapshot(ctx, libvirt.SnapshotRequest{Domain: "vm-001",
//		Disks: disks, RAMDisk: "/mnt/ramdisk", RetainDir: retain,
//		StateName: "vm-001.state", XMLName: "vm-001.xml", Ownership: own})
//	// the VM runs again on empty overlays; res.Disks name the retained images
//	_, err = h.Merge(ctx, libvirt.MergeRequest{Domain: "vm-001", Disks: res.Disks})
//	// the overlays are standalone again; the retain step may move the files
//
// Snapshot, for a running VM, in this order:
//  1. Check everything that can be checked: the domain, its disks against
//     the directory's, each image, the retain directory on the images'
//     filesystem, room for the state file.
//  2. Save the state (RAM disk if it has room, else the retain directory)
//     with the live XML minus every disk's <backingStore/>. A failed save
//     leaves the VM running: stop there.
//  3. Rename each image into the retain directory and create an empty qcow2
//     overlay backed by it at the image's path; set ownership.
//  4. Write the domain XML into the retain directory.
//  5. Restore from the state with that XML, then check that libvirt shows
//     each disk backed by its retained image. The XML must not say
//     <backingStore/>: libvirt would open the overlay alone and the guest
//     would read zeros, and a later pull would make that permanent.
//  6. Move the state file into the retain directory.
//
// A failure after step 2 is rolled back (overlays removed, images renamed
// back, state restored) so that the VM runs on its own disks. A shut-off VM
// gets a placeholder state file and is never started. Each step checks
// before it acts, so Snapshot run again after a crash goes on from where it
// stopped.
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
