package format

import (
	"os"
	"testing"

	"github.com/stoneycloud/stoney-conductor/internal/hostio"
)

// tempStore is a chunk store in a fresh directory dir, beside the files a
// test writes there to store.
func tempStore(t *testing.T) (dir hostio.Path, s *ChunkStore) {
	dir = hostio.In(t.TempDir())
	return dir, &ChunkStore{Dir: dir.MustJoin("store")}
}

// writeFile writes b to the file name in dir and returns its path.
func writeFile(t *testing.T, dir hostio.Path, name string, b []byte) hostio.Path {
	t.Helper()
	p := dir.MustJoin(name)
	if err := os.WriteFile(p.String(), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
