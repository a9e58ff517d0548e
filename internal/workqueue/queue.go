package workqueue

import (
	"container/heap"
	"math"
	"sync"
	"time"
)

// Defaults for Options left zero.
const (
	DefaultBaseDelay = time.Second
	DefaultMaxDelay  = 5 * time.Minute
)

// Options configure a Queue. The zero value is usable.
type Options[K comparable] struct {
	// Clock is the time source; nil means RealClock.
	Clock Clock
	// BaseDelay and MaxDelay bound the per-key backoff of AddRateLimited:
	// BaseDelay·2^n after n earlier failures, never more than MaxDelay.
	BaseDelay, MaxDelay time.Duration
	// ItemTimeout is the deadline Run gives each call of its function;
	// 0 means none. It uses the real clock, as context deadlines do.
	ItemTimeout time.Duration
	// OnError is called by Run for every failed call: panics arrive as a
	// *PanicError. retry says whether the key was requeued. Nil means ignore.
	OnError func(key K, err error, retry bool)
}

// Queue is a deduplicating work queue of comparable keys (a DN, a typed
// batch key). Safe for concurrent use.
type Queue[K comparable] struct {
	opts  Options[K]
	clock Clock

	mu         sync.Mutex
	cond       *sync.Cond
	queue      []K            // ready keys, in order
	dirty      map[K]struct{} // keys that need a visit: queued, or added while processing
	processing map[K]struct{} // keys a worker holds
	failures   map[K]int      // per-key backoff exponent
	waiting    waitHeap[K]    // keys added for later, earliest first
	waitIndex  map[K]*waitItem[K]
	shutting   bool

	wake     chan struct{} // tells the wait loop the earliest deadline may have changed
	stop     chan struct{}
	stopOnce sync.Once
	loopDone chan struct{}
}

// New returns a running queue; stop it with ShutDown.
func New[K comparable](opts Options[K]) *Queue[K] {
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.BaseDelay <= 0 {
		opts.BaseDelay = DefaultBaseDelay
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.BaseDelay {
		opts.MaxDelay = opts.BaseDelay
	}
	q := &Queue[K]{
		opts:       opts,
		clock:      opts.Clock,
		dirty:      map[K]struct{}{},
		processing: map[K]struct{}{},
		failures:   map[K]int{},
		waitIndex:  map[K]*waitItem[K]{},
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		loopDone:   make(chan struct{}),
	}
	q.cond = sync.NewCond(&q.mu)
	go q.waitLoop()
	return q
}

// Add marks key for a visit. A key already waiting is not queued twice; a key
// being processed is queued again once its worker calls Done.
func (q *Queue[K]) Add(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.addLocked(key)
}

func (q *Queue[K]) addLocked(key K) {
	if q.shutting {
		return
	}
	if _, ok := q.dirty[key]; ok {
		return
	}
	q.dirty[key] = struct{}{}
	if _, ok := q.processing[key]; ok {
		return
	}
	q.queue = append(q.queue, key)
	q.cond.Signal()
}

// AddAfter adds key once d has passed. If key already waits, the earlier
// of the two times wins.
func (q *Queue[K]) AddAfter(key K, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutting {
		return
	}
	at := q.clock.Now().Add(d)
	if it, ok := q.waitIndex[key]; ok {
		if at.Before(it.at) {
			it.at = at
			heap.Fix(&q.waiting, it.index)
		}
	} else {
		it := &waitItem[K]{key: key, at: at}
		heap.Push(&q.waiting, it)
		q.waitIndex[key] = it
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// AddRateLimited adds key after its backoff and counts one more failure.
func (q *Queue[K]) AddRateLimited(key K) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	q.AddAfter(key, q.backoff(n))
}

// backoff is BaseDelay·2^n, capped at MaxDelay.
func (q *Queue[K]) backoff(n int) time.Duration {
	d := float64(q.opts.BaseDelay) * math.Pow(2, float64(n))
	if d >= float64(q.opts.MaxDelay) {
		return q.opts.MaxDelay
	}
	return time.Duration(d)
}

// Forget clears key's backoff; call it when key succeeded or was given up.
func (q *Queue[K]) Forget(key K) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// NumRequeues returns how many times key was requeued since its last Forget.
func (q *Queue[K]) NumRequeues(key K) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Get blocks until a key is ready and hands it to the caller, who must call
// Done with it. shutdown is true once the queue is shut down; keys still
// queued are dropped then, as the daemons re-list on start.
func (q *Queue[K]) Get() (key K, shutdown bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.queue) == 0 && !q.shutting {
		q.cond.Wait()
	}
	if q.shutting {
		return key, true
	}
	key = q.queue[0]
	var zero K
	q.queue[0] = zero
	q.queue = q.queue[1:]
	q.processing[key] = struct{}{}
	delete(q.dirty, key)
	return key, false
}

// Done releases key; if it was added meanwhile, it is queued again.
func (q *Queue[K]) Done(key K) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if _, ok := q.dirty[key]; ok && !q.shutting {
		q.queue = append(q.queue, key)
		q.cond.Signal()
	}
}

// Len returns how many keys are ready, not counting those held or waiting.
func (q *Queue[K]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// ShutDown makes Get return shutdown and later adds do nothing. It returns
// once the queue's own goroutine has stopped.
func (q *Queue[K]) ShutDown() {
	q.mu.Lock()
	q.shutting = true
	q.cond.Broadcast()
	q.mu.Unlock()
	q.stopOnce.Do(func() { close(q.stop) })
	<-q.loopDone
}

// ShuttingDown reports whether ShutDown was called.
func (q *Queue[K]) ShuttingDown() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shutting
}

// waitLoop moves waiting keys to the queue when they come due.
func (q *Queue[K]) waitLoop() {
	defer close(q.loopDone)
	for {
		q.mu.Lock()
		if q.shutting {
			q.mu.Unlock()
			return
		}
		now := q.clock.Now()
		for q.waiting.Len() > 0 && !q.waiting[0].at.After(now) {
			it := heap.Pop(&q.waiting).(*waitItem[K])
			delete(q.waitIndex, it.key)
			q.addLocked(it.key)
		}
		var fire <-chan time.Time
		var disarm func() bool
		if q.waiting.Len() > 0 {
			fire, disarm = q.clock.At(q.waiting[0].at)
		}
		q.mu.Unlock()

		select {
		case <-q.stop:
		case <-q.wake:
		case <-fire:
		}
		if disarm != nil {
			disarm()
		}
	}
}

type waitItem[K comparable] struct {
	key   K
	at    time.Time
	index int
}

// waitHeap orders waiting keys by due time (container/heap).
type waitHeap[K comparable] []*waitItem[K]

func (h waitHeap[K]) Len() int           { return len(h) }
func (h waitHeap[K]) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h waitHeap[K]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap[K]) Push(x any) {
	it := x.(*waitItem[K])
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *waitHeap[K]) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
