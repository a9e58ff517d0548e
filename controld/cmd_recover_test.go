package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stoneycloud/stoney-conductor/controld/recovery"
	"github.com/stoneycloud/stoney-conductor/internal/testenv"
)

// TestRecoverFlags: flags may follow paths, paths are made absolute, and
// flags that contradict each other are usage errors.
func TestRecoverFlags(t *testing.T) {
	f, err := parseRecoverFlags([]string{"--yes", "a", "--recreate-vms", "/b", "--json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("a")
	want := recovery.Options{Yes: true, RecreateVMs: true, JSON: true, Paths: []string{abs, "/b"}}
	if !reflect.DeepEqual(f.options, want) {
		t.Fatalf("options %+v, want %+v", f.options, want)
	}
	for _, args := range [][]string{{"--json"}, {"--check", "--yes"}, {"--yes", "--dry-run"}, {"--nope"}} {
		var ue usageError
		if _, err := parseRecoverFlags(args, io.Discard); !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", args, err)
		}
	}
}

// TestRecoverCommand runs `controld recover` in-process against a directory
// of its own: the flags reach the recovery, and a missing root is the
// operator's mistake (exit status 2), not a failure.
func TestRecoverCommand(t *testing.T) {
	dir := t.TempDir()
	s, err := testenv.StartSlapd(testenv.SlapdOptions{Dir: filepath.Join(dir, "slapd"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	cfg := filepath.Join(dir, "controld.yaml")
	yaml := fmt.Sprintf("ldap:\n  url: %s\n  bindDN: %q\n  passwordFile: %s\n  base: %q\n", s.URL, s.AdminDN, s.AdminPasswordFile(), s.Base)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(out io.Writer, args ...string) error {
		return recoverCommand(context.Background(), append([]string{"-config", cfg}, args...), recovery.Options{In: strings.NewReader(""), Out: out})
	}

	var ue usageError
	if err := run(io.Discard, "--dry-run"); !errors.As(err, &ue) || err.Error() != recovery.ErrNoRoot.Error() {
		t.Fatalf("no root: %v, want a usage error", err)
	}
	root := filepath.Join(dir, "backup")
	if err := os.MkdirAll(filepath.Join(root, "vm-persistent"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(&out, "--dry-run", root, "--json"); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var plan struct {
		DryRun bool `json:"dryRun"`
		Roots  []struct {
			Path, Source, Error string
		} `json:"roots"`
	}
	if err := json.Unmarshal(out.Bytes(), &plan); err != nil {
		t.Fatalf("%v in:\n%s", err, out.String())
	}
	if !plan.DryRun || len(plan.Roots) != 1 || plan.Roots[0].Path != root || plan.Roots[0].Error != "" {
		t.Fatalf("dry run:\n%s", out.String())
	}
}
