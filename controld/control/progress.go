package control

import (
	"fmt"
	"strings"
)

// Progress is a long copy's or merge's progress as the node publishes it in
// the leaf's execution time: "progress: retain 120.0 MiB of 512.0 MiB,
// 85.3 MiB/s, 5s left".
type Progress struct {
	Text                     string // the line as written, without "progress: "
	Step                     string
	DoneMiB, TotalMiB, MiBps float64
	Left                     string // "5s", or "?" while the rate is unknown
}

// Fraction is the part done, 0 to 1.
func (p Progress) Fraction() float64 {
	if p.TotalMiB <= 0 {
		return 0
	}
	return min(p.DoneMiB/p.TotalMiB, 1)
}

// LeafProgress finds and reads the progress value among a leaf's execution
// times. ok is false when there is none; a line it cannot read comes back
// with Text only.
func LeafProgress(executionTimes []string) (p Progress, ok bool) {
	for _, v := range executionTimes {
		line, found := strings.CutPrefix(v, "progress: ")
		if !found {
			continue
		}
		p = Progress{Text: line}
		if _, err := fmt.Sscanf(line, "%s %f MiB of %f MiB, %f MiB/s, %s left",
			&p.Step, &p.DoneMiB, &p.TotalMiB, &p.MiBps, &p.Left); err != nil {
			return Progress{Text: line}, true
		}
		return p, true
	}
	return Progress{}, false
}

// HumanBytes renders n in binary units, e.g. 71.8 MiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
