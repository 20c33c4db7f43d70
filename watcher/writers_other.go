//go:build !linux

package watcher

// leaseProbe cannot tell anything outside Linux.
func leaseProbe(writerQuery) writerResult { return writerResult{} }

// scanProc cannot see other processes' files outside Linux.
func (c *writerCheck) scanProc(map[devIno][]int) (map[devIno]bool, int) { return nil, 1 }
