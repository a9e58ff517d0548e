package crashtest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/stoneycloud/stoney-conductor/internal/format"
	"github.com/stoneycloud/stoney-conductor/internal/hostio"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
	"github.com/stoneycloud/stoney-conductor/ldapschema"
)

// The invariants of chunks storage (docs/chunks.md) after an operation
// point: a backup is its indexes and the chunks they name in the backup
// root's store, so "intact and restorable" means every index reads back
// whole and every chunk it names is there and holds what its name says;
// no index, anywhere in the root, ever names a chunk that is missing or
// was not yet durable when the index appeared; and a garbage collection
// afterwards removes only what no index names.

// The steady region of a chunks backup flow's disk: its own chunk, written
// once (see opFlow.steadyRegion).
const (
	steadyOffset  = 20 << 20
	steadyLength  = 4 << 20
	steadyPattern = 0x5a
)

func (w *world) chunkStore() *format.ChunkStore { return format.OpenChunkStore(w.backup, nil) }

// storeFiles lists the store's chunk files and the temporary files of
// writers, by name.
func (w *world) storeFiles() (chunks map[format.ChunkID]bool, tmps []string) {
	chunks = map[format.ChunkID]bool{}
	files, _ := filepath.Glob(filepath.Join(w.backup, format.ChunkStoreDir, "*", "*"))
	for _, f := range files {
		if id, ok := format.ParseChunkID(filepath.Base(f)); ok {
			chunks[id] = true
		} else if strings.HasSuffix(f, ".tmp") {
			tmps = append(tmps, f)
		}
	}
	return chunks, tmps
}

// namedChunks are the chunks the indexes in the backup root name, and the
// indexes that cannot be read.
func (w *world) namedChunks() (map[format.ChunkID][]string, []string) {
	named := map[format.ChunkID][]string{}
	refs, err := format.FindIndexes(w.backup)
	if err != nil {
		return named, []string{fmt.Sprintf("indexes of %s: %v", w.backup, err)}
	}
	var bad []string
	for _, ref := range refs {
		ids, err := format.IndexChunks(ref.Path)
		if err != nil {
			bad = append(bad, fmt.Sprintf("index %s unreadable: %v", ref, err))
			continue
		}
		for _, id := range ids {
			named[id] = append(named[id], ref.String())
		}
	}
	return named, bad
}

