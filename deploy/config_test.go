package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// build compiles cmd (a package path relative to the module root) into dir.
func build(t *testing.T, dir, cmd string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(cmd))
	// go test puts its own go first in PATH.
	b, err := exec.Command("go", "build", "-o", out, "../"+cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v: %s", cmd, err, b)
	}
	return out
}

// runWith starts bin with the example config changed by edit and returns the
// exit code and output. The directory URL points at a closed port (and the
// example's CA file does not exist here), so a daemon that accepted its
// configuration stops when it turns to the directory.
func runWith(t *testing.T, bin, example string, edit func(string) string, args ...string) (int, string) {
	t.Helper()
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "url: ldap://ldap.example.org", "url: ldap://127.0.0.1:1", 1)
	if edit != nil {
		text = edit(text)
	}
	cfg := filepath.Join(t.TempDir(), filepath.Base(example))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "-config", cfg)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func TestExampleConfigs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		example, cmd string
		args         []string
		usage, dial  int // exit codes: configuration refused, directory unreachable
	}{
		{"controld.yaml", "controld", []string{"agent"}, 2, 3},
		{"nodebackupd.yaml", "nodebackupd", nil, 2, 1},
	} {
		bin := build(t, dir, c.cmd)
		code, out := runWith(t, bin, c.example, nil, c.args...)
		if code != c.dial {
			t.Errorf("%s with %s: exit %d, want %d (past the configuration, at the directory): %s", c.cmd, c.example, code, c.dial, out)
		}
		// The optional keys the example shows commented out are known too.
		code, out = runWith(t, bin, c.example, func(s string) string {
			// Settings are commented out as "#key:" or "#  key:", prose as "# text".
			return regexp.MustCompile(`(?m)^#( {2,}|)([a-zA-Z]+:)`).ReplaceAllString(s, "$1$2")
		}, c.args...)
		if code != c.dial {
			t.Errorf("%s with %s, optional keys set: exit %d, want %d: %s", c.cmd, c.example, code, c.dial, out)
		}
		// The check has teeth: a key the daemon does not know is refused.
		code, out = runWith(t, bin, c.example, func(s string) string { return s + "\nno-such-key: 1\n" }, c.args...)
		if code != c.usage || !strings.Contains(out, "no-such-key") {
			t.Errorf("%s with an unknown key: exit %d, want %d naming the key: %s", c.cmd, code, c.usage, out)
		}
		if c.cmd == "nodebackupd" {
			// A store job's schedule is checked at start, not when it fires.
			code, out = runWith(t, bin, c.example, func(s string) string {
				return strings.Replace(s, `gc: "30 12 * * *"`, `gc: "61 12 * * *"`, 1)
			})
			if code != c.usage || !strings.Contains(out, "chunks.gc") {
				t.Errorf("nodebackupd with a bad chunks.gc: exit %d, want %d naming the key: %s", code, c.usage, out)
			}
		}
	}
}
