package testenv

import (
	"strings"
	"sync"
)

// Output collects what a daemon or command under test writes (a log, a
// terminal) while the test reads it from another goroutine.
type Output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
