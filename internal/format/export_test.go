package format

// LockJobs lets the external tests hold a store's job lock as a running
// job does.
func (s *ChunkStore) LockJobs() (func(), error) { return s.lockJobs() }
