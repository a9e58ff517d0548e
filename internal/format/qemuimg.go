package format

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
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
	Bitmaps       []Bitmap // qcow2 persistent dirty bitmaps
}

// Bitmap is a persistent dirty bitmap of a qcow2 image.
type Bitmap struct {
	Name string
	// InUse: a QEMU had the image open for writing and did not store the
	// bitmap when it went (killed): it misses writes and cannot be used.
	InUse bool
	// Auto: QEMU records the guest's writes in it.
	Auto bool
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
			Bitmaps []struct {
				Name  string   `json:"name"`
				Flags []string `json:"flags"`
			} `json:"bitmaps"`
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
	for _, b := range j.FormatSpecific.Data.Bitmaps {
		im.Bitmaps = append(im.Bitmaps, Bitmap{Name: b.Name, InUse: slices.Contains(b.Flags, "in-use"), Auto: slices.Contains(b.Flags, "auto")})
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

// extent is one line of `qemu-img map --output=json`.
type extent struct {
	Length int64  `json:"length"`
	Start  int64  `json:"start"`
	Depth  int    `json:"depth"`
	Data   bool   `json:"data"`
	Zero   bool   `json:"zero"`
	Offset *int64 `json:"offset"`
}

// parseMap parses `qemu-img map --output=json IMAGE`.
func parseMap(b []byte) ([]extent, error) {
	var es []extent
	if err := json.Unmarshal(b, &es); err != nil {
		return nil, fmt.Errorf("parse qemu-img map: %w", err)
	}
	return es, nil
}

// dataEnd is the end of the last data the image itself holds: a complete
// file reaches at least that far.
func dataEnd(es []extent) int64 {
	var end int64
	for _, e := range es {
		if e.Depth == 0 && e.Data && e.Offset != nil {
			end = max(end, *e.Offset+e.Length)
		}
	}
	return end
}

// Classes of the image calls' failures, for errors.Is.
var (
	ErrCorruptImage = errors.New("corrupt disk image found")
	ErrMissingFile  = errors.New("missing necessary files")
)

// ErrImageTimeout: a qemu-img call did not end within its timeout (a hung
// mount, e.g. NFS). The call was killed; the step fails instead of holding
// a worker for good.
var ErrImageTimeout = errors.New("qemu-img did not finish in time")

// ImageTimeouts bound every qemu-img call. Calls that move or compare data
// get Data plus the time to go through the image at MinRate.
type ImageTimeouts struct {
	Query   time.Duration // info, create: headers only
	Check   time.Duration // check: the image's metadata
	Data    time.Duration // rebase, compare: the fixed part
	MinRate int64         // bytes per second a data call reaches at least
}

// DefaultImageTimeouts are generous for local disks and NFS alike: a call
// that overruns them hangs rather than works.
var DefaultImageTimeouts = ImageTimeouts{Query: 2 * time.Minute, Check: 15 * time.Minute, Data: 10 * time.Minute, MinRate: 4 << 20}

var (
	timeoutsMu sync.Mutex
	timeouts   = DefaultImageTimeouts
)

// SetImageTimeouts replaces the timeouts of the process's qemu-img calls;
// a zero field keeps its default. It returns the timeouts it replaced.
func SetImageTimeouts(t ImageTimeouts) (old ImageTimeouts) {
	d := DefaultImageTimeouts
	if t.Query <= 0 {
		t.Query = d.Query
	}
	if t.Check <= 0 {
		t.Check = d.Check
	}
	if t.Data <= 0 {
		t.Data = d.Data
	}
	if t.MinRate <= 0 {
		t.MinRate = d.MinRate
	}
	timeoutsMu.Lock()
	defer timeoutsMu.Unlock()
	old, timeouts = timeouts, t
	return old
}

func imageTimeouts() ImageTimeouts {
	timeoutsMu.Lock()
	defer timeoutsMu.Unlock()
	return timeouts
}

// dataTimeout is the bound of a call that goes through size bytes.
func (t ImageTimeouts) dataTimeout(size int64) time.Duration {
	return t.Data + time.Duration(size/t.MinRate)*time.Second
}

// killGrace is how long a killed qemu-img may take to go, and its output
// pipes to close, before the call returns without it: a process stuck in
// uninterruptible I/O is left to a reaper goroutine, not waited for.
const killGrace = 2 * time.Second

// qemuImg runs qemu-img with the given arguments (never through a shell)
// and returns its standard output.
func qemuImg(ctx context.Context, timeout time.Duration, args ...string) (stdout []byte, err error) {
	var out bytes.Buffer
	err = runQemuImg(ctx, timeout, &out, args...)
	return out.Bytes(), err
}

// runQemuImg runs qemu-img, its standard output going to stdout, for at
// most timeout. stdout is no longer written once runQemuImg returned.
func runQemuImg(ctx context.Context, timeout time.Duration, stdout io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errb bytes.Buffer
	outw, errw := &detachable{w: stdout}, &detachable{w: &errb}
	defer outw.detach()
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stdout, cmd.Stderr = outw, errw
	cmd.WaitDelay = killGrace
	if err := cmd.Start(); err != nil {
		return &qemuImgError{args: args, err: err}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		select {
		case err = <-done:
		case <-time.After(2 * killGrace):
			err = ctx.Err()
		}
	}
	errw.detach()
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// Ours or the caller's deadline: either way the tool overran it.
		return fmt.Errorf("%w: qemu-img %s (limit %v): %w", ErrImageTimeout, strings.Join(args, " "), timeout, ctx.Err())
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
	}
	return &qemuImgError{args: args, err: err, stderr: strings.TrimSpace(errb.String())}
}

// detachable is a writer that drops what comes after detach, so that a
// process left behind cannot write into a caller's buffer.
type detachable struct {
	mu  sync.Mutex
	w   io.Writer
	off bool
}

func (d *detachable) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.off {
		return len(p), nil
	}
	return d.w.Write(p)
}

