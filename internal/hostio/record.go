package hostio

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Record is a step's intent record on the host: a small JSON document,
// replaced whole (temporary file, fsync, rename, fsync of the directory)
// before each operation it announces, so a crash leaves either the old or
// the new record, never a torn one. It lives in the node's own state
// directory, which only root may write: nothing a VM owner can plant
// there is read back as a decision.
type Record struct {
	Path Path
	Seam *Seam
}

// Load reads the record into v; false when there is none.
func (r Record) Load(v any) (bool, error) {
	b, err := ReadFile(r.Path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("intent record %s: %w", r.Path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("intent record %s: %w", r.Path, err)
	}
	return true, nil
}

// Save replaces the record with v. It is one point of the seam: before
// it the old record stands, after it the new one (the temporary file a
// crash may leave in between is overwritten by the next Save).
func (r Record) Save(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	err = r.Seam.Do("intent record "+r.Path.Base(), func() error {
		var plain *Seam // the record's own file operations are not points of their own
		// The state directory itself is configuration (trusted, root only).
		if err := os.MkdirAll(r.Path.Root, 0o700); err != nil {
			return err
		}
		if _, err := plain.MkdirAll(r.Path.Dir(), 0o700); err != nil {
			return err
		}
		return plain.WriteFile(r.Path, append(b, '\n'), 0o600)
	})
	if err != nil {
		return fmt.Errorf("intent record %s: %w", r.Path, err)
	}
	return nil
}

// Remove ends the record once its step is settled.
func (r Record) Remove() error {
	if err := r.Seam.Remove(r.Path); err != nil {
		return fmt.Errorf("intent record %s: %w", r.Path, err)
	}
	return nil
}
