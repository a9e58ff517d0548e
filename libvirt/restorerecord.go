package libvirt

import (
	"fmt"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// RestorePhase is where a restore stands in its intent record. The record is
// saved before the operation a phase announces, so a re-run knows what may
// have happened and what surely did not.
type RestorePhase string

const (
	RestoreChecked  RestorePhase = "checked"  // validated; the previous VM is recorded; nothing touched
	RestoreStopping RestorePhase = "stopping" // the previous VM is being saved to the park (or destroyed)
	RestoreStopped  RestorePhase = "stopped"  // it is off; Parked says whether its RAM state is parked
	RestoreMoving   RestorePhase = "moving"   // disks are being swapped, each with its own step
	RestoreDefining RestorePhase = "defining" // the saved definition is being defined
	RestoreResuming RestorePhase = "resuming" // the restored VM is being resumed (or started)
	// RestoreResumed: the point of no return is passed; the restored VM is
	// in its final power state and is never stopped or resumed again.
	RestoreResumed RestorePhase = "resumed"
	RestoreCleaned RestorePhase = "cleaned" // the previous disks and parked state are removed
	// The caller's phases after the adapter's work (see RestoreRecord.Mark).
	RestoreWrittenBack RestorePhase = "written back" // the directory entries are the backup's
	RestoreDone        RestorePhase = "done"         // settled: the restore took effect
	// Failure: the previous VM is being put back (open), or was (settled).
	RestorePuttingBack RestorePhase = "putting back"
	RestorePutBack     RestorePhase = "put back"
)

var restorePhaseOrder = map[RestorePhase]int{
	"": 0, RestoreChecked: 1, RestoreStopping: 2, RestoreStopped: 3, RestoreMoving: 4,
	RestoreDefining: 5, RestoreResuming: 6, RestoreResumed: 7, RestoreCleaned: 8,
	RestoreWrittenBack: 9, RestoreDone: 10,
}

// before: p comes before q on the way forward.
func (p RestorePhase) before(q RestorePhase) bool { return restorePhaseOrder[p] < restorePhaseOrder[q] }

// Restored: the point of no return is passed; the VM is the restored one.
func (p RestorePhase) Restored() bool {
	_, fwd := restorePhaseOrder[p]
	return fwd && !p.before(RestoreResumed)
}

// Settled: nothing of the restore is left to do or undo on the host.
func (p RestorePhase) Settled() bool { return p == RestoreDone || p == RestorePutBack }

// restoreDiskStep is where one disk stands: "" untouched, parking (the live image
// is being renamed to <image>.pre-restore; recorded only if there was one),
// placing (it is parked for sure; the backup is being renamed over the live
// path), placed (done, ownership set).
type restoreDiskStep string

const (
	restoreUntouched restoreDiskStep = ""
	restoreParking   restoreDiskStep = "parking"
	restorePlacing   restoreDiskStep = "placing"
	restorePlaced    restoreDiskStep = "placed"
)

// RestoreDiskRecord is one disk in the record.
type RestoreDiskRecord struct {
	Target  string
	Live    string          // the image path, for an operator reading the record
	Backup  string          // the backed-up image in the retain directory
	HadLive bool            // a live image was there before the restore
	Step    restoreDiskStep `json:",omitempty"`
}

// PreviousVM is what a failed restore goes back to.
type PreviousVM struct {
	Defined bool
	Running bool
	XML     string `json:",omitempty"` // inactive definition
	SaveXML string `json:",omitempty"` // live XML without backingStore: the parked state's XML
}

// putBackStage orders the put-back, so that a re-run of it never repeats a
// stage that changed what the next one sees.
type putBackStage int

const (
	putBackStopRestored putBackStage = iota // the restored VM, if it may run, is destroyed
	putBackDisks                            // disks go back, each by its own step
	putBackDefine                           // the previous definition is back
	putBackResuming                         // the previous VM is being resumed from the park
	putBackResumed                          // it runs (or was off); the park may go
)

// RestoreRecord is the intent record of one restore (JSON in the node's
// state directory).
type RestoreRecord struct {
	Phase     RestorePhase
	XML       string // the saved definition as checked, minus backingStore: re-runs never read the file again
	WithState bool   // the backup's state is a save image, not a shut-off placeholder
	Previous  PreviousVM
	Parked    bool   // the previous VM's RAM state lies at ParkedState
	ParkedAt  string `json:",omitempty"`
	Disks     []RestoreDiskRecord
	Stopped   time.Time `json:",omitempty"`
	// Outcome.
	Running, FromState bool
	Downtime           time.Duration
	// Failure (put back): why, the sentinel's text, and where the put-back stands.
	Failure      string       `json:",omitempty"`
	FailureClass string       `json:",omitempty"`
	FailedAt     RestorePhase `json:",omitempty"` // the phase the failure came in
	PutBack      putBackStage `json:",omitempty"`
	PutBackError string       `json:",omitempty"`
}

// LoadRestoreRecord reads a restore's intent record; false when there is none.
func LoadRestoreRecord(r hostio.Record) (RestoreRecord, bool, error) {
	var rec RestoreRecord
	ok, err := r.Load(&rec)
	return rec, ok, err
}

// Mark moves a restore that took effect on to one of the caller's phases
// (RestoreWrittenBack, RestoreDone) and saves the record.
func (rec *RestoreRecord) Mark(r hostio.Record, p RestorePhase) error {
	if !rec.Phase.Restored() || !rec.Phase.before(p) && rec.Phase != p {
		return fmt.Errorf("restore record at %q cannot go on to %q", rec.Phase, p)
	}
	rec.Phase = p
	return r.Save(rec)
}

// Result is the outcome a restore that took effect reports again on a re-run.
func (rec RestoreRecord) Result() RestoreResult {
	return RestoreResult{Running: rec.Running, FromState: rec.FromState, Downtime: rec.Downtime}
}

// restoreClasses are the classes a restore's record keeps (FailureClass).
var restoreClasses = failureClasses{ErrRestoreFailed, ErrRenameImage, ErrOwnership, ErrPermission, ErrMissingFile,
	ErrCorruptImage, ErrDiskMismatch, ErrInconsistent, ErrConnection, ErrDomainNotFound}

// failure is the recorded failure as an error of its class.
func (rec RestoreRecord) failure() error {
	return restoreClasses.recorded(rec.Failure, rec.FailureClass, ErrRestoreFailed)
}
