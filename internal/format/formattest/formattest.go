package formattest

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stoneycloud/stoney-conductor/internal/format"
)

// BackUp stores the disk image img in the chunk store of l's backup root
// and writes its index into l's leaf directory, as a retain in chunks
// storage leaves a disk; it returns the index.
func BackUp(tb testing.TB, l format.Layout, img string) format.Index {
	tb.Helper()
	if err := os.MkdirAll(l.BackupDir(), 0o700); err != nil {
		tb.Fatal(err)
	}
	x, _, err := format.StoreImage(context.Background(), l.ChunkStore(nil), img, format.StoreOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := format.WriteIndex(nil, l.BackupIndex(img), x, 0o600); err != nil {
		tb.Fatal(err)
	}
	return x
}

// ChunkFiles are the files in the chunk store of the backup root root: its
// chunks, and the temporary file of any writer that has not renamed yet.
func ChunkFiles(tb testing.TB, root string) []string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(root, format.ChunkStoreDir, "*", "*"))
	if err != nil {
		tb.Fatal(err)
	}
	return files
}

// UnnamedChunk stores data in s as a chunk no index names, as a deleted
// backup or a retain still running leaves one, last touched age ago (for a
// collection's grace period); it returns the chunk's id.
func UnnamedChunk(tb testing.TB, s *format.ChunkStore, data []byte, age time.Duration) format.ChunkID {
	tb.Helper()
	id := format.ChunkID(sha256.Sum256(data))
	if _, err := s.Put(id, data); err != nil {
		tb.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(s.ChunkPath(id).String(), at, at); err != nil {
		tb.Fatal(err)
	}
	return id
}