func (d *detachable) detach() {
	d.mu.Lock()
	d.off = true
	d.mu.Unlock()
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
		return fmt.Errorf("%w: %s: %w", ErrMissingFile, path, err)
	}
	return nil
}

// corrupt is an ErrCorruptImage about path.
func corrupt(path string, cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause == nil {
		return fmt.Errorf("%w: %s: %s", ErrCorruptImage, path, msg)
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrCorruptImage, path, msg, cause)
}

// ImageInfo describes the image at path. It reads with -U (shared), so the
// image may be in use by a running VM. A missing file is ErrMissingFile.
func ImageInfo(ctx context.Context, path string) (Image, error) {
	if err := missing(path); err != nil {
		return Image{}, err
	}
	out, err := qemuImg(ctx, imageTimeouts().Query, "info", "-U", "--output=json", path)
	if err != nil {
		return Image{}, err
	}
	return parseImageInfo(out)
}

// ImageChain returns the image at path and its backing files, in order.
func ImageChain(ctx context.Context, path string) ([]Image, error) {
	if err := missing(path); err != nil {
		return nil, err
	}
	out, err := qemuImg(ctx, imageTimeouts().Query, "info", "-U", "--output=json", "--backing-chain", path)
	if err != nil {
		return nil, err
	}
	return parseImageChain(out)
}