// indexProblems: every index present in the backup root reads back whole
// and names only chunks the store holds.
func (w *world) indexProblems() []string {
	named, out := w.namedChunks()
	have, _ := w.storeFiles()
	var missing []string
	for id, by := range named {
		if !have[id] {
			missing = append(missing, fmt.Sprintf("%s (named by %s)", id, strings.Join(by, ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		out = append(out, fmt.Sprintf("%d chunk(s) named by an index are missing from the store: %s", len(missing), strings.Join(missing, "; ")))
	}
	return out
}

// gcProblems runs a garbage collection with no grace period, as the
// scheduled one does once the grace has passed: it must remove exactly the
// chunks no index names and the temporary files of crashed writers, and
// find no index naming a missing chunk.
func (w *world) gcProblems() []string {
	named, bad := w.namedChunks()
	if len(bad) > 0 {
		return bad
	}
	before, tmps := w.storeFiles()
	unnamed := 0
	for id := range before {
		if named[id] == nil {
			unnamed++
		}
	}
	r, err := format.CollectGarbage(context.Background(), w.chunkStore(), w.backup, 0)
	if err != nil {
		return []string{fmt.Sprintf("garbage collection: %v", err)}
	}
	var out []string
	if len(r.Missing) > 0 {
		out = append(out, "garbage collection finds chunks named but missing: "+strings.Join(r.Missing, "; "))
	}
	if r.Removed != unnamed || r.TemporaryFiles != len(tmps) {
		out = append(out, fmt.Sprintf("garbage collection removed %d chunks and %d temporary files; %d chunks were unnamed and %d temporary",
			r.Removed, r.TemporaryFiles, unnamed, len(tmps)))
	}
	after, left := w.storeFiles()
	for id := range named {
		if before[id] && !after[id] {
			out = append(out, fmt.Sprintf("garbage collection removed chunk %s, named by %s", id, strings.Join(named[id], ", ")))
		}
	}
	for id := range after {
		if named[id] == nil {
			out = append(out, fmt.Sprintf("garbage collection left the unnamed chunk %s", id))
		}
	}
	if len(left) > 0 {
		out = append(out, "garbage collection left temporary files: "+strings.Join(left, ", "))
	}
	return out
}

// chunkBackupProblems checks a backup in chunks storage: its XML and LDIF
// there, its state's index and one index per disk whole, every chunk they
// name in the store and sound (read back and checked against its name), a
// running VM's state a complete save image, and each disk's index the
// content the guest read when the backup was taken (reads).
func (w *world) chunkBackupProblems(v *testVM, leaf string, reads map[string]byte) []string {
	dir := w.backupDir(v, leaf)
	in := hostio.In(dir)
	var out []string
	for _, n := range []string{v.name + ".xml." + leaf, v.name + ".ldif." + leaf} {
		if st, err := os.Stat(filepath.Join(dir, n)); err != nil || st.Size() == 0 {
			out = append(out, fmt.Sprintf("backup file %s missing or empty", n))
		}
	}
	store := w.chunkStore()
	sound := func(what string, ids []format.ChunkID) bool {
		ok := true
		for _, id := range ids {
			if id.IsHole() {
				continue
			}
			if _, err := store.Get(id); err != nil {
				out = append(out, fmt.Sprintf("%s names chunk %s: %v", what, id, err))
				ok = false
			}
		}
		return ok
	}
	stateIdx := v.name + ".state.index." + leaf
	if x, err := format.ReadFileIndex(in.MustJoin(stateIdx)); err != nil {
		out = append(out, fmt.Sprintf("state index: %v", err))
	} else if sound(stateIdx, x.IDs()) && v.running {
		if kind, err := format.ReadStoredState(store, x); err != nil {
			out = append(out, fmt.Sprintf("state of %s read from the store: %v (%s)", leaf, err, kind))
		}
	}
	for _, d := range v.disks {
		n := format.IndexName(d.Path) + "." + leaf
		x, err := format.ReadIndex(in.MustJoin(n))
		if err != nil {
			out = append(out, fmt.Sprintf("disk index: %v", err))
			continue
		}
		if !sound(n, x.Chunks) {
			continue
		}
		want, err := w.diskIndex(v, d, reads[d.Target])
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("%s: %v", n, err))
		case want.Size != x.Size || !slices.Equal(want.Chunks, x.Chunks):
			out = append(out, fmt.Sprintf("%s does not hold the disk as the guest read it (pattern 0x%02x)", n, reads[d.Target]))
		}
	}
	return out
}

// diskIndex is the index of d's content as created with the pattern
// region holding p (and the steady region written): what a backup taken
// while the guest read p stored.
func (w *world) diskIndex(v *testVM, d testenv.DiskSpec, p byte) (format.Index, error) {
	raw := v.saved[d.Path] + ".raw"
	if _, err := os.Stat(raw); err != nil {
		if out, err := exec.Command("qemu-img", "convert", "-f", "qcow2", "-O", "raw", v.saved[d.Path], raw).CombinedOutput(); err != nil {
			return format.Index{}, fmt.Errorf("raw copy of %s: %v: %s", d.Path, err, out)
		}
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		return format.Index{}, err
	}
	fill := func(off, n int, p byte) {
		for i := off; i < off+n && i < len(b); i++ {
			b[i] = p
		}
	}
	fill(testenv.PatternOffset, testenv.PatternLength, p)
	if v.steady != 0 {
		fill(steadyOffset, steadyLength, v.steady)
	}
	x := format.Index{Size: int64(len(b)), Chunks: make([]format.ChunkID, format.ChunkCount(int64(len(b))))}
	for i := range x.Chunks {
		c := b[int64(i)*format.ChunkSize:][:format.ChunkLen(x.Size, i)]
		if !slices.ContainsFunc(c, func(x byte) bool { return x != 0 }) {
			continue // a hole
		}
		x.Chunks[i] = sha256.Sum256(c)
	}
	return x, nil
}

// durability follows, from the operations a flow passes through the seam,
// which chunks are durable: one the store held when the flow started, or
// one whose rename into its directory was followed by an fsync of that
// directory (and, for a directory the flow created, of the store's). An
// index that appears (its rename) while it names a chunk that is not is
// written too early: a power loss could keep the index and lose the chunk.
type durability struct {
	store   string
	durable map[format.ChunkID]bool
	renamed map[string][]format.ChunkID // by directory: renamed since its last fsync
	synced  map[format.ChunkID]string   // entry fsynced, in this directory
	newDirs map[string]bool             // created since the store's last fsync
	found   []string
}

func newDurability(w *world) *durability {
	have, _ := w.storeFiles()
	return &durability{
		store: filepath.Join(w.backup, format.ChunkStoreDir), durable: have,
		renamed: map[string][]format.ChunkID{}, synced: map[format.ChunkID]string{}, newDirs: map[string]bool{},
	}
}

func (d *durability) isDurable(id format.ChunkID) bool {
	if d.durable[id] {
		return true
	}
	dir, ok := d.synced[id]
	return ok && !d.newDirs[dir]
}

// see takes one operation that ran, named as the seam names it.
func (d *durability) see(op string) {
	switch {
	case strings.HasPrefix(op, "mkdir "):
		if p := strings.TrimPrefix(op, "mkdir "); filepath.Dir(p) == d.store {
			d.newDirs[p] = true
		}
	case strings.HasPrefix(op, "fsync dir "):
		p := strings.TrimPrefix(op, "fsync dir ")
		if p == d.store {
			clear(d.newDirs)
			return
		}
		for _, id := range d.renamed[p] {
			d.synced[id] = p
		}
		delete(d.renamed, p)
	case strings.HasPrefix(op, "rename "):
		from, to, ok := strings.Cut(strings.TrimPrefix(op, "rename "), " to ")
		if !ok {
			return
		}
		dir := filepath.Dir(to)
		if filepath.Dir(dir) == d.store {
			if id, ok := format.ParseChunkID(filepath.Base(to)); ok {
				d.renamed[dir] = append(d.renamed[dir], id)
			}
			return
		}
		if !strings.Contains(filepath.Base(to), ".index.") || inside(to, d.store) {
			return
		}
		// The index is complete in its temporary file before the rename.
		ids, err := format.IndexChunks(hostio.In(dir).MustJoin(from))
		if err != nil {
			d.found = append(d.found, fmt.Sprintf("index %s renamed into place unreadable: %v", filepath.Base(to), err))
			return
		}
		var early []string
		for _, id := range ids {
			if !d.isDurable(id) {
				early = append(early, id.String())
			}
		}
		if len(early) > 0 {
			d.found = append(d.found, fmt.Sprintf("index %s written before %d of its chunks were durable (renamed, directory not fsynced since): %s",
				filepath.Base(to), len(early), strings.Join(early, ", ")))
		}
	}
}

// retainReads are the leaf's words on how its retain read each disk
// ("retainRead <disk>: bitmap stoney-<leaf>", or "full: <why>").
func retainReads(final ldapschema.Leaf) []string {
	var out []string
	for _, t := range final.ExecutionTime {
		if strings.HasPrefix(t, "retainRead ") {
			out = append(out, t)
		}
	}
	return out
}

// readByBitmap: the retain read every disk of v by the bitmap of leaf.
func readByBitmap(final ldapschema.Leaf, v *testVM, leaf string) bool {
	for _, d := range v.disks {
		if !slices.Contains(final.ExecutionTime, "retainRead "+filepath.Base(d.Path)+": bitmap "+format.BitmapName(leaf)) {
			return false
		}
	}
	return true
}

// promote: the point's backup, in chunks storage, ended 0 and held every
// invariant, so it becomes the family's good backup: its leaf's bitmap is
// the one the live disks now carry, by which the next point's retain reads.
func promote(flow *opFlow, final ldapschema.Leaf, finished bool, res opResult) bool {
	return flow.chunked() && !flow.restore && finished && final.ReturnValue == 0 && res.held()
}

// chunkProblems: no index appeared before its chunks were durable, none
// named a missing chunk when the node crashed, none does now.
func (r *flowRun) chunkProblems() []string {
	r.mu.Lock()
	out := append([]string(nil), r.dur.found...)
	r.mu.Unlock()
	for _, s := range r.atCrash {
		out = append(out, "when the node crashed: "+s)
	}
	return append(out, r.w.indexProblems()...)
}

// chunkReset, after resetFamily: a backup family whose live disks no longer
// carry the good backup's bitmap (the point's backup failed after its
// snapshot) gets a new good backup, so that the next point's retain reads
// by a bitmap again. Then a garbage collection, after which the good backup
// must still be whole.
func (w *world) chunkReset(fam *opFamily, log logrus.FieldLogger) []string {
	var out []string
	v := fam.vm
	if !fam.broken && !fam.flow.restore && !carriesBitmap(v, fam.good) {
		old := fam.good
		if err := fam.newGood(w, log); err != nil {
			fam.broken = true
			out = append(out, fmt.Sprintf("a clean backup after the point: %v", err))
		} else {
			w.dropBackup(v, old)
		}
	}
	out = append(out, w.gcProblems()...)
	if !fam.broken {
		for _, s := range w.chunkBackupProblems(v, fam.good, fam.goodReads) {
			out = append(out, "after garbage collection: "+s)
		}
	}
	return out
}

// carriesBitmap: every disk of v has the dirty bitmap of leaf.
func carriesBitmap(v *testVM, leaf string) bool {
	for _, d := range v.disks {
		im, err := format.ImageInfo(context.Background(), d.Path)
		if err != nil || !slices.ContainsFunc(im.Bitmaps, func(b format.Bitmap) bool { return b.Name == format.BitmapName(leaf) }) {
			return false
		}
	}
	return true
}
