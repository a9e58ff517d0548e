package libvirt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Image is what `qemu-img info --output=json` says about one image.
type Image struct {
	Filename    string
	Format      string
	VirtualSize int64
	ActualSize  int64
	// BackingFile is the backing file as written in the header; resolved
	// to an absolute path when qemu-img could (FullBackingFile in its terms).
	BackingFile   string
	BackingFormat string
	Corrupt       bool // qcow2 header flag
	Dirty         bool
}

type imageJSON struct {
	Filename        string `json:"filename"`
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	ActualSize      int64  `json:"actual-size"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	BackingFormat   string `json:"backing-filename-format"`
	DirtyFlag       bool   `json:"dirty-flag"`
	FormatSpecific  struct {
		Data struct {
			Corrupt bool `json:"corrupt"`
		} `json:"data"`
	} `json:"format-specific"`
}

func (j imageJSON) image() Image {
	im := Image{
		Filename:      j.Filename,
		Format:        j.Format,
		VirtualSize:   j.VirtualSize,
		ActualSize:    j.ActualSize,
		BackingFile:   j.FullBacking,
		BackingFormat: j.BackingFormat,
		Corrupt:       j.FormatSpecific.Data.Corrupt,
		Dirty:         j.DirtyFlag,
	}
	if im.BackingFile == "" {
		im.BackingFile = j.BackingFilename
	}
	return im
}

// parseImageInfo parses `qemu-img info --output=json IMAGE`.
func parseImageInfo(b []byte) (Image, error) {
	var j imageJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Image{}, fmt.Errorf("parse qemu-img info: %w", err)
	}
	if j.Format == "" {
		return Image{}, errors.New("parse qemu-img info: no format")
	}
	return j.image(), nil
}

// parseImageChain parses `qemu-img info --output=json --backing-chain IMAGE`:
// the image first, then its backing files in order.
func parseImageChain(b []byte) ([]Image, error) {
	var js []imageJSON
	if err := json.Unmarshal(b, &js); err != nil {
		return nil, fmt.Errorf("parse qemu-img info: %w", err)
	}
	if len(js) == 0 {
		return nil, errors.New("parse qemu-img info: empty chain")
	}
	out := make([]Image, len(js))
	for i, j := range js {
		out[i] = j.image()
	}
	return out, nil
}

// checkResult is what `qemu-img check --output=json` reports.
type checkResult struct {
	Filename    string `json:"filename"`
	Format      string `json:"format"`
	CheckErrors int    `json:"check-errors"`
	Corruptions int    `json:"corruptions"`
	Leaks       int    `json:"leaks"`
}

// parseCheck parses `qemu-img check --output=json IMAGE`.
func parseCheck(b []byte) (checkResult, error) {
	var c checkResult
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("parse qemu-img check: %w", err)
	}
	if c.Filename == "" {
		return c, errors.New("parse qemu-img check: no filename")
	}
	return c, nil
}

// qemuImg runs qemu-img with the given arguments (never through a shell).
func qemuImg(ctx context.Context, args ...string) (stdout []byte, err error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return out.Bytes(), fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
		}
		return out.Bytes(), &qemuImgError{args: args, err: err, stderr: strings.TrimSpace(errb.String())}
	}
	return out.Bytes(), nil
}

type qemuImgError struct {
	args   []string
	err    error
	stderr string
}

func (e *qemuImgError) Error() string {
	return fmt.Sprintf("qemu-img %s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}

func (e *qemuImgError) Unwrap() error { return e.err }

func (e *qemuImgError) exitCode() int {
	var ee *exec.ExitError
	if errors.As(e.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func missing(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return wrap(ErrMissingFile, err, "%s", path)
	}
	return nil
}

// ImageInfo describes the image at path. It reads with -U (shared), so the
// image may be in use by a running VM. A missing file is ErrMissingFile.
func ImageInfo(path string) (Image, error) {
	return imageInfo(context.Background(), path)
}

func imageInfo(ctx context.Context, path string) (Image, error) {
	if err := missing(path); err != nil {
		return Image{}, err
	}
	out, err := qemuImg(ctx, "info", "-U", "--output=json", path)
	if err != nil {
		return Image{}, err
	}
	return parseImageInfo(out)
}

// ImageChain returns the image at path and its backing files, in order.
func ImageChain(path string) ([]Image, error) {
	return imageChain(context.Background(), path)
}

func imageChain(ctx context.Context, path string) ([]Image, error) {
	if err := missing(path); err != nil {
		return nil, err
	}
	out, err := qemuImg(ctx, "info", "-U", "--output=json", "--backing-chain", path)
	if err != nil {
		return nil, err
	}
	return parseImageChain(out)
}

// CheckImage runs `qemu-img check`; corruption is ErrCorruptImage. Leaked
// clusters only waste space and are not an error.
func CheckImage(path string) error {
	if err := missing(path); err != nil {
		return err
	}
	out, err := qemuImg(context.Background(), "check", "-U", "--output=json", path)
	var qe *qemuImgError
	if err != nil && !(errors.As(err, &qe) && (qe.exitCode() == 2 || qe.exitCode() == 3)) {
		return wrap(ErrCorruptImage, err, "check %s", path)
	}
	c, perr := parseCheck(out)
	if perr != nil {
		return wrap(ErrCorruptImage, perr, "check %s", path)
	}
	if c.Corruptions > 0 || c.CheckErrors > 0 {
		return wrap(ErrCorruptImage, nil, "%s: %d corruptions, %d check errors", path, c.Corruptions, c.CheckErrors)
	}
	return nil
}

// CompareImages reports whether the guest-visible contents of a and b are
// the same (`qemu-img compare`; formats are read from the headers first, so
// nothing is probed as raw).
func CompareImages(a, b string) (equal bool, err error) {
	ia, err := ImageInfo(a)
	if err != nil {
		return false, err
	}
	ib, err := ImageInfo(b)
	if err != nil {
		return false, err
	}
	_, err = qemuImg(context.Background(), "compare", "-U", "-f", ia.Format, "-F", ib.Format, a, b)
	if err == nil {
		return true, nil
	}
	var qe *qemuImgError
	if errors.As(err, &qe) && qe.exitCode() == 1 {
		return false, nil
	}
	return false, err
}

// createOverlay creates an empty qcow2 at path backed by backing.
func createOverlay(ctx context.Context, backing, backingFormat, path string) error {
	_, err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path)
	return err
}

// rebaseStandalone copies into path every cluster it takes from its backing
// chain and drops the backing file: the offline merge of a shut-off VM.
func rebaseStandalone(ctx context.Context, path string) error {
	_, err := qemuImg(ctx, "rebase", "-q", "-f", "qcow2", "-b", "", path)
	return err
}
