package hostio

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Path is a file held together with the configured root it must stay
// beneath. The root itself is trusted (it comes from the configuration or
// the directory and may contain symlinks); nothing below it is followed.
type Path struct {
	Root string // absolute, clean
	Rel  string // relative to Root, clean, never leaving it; "." is Root
}

// Beneath makes a Path of abs, which must lie inside root.
func Beneath(root, abs string) (Path, error) {
	if !filepath.IsAbs(root) || !filepath.IsAbs(abs) {
		return Path{}, fmt.Errorf("%q and %q must be absolute paths", root, abs)
	}
	root, abs = filepath.Clean(root), filepath.Clean(abs)
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return Path{}, fmt.Errorf("%s is not inside %s", abs, root)
	}
	return Path{Root: root, Rel: rel}, nil
}

// In is the Path of the root's own directory (dir must be absolute).
func In(dir string) Path { return Path{Root: filepath.Clean(dir), Rel: "."} }

// Join goes further down; elements may not climb out.
func (p Path) Join(elem ...string) (Path, error) {
	rel := filepath.Join(append([]string{p.Rel}, elem...)...)
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return Path{}, fmt.Errorf("%s leaves %s", filepath.Join(elem...), p)
	}
	return Path{Root: p.Root, Rel: rel}, nil
}

// MustJoin is Join for names already checked to be single safe file names.
func (p Path) MustJoin(elem ...string) Path {
	q, err := p.Join(elem...)
	if err != nil {
		panic(err)
	}
	return q
}

// Dir is the parent (the root's parent is not reachable: Dir of the root is the root).
func (p Path) Dir() Path {
	if p.Rel == "." {
		return p
	}
	return Path{Root: p.Root, Rel: filepath.Dir(p.Rel)}
}

// Base is the last element.
func (p Path) Base() string { return filepath.Base(p.String()) }

// String is the absolute path, for messages and for programs that take paths.
func (p Path) String() string { return filepath.Join(p.Root, p.Rel) }

// IsZero: no path.
func (p Path) IsZero() bool { return p.Root == "" }