// CheckImage tells whether the image at path is complete and healthy, of
// the given format ("" for any); a damaged one is ErrCorruptImage, a
// missing one ErrMissingFile, and a call that overran its time
// ErrImageTimeout (no verdict on the image). Leaked clusters only waste
// space and are not an error.
//
// A raw image is only read, and only when the caller expects raw:
// qemu-img cannot check one, and a qcow2 whose header is damaged probes as
// raw too.
//
// A copy cut short passes `qemu-img check` when only data clusters are
// missing, so `qemu-img map` is asked first whether any data lies beyond
// the end of the file. Comparing the size with check's image-end-offset
// instead would refuse good images: QEMU writes data clusters whole but its
// last metadata cluster only as far as it is used.
func CheckImage(ctx context.Context, path, format string) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s: %w", ErrMissingFile, path, err)
	}
	if err != nil {
		return corrupt(path, err, "unreadable")
	}
	im, err := ImageInfo(ctx, path)
	if errors.Is(err, ErrImageTimeout) {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if err != nil {
		return corrupt(path, err, "not a readable image")
	}
	if format != "" && im.Format != format {
		return corrupt(path, nil, "a %s image, the domain XML says %s", im.Format, format)
	}
	if im.Corrupt {
		return corrupt(path, nil, "the image is marked corrupt")
	}
	if im.Format == "raw" {
		if format == "raw" {
			return nil // nothing to check beyond reading it
		}
		return corrupt(path, nil, "reads as a raw image, which cannot be checked (a damaged header reads so too)")
	}
	// A cut copy first: check would only count the corruptions it causes.
	out, mapErr := qemuImg(ctx, imageTimeouts().Check, "map", "-U", "-f", im.Format, "--output=json", path)
	if errors.Is(mapErr, ErrImageTimeout) {
		return fmt.Errorf("check %s: %w", path, mapErr)
	}
	if mapErr == nil {
		var es []extent
		if es, mapErr = parseMap(out); mapErr == nil {
			if end := dataEnd(es); end > st.Size() {
				return corrupt(path, nil, "truncated: data up to byte %d, the file has %d", end, st.Size())
			}
		}
	}
	out, err = qemuImg(ctx, imageTimeouts().Check, "check", "-U", "-f", im.Format, "--output=json", path)
	if errors.Is(err, ErrImageTimeout) {
		return fmt.Errorf("check %s: %w", path, err)
	}
	var qe *qemuImgError
	// 2: corruptions, 3: leaks only; both still print the JSON report.
	if err != nil && !(errors.As(err, &qe) && (qe.exitCode() == 2 || qe.exitCode() == 3)) {
		return corrupt(path, err, "check")
	}
	c, err := parseCheck(out)
	if err != nil {
		return corrupt(path, err, "check")
	}
	if c.Corruptions > 0 || c.CheckErrors > 0 {
		return corrupt(path, nil, "%d corruptions, %d check errors", c.Corruptions, c.CheckErrors)
	}
	if mapErr != nil {
		return corrupt(path, mapErr, "map")
	}
	return nil
}

// CompareImages reports whether the guest-visible contents of a and b are
// the same (`qemu-img compare`; formats are read from the headers first, so
// nothing is probed as raw).
func CompareImages(ctx context.Context, a, b string) (equal bool, err error) {
	ia, err := ImageInfo(ctx, a)
	if err != nil {
		return false, err
	}
	ib, err := ImageInfo(ctx, b)
	if err != nil {
		return false, err
	}
	_, err = qemuImg(ctx, imageTimeouts().dataTimeout(max(ia.VirtualSize, ib.VirtualSize)),
		"compare", "-U", "-f", ia.Format, "-F", ib.Format, a, b)
	if err == nil {
		return true, nil
	}
	var qe *qemuImgError
	if errors.As(err, &qe) && qe.exitCode() == 1 {
		return false, nil
	}
	return false, err
}

// CreateOverlay creates an empty qcow2 at path backed by backing. When
// backing is a retained image (it lies in a leaf's retain directory), the
// overlay gets the persistent dirty bitmap BitmapName(leaf): from then on
// QEMU records in it what the guest writes, and the next retain reads only
// that (see StoreOptions).
func CreateOverlay(ctx context.Context, backing, backingFormat, path string) error {
	_, err := qemuImg(ctx, imageTimeouts().Query, "create", "-q", "-f", "qcow2", "-F", backingFormat, "-b", backing, path)
	if err != nil {
		return err
	}
	if leaf := filepath.Base(filepath.Dir(backing)); ldapschema.IsLeafName(leaf) {
		_, err = qemuImg(ctx, imageTimeouts().Query, "bitmap", "--add", path, BitmapName(leaf))
	}
	return err
}

