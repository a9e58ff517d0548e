package libvirt

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	lv "libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// A libvirtd killed inside a block copy call may have added the copy's
// target to QEMU without recording it or starting the copy. The restarted
// libvirtd does not know that node, and QEMU keeps it open: when the guest
// resumes after the next live save, QEMU reopens it by its file's name and
// meets the lock of the image at that path by then ("Failed to get write
// lock"), and the guest stays paused. Only QEMU's monitor sees such a
// node, so it is asked directly; this happens only where a copy or a
// rollback was interrupted, since libvirt marks a domain whose monitor is
// used as tainted.

// libvirtNode reads libvirt's names of block nodes, libvirt-<index>-<role>.
var libvirtNode = regexp.MustCompile(`^libvirt-([0-9]+)-(format|storage)$`)

// dropStrayNodes removes every block node of libvirt's naming that QEMU
// holds for one of files and no disk of the running domain uses, as
// libvirt's live XML says.
func (h *Hypervisor) dropStrayNodes(domain string, files []string) error {
	return h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		x, err := d.GetXMLDesc(0)
		if err != nil {
			return err
		}
		known, err := nodeIndexes(x)
		if err != nil {
			return err
		}
		out, err := d.QemuMonitorCommand(`{"execute":"query-named-block-nodes","arguments":{"flat":true}}`, lv.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
		if err != nil {
			return err
		}
		var nodes struct {
			Return []struct {
				Name string `json:"node-name"`
				File string `json:"file"`
			} `json:"return"`
		}
		if err := json.Unmarshal([]byte(out), &nodes); err != nil {
			return fmt.Errorf("block nodes: %w", err)
		}
		present := map[string]bool{}
		var strays []uint64
		for _, n := range nodes.Return {
			present[n.Name] = true
			m := libvirtNode.FindStringSubmatch(n.Name)
			if m == nil || m[2] != "storage" || !slices.Contains(files, n.File) {
				continue
			}
			if i, _ := strconv.ParseUint(m[1], 10, 32); !known[uint(i)] {
				strays = append(strays, i)
			}
		}
		for _, i := range strays {
			for _, role := range []string{"format", "storage"} { // the format node sits on its storage
				name := fmt.Sprintf("libvirt-%d-%s", i, role)
				if !present[name] {
					continue
				}
				cmd := fmt.Sprintf(`{"execute":"blockdev-del","arguments":{"node-name":%q}}`, name)
				err := h.op("remove QEMU's stray block node "+name+" of "+domain, func() error {
					_, err := d.QemuMonitorCommand(cmd, lv.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
					return err
				})
				if err != nil {
					return fmt.Errorf("remove QEMU's stray block node %s: %w", name, err)
				}
			}
		}
		return nil
	})
}

// nodeIndexes are the indexes libvirt gave the images of a running
// domain's disks: each source, backing image and block job destination.
func nodeIndexes(x string) (map[uint]bool, error) {
	disks, err := domainDisks(x)
	if err != nil {
		return nil, err
	}
	known := map[uint]bool{}
	chain := func(src *libvirtxml.DomainDiskSource, bs *libvirtxml.DomainDiskBackingStore) {
		if src != nil {
			known[src.Index] = true
		}
		for ; bs != nil; bs = bs.BackingStore {
			known[bs.Index] = true
		}
	}
	for _, d := range disks {
		chain(d.Source, d.BackingStore)
		if m := d.Mirror; m != nil {
			chain(m.Source, m.BackingStore)
		}
	}
	return known, nil
}

// qemuRunsJob asks QEMU whether it runs a block job on target; libvirt
// names its jobs <kind>-<target>-<node>.
func (h *Hypervisor) qemuRunsJob(domain, target string) (bool, error) {
	var runs bool
	err := h.withDomain(domain, func(_ *lv.Connect, d *lv.Domain) error {
		out, err := d.QemuMonitorCommand(`{"execute":"query-block-jobs"}`, lv.DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT)
		if err != nil {
			return err
		}
		var jobs struct {
			Return []struct {
				Device string `json:"device"`
			} `json:"return"`
		}
		if err := json.Unmarshal([]byte(out), &jobs); err != nil {
			return fmt.Errorf("block jobs: %w", err)
		}
		for _, j := range jobs.Return {
			if strings.Contains(j.Device, "-"+target+"-") {
				runs = true
			}
		}
		return nil
	})
	return runs, err
}
