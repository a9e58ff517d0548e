package crashtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// A crash costs what the daemons wait before taking over: lease expiry, node
// timeouts, deadlines. Short values keep the run short. The keys are the
// daemons' to define; each candidate is offered to the binary under test and
// kept only if it accepts it (both refuse unknown keys), so the harness
// follows the daemons as their configuration grows.
type tuningKey struct {
	what string // what it tunes: spellings of one setting share it
	yaml string // the lines to append
	show string // for the header line
}

// The values a crash point relies on.
const (
	nodeLeaseTTL    = 3 * time.Second
	ctlLeaseTTL     = 3 * time.Second
	nodeTimeout     = 10 * time.Second
	stepDeadline    = 60 * time.Second // longer than a node restart plus a step
	leaseSkew       = 2 * time.Second  // what the leases allow for clock skew
	defaultLeaseTTL = 30 * time.Second // nodebackupd's lease when it cannot be set
)

func deadlinesMap() string {
	var b strings.Builder
	b.WriteString("deadlines:\n")
	for _, m := range []string{"snapshot", "snapshotting", "merge", "merging", "retain", "retaining",
		"delete", "deleting", "unretainSmallFiles", "unretainingSmallFiles",
		"unretainLargeFiles", "unretainingLargeFiles", "restore", "restoring"} {
		fmt.Fprintf(&b, "  %s: %s\n", m, stepDeadline)
	}
	return b.String()
}

// Candidates in order; for each setting the first accepted spelling wins.
var (
	controldTuning = []tuningKey{
		// No catch-up backups when controld restarts.
		{"catchUpWindow", "catchUpWindow: 0s\n", "catchUpWindow 0s"},
		{"deadlines", deadlinesMap(), fmt.Sprintf("deadlines %s per request and running mode", stepDeadline)},
		{"deadlines", fmt.Sprintf("deadlines: %s\n", stepDeadline), fmt.Sprintf("deadlines %s", stepDeadline)},
		{"nodeTimeout", fmt.Sprintf("nodeTimeout: %s\n", nodeTimeout), fmt.Sprintf("nodeTimeout %s", nodeTimeout)},
		{"lease", fmt.Sprintf("leaseTTL: %s\n", ctlLeaseTTL), fmt.Sprintf("leaseTTL %s", ctlLeaseTTL)},
		{"lease", fmt.Sprintf("lease:\n  ttl: %s\n", ctlLeaseTTL), fmt.Sprintf("lease.ttl %s", ctlLeaseTTL)},
	}
	nodeTuning = []tuningKey{
		{"lease", fmt.Sprintf("leaseTTL: %s\n", nodeLeaseTTL), fmt.Sprintf("leaseTTL %s", nodeLeaseTTL)},
		{"lease", fmt.Sprintf("lease:\n  ttl: %s\n", nodeLeaseTTL), fmt.Sprintf("lease.ttl %s", nodeLeaseTTL)},
	}
)

// tuning is what the binaries under test accepted.
type tuning struct {
	ctl, node         map[string]string // what → accepted YAML
	ctlLines, nodeLns []string          // for the header line
}

func (t tuning) has(side map[string]string, key string) bool { _, ok := side[key]; return ok }

func (t tuning) hasNodeLease() bool { return t.has(t.node, "lease") }

// nodeTakeover is how long a restarted nodebackupd may wait for its
// predecessor's host lease.
func (t tuning) nodeTakeover() time.Duration {
	if t.hasNodeLease() {
		return nodeLeaseTTL + leaseSkew
	}
	return defaultLeaseTTL + leaseSkew
}

// probeTuning offers each candidate to bin. A configuration the daemon
// accepts gets as far as dialling the directory (a closed port here); one it
// refuses exits with status 2 naming the problem.
func probeTuning(dir, bin string, args []string, base string, cands []tuningKey) (map[string]string, []string, []string) {
	accepted := map[string]string{}
	var lines, refused []string
	why := map[string]string{}
	path := filepath.Join(dir, "probe-"+filepath.Base(bin)+".yaml")
	for _, c := range cands {
		if _, ok := accepted[c.what]; ok {
			continue
		}
		if err := os.WriteFile(path, []byte(base+c.yaml), 0o600); err != nil {
			why[c.what] = err.Error()
			continue
		}
		cmd := exec.Command(bin, append(append([]string{}, args...), "-config", path)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); exitCode(err) == 2 {
			why[c.what] = c.show + ": " + oneLine(strings.ReplaceAll(out.String(), path, "config"))
			continue
		}
		accepted[c.what] = c.yaml
		lines = append(lines, c.show)
	}
	for _, c := range cands {
		if _, ok := accepted[c.what]; !ok && why[c.what] != "" {
			refused = append(refused, why[c.what])
			why[c.what] = ""
		}
	}
	return accepted, lines, refused
}

// oneLine squeezes a daemon's complaint into a short line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, `\n`, " ")), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// ldapYAML is the ldap section both daemons share.
func ldapYAML(url, bindDN, pwFile, base string) string {
	return fmt.Sprintf("ldap:\n  url: %s\n  bindDN: %q\n  passwordFile: %s\n  base: %q\n", url, bindDN, pwFile, base)
}

func joinYAML(m map[string]string) string {
	var b strings.Builder
	for _, v := range m {
		b.WriteString(v)
	}
	return b.String()
}