// BitmapName is the dirty bitmap of the overlay made at leaf's snapshot: a
// name per leaf, since a block pull merges bitmaps of one name down the
// chain and a fixed name would gather every night's writes.
func BitmapName(leaf string) string { return bitmapPrefix + leaf }

const bitmapPrefix = "stoney-"

// BitmapLeaf is the leaf a bitmap of ours is named after.
func BitmapLeaf(name string) (string, bool) {
	leaf, ok := strings.CutPrefix(name, bitmapPrefix)
	return leaf, ok && ldapschema.IsLeafName(leaf)
}

// ourBitmaps are the bitmaps of the image at path that this project made.
func ourBitmaps(ctx context.Context, path string) ([]string, error) {
	im, err := ImageInfo(ctx, path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range im.Bitmaps {
		if _, ok := BitmapLeaf(b.Name); ok {
			out = append(out, b.Name)
		}
	}
	return out, nil
}

// RemoveBitmaps removes our dirty bitmaps from the image at path (a
// restored image: what they recorded belongs to another history), each
// removal one point of the seam.
func RemoveBitmaps(ctx context.Context, seam *hostio.Seam, path string) error {
	names, err := ourBitmaps(ctx, path)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := seam.Do("remove bitmap "+n+" of "+path, func() error {
			_, err := qemuImg(ctx, imageTimeouts().Query, "bitmap", "--remove", path, n)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// RebaseStandalone copies into path every cluster it takes from its backing
// chain and drops the backing file: the offline merge of a shut-off VM.
// progress, if not nil, is told the share done (0 to 1) as qemu-img reports
// it. The call may last as long as going through size bytes takes.
//
// The rebase writes every cluster it copies, and the image's dirty bitmaps
// count that as guest writes although the guest's content is the same. Our
// bitmaps that recorded nothing before it are cleared after it; one that
// recorded guest writes stays all dirty (the next retain reads the disk whole).
func RebaseStandalone(ctx context.Context, path string, size int64, progress func(share float64)) error {
	clean := cleanBitmaps(ctx, path, size)
	pr := &progressReader{report: progress}
	if err := runQemuImg(ctx, imageTimeouts().dataTimeout(size), pr, "rebase", "-p", "-f", "qcow2", "-b", "", path); err != nil {
		return err
	}
	for _, n := range clean {
		if _, err := qemuImg(ctx, imageTimeouts().Query, "bitmap", "--clear", path, n); err != nil {
			return err
		}
	}
	return nil
}

// cleanBitmaps are our bitmaps of the image at path that record no write;
// one that cannot be read counts as not clean.
func cleanBitmaps(ctx context.Context, path string, size int64) []string {
	names, _ := ourBitmaps(ctx, path)
	var clean []string
	for _, n := range names {
		exp, err := exportImage(ctx, path, "qcow2", n)
		if err != nil {
			continue
		}
		dirty, err := dirtyChunks(ctx, exp, n, size)
		exp.stop()
		if err == nil && !slices.Contains(dirty, true) {
			clean = append(clean, n)
		}
	}
	return clean
}

// progressReader parses what `qemu-img -p` writes as it comes: one
// "    (12.34/100%)" per step, separated by carriage returns.
type progressReader struct {
	report  func(share float64)
	partial []byte
}

func (p *progressReader) Write(b []byte) (int, error) {
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexAny(p.partial, "\r\n")
		if i < 0 {
			break
		}
		if share, ok := parseProgressLine(string(p.partial[:i])); ok && p.report != nil {
			p.report(share)
		}
		p.partial = p.partial[i+1:]
	}
	if len(p.partial) > 256 {
		p.partial = p.partial[len(p.partial)-256:] // not progress output: keep the tail only
	}
	return len(b), nil
}

// parseProgressLine reads "    (12.34/100%)" as 0.1234.
func parseProgressLine(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "(") || !strings.HasSuffix(s, "/100%)") {
		return 0, false
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(s, "("), "/100%)"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, false
	}
	return v / 100, true
}
