package workqueue

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
)

// Terminal marks err as one that retrying cannot fix (bad input, a refused
// transition): Run reports it once and does not requeue the key. A later Add
// still visits the key, since the entry may have been corrected. Terminal(nil)
// is nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminalError{err}
}

// IsTerminal reports whether err wraps an error marked by Terminal.
func IsTerminal(err error) bool {
	var t *terminalError
	return errors.As(err, &t)
}

type terminalError struct{ err error }

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// PanicError is what Run reports when the function panicked on a key.
type PanicError struct {
	Key   any
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic on %v: %v", e.Key, e.Value)
}

// Run hands keys to workers goroutines calling fn until ctx is done or the
// queue is shut down, then shuts the queue down and waits for the calls under
// way to return. Per key: success forgets its backoff; an error or a panic is
// reported through Options.OnError and requeued with backoff; a Terminal
// error is reported and forgotten. Each call gets Options.ItemTimeout; a
// function that ignores its context cannot be stopped, only waited for.
func (q *Queue[K]) Run(ctx context.Context, workers int, fn func(ctx context.Context, key K) error) {
	if workers < 1 {
		workers = 1
	}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for q.processNext(ctx, fn) {
			}
		}()
	}
	select {
	case <-ctx.Done():
	case <-q.stop:
	}
	q.ShutDown()
	wg.Wait()
}

func (q *Queue[K]) processNext(ctx context.Context, fn func(context.Context, K) error) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)

	err := q.call(ctx, key, fn)
	switch {
	case err == nil:
		q.Forget(key)
	case ctx.Err() != nil:
		// Stopping: the error is the cancellation's, and the queue is going away.
	case IsTerminal(err):
		q.report(key, err, false)
		q.Forget(key)
	default:
		q.report(key, err, true)
		q.AddRateLimited(key)
	}
	return true
}

func (q *Queue[K]) call(ctx context.Context, key K, fn func(context.Context, K) error) (err error) {
	if q.opts.ItemTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, q.opts.ItemTimeout)
		defer cancel()
	}
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Key: key, Value: v, Stack: debug.Stack()}
		}
	}()
	return fn(ctx, key)
}

func (q *Queue[K]) report(key K, err error, retry bool) {
	if q.opts.OnError != nil {
		q.opts.OnError(key, err, retry)
	}
}
